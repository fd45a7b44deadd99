package webhook

import (
	"encoding/json"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keyshard/keyshard/engine"
)

// Subscriptions are the tenants' enabled endpoints as event.Subscriptions:
// an event goes to the topic "webhook:<id>" of every endpoint that wants
// it. Each tenant's list is read in the write that first needs it and kept
// in memory for Fresh (a change through this server forgets it at once;
// one made through another server counts within Fresh).
type Subscriptions struct {
	// Fresh is how long a tenant's list is used from memory (default 30 s).
	Fresh time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	once  sync.Once
	cache *lru.Cache[string, cached]
}

type cached struct {
	at        time.Time
	endpoints []subscribed
}

type subscribed struct {
	id     string
	events []string
}

func (s *Subscriptions) init() {
	s.once.Do(func() { s.cache, _ = lru.New[string, cached](10_000) })
}

func (s *Subscriptions) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Forget drops a tenant's list (after a change of its endpoints).
func (s *Subscriptions) Forget(tenantID string) {
	if s == nil {
		return
	}
	s.init()
	s.cache.Remove(tenantID)
}

// Topics implements event.Subscriptions.
func (s *Subscriptions) Topics(tx engine.Querier, tenantID, name string) ([]string, error) {
	s.init()
	fresh := s.Fresh
	if fresh <= 0 {
		fresh = 30 * time.Second
	}
	c, ok := s.cache.Get(tenantID)
	if !ok || s.now().Sub(c.at) >= fresh {
		c = cached{at: s.now()}
		rows, err := tx.Query(`SELECT id, events FROM webhook_endpoints WHERE enabled = 1`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var sub subscribed
			var evs string
			if err := rows.Scan(&sub.id, &evs); err != nil {
				rows.Close()
				return nil, err
			}
			if err := json.Unmarshal([]byte(evs), &sub.events); err != nil {
				rows.Close()
				return nil, err
			}
			c.endpoints = append(c.endpoints, sub)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		s.cache.Add(tenantID, c)
	}
	var out []string
	for _, e := range c.endpoints {
		ep := Endpoint{Events: e.events}
		if ep.wants(name) {
			out = append(out, TopicPrefix+e.id)
		}
	}
	return out, nil
}

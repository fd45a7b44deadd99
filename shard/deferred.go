package shard

import (
	"fmt"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// deferred is the bounded buffer of fire-and-forget records. Records without
// a key (audit events) are written in order; a keyed record (a last-seen
// update) replaces a pending one with the same key and is written at most
// once per debounce interval.
type deferred struct {
	limit    int
	debounce time.Duration

	mu       sync.Mutex // guards the fields below
	plain    []record
	keyed    map[string]*record
	lastSent map[string]time.Time // keys written within the debounce interval
}

type record struct {
	key string
	op  engine.WriteFunc
	due time.Time
}

func (d *deferred) init(o Options) {
	d.limit = o.DeferLimit
	d.debounce = o.DebounceInterval
	d.keyed = make(map[string]*record)
	d.lastSent = make(map[string]time.Time)
}

func (d *deferred) add(key string, op engine.WriteFunc, now time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if key != "" {
		if r, ok := d.keyed[key]; ok {
			r.op = op // the newer value wins; the due time stays
			return nil
		}
	}
	if len(d.plain)+len(d.keyed) >= d.limit {
		return fmt.Errorf("deferred buffer full (%d): %w", d.limit, engine.ErrOverloaded)
	}
	if key == "" {
		d.plain = append(d.plain, record{op: op})
		return nil
	}
	due := now
	if last, ok := d.lastSent[key]; ok && now.Sub(last) < d.debounce {
		due = last.Add(d.debounce)
	}
	d.keyed[key] = &record{key: key, op: op, due: due}
	return nil
}

// due reports whether any record should be written now.
func (d *deferred) due(now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.plain) > 0 {
		return true
	}
	for _, r := range d.keyed {
		if !r.due.After(now) {
			return true
		}
	}
	return false
}

// take removes and returns the records due at now (every record when all).
func (d *deferred) take(now time.Time, all bool) []record {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.plain) == 0 && len(d.keyed) == 0 {
		return nil
	}
	out := d.plain
	d.plain = nil
	for k, r := range d.keyed {
		if all || !r.due.After(now) {
			out = append(out, *r)
			delete(d.keyed, k)
		}
	}
	return out
}

// restore puts back the records of a failed batch, as far as the limit
// allows, and returns how many it had to drop.
func (d *deferred) restore(recs []record) (dropped int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range recs {
		if len(d.plain)+len(d.keyed) >= d.limit {
			dropped++
			continue
		}
		if r.key == "" {
			d.plain = append(d.plain, r)
		} else if _, ok := d.keyed[r.key]; !ok {
			rr := r
			d.keyed[r.key] = &rr
		}
	}
	return dropped
}

// written records that recs were committed at now, and forgets keys whose
// debounce interval has passed so the map stays bounded.
func (d *deferred) written(recs []record, now time.Time) {
	if len(recs) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range recs {
		if r.key != "" {
			d.lastSent[r.key] = now
		}
	}
	if len(d.lastSent) > 2*d.limit {
		for k, t := range d.lastSent {
			if now.Sub(t) >= d.debounce {
				delete(d.lastSent, k)
			}
		}
	}
}

func (d *deferred) pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.plain) + len(d.keyed)
}

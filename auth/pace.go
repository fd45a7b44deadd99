package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keyshard/keyshard/auth/hash"
)

// pacer slows clients that ignore Retry-After. A login or signup refused
// because password hashing is saturated tells its client when to come
// back; a client that comes back sooner waits out the rest (at most
// maxPace) before its request is looked at. Clients that retry at once
// then cost one request per Retry-After instead of thousands a second,
// whose refusals would take the CPU the hash workers need (the login
// collapse of issue 18). A client that waits as told is never slowed.
// Keyed by client address; in memory, per process.
type pacer struct {
	now   func() time.Time
	mu    sync.Mutex
	until *lru.Cache[string, time.Time]
}

// maxPace bounds the wait of one request.
const maxPace = time.Second

func newPacer(now func() time.Time) *pacer {
	c, _ := lru.New[string, time.Time](100_000) // a constant size: no error
	return &pacer{now: now, until: c}
}

// wait holds a client that comes back before its Retry-After.
func (p *pacer) wait(ctx context.Context, ip string) error {
	if p == nil || ip == "" {
		return nil
	}
	p.mu.Lock()
	until, ok := p.until.Get(ip)
	p.mu.Unlock()
	if !ok {
		return nil
	}
	d := until.Sub(p.now())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(min(d, maxPace))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refused notes the Retry-After a client was told, when err is a hashing
// refusal.
func (p *pacer) refused(ip string, err error) {
	var oe *hash.OverloadedError
	if p == nil || ip == "" || !errors.As(err, &oe) {
		return
	}
	p.mu.Lock()
	p.until.Add(ip, p.now().Add(oe.RetryAfter))
	p.mu.Unlock()
}

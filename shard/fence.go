package shard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/keyshard/keyshard/engine"
)

var fenceWaits = promauto.NewCounter(prometheus.CounterOpts{
	Name: "keyshard_shard_fence_waits_total",
	Help: "Writes that arrived while their shard was fenced for a move and had to wait.",
})

// Fence states.
const (
	fenceNone   int32 = iota
	fenceRaised       // new writes wait; the writer holds deferred records back
	fenceSealed       // the shard moved: writes and deferred records are refused for good
)

// fence lets a move stop a shard's writes for its final step. While raised,
// Write waits (at most the fence's wait, or its ctx) for the fence to be
// lowered; Seal answers every waiting and future write engine.ErrMoving, so
// no write is applied to a copy that is no longer the tenant's.
type fence struct {
	state atomic.Int32 // changed with Shard.mu held exclusively, so enqueuers see it

	mu   sync.Mutex    // guards the fields below
	ch   chan struct{} // closed when the fence is lowered or sealed
	wait time.Duration // longest a write waits for the fence
}

// DefaultFenceWait is the longest a write waits behind a fence when Fence is
// given no wait of its own.
const DefaultFenceWait = 2 * time.Second

// Fence stops new writes and returns once every write queued before it, and
// every buffered deferred record, has committed: from then until Unfence or
// Seal the shard's database does not change through this shard. Writes
// arriving meanwhile wait up to wait (DefaultFenceWait when zero); past that
// they fail with engine.ErrMoving. Reads are not affected. Fencing a fenced
// or sealed shard returns an error wrapping engine.ErrConflict; a failed
// drain lowers the fence again and returns the failure.
func (s *Shard) Fence(ctx context.Context, wait time.Duration) error {
	if wait <= 0 {
		wait = DefaultFenceWait
	}
	s.fence.mu.Lock()
	s.mu.Lock() // waits for enqueues in flight: later ones see the fence
	switch {
	case s.closed:
		s.mu.Unlock()
		s.fence.mu.Unlock()
		return engine.ErrClosed
	case s.fence.state.Load() != fenceNone:
		s.mu.Unlock()
		s.fence.mu.Unlock()
		return fmt.Errorf("shard is already fenced: %w", engine.ErrConflict)
	}
	s.fence.state.Store(fenceRaised)
	s.fence.ch = make(chan struct{})
	s.fence.wait = wait
	s.mu.Unlock()
	s.fence.mu.Unlock()

	// A barrier behind everything queued: its batch commits all of the
	// queue before it and every deferred record.
	reply := make(chan error, 1)
	r := &request{ctx: ctx, op: func(engine.Querier) error { return nil }, reply: reply, flushAll: true}
	err := s.enqueueControl(ctx, r)
	if err == nil {
		select {
		case err = <-reply:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		s.Unfence()
		return fmt.Errorf("fence: drain writer: %w", err)
	}
	return nil
}

// Unfence lowers a raised fence: waiting writes proceed, deferred records
// are written again. It does nothing on a shard that is not fenced or that
// was sealed.
func (s *Shard) Unfence() {
	s.fence.mu.Lock()
	defer s.fence.mu.Unlock()
	if s.fence.state.Load() != fenceRaised {
		return
	}
	s.mu.Lock()
	s.fence.state.Store(fenceNone)
	s.mu.Unlock()
	close(s.fence.ch)
	s.fence.ch = nil
}

// Seal ends a raised fence for good, after the tenant's data was copied
// elsewhere: waiting and future writes fail with engine.ErrMoving, Defer
// refuses, and Close writes nothing more. It returns the deferred records
// buffered since Fence (in order), for the caller to apply to the new copy.
// Sealing a shard that is not fenced returns an error wrapping
// engine.ErrConflict.
func (s *Shard) Seal() ([]engine.WriteFunc, error) {
	s.fence.mu.Lock()
	defer s.fence.mu.Unlock()
	if s.fence.state.Load() != fenceRaised {
		return nil, fmt.Errorf("seal: shard is not fenced: %w", engine.ErrConflict)
	}
	s.mu.Lock() // no Defer or enqueue in flight past this point
	s.fence.state.Store(fenceSealed)
	recs := s.deferred.take(time.Time{}, true)
	s.mu.Unlock()
	close(s.fence.ch)
	s.fence.ch = nil
	ops := make([]engine.WriteFunc, len(recs))
	for i, r := range recs {
		ops[i] = r.op
	}
	return ops, nil
}

// awaitFence waits while the shard is fenced, at most the fence's wait.
func (s *Shard) awaitFence(ctx context.Context) error {
	switch s.fence.state.Load() {
	case fenceNone:
		return nil
	case fenceSealed:
		return engine.ErrMoving
	}
	s.fence.mu.Lock()
	ch, wait := s.fence.ch, s.fence.wait
	s.fence.mu.Unlock()
	if ch == nil { // lowered or sealed meanwhile
		return s.fenceErr()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	fenceWaits.Inc()
	select {
	case <-ch:
		return s.fenceErr()
	case <-t.C:
		return fmt.Errorf("writes fenced for more than %v: %w", wait, engine.ErrMoving)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fenceErr is the error for a write arriving now: nil when not fenced.
func (s *Shard) fenceErr() error {
	if s.fence.state.Load() == fenceNone {
		return nil
	}
	return engine.ErrMoving
}

// EvictStale closes the tenant's open shard if it serves a placement older
// than epoch (at once if unpinned, otherwise after its last release) and
// waits until no older shard of the tenant is open or closing, or ctx ends.
// A move uses it before destroying the old copy; unlike Evict it leaves a
// shard of the new placement open.
func (c *Cache) EvictStale(ctx context.Context, tenantID string, epoch int64) error {
	c.mu.Lock()
	if e, ok := c.shards.peek(tenantID); ok && e.epoch < epoch {
		c.doomLocked(e)
	}
	ch, ok := c.closing[tenantID]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

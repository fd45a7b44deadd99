package shard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/keyshard/keyshard/engine"
)

var errRetry = errors.New("shard: retry acquire")

// Opener opens the shard at a placement, bringing its schema up to date.
type Opener func(ctx context.Context, p engine.Placement) (*Shard, error)

// Cache keeps recently used shards open, up to a capacity. A shard acquired
// by a caller is pinned and never closed under it: eviction skips pinned
// shards, and a shard removed while pinned closes after its last Release.
// Concurrent acquires of a shard that is not open open it once. All methods
// are safe for concurrent use.
type Cache struct {
	open     Opener
	capacity int // shards kept open when unpinned
	maxOpen  int // hard limit, pinned shards included
	flights  singleflight.Group
	wg       sync.WaitGroup // background closes

	mu       sync.Mutex               // guards the fields below
	shards   *sieve                   // open shards, and which to close first
	closing  map[string]chan struct{} // shards being closed; reopen waits
	retiring map[string]chan struct{} // tenants whose storage Retire is destroying
	opening  map[string]int           // opens in flight, by tenant
	changed  *sync.Cond               // on mu: an open or a close ended
	closed   bool
	closeErr error // the first failed close since the cache was made; Close returns it

	hits, misses, evictions atomic.Int64
}

type entry struct {
	id     string
	epoch  int64
	shard  *Shard
	pins   int
	doomed bool // removed from the cache; close at the last Release

	prev, next *entry // in the sieve: prev is newer
	visited    bool   // acquired since the sieve's hand last passed
	// fresh: opened, not yet pinned by the Acquire that opened it. Never
	// evicted, as if pinned: the sieve's hand may stand anywhere, and
	// closing it before its opener used it would only open it again.
	fresh bool
}

// NewCache returns a cache that keeps capacity shards open and refuses with
// engine.ErrOverloaded to open more than maxOpen at once (pinned ones
// included). maxOpen below capacity is raised to 2×capacity.
func NewCache(capacity, maxOpen int, open Opener) *Cache {
	if capacity < 1 {
		capacity = 1
	}
	if maxOpen < capacity {
		maxOpen = 2 * capacity
	}
	c := &Cache{open: open, capacity: capacity, maxOpen: maxOpen, shards: newSieve(),
		closing: make(map[string]chan struct{}), retiring: make(map[string]chan struct{}), opening: make(map[string]int)}
	c.changed = sync.NewCond(&c.mu)
	return c
}

// Handle is a pinned shard. It must be released exactly once.
type Handle struct {
	*Shard
	c *Cache
	e *entry
}

// Release unpins the shard. The handle must not be used afterwards.
func (h *Handle) Release() {
	h.c.release(h.e)
}

// Acquire returns the tenant's shard pinned, opening it if needed. A
// placement with a newer epoch than the open shard's closes the old shard
// (once unpinned) and opens the new placement.
func (c *Cache) Acquire(ctx context.Context, p engine.Placement) (*Handle, error) {
	if !engine.ValidTenantID(p.TenantID) {
		return nil, engine.Invalidf("invalid tenant id")
	}
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, engine.ErrClosed
		}
		if e, ok := c.shards.get(p.TenantID); ok {
			// An older placement than the open shard's is a caller's stale
			// view: the open shard is the newer truth.
			if e.epoch >= p.Epoch {
				e.pins++
				c.mu.Unlock()
				c.hits.Add(1)
				cacheHits.Inc()
				return &Handle{Shard: e.shard, c: c, e: e}, nil
			}
			c.doomLocked(e) // placement moved: the old shard must close first
		}
		if ch := c.fenceLocked(p.TenantID); ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		c.mu.Unlock()

		v, err, _ := c.flights.Do(p.TenantID, func() (any, error) { return c.openEntry(ctx, p) })
		if err == errRetry {
			continue
		}
		if err != nil {
			return nil, err
		}
		e := v.(*entry)
		c.mu.Lock()
		if cur, ok := c.shards.peek(p.TenantID); ok && cur == e && e.epoch >= p.Epoch {
			e.pins++
			e.fresh = false
			c.mu.Unlock()
			return &Handle{Shard: e.shard, c: c, e: e}, nil
		}
		c.mu.Unlock() // evicted or replaced between open and pin: try again
	}
}

// openEntry opens a shard and inserts it, unpinned, into the cache.
func (c *Cache) openEntry(ctx context.Context, p engine.Placement) (*entry, error) {
	c.mu.Lock()
	if e, ok := c.shards.peek(p.TenantID); ok {
		c.mu.Unlock()
		if e.epoch == p.Epoch {
			return e, nil // a flight that just ended inserted it
		}
		// Another placement's shard is open: Acquire serves it or closes it
		// first. Opening here would replace it in the cache unclosed and run
		// two writers on one shard.
		return nil, errRetry
	}
	if c.fenceLocked(p.TenantID) != nil {
		c.mu.Unlock() // an older copy is closing, or the storage is being destroyed
		return nil, errRetry
	}
	if n := c.shards.len(); n >= c.maxOpen && !c.hasVictimLocked() {
		c.mu.Unlock()
		return nil, fmt.Errorf("%d shards open and pinned: %w", n, engine.ErrOverloaded)
	}
	c.opening[p.TenantID]++ // Retire waits for this open to end
	c.mu.Unlock()
	defer c.endOpen(p.TenantID)

	c.misses.Add(1)
	cacheMisses.Inc()
	start := time.Now()
	// Followers of this flight share the result: the leader's cancellation
	// must not fail them.
	s, err := c.open(context.WithoutCancel(ctx), p)
	openSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("open shard %s: %w", p.TenantID, err)
	}
	e := &entry{id: p.TenantID, epoch: p.Epoch, shard: s, fresh: true}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		closeShard(s)
		return nil, engine.ErrClosed
	}
	if c.retiring[p.TenantID] != nil {
		c.mu.Unlock() // Retire began meanwhile; it waits for us to close this
		closeShard(s)
		return nil, errRetry
	}
	// Several opens may have passed the check above at once. Make room
	// among unpinned shards, or refuse.
	c.evictLocked()
	if c.shards.len() >= c.maxOpen {
		n := c.shards.len()
		c.mu.Unlock()
		closeShard(s)
		return nil, fmt.Errorf("%d shards open and pinned: %w", n, engine.ErrOverloaded)
	}
	c.shards.add(e)
	openShards.Inc()
	c.evictLocked()
	c.mu.Unlock()
	return e, nil
}

// fenceLocked returns the channel an Acquire of the tenant must wait on
// before opening it, or nil.
func (c *Cache) fenceLocked(id string) chan struct{} {
	if ch, ok := c.closing[id]; ok {
		return ch
	}
	return c.retiring[id]
}

func (c *Cache) endOpen(id string) {
	c.mu.Lock()
	if c.opening[id]--; c.opening[id] <= 0 {
		delete(c.opening, id)
	}
	c.changed.Broadcast()
	c.mu.Unlock()
}

func (c *Cache) release(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.pins--
	if e.pins < 0 {
		panic("shard: Handle released twice")
	}
	if e.pins == 0 && e.doomed {
		c.closeLocked(e)
		return
	}
	if c.shards.len() > c.capacity {
		c.evictLocked()
	}
}

func (c *Cache) hasVictimLocked() bool { return c.shards.hasIdle() }

// evictLocked closes idle shards, in the sieve's order, until at most
// capacity remain.
func (c *Cache) evictLocked() {
	for n := c.shards.len() - c.capacity; n > 0; n-- {
		e := c.shards.victim()
		if e == nil {
			return // the rest are pinned or fresh
		}
		c.doomLocked(e)
	}
}

// doomLocked removes e from the cache and closes it now if unpinned, else at
// its last release. Until it is closed, acquires of its tenant wait.
func (c *Cache) doomLocked(e *entry) {
	if e.doomed {
		return
	}
	e.doomed = true
	c.shards.remove(e.id)
	c.closing[e.id] = make(chan struct{})
	if e.pins == 0 {
		c.closeLocked(e)
	}
}

// closeLocked closes a doomed, unpinned shard in the background.
func (c *Cache) closeLocked(e *entry) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := closeShard(e.shard)
		openShards.Dec()
		c.evictions.Add(1)
		cacheEvictions.Inc()
		c.mu.Lock()
		if err != nil && c.closeErr == nil {
			c.closeErr = fmt.Errorf("close shard %s: %w", e.id, err)
		}
		ch := c.closing[e.id]
		delete(c.closing, e.id)
		c.changed.Broadcast()
		c.mu.Unlock()
		close(ch) // last: Evict returns with the counters up to date
	}()
}

// Open returns the tenants whose shards are open (not closing) now.
func (c *Cache) Open() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, 0, c.shards.len())
	c.shards.each(func(e *entry) { ids = append(ids, e.id) })
	return ids
}

// Evict closes the tenant's shard (at once if unpinned, otherwise after its
// last release) and waits until it is closed or ctx ends. Use it before
// suspending, deleting or moving a tenant.
func (c *Cache) Evict(ctx context.Context, tenantID string) error {
	return c.EvictStale(ctx, tenantID, math.MaxInt64) // every open epoch is older
}

// Retire removes a tenant for good: it closes the tenant's shard (waiting
// for its last release, as Evict does) and for opens in flight, then runs
// destroy while no Acquire of the tenant can open it. Acquires arriving
// meanwhile wait, then open afresh, and fail if destroy removed the
// storage. If ctx ends before the shard closed, destroy is not run.
func (c *Cache) Retire(ctx context.Context, tenantID string, destroy func() error) error {
	fence := make(chan struct{})
	c.mu.Lock()
	if _, ok := c.retiring[tenantID]; ok {
		c.mu.Unlock()
		return fmt.Errorf("tenant %s is already being retired: %w", tenantID, engine.ErrConflict)
	}
	c.retiring[tenantID] = fence
	defer func() {
		c.mu.Lock()
		delete(c.retiring, tenantID)
		c.mu.Unlock()
		close(fence)
	}()
	if e, ok := c.shards.peek(tenantID); ok {
		c.doomLocked(e)
	}
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.changed.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	for c.closing[tenantID] != nil || c.opening[tenantID] > 0 {
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return err
		}
		c.changed.Wait()
	}
	c.mu.Unlock()
	return destroy()
}

// closeShard closes a shard the cache let go of. A failed final flush has
// nobody left to answer: it is counted, and visible in the shard's stats.
func closeShard(s *Shard) error {
	err := s.Close()
	if err != nil {
		closeErrors.Inc()
	}
	return err
}

// Close closes every shard, waits for them, and returns the first close
// that failed (its final flush or checkpoint). Shards still pinned close at
// their last release, and Close waits for that too.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	var all []*entry
	c.shards.each(func(e *entry) { all = append(all, e) })
	for _, e := range all {
		c.doomLocked(e)
	}
	for len(c.closing) > 0 { // pinned shards close at their last release
		c.changed.Wait()
	}
	err := c.closeErr
	c.mu.Unlock()
	c.wg.Wait()
	return err
}

// CacheStats is a snapshot of the cache's counters.
type CacheStats struct {
	Open, Pinned, Closing   int
	Hits, Misses, Evictions int64
	Capacity, MaxOpen       int
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := CacheStats{Open: c.shards.len(), Closing: len(c.closing), Capacity: c.capacity, MaxOpen: c.maxOpen,
		Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load()}
	c.shards.each(func(e *entry) {
		if e.pins > 0 {
			st.Pinned++
		}
	})
	return st
}

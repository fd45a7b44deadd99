package shard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// Syncer is a WriteConn whose Commit leaves the batch in the operating
// system's cache (SQLite: the WAL written, not synced): a commit survives a crash
// of the process but not yet a power loss. Sync makes every commit returned
// so far durable. It runs on another goroutine than the writer's, while the
// writer commits its next batch, so it must not touch the connection's
// database handle (SQLite: an fdatasync of the WAL file through a
// descriptor of its own).
//
// With a Syncer the writer pipelines durability: it commits batch N+1 while
// batch N's sync is in flight, and answers a batch's callers only once a
// sync that began after the batch's commit has returned. An acknowledged
// write is durable exactly as with a sync inside Commit. What differs is
// what others see: a read may return a commit whose sync has not returned
// yet (for at most one sync, about a millisecond); a power loss in that
// window loses that commit although it was read, never one that was
// acknowledged. Nothing leaves the process on such a commit's account:
// the outbox delivers a row only after WaitDurable.
type Syncer interface {
	Sync() error
}

// flusher is the goroutine that syncs committed batches and answers their
// callers. The writer hands it each commit; one sync covers every commit
// handed over before it began.
type flusher struct {
	sync func() error
	kick chan struct{} // buffered(1): a commit is waiting for a sync
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	begun     uint64        // batches begun: a commit may be visible from then on
	committed uint64        // batches handed over (committed or failed), in order
	durable   uint64        // commits covered by a returned sync
	pending   []*request    // callers of commits not yet durable
	started   uint64        // commits covered by the sync in flight or done
	picked    *sync.Cond    // on mu: a sync started, or the flusher failed or stopped
	changed   chan struct{} // closed and replaced when durable or err moves
	err       error         // a failed sync: the shard takes no more writes
	stopped   bool
}

func newFlusher(syncFn func() error) *flusher {
	f := &flusher{sync: syncFn, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		changed: make(chan struct{})}
	f.picked = sync.NewCond(&f.mu)
	go f.run()
	return f
}

// begin counts a batch about to run: WaitDurable waits for it from here on,
// since its commit is visible to reads before the writer hands it over.
// Every begun batch is handed over, committed or failed.
func (f *flusher) begin() {
	f.mu.Lock()
	f.begun++
	f.mu.Unlock()
}

// commit hands over a batch begun and the callers it answers once durable:
// the requests of reqs whose errs entry is nil (none for a failed batch).
func (f *flusher) commit(reqs []*request, errs []error) {
	f.mu.Lock()
	f.committed++
	for i, r := range reqs {
		if errs[i] == nil {
			f.pending = append(f.pending, r)
		}
	}
	f.mu.Unlock()
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *flusher) run() {
	defer close(f.done)
	for {
		select {
		case <-f.kick:
		case <-f.stop:
			f.flush()
			return
		}
		f.flush()
	}
}

// flush syncs until every commit handed over so far is durable.
func (f *flusher) flush() {
	for {
		f.mu.Lock()
		if f.committed == f.durable || f.err != nil {
			f.picked.Broadcast() // a failed flusher must not hold the writer
			reqs, err := f.takeLocked()
			f.mu.Unlock()
			answer(reqs, err)
			return
		}
		target := f.committed
		f.started = target
		reqs := f.pending
		f.pending = nil
		f.picked.Broadcast()
		f.mu.Unlock()

		start := time.Now()
		err := f.sync()
		syncSeconds.Observe(time.Since(start).Seconds())

		f.mu.Lock()
		if err != nil {
			f.err = fmt.Errorf("sync of committed writes failed, the shard takes no more writes until it is reopened: %v: %w", err, engine.ErrUnavailable)
		} else {
			f.durable = target
		}
		close(f.changed)
		f.changed = make(chan struct{})
		ferr := f.err
		f.mu.Unlock()
		answer(reqs, ferr)
	}
}

// awaitPickup holds the writer while a commit it handed over waits for a
// sync to start: the writer commits batch N+1 while batch N's sync is in
// flight, never N+2. Requests queue meanwhile and the next batch takes
// them all: one sync per batch, batches as large as with the sync inside
// the commit, and the sync's wait overlapped with the next batch's SQL.
func (f *flusher) awaitPickup() {
	f.mu.Lock()
	for f.committed > f.started && f.err == nil && !f.stopped {
		f.picked.Wait()
	}
	f.mu.Unlock()
}

// takeLocked returns the callers still pending (after a failed sync) and
// the failure.
func (f *flusher) takeLocked() ([]*request, error) {
	if len(f.pending) == 0 {
		return nil, f.err
	}
	reqs := f.pending
	f.pending = nil
	return reqs, f.err
}

func answer(reqs []*request, err error) {
	for _, r := range reqs {
		r.reply <- err
	}
}

// failed reports a failed sync, which fails every later batch.
func (f *flusher) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// wait returns once every commit handed over before the call is durable.
func (f *flusher) wait(ctx context.Context) error {
	f.mu.Lock()
	target := f.begun
	f.mu.Unlock()
	return f.waitFor(ctx, target)
}

// waitHandedOver returns once every batch handed over is durable: the
// writer's own wait, inside a batch that is begun and not handed over.
func (f *flusher) waitHandedOver(ctx context.Context) error {
	f.mu.Lock()
	target := f.committed
	f.mu.Unlock()
	return f.waitFor(ctx, target)
}

func (f *flusher) waitFor(ctx context.Context, target uint64) error {
	for {
		f.mu.Lock()
		durable, err, ch := f.durable, f.err, f.changed
		f.mu.Unlock()
		if err != nil {
			return err
		}
		if durable >= target {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// close syncs what is pending and stops the goroutine.
func (f *flusher) close() {
	close(f.stop)
	<-f.done
	f.mu.Lock()
	f.stopped = true
	f.picked.Broadcast()
	f.mu.Unlock()
}

// WaitDurable returns once every write this shard committed before the call
// is durable. Without pipelined durability (no Syncer) a commit is durable
// when it returns and WaitDurable returns at once.
func (s *Shard) WaitDurable(ctx context.Context) error {
	if s.flusher == nil {
		return nil
	}
	return s.flusher.wait(ctx)
}

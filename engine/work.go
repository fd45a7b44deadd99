package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// WorkMarks is an optional ability of a Catalog: it remembers which tenants
// have background work pending (an outbox with undelivered rows) and when
// it is due, so that the work is found without opening every shard.
//
// The contract that keeps a tenant with pending work from going unmarked:
// a mark is set (MarkWork) inside the write that makes the work pending,
// before that write commits; it is moved or cleared (SetWork, ClearWork)
// only inside a write of the same tenant that looked at what is pending.
// Both run in the tenant's single writer, so they are ordered. A mark whose
// write then failed is harmless: the tenant is visited, nothing is found,
// and the mark is cleared. All methods are safe for concurrent use.
type WorkMarks interface {
	// MarkWork makes the tenant's work due no later than due. It answers
	// from memory when the tenant is already marked that early.
	MarkWork(ctx context.Context, tenantID string, due time.Time) error
	// SetWork makes the tenant's work due at due, earlier or later.
	SetWork(ctx context.Context, tenantID string, due time.Time) error
	// ClearWork removes the tenant's mark.
	ClearWork(ctx context.Context, tenantID string) error
	// DueWork returns up to limit tenants whose work is due at now, the
	// longest due first.
	DueWork(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// Job is one kind of background work done for tenants (delivering one
// outbox, say). Implementations are safe for concurrent use, for
// different tenants at once.
type Job interface {
	// Run does one bounded turn of the tenant's due work, with its shard
	// pinned; what it cannot finish it leaves for a later turn. Slow work
	// (a network call) must not run inside a shard write.
	Run(ctx context.Context, t *TenantShard) error
	// Next runs inside the tenant's writer (q is its write transaction)
	// and says when the tenant's next work of this kind is due; ok is false
	// when it has none.
	Next(q Querier) (due time.Time, ok bool, err error)
}

// Worker runs background jobs for the tenants that have work due: it lists
// them from the catalog's marks every Interval, gives each one turn of
// every job in its turn (so a tenant with a million pending rows gets the
// same share as one with ten), and then, in the tenant's writer, moves the
// tenant's mark to its next due time or clears it. Shards are pinned
// through the engine's cache for a turn only. Start it once; Close waits
// for every goroutine it started.
type Worker struct {
	Engine *Engine
	Marks  WorkMarks
	Jobs   []Job
	// Workers bounds the tenants served at once (default 4).
	Workers int
	// Interval is how often the marks are read (default 500 ms).
	Interval time.Duration
	// MaxTenants bounds the tenants taken per round (default 10,000).
	MaxTenants int
	// TurnTimeout bounds one tenant's turn, so that a job stuck on a slow
	// receiver holds neither a worker nor a pinned shard for long
	// (default 2 min).
	TurnTimeout time.Duration
	// Quantum is how long a turn keeps running a tenant's jobs while they
	// have work due at once (a backlog) and no other tenant waits for a
	// worker; then the tenant waits for the next round, so one tenant's
	// backlog cannot starve the others (default 1 s).
	Quantum time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnError is told of a failed turn (default: ignored); the tenant stays
	// marked and is tried again in a later round.
	OnError func(tenantID string, err error)

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	inFlight map[string]bool
	waiting  int // tenants the round is handing out, that no worker took yet
	rounds   int64
	turns    int64
}

// Start starts the worker's goroutines.
func (w *Worker) Start() {
	if w.Workers <= 0 {
		w.Workers = 4
	}
	if w.Interval <= 0 {
		w.Interval = 500 * time.Millisecond
	}
	if w.MaxTenants <= 0 {
		w.MaxTenants = 10_000
	}
	if w.TurnTimeout <= 0 {
		w.TurnTimeout = 2 * time.Minute
	}
	if w.Quantum <= 0 {
		w.Quantum = time.Second
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	if w.OnError == nil {
		w.OnError = func(string, error) {}
	}
	w.inFlight = make(map[string]bool)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	todo := make(chan string)
	for range w.Workers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for id := range todo {
				w.turn(ctx, id)
				w.mu.Lock()
				delete(w.inFlight, id)
				w.turns++
				w.mu.Unlock()
			}
		}()
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(todo)
		t := time.NewTicker(w.Interval)
		defer t.Stop()
		for {
			w.round(ctx, todo)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// round hands every due tenant not already in a turn to the workers.
func (w *Worker) round(ctx context.Context, todo chan<- string) {
	ids, err := w.Marks.DueWork(ctx, w.Now(), w.MaxTenants)
	if err != nil {
		if ctx.Err() == nil {
			w.OnError("", fmt.Errorf("list tenants with work due: %w", err))
		}
		return
	}
	w.mu.Lock()
	w.rounds++
	w.mu.Unlock()
	for _, id := range ids {
		w.mu.Lock()
		busy := w.inFlight[id]
		if !busy {
			w.inFlight[id] = true
		}
		w.mu.Unlock()
		if busy {
			continue
		}
		w.mu.Lock()
		w.waiting++
		w.mu.Unlock()
		select {
		case todo <- id:
			w.mu.Lock()
			w.waiting--
			w.mu.Unlock()
		case <-ctx.Done():
			w.mu.Lock()
			w.waiting--
			delete(w.inFlight, id)
			w.mu.Unlock()
			return
		}
	}
}

// inactiveDelay is how long a suspended tenant's work is put off.
const inactiveDelay = time.Minute

// markTimeout bounds a catalog write made inside a tenant's writer.
const markTimeout = 5 * time.Second

// turn runs every job once for the tenant, then reschedules its mark.
func (w *Worker) turn(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, w.TurnTimeout)
	defer cancel()
	ts, err := w.Engine.Tenant(ctx, id)
	switch {
	case errors.Is(err, ErrTenantNotFound):
		// Deleted: nothing of it is left to do.
		if cerr := w.Marks.ClearWork(ctx, id); cerr != nil {
			w.OnError(id, cerr)
		}
		return
	case errors.Is(err, ErrTenantSuspended), errors.Is(err, ErrTenantPending):
		// Its work waits for it to be active again; meanwhile it is looked
		// at once a minute, not every round. A suspended tenant writes
		// nothing, so no event can be marked meanwhile: moving its mark
		// outside its writer delays nothing it records.
		if serr := w.Marks.SetWork(ctx, id, w.Now().Add(inactiveDelay)); serr != nil {
			w.OnError(id, serr)
		}
		return
	case errors.Is(err, ErrNotOwner):
		return // its owner's worker does it; the mark stays for it
	case err != nil:
		w.OnError(id, err) // suspended, moving, overloaded: a later round
		return
	}
	defer ts.Release()
	quantum := time.Now().Add(w.Quantum)
	for {
		failed := false
		for _, j := range w.Jobs {
			if err := j.Run(ctx, ts); err != nil {
				w.OnError(id, err)
				failed = true
			}
		}
		if failed || ctx.Err() != nil || !time.Now().Before(quantum) || w.othersWaiting() || !w.dueNow(ctx, ts) {
			break
		}
	}
	err = ts.Write(ctx, func(tx Querier) error {
		mctx, cancel := context.WithTimeout(ctx, markTimeout)
		defer cancel()
		var next time.Time
		for _, j := range w.Jobs {
			due, ok, err := j.Next(tx)
			if err != nil {
				return err
			}
			if ok && (next.IsZero() || due.Before(next)) {
				next = due
			}
		}
		if next.IsZero() {
			return w.Marks.ClearWork(mctx, id)
		}
		return w.Marks.SetWork(mctx, id, next)
	})
	if err != nil && ctx.Err() == nil {
		w.OnError(id, fmt.Errorf("reschedule background work: %w", err))
	}
}

// othersWaiting reports whether another tenant waits for a worker: a
// backlog then yields after one run.
func (w *Worker) othersWaiting() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waiting > 0
}

// dueNow reports whether a job of the tenant has work due already (a
// backlog larger than one run takes).
func (w *Worker) dueNow(ctx context.Context, ts *TenantShard) bool {
	now := w.Now()
	due := false
	err := ts.Read(ctx, func(q Querier) error {
		for _, j := range w.Jobs {
			next, ok, err := j.Next(q)
			if err != nil {
				return err
			}
			if ok && !next.After(now) {
				due = true
			}
		}
		return nil
	})
	return err == nil && due
}

// WorkerStats counts a worker's rounds (reads of the marks) and turns
// (tenants served).
type WorkerStats struct {
	Rounds, Turns int64
	InFlight      int
}

// Stats returns a snapshot of the worker's counters.
func (w *Worker) Stats() WorkerStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return WorkerStats{Rounds: w.rounds, Turns: w.turns, InFlight: len(w.inFlight)}
}

// Close stops the worker and waits for its goroutines; a turn in progress
// sees its context cancelled. Safe to call twice, and without Start.
func (w *Worker) Close() error {
	if w.cancel != nil {
		w.cancel()
		w.wg.Wait()
	}
	return nil
}

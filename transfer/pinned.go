package transfer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// pinned is a read transaction held open on one read connection of a
// shard, begun when asked (begin), serving jobs until closed. A move pins
// the source's snapshot at the capture point, and the copy's at the flip.
type pinned struct {
	gateOnce sync.Once
	gate     chan struct{}
	ready    chan error
	jobs     chan func(engine.Querier) error
	errs     chan error
	done     chan error
}

func openPinned(ctx context.Context, read readFunc, backend string) *pinned {
	p := &pinned{gate: make(chan struct{}), ready: make(chan error, 1), jobs: make(chan func(engine.Querier) error),
		errs: make(chan error), done: make(chan error, 1)}
	go func() {
		p.done <- read(engine.LongRead(ctx), func(q engine.Querier) (err error) {
			select {
			case <-p.gate:
			case <-ctx.Done():
				p.ready <- ctx.Err()
				return ctx.Err()
			}
			if _, err := q.Exec(beginSnapshot(backend)); err != nil {
				p.ready <- err
				return err
			}
			defer func() {
				if _, cerr := q.Exec("COMMIT"); cerr != nil && err == nil {
					err = cerr
				}
			}()
			// The first read fixes the snapshot (SQLite, PostgreSQL).
			var n int64
			if err := q.QueryRow("SELECT count(*) FROM settings").Scan(&n); err != nil {
				p.ready <- err
				return err
			}
			p.ready <- nil
			for job := range p.jobs {
				p.errs <- job(q)
			}
			return nil
		})
		select { // for a begin still waiting, if the read failed early
		case p.ready <- fmt.Errorf("snapshot read ended: %w", engine.ErrUnavailable):
		default:
		}
	}()
	return p
}

// readFunc runs fn on a read connection (engine.Shard.Read).
type readFunc func(ctx context.Context, fn engine.ReadFunc) error

// begin starts the snapshot and waits (at most timeout) until it is fixed.
func (p *pinned) begin(timeout time.Duration) error {
	p.gateOnce.Do(func() { close(p.gate) })
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-p.ready:
		return err
	case <-t.C:
		return fmt.Errorf("snapshot not begun within %v: %w", timeout, engine.ErrBusy)
	}
}

// do runs fn in the snapshot; only after begin succeeded.
func (p *pinned) do(fn func(engine.Querier) error) error {
	p.jobs <- fn
	return <-p.errs
}

// snap adapts do to copier.snap.
func (p *pinned) snap(ctx context.Context, fn func(engine.Querier) error) error { return p.do(fn) }

// close ends the transaction and returns the read's error.
func (p *pinned) close() error {
	p.gateOnce.Do(func() { close(p.gate) })
	close(p.jobs)
	return <-p.done
}

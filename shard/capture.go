package shard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// Stmt is one statement a committed write operation ran through Exec, with
// the number of rows it changed.
type Stmt struct {
	SQL     string
	Args    []any
	Changed int64
}

// Capture is the log of statements committed on a shard since a point in
// its history, for a move to replay on a copy taken at that point. Only
// Exec calls are captured: write operations must not change rows through
// Query or QueryRow (no INSERT … RETURNING).
type Capture struct {
	limit int

	mu       sync.Mutex // guards the fields below
	stmts    []Stmt
	overflow bool
}

// Take removes and returns the statements captured so far, in commit order.
// It returns an error wrapping engine.ErrOverloaded if more than the
// capture's limit piled up (the statements are then lost; start over).
func (c *Capture) Take() ([]Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overflow {
		return nil, fmt.Errorf("more than %d statements captured: %w", c.limit, engine.ErrOverloaded)
	}
	out := c.stmts
	c.stmts = nil
	return out, nil
}

// Len returns the number of statements waiting to be taken.
func (c *Capture) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.stmts)
}

func (c *Capture) add(stmts []Stmt) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.overflow || len(stmts) == 0 {
		return
	}
	if len(c.stmts)+len(stmts) > c.limit {
		c.overflow, c.stmts = true, nil
		return
	}
	c.stmts = append(c.stmts, stmts...)
}

// StartCapture makes the writer capture every statement committed from now
// on. Between two batches (everything before is committed, nothing after
// has begun) the writer calls atPoint, which must return quickly (within
// a few seconds): a move starts its snapshot read there, so that the
// snapshot plus the captured statements are the whole history. limit
// bounds the statements held. Only one capture runs at a time.
func (s *Shard) StartCapture(ctx context.Context, limit int, atPoint func() error) (*Capture, error) {
	c := &Capture{limit: limit}
	var pointErr error
	done := make(chan struct{})
	r := s.control(func() {
		defer close(done)
		if s.capture != nil {
			pointErr = fmt.Errorf("a capture is already running: %w", engine.ErrConflict)
			return
		}
		if pointErr = atPoint(); pointErr == nil {
			s.capture = c
		}
	})
	if err := s.enqueueControl(ctx, r); err != nil {
		return nil, err
	}
	select {
	case <-done:
		if pointErr != nil {
			return nil, pointErr
		}
		return c, nil
	case <-ctx.Done():
		// The point may still run: stop a capture it starts.
		go func() {
			<-done
			if pointErr == nil {
				s.StopCapture(c)
			}
		}()
		return nil, ctx.Err()
	}
}

// StopCapture ends capture c, if it is still the running one, and waits
// (at most a few seconds) for the writer to have stopped it.
func (s *Shard) StopCapture(c *Capture) {
	done := make(chan struct{})
	r := s.control(func() {
		defer close(done)
		if s.capture == c {
			s.capture = nil
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s.enqueueControl(ctx, r) == nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// control returns a request that runs f in the writer goroutine between
// two batches; its (empty) operation's reply is not awaited.
func (s *Shard) control(f func()) *request {
	return &request{ctx: context.Background(), op: func(engine.Querier) error { return nil }, reply: make(chan error, 1), ctl: f}
}

// controls returns the control functions of a batch's requests.
func controls(reqs []*request) []func() {
	var fs []func()
	for _, r := range reqs {
		if r.ctl != nil {
			fs = append(fs, r.ctl)
		}
	}
	return fs
}

// enqueueControl queues a request that is not a caller's write: it passes
// fences and waits for room in the queue.
func (s *Shard) enqueueControl(ctx context.Context, r *request) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return engine.ErrClosed
	}
	select {
	case s.queue <- r:
		queueDepth.Inc()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recorder is the Querier an operation gets while a capture runs.
type recorder struct {
	engine.Querier
	stmts []Stmt
}

func (r *recorder) Exec(query string, args ...any) (int64, error) {
	n, err := r.Querier.Exec(query, args...)
	if err == nil {
		a := make([]any, len(args))
		for i, v := range args {
			if b, ok := v.([]byte); ok {
				v = append([]byte(nil), b...)
			}
			a[i] = v
		}
		r.stmts = append(r.stmts, Stmt{SQL: query, Args: a, Changed: n})
	}
	return n, err
}

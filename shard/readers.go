package shard

import (
	"context"
	"fmt"
	"sync"

	"github.com/keyshard/keyshard/engine"
)

// readerPool holds up to max read connections, opened on first need.
type readerPool struct {
	conns Conns
	idle  chan ReadConn // connections not in use
	slots chan struct{} // one token per open connection

	mu     sync.Mutex // guards closed
	closed bool
}

func newReaderPool(conns Conns, max int) *readerPool {
	return &readerPool{conns: conns, idle: make(chan ReadConn, max), slots: make(chan struct{}, max)}
}

func (p *readerPool) get(ctx context.Context) (ReadConn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case p.slots <- struct{}{}:
		c, err := p.conns.OpenReader(ctx)
		if err != nil {
			<-p.slots
			return nil, fmt.Errorf("open shard reader: %w: %w", err, engine.ErrUnavailable)
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *readerPool) put(c ReadConn, broken bool) {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if broken || closed {
		func() {
			defer func() { _ = recover() }()
			_ = c.Close()
		}()
		<-p.slots
		return
	}
	p.idle <- c // never blocks: at most cap(slots) connections exist
}

func (p *readerPool) open() int { return len(p.slots) }

// close closes the idle connections; the shard guarantees none is in use.
func (p *readerPool) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	var first error
	for {
		select {
		case c := <-p.idle:
			if err := c.Close(); err != nil && first == nil {
				first = err
			}
			<-p.slots
		default:
			return first
		}
	}
}

// States of a read queued for the writer.
const (
	readQueued int32 = iota
	readRunning
	readAbandoned
)

// readOnWriter runs fn on the writer's connection, between batches. done is
// false when the writer could not take it (queue full, fenced): the caller
// reads on a reader instead.
func (s *Shard) readOnWriter(ctx context.Context, fn engine.ReadFunc) (err error, done bool) {
	if s.fence.state.Load() != fenceNone {
		return nil, false
	}
	reply := replyPool.Get().(chan error)
	r := &request{ctx: ctx, read: fn, reply: reply}
	select {
	case s.queue <- r:
		queueDepth.Inc()
	default:
		replyPool.Put(reply)
		return nil, false
	}
	select {
	case err := <-reply:
		replyPool.Put(reply)
		return err, true
	case <-ctx.Done():
		if r.state.CompareAndSwap(readQueued, readAbandoned) {
			return ctx.Err(), true // the writer will skip it
		}
		// Running: fn uses the caller's variables until it returns.
		err := <-reply
		replyPool.Put(reply)
		return err, true
	}
}

// runReads runs the reads among reqs (autocommit, before the batch's
// transaction: they see what is committed) and returns the writes.
func (s *Shard) runReads(reqs []*request) []*request {
	writes := reqs[:0]
	for _, r := range reqs {
		if r.read == nil {
			writes = append(writes, r)
			continue
		}
		if !r.state.CompareAndSwap(readQueued, readRunning) {
			continue // the caller left; nobody reads the reply
		}
		r.reply <- s.runRead(r.read)
	}
	return writes
}

func (s *Shard) runRead(fn engine.ReadFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			// The driver panics on out-of-memory: this connection is suspect.
			s.discardConn()
			err = fmt.Errorf("shard reader panic: %v: %w", p, engine.ErrUnavailable)
		}
	}()
	if err := s.ensureConn(); err != nil {
		return err
	}
	// A read must leave the writer's connection as it found it: no
	// transaction open (reads that open one are LongRead and never come here).
	err = fn(s.conn)
	_ = s.conn.Rollback()
	return err
}

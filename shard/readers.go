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

package shard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// Shard is one open tenant database: a single writer goroutine owning the
// only write connection, a pool of read connections and a buffer of
// fire-and-forget records. All methods are safe for concurrent use.
type Shard struct {
	conns Conns
	opts  Options

	queue chan *request
	stop  chan struct{}
	wg    sync.WaitGroup

	mu     sync.RWMutex // guards closed; held shared while enqueueing or reading
	closed bool

	closeOnce sync.Once
	closeErr  error

	readers *readerPool
	flusher *flusher     // pipelined durability when the connection is a Syncer; see durable.go
	syncer  atomic.Value // the current connection's Syncer (the writer may reopen it)
	deferred
	fence fence // a move's stop on writes; see fence.go

	// Owned by the writer goroutine.
	conn     WriteConn
	batch    []*request
	flushErr error    // the final flush's failure, reported by Close
	capture  *Capture // statements of committed batches go here; see capture.go
	captured []Stmt   // the current batch's statements, for capture

	gen       atomic.Uint64 // see Generation
	fencedOut atomic.Bool   // a batch found another node's fencing token: see checkFence

	// writerReads: the backend's writer connection also serves reads
	// (ReadingWriter): a shard without a reader connection reads on it
	// until two reads overlap, so a cold shard opens one connection, not
	// two. writerReading is set while such a read is queued or running.
	writerReads   bool
	writerReading atomic.Bool
	busy          atomic.Bool // the writer is running (or about to run) a batch

	stats struct {
		batches, writes, failed, maxBatch atomic.Int64
		overloaded, busy, panics          atomic.Int64
		deferredWritten, deferredDropped  atomic.Int64
	}
}

var _ engine.Shard = (*Shard)(nil)

type request struct {
	ctx   context.Context
	op    engine.WriteFunc
	reply chan error // buffered: the writer never blocks on a caller who left

	flushAll bool   // a fence's barrier: its batch writes every deferred record
	ctl      func() // run by the writer after this request's batch (capture.go)

	read  engine.ReadFunc // a read on the writer's connection (readOnWriter)
	state atomic.Int32    // of a read: readQueued, readRunning, readAbandoned
}

var replyPool = sync.Pool{New: func() any { return make(chan error, 1) }}

// Open opens the shard's write connection and starts its writer. The caller
// must Close the shard.
func Open(ctx context.Context, conns Conns, opts Options) (*Shard, error) {
	opts = opts.withDefaults()
	conn, err := conns.OpenWriter(ctx)
	if err != nil {
		return nil, err
	}
	s := &Shard{
		conns:   conns,
		opts:    opts,
		queue:   make(chan *request, opts.QueueSize),
		stop:    make(chan struct{}),
		readers: newReaderPool(conns, opts.Readers),
		conn:    conn,
		batch:   make([]*request, 0, opts.MaxBatch),
	}
	s.deferred.init(opts)
	s.gen.Store(generations.Add(1))
	if _, ok := conn.(ReadingWriter); ok {
		s.writerReads = true
	}
	if sy, ok := conn.(Syncer); ok {
		s.syncer.Store(sy)
		s.flusher = newFlusher(func() error { return s.syncer.Load().(Syncer).Sync() })
	}
	s.wg.Add(1)
	go s.run()
	return s, nil
}

// Write queues op for the writer and waits until its batch committed or
// failed. See engine.Shard.
func (s *Shard) Write(ctx context.Context, op engine.WriteFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.awaitFence(ctx); err != nil {
		return err
	}
	reply := replyPool.Get().(chan error)
	r := &request{ctx: ctx, op: op, reply: reply}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		replyPool.Put(reply)
		return engine.ErrClosed
	}
	if err := s.fenceErr(); err != nil { // fenced again since awaitFence
		s.mu.RUnlock()
		replyPool.Put(reply)
		return err
	}
	select {
	case s.queue <- r:
		queueDepth.Inc()
	default:
		s.mu.RUnlock()
		replyPool.Put(reply)
		s.stats.overloaded.Add(1)
		rejections.WithLabelValues("overloaded").Inc()
		return fmt.Errorf("shard writer queue full (%d): %w", s.opts.QueueSize, engine.ErrOverloaded)
	}
	s.mu.RUnlock()
	select {
	case err := <-reply:
		replyPool.Put(reply) // drained: safe to reuse
		return err
	case <-ctx.Done():
		// The reply channel may still receive; it is dropped, not reused.
		return ctx.Err()
	}
}

// Read runs fn on a read-only connection. It never waits for the writer; it
// waits for a free read connection only as long as ctx allows.
func (s *Shard) Read(ctx context.Context, fn engine.ReadFunc) (err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return engine.ErrClosed
	}
	// Only an idle writer takes a read: reads never wait for writes.
	if s.writerReads && s.readers.open() == 0 && !s.busy.Load() && len(s.queue) == 0 && !engine.IsLongRead(ctx) &&
		s.writerReading.CompareAndSwap(false, true) {
		err, done := s.readOnWriter(ctx, fn)
		s.writerReading.Store(false)
		if done {
			return err
		}
	}
	c, err := s.readers.get(ctx)
	if err != nil {
		return err
	}
	sc, scoped := c.(ScopedReadConn)
	if scoped {
		if err := sc.Acquire(ctx); err != nil {
			s.readers.put(c, false)
			return err
		}
	}
	broken := false
	defer func() {
		if p := recover(); p != nil {
			// The driver panics on out-of-memory: this connection is suspect.
			broken = true
			err = fmt.Errorf("shard reader panic: %v: %w", p, engine.ErrUnavailable)
		}
		if scoped {
			sc.Release()
		}
		s.readers.put(c, broken)
	}()
	return fn(c)
}

// Defer buffers a fire-and-forget record. See engine.Shard.
func (s *Shard) Defer(key string, op engine.WriteFunc) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return engine.ErrClosed
	}
	if s.fence.state.Load() == fenceSealed {
		return engine.ErrMoving
	}
	if err := s.deferred.add(key, op, time.Now()); err != nil {
		s.stats.deferredDropped.Add(1)
		rejections.WithLabelValues("deferred_full").Inc()
		return err
	}
	return nil
}

// Close stops accepting work, commits everything queued and buffered (the
// debounce interval does not hold records back at close), closes the read
// connections and then the write connection. It is safe to call twice and
// returns the first error.
func (s *Shard) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock() // waits for in-flight reads and enqueues
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		s.wg.Wait()
		err := s.flushErr
		if rerr := s.readers.close(); err == nil {
			err = rerr
		}
		if s.conn != nil {
			if cerr := s.conn.Close(); err == nil {
				err = cerr
			}
			s.conn = nil
		}
		s.closeErr = err
	})
	return s.closeErr
}

// Stats is a snapshot of a shard's counters.
type Stats struct {
	Batches         int64 // committed or failed transactions
	Writes          int64 // operations committed
	Failed          int64 // operations that returned an error or whose batch failed
	MaxBatch        int64 // most operations seen in one transaction
	Overloaded      int64 // writes refused because the queue was full
	Busy            int64 // batches refused because the lock was not obtained
	Panics          int64 // writer panics recovered
	DeferredWritten int64
	DeferredDropped int64
	DeferredPending int
	Readers         int  // read connections open
	Queued          int  // operations waiting for the writer
	Writing         bool // the writer is running a batch now (a read then opens a reader)
}

// Stats returns a snapshot of the shard's counters.
func (s *Shard) Stats() Stats {
	return Stats{
		Batches:         s.stats.batches.Load(),
		Writes:          s.stats.writes.Load(),
		Failed:          s.stats.failed.Load(),
		MaxBatch:        s.stats.maxBatch.Load(),
		Overloaded:      s.stats.overloaded.Load(),
		Busy:            s.stats.busy.Load(),
		Panics:          s.stats.panics.Load(),
		DeferredWritten: s.stats.deferredWritten.Load(),
		DeferredDropped: s.stats.deferredDropped.Load(),
		DeferredPending: s.deferred.pending(),
		Readers:         s.readers.open(),
		Queued:          len(s.queue),
		Writing:         s.busy.Load(),
	}
}

var errWriterPanic = errors.New("shard writer panic")

// generations numbers the states of every shard of the process.
var generations atomic.Uint64

// Generation implements engine.Generational: it changes after every batch
// the writer ran (committed or not) and at every opening. Only a backend
// whose database this process alone writes (a SQLite file: ReadingWriter)
// has one; a server backend's schema may be written by another node.
func (s *Shard) Generation() (uint64, bool) {
	if !s.writerReads {
		return 0, false
	}
	return s.gen.Load(), true
}

package engine

import "context"

// Querier runs SQL against one connection of a tenant's shard. Placeholders
// are '?'. A Querier is used by one goroutine at a time and must not be kept
// after the function it was handed to returns.
//
// Arguments may be nil, bool, int, int64, float64, string, []byte, or a
// driver.Valuer. Scan destinations may be *string, *int64, *int, *bool,
// *float64, *[]byte, *any, a pointer to any of those pointers (NULL sets
// nil), or an sql.Scanner.
type Querier interface {
	// Exec runs a statement and returns the number of rows it changed.
	// A unique-constraint violation returns an error wrapping ErrConflict.
	Exec(query string, args ...any) (int64, error)
	// Query runs a statement returning rows; the caller must Close them.
	Query(query string, args ...any) (Rows, error)
	// QueryRow runs a statement and scans its first row; Scan returns
	// ErrNoRows when there is none.
	QueryRow(query string, args ...any) Row
}

// Rows iterates over a query's result.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// Row is the result of QueryRow.
type Row interface {
	Scan(dest ...any) error
}

// WriteFunc is one write operation, run by the shard's writer inside the
// batch transaction. Returning an error rolls back this operation alone; the
// error is handed to the caller. It must not retain tx. It may run more than
// once: when another operation of its batch fails, the batch is rolled back
// and run again without that one, so only the last run's effects (in the
// database and in variables it sets) count; it must not accumulate state
// across runs.
type WriteFunc func(tx Querier) error

// ReadFunc runs on a read-only connection of the shard.
type ReadFunc func(q Querier) error

// Shard is one open tenant database as the engine sees it. All methods are
// safe for concurrent use.
type Shard interface {
	// Write queues op for the shard's single writer and waits until the batch
	// holding it has committed (the write is on disk) or failed. A full queue
	// answers ErrOverloaded at once; a lock not obtained in time, ErrBusy; a
	// closed shard, ErrClosed. If ctx ends first, Write returns ctx.Err() and
	// the operation may still commit.
	Write(ctx context.Context, op WriteFunc) error
	// Read runs fn on a read-only connection; it never waits for the writer.
	Read(ctx context.Context, fn ReadFunc) error
	// Defer buffers a fire-and-forget write (an audit event with no write of
	// its own, a debounced update). It rides in the next batch, or is flushed
	// within a second, and always on close. When key is not empty, a pending
	// record with the same key is replaced, and a key is written at most once
	// per debounce interval. A full buffer answers ErrOverloaded.
	Defer(key string, op WriteFunc) error
}

// Durable is a Shard whose commits can be read before they are durable
// (pipelined durability, shard.Syncer): WaitDurable returns once every
// write it committed before the call is on disk.
type Durable interface {
	WaitDurable(ctx context.Context) error
}

// WaitDurable waits until s's commits so far are durable; it returns at
// once for a shard whose commits are durable when they return.
func WaitDurable(ctx context.Context, s Shard) error {
	if ts, ok := s.(*TenantShard); ok {
		s = ts.ShardHandle
	}
	if d, ok := s.(Durable); ok {
		return d.WaitDurable(ctx)
	}
	return nil
}

// Generational is a Shard that may say when its data may have changed:
// Generation returns a number that changes after every batch its writer
// ran and differs between two openings of a shard (numbers are drawn from
// one counter per process). A value read from the shard after Generation
// returned g is current for as long as Generation still returns g; the
// writer moves it only once a commit is visible to reads. ok is false when
// the shard cannot know: a database on a server that other processes (other
// Keyshard nodes) may write.
type Generational interface {
	Generation() (gen uint64, ok bool)
}

// GenerationOf returns s's generation when it has one (see Generational),
// looking through a TenantShard to its shard.
func GenerationOf(s Shard) (uint64, bool) {
	if ts, ok := s.(*TenantShard); ok {
		s = ts.ShardHandle
	}
	if g, ok := s.(Generational); ok {
		return g.Generation()
	}
	return 0, false
}

type longReadKey struct{}

// LongRead marks ctx for reads that may run long or wait on other work of
// the same shard (exports, snapshots, a move's copy): a shard never runs
// them on its writer's connection (see shard.ReadingWriter), where they
// would hold up its writes, or wait for themselves.
func LongRead(ctx context.Context) context.Context {
	return context.WithValue(ctx, longReadKey{}, true)
}

// IsLongRead reports whether ctx was marked by LongRead.
func IsLongRead(ctx context.Context) bool {
	v, _ := ctx.Value(longReadKey{}).(bool)
	return v
}

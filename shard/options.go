package shard

import "time"

// Options bound a shard's queues and buffers. Zero fields take the defaults.
type Options struct {
	// QueueSize bounds the writer queue; a full queue answers ErrOverloaded.
	QueueSize int
	// MaxBatch bounds the operations committed in one transaction.
	MaxBatch int
	// Readers bounds the read connections, opened lazily.
	Readers int
	// DeferLimit bounds the buffered fire-and-forget records.
	DeferLimit int
	// FlushInterval is the longest a buffered record waits when no write
	// comes to carry it.
	FlushInterval time.Duration
	// DebounceInterval is the least time between two writes of records with
	// the same key (last-seen updates).
	DebounceInterval time.Duration

	// Fenced makes every batch read the tenant's fencing token (the fence
	// table) inside its own transaction, with FenceQuery, and compare it
	// with Epoch, the placement's epoch the shard was opened for: above
	// it, another node owns the tenant now and the batch fails with
	// engine.ErrFenced, as does every later write of this shard; below
	// it, the batch raises the token to Epoch (the new owner's first
	// batch fences the old). Set for nodes sharing a catalog.
	Fenced bool
	// FenceQuery reads the token, taking a shared row lock on backends
	// that have them (FOR SHARE), so that raising it waits for batches
	// that read the old value; the backend sets it, and Epoch.
	FenceQuery string
	Epoch      int64
	TenantID   string
	// OnFenced, when set, is called (on a goroutine of its own) with
	// TenantID when a batch finds the tenant fenced: the catalog this node
	// holds is stale, and this shard of the tenant is good for nothing.
	OnFenced func(tenantID string, epoch int64)
}

// DefaultFenceQuery reads the fencing token where the batch's transaction
// already holds the database's write lock (SQLite's BEGIN IMMEDIATE).
const DefaultFenceQuery = `SELECT epoch FROM fence WHERE id = 1`

// Defaults for Options.
const (
	DefaultQueueSize        = 1024
	DefaultMaxBatch         = 512
	DefaultReaders          = 2
	DefaultDeferLimit       = 4096
	DefaultFlushInterval    = time.Second
	DefaultDebounceInterval = 5 * time.Minute
)

func (o Options) withDefaults() Options {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Readers <= 0 {
		o.Readers = DefaultReaders
	}
	if o.DeferLimit <= 0 {
		o.DeferLimit = DefaultDeferLimit
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.DebounceInterval <= 0 {
		o.DebounceInterval = DefaultDebounceInterval
	}
	return o
}

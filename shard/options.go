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
}

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

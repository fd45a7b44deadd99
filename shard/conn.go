// Package shard runs one tenant's database: a single writer goroutine that
// group-commits queued operations, a lazily opened pool of read connections,
// a bounded buffer of fire-and-forget records, and the cache of open
// shards. Backends (shard/sqlite, ...) supply the connections.
package shard

import (
	"context"

	"github.com/keyshard/keyshard/engine"
)

// WriteConn is a backend's write connection. Only the shard's writer
// goroutine uses it, never two goroutines at once.
type WriteConn interface {
	engine.Querier
	// Begin starts the batch's write transaction (BEGIN IMMEDIATE on
	// SQLite). It returns an error wrapping engine.ErrBusy when the database
	// lock was not obtained within the busy timeout.
	Begin() error
	// Savepoint opens the savepoint around one operation.
	Savepoint() error
	// ReleaseSavepoint keeps the operation's changes.
	ReleaseSavepoint() error
	// RollbackSavepoint undoes the operation's changes and closes the savepoint.
	RollbackSavepoint() error
	// Commit commits the batch; when it returns nil the batch is durable to
	// the shard's configured level.
	Commit() error
	// Rollback abandons the batch; it is safe to call with no transaction open.
	Rollback() error
	// Close closes the connection.
	Close() error
}

// Discarder is a WriteConn that can be thrown away rather than closed: the
// writer discards its connection after a panic, and one kept for reuse
// (SQLite's, shard/sqlite/hosts.go) must then not be kept.
type Discarder interface {
	Discard() error
}

// ReadingWriter is a WriteConn that may also run reads between batches on
// the writer goroutine (SQLite: a connection of its own, whose open costs
// as much as the shard's other work on a cold tenant). A server backend's
// writer holds a pooled session and does not offer it.
type ReadingWriter interface {
	WriteConn
	ServesReads()
}

// ReadConn is a backend's read-only connection, used by one goroutine at a time.
type ReadConn interface {
	engine.Querier
	Close() error
}

// ScopedReadConn is a ReadConn that holds a server's pooled connection only
// while in use (PostgreSQL, MySQL): Read calls Acquire before the read
// function and Release after it.
type ScopedReadConn interface {
	ReadConn
	Acquire(ctx context.Context) error
	Release()
}

// Conns opens the connections of one shard.
type Conns interface {
	// OpenWriter opens the write connection, with the schema brought up to
	// date. It is called once at open and again after a writer panic.
	OpenWriter(ctx context.Context) (WriteConn, error)
	// OpenReader opens one read-only connection.
	OpenReader(ctx context.Context) (ReadConn, error)
}

package shard

import (
	"context"
	"fmt"

	"github.com/keyshard/keyshard/engine"
)

// Storage is a backend as the shard cache and transfer use it: it creates
// and destroys tenants' databases (engine.Storage) and opens their shards.
// Implementations are safe for concurrent use.
type Storage interface {
	engine.Storage
	// Open opens the existing shard at p outside any cache, its schema
	// brought up to date (migrations.ErrSchemaTooNew if it is newer than
	// this binary). The caller must Close it.
	Open(ctx context.Context, p engine.Placement) (*Shard, error)
}

// Backends are the configured backends by name (engine.BackendSQLite, …).
type Backends map[string]Storage

// Open opens the shard at p on the backend p names; a backend that is not
// configured answers engine.ErrUnavailable.
func (b Backends) Open(ctx context.Context, p engine.Placement) (*Shard, error) {
	st, ok := b[p.Backend]
	if !ok {
		return nil, fmt.Errorf("backend %q not configured: %w", p.Backend, engine.ErrUnavailable)
	}
	return st.Open(ctx, p)
}

// Storages returns the same backends as the engine sees them.
func (b Backends) Storages() map[string]engine.Storage {
	out := make(map[string]engine.Storage, len(b))
	for name, st := range b {
		out[name] = st
	}
	return out
}

// The optional abilities below are found on a Storage by type assertion.

// FileStore is a Storage whose databases are single files in the export
// format (SQLite): export and import stage every tenant in such a file,
// whatever the tenant's own backend.
type FileStore interface {
	// OpenFile opens the database file at path as a shard outside any
	// cache, created with the current schema unless mustExist, an older
	// schema migrated. It is a scratch file: its commits need not survive
	// a power loss. The caller must Close it.
	OpenFile(ctx context.Context, path string, mustExist bool) (*Shard, error)
	// SnapshotFile writes a consistent copy of src (a shard of this
	// backend) into a new file at path while writes go on, faster than a
	// copy row by row.
	SnapshotFile(ctx context.Context, src engine.Shard, path string) error
}

// DirectReader is a Storage that can read a database on a connection of
// its own, outside any open shard: a move verifies a copy that way without
// opening a shard whose close would checkpoint under the new writer.
type DirectReader interface {
	ReadDirect(ctx context.Context, p engine.Placement, fn engine.ReadFunc) error
}

// Locator is a Storage whose placements name a location a client chooses
// (a directory for SQLite): it puts one into the catalog's form, "" for
// the backend's default.
type Locator interface {
	NormalizeLocation(loc string) (string, error)
}

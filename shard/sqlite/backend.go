package sqlite

import (
	"context"
	"fmt"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// Backend places tenants as SQLite files under a data directory (or under
// the directory a placement's Location names, for tenants moved to another
// disk). It implements engine.Storage and opens shards for the cache.
type Backend struct {
	DataDir   string
	Options   Options
	ShardOpts shard.Options
}

var _ engine.Storage = (*Backend)(nil)

// Path returns the shard file of placement p.
func (b *Backend) Path(p engine.Placement) (string, error) {
	root := b.DataDir
	if p.Location != "" {
		root = p.Location
	}
	return Path(root, p.TenantID)
}

// Create creates the shard file with the current schema.
func (b *Backend) Create(ctx context.Context, p engine.Placement) error {
	path, err := b.Path(p)
	if err != nil {
		return err
	}
	o := b.Options
	o.MustExist = false
	s, err := Open(ctx, path, o, b.ShardOpts)
	if err != nil {
		return err
	}
	return s.Close()
}

// Destroy deletes the shard file; the shard must be closed.
func (b *Backend) Destroy(ctx context.Context, p engine.Placement) error {
	path, err := b.Path(p)
	if err != nil {
		return err
	}
	if err := Remove(path); err != nil {
		return fmt.Errorf("remove shard: %w", err)
	}
	return nil
}

// Open opens an existing shard, migrating it if its schema is older.
func (b *Backend) Open(ctx context.Context, p engine.Placement) (*shard.Shard, error) {
	path, err := b.Path(p)
	if err != nil {
		return nil, err
	}
	o := b.Options
	o.MustExist = true
	return Open(ctx, path, o, b.ShardOpts)
}

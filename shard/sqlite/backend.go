package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// Backend places tenants as SQLite files under a data directory (or under
// the directory a placement's Location names, for tenants moved to another
// disk). It is a shard.Storage with every optional ability: its files are
// the export format (FileStore), it reads a file outside any shard
// (DirectReader), and its locations are directories (Locator).
type Backend struct {
	DataDir   string
	Options   Options
	ShardOpts shard.Options

	tmplMu sync.Mutex
	tmpl   []byte // an empty shard at the current schema; see template

	seedMu sync.Mutex
	seed   *seeder // see CreateSeeded
}

var (
	_ shard.Storage      = (*Backend)(nil)
	_ shard.FileStore    = (*Backend)(nil)
	_ shard.DirectReader = (*Backend)(nil)
	_ shard.Locator      = (*Backend)(nil)
	_ engine.Seeder      = (*Backend)(nil)
)

// Path returns the shard file of placement p.
func (b *Backend) Path(p engine.Placement) (string, error) {
	root := b.DataDir
	if p.Location != "" {
		root = p.Location
	}
	return Path(root, p.TenantID)
}

// Create creates the shard file with the current schema: a copy of an
// empty shard made once per process (running every migration's DDL on
// each new tenant cost ≈ 10 ms of CPU), written under a temporary name,
// synced and renamed into place. A file already there is opened and
// migrated instead.
func (b *Backend) Create(ctx context.Context, p engine.Placement) error {
	path, err := b.Path(p)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := removeOrphans(path); err != nil {
			return fmt.Errorf("create shard: %w: %w", err, engine.ErrUnavailable)
		}
		if tmpl, err := b.template(ctx); err == nil {
			if err := writeNewFile(path, tmpl); !errors.Is(err, os.ErrExist) {
				return err
			}
		}
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
	so := b.ShardOpts
	so.Epoch, so.TenantID = p.Epoch, p.TenantID
	return Open(ctx, path, o, so)
}

// OpenFile opens a scratch shard file (synchronous NORMAL), as export and
// import stage tenants.
func (b *Backend) OpenFile(ctx context.Context, path string, mustExist bool) (*shard.Shard, error) {
	return Open(ctx, path, Options{Synchronous: "NORMAL", MustExist: mustExist}, shard.Options{})
}

// SnapshotFile writes a consistent copy of src to path with VACUUM INTO on
// one of its read connections: one read transaction, while writes go on.
func (b *Backend) SnapshotFile(ctx context.Context, src engine.Shard, path string) error {
	return src.Read(engine.LongRead(ctx), func(q engine.Querier) error {
		_, err := q.Exec("VACUUM INTO ?", path)
		return err
	})
}

// ReadDirect runs fn on a read-only connection of its own to p's file:
// closing a shard would checkpoint its WAL, holding up a new writer.
func (b *Backend) ReadDirect(ctx context.Context, p engine.Placement, fn engine.ReadFunc) error {
	path, err := b.Path(p)
	if err != nil {
		return err
	}
	conns, err := NewConns(path, b.Options)
	if err != nil {
		return err
	}
	rc, err := conns.OpenReader(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	return fn(rc)
}

// NormalizeLocation turns a directory into an absolute path, or "" for the
// backend's own data directory.
func (b *Backend) NormalizeLocation(loc string) (string, error) {
	if loc == "" {
		return "", nil
	}
	abs, err := filepath.Abs(loc)
	if err != nil {
		return "", engine.Invalidf("location %q: %v", loc, err)
	}
	if d, err := filepath.Abs(b.DataDir); err == nil && d == abs {
		return "", nil
	}
	return abs, nil
}

// RaiseFence raises the tenant's fencing token to epoch (cluster.Fencer)
// through a connection of its own: its write transaction waits, up to the
// busy timeout, for the old owner's batch holding the file's write lock.
func (b *Backend) RaiseFence(ctx context.Context, p engine.Placement, epoch int64) error {
	path, err := b.Path(p)
	if err != nil {
		return err
	}
	s, err := b.OpenFile(ctx, path, true)
	if err != nil {
		return err
	}
	err = s.Write(ctx, func(tx engine.Querier) error {
		_, err := tx.Exec(`UPDATE fence SET epoch = ? WHERE id = 1 AND epoch < ?`, epoch, epoch)
		return err
	})
	return errors.Join(err, s.Close())
}

// template returns an empty shard file at the current schema, made on
// first use by migrating a scratch file (nothing in the migrations is
// random: every tenant may start from the same bytes).
func (b *Backend) template(ctx context.Context) ([]byte, error) {
	b.tmplMu.Lock()
	defer b.tmplMu.Unlock()
	if b.tmpl != nil {
		return b.tmpl, nil
	}
	dir, err := os.MkdirTemp("", "keyshard-template-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "empty.db")
	s, err := Open(ctx, path, Options{Synchronous: "NORMAL"}, shard.Options{})
	if err != nil {
		return nil, err
	}
	if err := s.Close(); err != nil { // checkpoints: the file is whole
		return nil, err
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		return nil, fmt.Errorf("template: the WAL outlived the close")
	}
	if b.tmpl, err = os.ReadFile(path); err != nil {
		return nil, err
	}
	return b.tmpl, nil
}

// writeNewFile writes data as a new file at path: under a temporary name
// in the same directory, synced, linked into place (an error wrapping
// os.ErrExist if a file is there), the directory synced.
func writeNewFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
	}
	f, err := os.CreateTemp(dir, ".new-*")
	if err != nil {
		return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, path) // never over a file that appeared meanwhile
	}
	_ = os.Remove(tmp)
	if errors.Is(err, os.ErrExist) {
		return err
	}
	if err != nil {
		return fmt.Errorf("create shard: %w: %w", err, engine.ErrUnavailable)
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		_ = d.Close()
		if err != nil {
			return fmt.Errorf("create shard: sync directory: %w: %w", err, engine.ErrUnavailable)
		}
	}
	return nil
}

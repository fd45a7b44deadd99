// Package migrations holds the versioned schema of a tenant shard, one
// folder of numbered SQL files per dialect, and the runner that brings a
// shard up to date. The runner is dialect-neutral: a backend supplies a
// Target that reads and records the version.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
)

//go:embed sqlite/*.sql postgres/*.sql mysql/*.sql
var files embed.FS

// Dialects: one folder of migrations each. The export format is a SQLite
// shard file, so transfer reads and writes DialectSQLite's schema whatever
// the tenant's backend.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
	DialectMySQL    = "mysql"
)

// ErrSchemaTooNew: the shard was written by a newer Keyshard; it is left untouched.
var ErrSchemaTooNew = errors.New("shard schema is newer than this binary")

// Migration is one numbered SQL script. File names are NNNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Target is one database whose schema version is recorded in it.
type Target interface {
	// Version returns the recorded version, 0 for an empty database.
	Version(ctx context.Context) (int, error)
	// Apply runs m.SQL and records m.Version in one transaction.
	Apply(ctx context.Context, m Migration) error
}

// Batcher is a Target that can apply several migrations in one
// transaction (a database whose DDL is transactional: SQLite).
type Batcher interface {
	// ApplyAll applies, in order and all or none, those of ms newer than
	// the database's version, and records the last.
	ApplyAll(ctx context.Context, ms []Migration) error
}

var (
	cacheMu sync.Mutex
	cache   = map[string][]Migration{}
)

// List returns the migrations of a dialect in version order.
func List(dialect string) ([]Migration, error) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if ms, ok := cache[dialect]; ok {
		return ms, nil
	}
	entries, err := fs.ReadDir(files, dialect)
	if err != nil {
		return nil, fmt.Errorf("migrations for dialect %q: %w", dialect, err)
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", name)
		}
		b, err := files.ReadFile(path.Join(dialect, name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: rest, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migrations for %s: version %d missing", dialect, i+1)
		}
	}
	cache[dialect] = ms
	return ms, nil
}

// Latest returns the newest version of a dialect's schema.
func Latest(dialect string) (int, error) {
	ms, err := List(dialect)
	if err != nil {
		return 0, err
	}
	return len(ms), nil
}

// Up applies every migration newer than t's version, in order, and returns
// how many it applied. A database newer than the binary returns
// ErrSchemaTooNew and is not changed. Running Up twice is a no-op.
func Up(ctx context.Context, t Target, dialect string) (int, error) {
	ms, err := List(dialect)
	if err != nil {
		return 0, err
	}
	cur, err := t.Version(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if cur > len(ms) {
		return 0, fmt.Errorf("version %d, binary knows %d: %w", cur, len(ms), ErrSchemaTooNew)
	}
	if b, ok := t.(Batcher); ok && len(ms)-cur > 1 {
		if err := b.ApplyAll(ctx, ms[cur:]); err != nil {
			return 0, err
		}
		return len(ms) - cur, nil
	}
	n := 0
	for _, m := range ms[cur:] {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if err := t.Apply(ctx, m); err != nil {
			return n, fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
		n++
	}
	return n, nil
}

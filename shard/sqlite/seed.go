package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/ext/serdes"

	"github.com/keyshard/keyshard/engine"
)

// CreateSeeded is Create with seed's rows in the new file from the start
// (engine.Seeder). A new tenant's first signing key used to cost its
// approval a second open of the new file (a Wasm instance, the schema
// parsed again) and a synced write: about half of an approval. Here seed
// runs on an in-memory copy of the empty shard kept by the backend, whose
// schema is parsed once, the copy with the rows becomes the new file, and
// the rows are deleted from the copy again (secure_delete: nothing of one
// tenant stays in the next one's free space). seed may only insert (INSERT
// INTO a table) and read. A file already there is opened, migrated and
// seeded in one write instead. When the copy cannot be made or seed fails
// on it, the file is made as Create makes it, without the rows (seeded
// false, counted by keyshard_sqlite_seed_fallbacks_total), as a database
// whose first rows fail is still a database; the caller writes them after.
func (b *Backend) CreateSeeded(ctx context.Context, p engine.Placement, seed func(engine.Querier) error) (seeded bool, _ error) {
	path, err := b.Path(p)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		data, err := b.seededImage(ctx, seed)
		if err != nil {
			seedFallbacks.Inc()
			return false, b.Create(ctx, p)
		}
		if err := writeNewFile(path, data); !errors.Is(err, os.ErrExist) {
			return err == nil, err
		}
	}
	o := b.Options
	o.MustExist = false
	s, err := Open(ctx, path, o, b.ShardOpts)
	if err != nil {
		return false, err
	}
	err = s.Write(ctx, seed)
	if cerr := s.Close(); cerr != nil {
		return false, cerr
	}
	if err != nil {
		seedFallbacks.Inc()
	}
	return err == nil, nil
}

// seeder is the backend's in-memory copy of the empty shard.
type seeder struct {
	db *sqlite3.Conn
	q  *querier
}

// seededImage returns the bytes of an empty shard with seed's rows.
func (b *Backend) seededImage(ctx context.Context, seed func(engine.Querier) error) ([]byte, error) {
	tmpl, err := b.template(ctx)
	if err != nil {
		return nil, err
	}
	b.seedMu.Lock()
	defer b.seedMu.Unlock()
	if b.seed == nil {
		db, err := sqlite3.Open(":memory:")
		if err != nil {
			return nil, err
		}
		if err := serdes.Deserialize(db, "main", tmpl); err != nil {
			_ = db.Close()
			return nil, err
		}
		if err := db.Exec(`PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON`); err != nil {
			_ = db.Close()
			return nil, err
		}
		b.seed = &seeder{db: db, q: newQuerier(db)}
	}
	s := b.seed
	rec := &insertsOnly{q: s.q, tables: map[string]bool{}}
	if err := s.db.Exec(`BEGIN IMMEDIATE`); err != nil {
		b.dropSeeder()
		return nil, err
	}
	if err := seed(rec); err != nil {
		// Not ROLLBACK: pages taken from the free list in the
		// transaction are not journaled, and would keep the failed
		// seed's bytes into the next tenants' files.
		b.dropSeeder()
		return nil, err
	}
	if err := s.db.Exec(`COMMIT`); err != nil {
		b.dropSeeder()
		return nil, err
	}
	data, err := serdes.Serialize(s.db, "main")
	// The copy goes back to empty, or is dropped and made again.
	if uerr := s.clear(rec.tables); uerr != nil {
		b.dropSeeder()
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

// clear deletes every row of tables, and their AUTOINCREMENT counters.
func (s *seeder) clear(tables map[string]bool) error {
	if err := s.db.Exec(`BEGIN IMMEDIATE`); err != nil {
		return err
	}
	for t := range tables {
		if _, err := s.q.Exec(`DELETE FROM "` + t + `"`); err != nil {
			_ = s.db.Exec(`ROLLBACK`)
			return err
		}
		if _, err := s.q.Exec(`DELETE FROM sqlite_sequence WHERE name = ? COLLATE NOCASE`, t); err != nil && !isNoSuchTable(err) {
			_ = s.db.Exec(`ROLLBACK`)
			return err
		}
	}
	return s.db.Exec(`COMMIT`)
}

func isNoSuchTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such table")
}

// dropSeeder closes the in-memory copy; the next seeding makes it again.
// With b.seedMu held.
func (b *Backend) dropSeeder() {
	if b.seed != nil {
		b.seed.q.close()
		_ = b.seed.db.Close()
		b.seed = nil
	}
}

// insertRE matches the statements a seed may write with, naming the table.
var insertRE = regexp.MustCompile(`(?is)^\s*INSERT\s+(?:OR\s+\w+\s+)?INTO\s+"?([a-z_][a-z0-9_]*)"?[\s(]`)

// insertsOnly is the Querier a seed runs on: reads pass, writes must be
// inserts, whose tables it notes so that the copy can be emptied again.
type insertsOnly struct {
	q      *querier
	tables map[string]bool
}

func (r *insertsOnly) Exec(query string, args ...any) (int64, error) {
	m := insertRE.FindStringSubmatch(query)
	if m == nil {
		return 0, fmt.Errorf("a seed may only insert: %.40q", query)
	}
	r.tables[strings.ToLower(m[1])] = true
	return r.q.Exec(query, args...)
}

// selectRE matches the statements a seed may read with.
var selectRE = regexp.MustCompile(`(?is)^\s*SELECT\s`)

func (r *insertsOnly) Query(query string, args ...any) (engine.Rows, error) {
	if !selectRE.MatchString(query) {
		return nil, fmt.Errorf("a seed may only read with SELECT: %.40q", query)
	}
	return r.q.Query(query, args...)
}

func (r *insertsOnly) QueryRow(query string, args ...any) engine.Row {
	if !selectRE.MatchString(query) {
		return &row{err: fmt.Errorf("a seed may only read with SELECT: %.40q", query)}
	}
	return r.q.QueryRow(query, args...)
}

package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// New shards are copies of one empty shard at the current schema: each is
// whole (integrity_check), at the latest version, with its fence row, and
// a Create over an existing file keeps that file's data.
func TestCreate_FromTemplate(t *testing.T) {
	ctx := context.Background()
	b := &sqlite.Backend{DataDir: t.TempDir()}
	latest, err := migrations.Latest(migrations.DialectSQLite)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		p := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
		if err := b.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		s, err := b.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var version, fences, epoch int
		var ok string
		err = s.Read(ctx, func(q engine.Querier) error {
			if err := q.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
				return err
			}
			if err := q.QueryRow("SELECT count(*), max(epoch) FROM fence").Scan(&fences, &epoch); err != nil {
				return err
			}
			return q.QueryRow("PRAGMA integrity_check").Scan(&ok)
		})
		if err != nil || version != latest || fences != 1 || epoch != 0 || ok != "ok" {
			t.Fatalf("new shard %d: version %d (want %d), fence rows %d epoch %d, integrity %q, %v", i, version, latest, fences, epoch, ok, err)
		}
		if err := s.Write(ctx, func(tx engine.Querier) error {
			_, err := tx.Exec(`INSERT INTO settings (key, value) VALUES ('kept', 'yes')`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Create over an existing file opens it; it does not start over.
		if err := b.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		s, err = b.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var kept string
		err = s.Read(ctx, func(q engine.Querier) error {
			return q.QueryRow(`SELECT value FROM settings WHERE key = 'kept'`).Scan(&kept)
		})
		_ = s.Close()
		if err != nil || kept != "yes" {
			t.Fatalf("Create over an existing shard lost its data: %q, %v", kept, err)
		}
	}
}

// CreateSeeded: each new shard holds its own seed's rows and no other's,
// is whole, and keeps nothing of an earlier seed in its free space
// (secure_delete on the in-memory copy); a seed that writes other than
// inserts, or fails, leaves no file; over an existing file the seed is
// written into it.
func TestCreateSeeded(t *testing.T) {
	ctx := context.Background()
	b := &sqlite.Backend{DataDir: t.TempDir()}
	seed := func(val string) func(engine.Querier) error {
		return func(tx engine.Querier) error {
			var n int
			if err := tx.QueryRow(`SELECT count(*) FROM settings`).Scan(&n); err != nil {
				return err
			}
			if n != 0 {
				return fmt.Errorf("the copy was not empty: %d settings", n)
			}
			_, err := tx.Exec(`INSERT INTO settings (key, value) VALUES ('seeded', ?)`, val)
			return err
		}
	}
	var files [][]byte
	for i := range 3 {
		p := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
		// Shorter each time: a row written over the place of a longer,
		// deleted one leaves that one's first bytes unless they were wiped.
		val := fmt.Sprintf("secret-of-tenant-%d-%s", i, strings.Repeat("x", 300*(3-i)))
		if err := b.CreateSeeded(ctx, p, seed(val)); err != nil {
			t.Fatal(err)
		}
		path, _ := b.Path(p)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, raw)
		s, err := b.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		var ok string
		err = s.Read(ctx, func(q engine.Querier) error {
			rs, err := q.Query(`SELECT value FROM settings`)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var v string
				if err := rs.Scan(&v); err != nil {
					return err
				}
				got = append(got, v)
			}
			if err := rs.Err(); err != nil {
				return err
			}
			return q.QueryRow("PRAGMA integrity_check").Scan(&ok)
		})
		_ = s.Close()
		if err != nil || len(got) != 1 || got[0] != val || ok != "ok" {
			t.Fatalf("seeded shard %d: settings %q (want [%q]), integrity %q, %v", i, got, val, ok, err)
		}
	}
	for i, raw := range files {
		for j := range i {
			if other := fmt.Sprintf("secret-of-tenant-%d-", j); bytes.Contains(raw, []byte(other)) {
				t.Fatalf("shard %d holds bytes of tenant %d's seed", i, j)
			}
		}
	}

	// A seed that updates, or fails, creates nothing; the next is clean.
	for _, bad := range []func(engine.Querier) error{
		func(tx engine.Querier) error { _, err := tx.Exec(`UPDATE settings SET value = 'x'`); return err },
		func(tx engine.Querier) error { _, err := tx.Query(`DELETE FROM settings RETURNING key`); return err },
		func(tx engine.Querier) error {
			if _, err := tx.Exec(`INSERT INTO settings (key, value) VALUES ('half', 'done')`); err != nil {
				return err
			}
			return errors.New("seed failed")
		},
	} {
		p := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
		if err := b.CreateSeeded(ctx, p, bad); err == nil {
			t.Fatal("a bad seed was accepted")
		}
		if path, _ := b.Path(p); fileExists(path) {
			t.Fatal("a failed seed left a file")
		}
	}
	p := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if err := b.CreateSeeded(ctx, p, seed("after failures")); err != nil {
		t.Fatalf("after failed seeds: %v", err)
	}

	// Over an existing file (a retried approval): written into it.
	p = engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if err := b.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateSeeded(ctx, p, seed("into the existing file")); err != nil {
		t.Fatal(err)
	}
	s, err := b.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v string
	if err := s.Read(ctx, func(q engine.Querier) error {
		return q.QueryRow(`SELECT value FROM settings WHERE key = 'seeded'`).Scan(&v)
	}); err != nil || v != "into the existing file" {
		t.Fatalf("seed over an existing file: %q, %v", v, err)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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
		if ok, err := b.CreateSeeded(ctx, p, seed(val)); err != nil || !ok {
			t.Fatal(ok, err)
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
		var n int
		var got, ok string
		err = s.Read(ctx, func(q engine.Querier) error {
			if err := q.QueryRow(`SELECT count(*), coalesce(max(value), '') FROM settings`).Scan(&n, &got); err != nil {
				return err
			}
			return q.QueryRow("PRAGMA integrity_check").Scan(&ok)
		})
		_ = s.Close()
		if err != nil || n != 1 || got != val || ok != "ok" {
			t.Fatalf("seeded shard %d: %d settings, %q (want %q), integrity %q, %v", i, n, got, val, ok, err)
		}
	}
	for i, raw := range files {
		for j := range i {
			if other := fmt.Sprintf("secret-of-tenant-%d-", j); bytes.Contains(raw, []byte(other)) {
				t.Fatalf("shard %d holds bytes of tenant %d's seed", i, j)
			}
		}
	}

	// A seed that updates, or fails, leaves a file without its rows
	// (seeded false), and nothing of it in the next tenant's file: the
	// last one inserts a large value first, on pages that a rollback
	// would not wipe.
	leak := "FAILED-SEED-" + strings.Repeat("z", 20_000)
	// A large seed first: deleted, its pages go to the copy's free list,
	// which the failing seed then reuses without journaling them.
	big := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if ok, err := b.CreateSeeded(ctx, big, seed(strings.Repeat("b", 20_000))); err != nil || !ok {
		t.Fatal(ok, err)
	}
	for _, bad := range []func(engine.Querier) error{
		func(tx engine.Querier) error { _, err := tx.Exec(`UPDATE settings SET value = 'x'`); return err },
		func(tx engine.Querier) error { _, err := tx.Query(`DELETE FROM settings RETURNING key`); return err },
		func(tx engine.Querier) error {
			if _, err := tx.Exec(`INSERT INTO settings (key, value) VALUES ('half', ?)`, leak); err != nil {
				return err
			}
			return errors.New("seed failed")
		},
	} {
		p := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
		before := seedFallbacks(t)
		if ok, err := b.CreateSeeded(ctx, p, bad); err != nil || ok {
			t.Fatalf("a bad seed: seeded %v, %v; want a file without it", ok, err)
		}
		if got := seedFallbacks(t); got != before+1 {
			t.Fatalf("keyshard_sqlite_seed_fallbacks_total went %v → %v, want one more", before, got)
		}
		s, err := b.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = s.Read(ctx, func(q engine.Querier) error { return q.QueryRow(`SELECT count(*) FROM settings`).Scan(&n) })
		_ = s.Close()
		if err != nil || n != 0 {
			t.Fatalf("after a bad seed: %d settings, %v", n, err)
		}
	}
	p := engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if ok, err := b.CreateSeeded(ctx, p, seed("after failures")); err != nil || !ok {
		t.Fatalf("after failed seeds: %v, %v", ok, err)
	}
	path, _ := b.Path(p)
	if raw, err := os.ReadFile(path); err != nil || bytes.Contains(raw, bytes.Repeat([]byte("z"), 64)) {
		t.Fatalf("the next shard holds bytes of a failed seed (%v)", err)
	}

	// An insert into an AUTOINCREMENT table, its name spelled in another
	// case: its counter does not stay for the next tenant either.
	p = engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if ok, err := b.CreateSeeded(ctx, p, func(tx engine.Querier) error {
		_, err := tx.Exec(`INSERT INTO Audit_Log (id, action, created_at) VALUES (4242, 'seeded', 1)`)
		return err
	}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	p = engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if ok, err := b.CreateSeeded(ctx, p, seed("after an autoincrement")); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if s, err := b.Open(ctx, p); err != nil {
		t.Fatal(err)
	} else {
		var n int
		err = s.Read(ctx, func(q engine.Querier) error {
			return q.QueryRow(`SELECT count(*) FROM sqlite_sequence WHERE name = 'audit_log'`).Scan(&n)
		})
		_ = s.Close()
		if err != nil || n != 0 {
			t.Fatalf("the next shard has an audit_log counter from another's seed: %d, %v", n, err)
		}
	}

	// Over an existing file (a retried approval): written into it.
	p = engine.Placement{TenantID: engine.NewTenantID(), Backend: "sqlite", Epoch: 1}
	if err := b.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.CreateSeeded(ctx, p, seed("into the existing file")); err != nil || !ok {
		t.Fatal(ok, err)
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

// seedFallbacks reads keyshard_sqlite_seed_fallbacks_total.
func seedFallbacks(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "keyshard_sqlite_seed_fallbacks_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("keyshard_sqlite_seed_fallbacks_total is not registered")
	return 0
}

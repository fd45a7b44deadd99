package sqlite_test

import (
	"context"
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

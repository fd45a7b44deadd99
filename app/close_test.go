package app_test

import (
	"context"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
)

// A stopped server's SQLite shards are whole: the WAL a closed shard kept
// (shard/sqlite keepsWAL) is checkpointed by Close, so the database file
// alone holds every write.
func TestClose_CheckpointsKeptWALs(t *testing.T) {
	a := openApp(t, t.TempDir())
	path := approvedShard(t, a, "acme")
	// Evicted first: its close keeps the WAL, as for any cold tenant.
	writeAndEvict(t, a, "acme", "close-test", "written")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("the evicted shard's WAL: %v, %v; want the write kept in it", fi, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Fatalf("after Close the WAL holds %d bytes, want it checkpointed", fi.Size())
	}
	if !holdsWrite(t, path, "close-test") {
		t.Fatal("the database file alone lacks the write")
	}
}

// Close closes the writer connections its shards left for reuse: the next
// engine's first shard makes a new one instead of taking one kept by the
// engine before.
func TestClose_ClosesIdleHosts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	visit := func(a *app.App) {
		t.Helper()
		ts, err := a.Engine.Tenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		err = ts.Write(ctx, func(q engine.Querier) error {
			_, err := q.Exec("INSERT INTO settings (key, value) VALUES ('hosts-test', 'v') ON CONFLICT (key) DO NOTHING")
			return err
		})
		ts.Release()
		if err != nil {
			t.Fatal(err)
		}
	}
	a, err := app.Open(ctx, app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Engine.CreateTenant(ctx, "acme", "Acme", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Engine.ApproveTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	visit(a)
	if err := a.Close(); err != nil { // its writer's connection kept, then closed
		t.Fatal(err)
	}
	a, err = app.Open(ctx, app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	reused := writerConns(t, "reused")
	visit(a)
	if got := writerConns(t, "reused") - reused; got != 0 {
		t.Fatalf("the next engine's writer took a connection the engine before kept (%v), want a new one", got)
	}
}

// writerConns reads keyshard_sqlite_writer_connections_total{how}.
func writerConns(t *testing.T, how string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "keyshard_sqlite_writer_connections_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "how" && l.GetValue() == how {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("keyshard_sqlite_writer_connections_total{how=%q} is not registered", how)
	return 0
}

// A Close whose context has ended closes the shards and leaves the WALs
// they kept to the next start, so that a stop keeps its deadline
// (--shutdown-timeout): the write is in the WAL, not yet in the database
// file alone, and the next engine reads it.
func TestCloseWithin_EndedContextLeavesKeptWALs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openApp(t, dir)
	path := approvedShard(t, a, "acme")
	writeAndEvict(t, a, "acme", "within-test", "written")
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.CloseWithin(ended); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("after a Close past its deadline the WAL: %v, %v; want the write kept in it", fi, err)
	}
	if holdsWrite(t, path, "within-test") {
		t.Fatal("the database file alone holds the write: the sweep ran past its context")
	}

	ts, err := openApp(t, dir).Engine.Tenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Release()
	var v string
	if err := ts.Read(ctx, func(q engine.Querier) error {
		return q.QueryRow("SELECT value FROM settings WHERE key = 'within-test'").Scan(&v)
	}); err != nil || v != "written" {
		t.Fatalf("the next engine read %q, %v; want the kept write", v, err)
	}
}

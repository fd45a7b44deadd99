package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/sqlite"
	"github.com/keyshard/keyshard/transfer"
)

// The WALs closed shards kept before a start that no sweep checkpointed (a
// crash, a stop whose sweep ran out of time) are found by the server's
// start, in its data directory and in the locations tenants were moved
// to, and checkpointed like its own: here by the stopping server's sweep.
// A command's engine leaves them.
func TestOpenServer_SweepsWALsKeptBefore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := openApp(t, dir)
	moves := &transfer.Service{Engine: a.Engine, Backends: a.Backends}
	var paths []string
	for _, slug := range []string{"acme", "bolt"} {
		path := approvedShard(t, a, slug)
		if slug == "bolt" {
			if _, err := moves.Move(ctx, slug, transfer.MoveOptions{Backend: engine.BackendSQLite, Location: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			path = shardPathOf(t, a, slug)
		}
		writeAndEvict(t, a, slug, "scan-test", "written")
		paths = append(paths, path)
	}
	// A sweep cut short forgets what it had not done: the WALs stay, and
	// this engine's Close (a command's: it does not scan) leaves them.
	cut, cancel := context.WithCancel(ctx)
	cancel()
	sqlite.SweepKeptWALs(cut, 0)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if fi, err := os.Stat(p + "-wal"); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: the WAL after the first stop: %v, %v; want the write kept in it", p, fi, err)
		}
	}

	// A command's engine does not scan: its stop's sweep would checkpoint
	// the WALs of a server running beside it.
	before := keptWALsFound(t)
	cmd, err := app.Open(ctx, app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50 && keptWALsFound(t) == before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if got := keptWALsFound(t) - before; got != 0 {
		t.Fatalf("a command's engine found %v kept WALs, want it not to look", got)
	}
	for _, p := range paths {
		if fi, err := os.Stat(p + "-wal"); err != nil || fi.Size() == 0 {
			t.Fatalf("%s: the WAL after a command's engine stopped: %v, %v; want it left", p, fi, err)
		}
	}

	s, err := app.OpenServer(ctx, app.ServerConfig{Storage: app.Config{DataDir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for keptWALsFound(t) == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := keptWALsFound(t) - before; got != float64(len(paths)) {
		_ = s.Close()
		t.Fatalf("the server's start found %v kept WALs, want %d", got, len(paths))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if fi, err := os.Stat(p + "-wal"); err == nil && fi.Size() != 0 {
			t.Fatalf("%s: after the server stopped the WAL holds %d bytes, want it checkpointed", p, fi.Size())
		}
		if !holdsWrite(t, p, "scan-test") {
			t.Fatalf("%s: the database file alone lacks the write", p)
		}
	}
}

// keptWALsFound reads keyshard_sqlite_kept_wals_found_total.
func keptWALsFound(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "keyshard_sqlite_kept_wals_found_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("keyshard_sqlite_kept_wals_found_total is not registered")
	return 0
}

// approvedShard creates and approves the tenant slug and returns its
// shard file's path.
func approvedShard(t *testing.T, a *app.App, slug string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := a.Engine.CreateTenant(ctx, slug, slug, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Engine.ApproveTenant(ctx, slug); err != nil {
		t.Fatal(err)
	}
	return shardPathOf(t, a, slug)
}

// shardPathOf returns the path of the tenant slug's shard file where the
// catalog places it now.
func shardPathOf(t *testing.T, a *app.App, slug string) string {
	t.Helper()
	tn, err := a.Engine.Get(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	path, err := a.SQLite.Path(tn.Placement())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// openApp opens an engine on the data directory dir, closed at the test's
// end (a no-op after the test's own Close).
func openApp(t *testing.T, dir string) *app.App {
	t.Helper()
	a, err := app.Open(context.Background(), app.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// writeAndEvict sets the setting key to value in the tenant slug's shard,
// then evicts the shard: its close keeps the WAL or checkpoints it.
func writeAndEvict(t *testing.T, a *app.App, slug, key, value string) {
	t.Helper()
	ctx := context.Background()
	ts, err := a.Engine.Tenant(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	err = ts.Write(ctx, func(q engine.Querier) error {
		_, err := q.Exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", key, value)
		return err
	})
	ts.Release()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Cache.Evict(ctx, ts.Tenant.ID); err != nil {
		t.Fatal(err)
	}
}

// holdsWrite reports whether a copy of the database file at path, without
// its WAL, holds the setting key with the value "written".
func holdsWrite(t *testing.T, path, key string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	alone := filepath.Join(t.TempDir(), "alone.db")
	if err := os.WriteFile(alone, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sqlite3.OpenFlags(alone, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, _, err := db.Prepare("SELECT value FROM settings WHERE key = ?")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.BindText(1, key); err != nil {
		t.Fatal(err)
	}
	return st.Step() && st.ColumnText(0) == "written"
}

// Config.KeptWALKiB reaches the SQLite shards in KiB: under the default and
// under 64 KiB a small write's WAL stays at eviction, under 4 KiB (one 4 KiB
// page's frame is over it) and under none (negative) it is checkpointed. Over
// MaxKeptWALKiB the engine refuses to open.
func TestOpen_KeptWALKiB(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		kib  int
		kept bool
	}{{0, true}, {64, true}, {4, false}, {-1, false}} {
		dir := t.TempDir()
		a, err := app.Open(ctx, app.Config{DataDir: dir, KeptWALKiB: c.kib})
		if err != nil {
			t.Fatal(err)
		}
		path := approvedShard(t, a, "acme")
		// Twice: the first open after the approval may be on a connection
		// of its own; the second is on a kept one.
		for i := 0; i < 2; i++ {
			writeAndEvict(t, a, "acme", "kib-test", fmt.Sprint(i))
		}
		fi, err := os.Stat(path + "-wal")
		kept := err == nil && fi.Size() > 0
		_ = a.Close()
		if kept != c.kept {
			t.Fatalf("KeptWALKiB %d: WAL kept at eviction %t (%v, %v), want %t", c.kib, kept, fi, err, c.kept)
		}
	}
	if a, err := app.Open(ctx, app.Config{DataDir: t.TempDir(), KeptWALKiB: app.MaxKeptWALKiB + 1}); err == nil {
		_ = a.Close()
		t.Fatal("an engine opened with a kept WAL limit over MaxKeptWALKiB")
	}
}

package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// A writer on a kept connection leaves a small WAL in place at close
// instead of checkpointing it, and never deletes the -wal and -shm files;
// what it committed is in the WAL, and every later connection reads it:
// a raw connection of the driver's, a kept connection, a connection of its
// own. A WAL
// past the limit is checkpointed at close, as before.
func TestReuse_SmallWALKeptAtClose(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.db")
	makeShard(t, path, "v0") // on a connection of its own: checkpointed, files gone
	if _, err := os.Stat(path + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("an own connection's close left the WAL: %v", err)
	}
	dbOnly := func(name string) string { // the database file alone, as a copy that ignores the WAL would see it
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	s := openReused(t, path)
	if err := s.Write(context.Background(), setSetting("k", "v1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatalf("the WAL was deleted at close: %v", err)
	}
	if fi.Size() == 0 || fi.Size() > sqlite.KeptWALLimit {
		t.Fatalf("WAL of %d bytes after a small write, want frames kept (at most %d)", fi.Size(), sqlite.KeptWALLimit)
	}
	if _, err := os.Stat(path + "-shm"); err != nil {
		t.Fatalf("the -shm was deleted at close: %v", err)
	}
	if got := readSetting(t, dbOnly("alone1.db"), "k"); got != "v0" {
		t.Fatalf("the database file alone holds %q: the write was checkpointed, want it left in the WAL", got)
	}
	if got := readSetting(t, path, "k"); got != "v1" {
		t.Fatalf("a raw connection read %q after the close, want v1", got)
	}
	s = openReused(t, path)
	if got, err := setting(t, s, "k"); err != nil || got != "v1" {
		t.Fatalf("a kept connection read %q, %v; want v1", got, err)
	}
	// A write past the limit: checkpointed at close, the WAL emptied but kept.
	big := strings.Repeat("x", int(sqlite.KeptWALLimit))
	if err := s.Write(context.Background(), setSetting("k", big)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := walSize(path); err != nil || n != 0 {
		t.Fatalf("after a write past the limit the WAL has %d bytes (%v), want it checkpointed and truncated", n, err)
	}
	if got := readSetting(t, dbOnly("alone2.db"), "k"); got != big {
		t.Fatalf("the database file alone holds %.12q after the checkpoint, want the big value", got)
	}
	own := openAt(t, path, sqlite.Options{}, shard.Options{})
	if got, err := setting(t, own, "k"); err != nil || got != big {
		t.Fatalf("a connection of its own read %.12q, %v", got, err)
	}
	if got := queryInt(t, own, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check <> 'ok'"); got != 0 {
		t.Fatalf("integrity_check: %d problems", got)
	}
}

// A pipelined writer's close leaves its WAL unsynced never: commits the
// flusher has not synced are synced at close; when it has synced them all,
// the close adds no sync.
func TestReuse_KeptWALSyncedAtClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	makeShard(t, path, "v0")
	var syncs atomic.Int64
	sqlite.SetSyncHook(func() error { syncs.Add(1); return nil })
	t.Cleanup(func() { sqlite.SetSyncHook(nil) })
	for _, flushed := range []bool{false, true} {
		w := commitOnKept(t, path, "'v' || random()")
		syncs.Store(0)
		want := int64(1)
		if flushed {
			if err := w.(shard.Syncer).Sync(); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if n, err := walSize(path); err != nil || n == 0 {
			t.Fatalf("flushed=%t: the WAL has %d bytes (%v), want its frames kept", flushed, n, err)
		}
		if got := syncs.Load(); got != want {
			t.Errorf("flushed=%t: %d syncs from the commit to the end of the close, want %d", flushed, got, want)
		}
	}
}

func walSize(path string) (int64, error) {
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// After a failed sync the close checkpoints, whatever the WAL's size: a
// later fdatasync of the WAL may succeed without the pages the failed one
// lost, so the frames are written into the database and that is synced.
func TestReuse_FailedSyncCheckpointsAtClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	makeShard(t, path, "v0")
	w := commitOnKept(t, path, "'v1'")
	sqlite.SetSyncHook(func() error { return errors.New("injected EIO") })
	if err := w.(shard.Syncer).Sync(); err == nil {
		t.Fatal("the injected sync failure did not fail Sync")
	}
	sqlite.SetSyncHook(nil)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := walSize(path); err != nil || n != 0 {
		t.Fatalf("after a failed sync the WAL has %d bytes (%v), want it checkpointed", n, err)
	}
	if got := readSetting(t, path, "k"); got != "v1" {
		t.Fatalf("read %q, want v1", got)
	}

	// The close's own sync fails: the same.
	w = commitOnKept(t, path, "'v2'")
	sqlite.SetSyncHook(func() error { return errors.New("injected EIO") })
	t.Cleanup(func() { sqlite.SetSyncHook(nil) })
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := walSize(path); err != nil || n != 0 {
		t.Fatalf("after the close's sync failed the WAL has %d bytes (%v), want it checkpointed", n, err)
	}
}

// A -wal and -shm left without their database (a removal cut short) are
// not replayed onto a new shard made at the same path: Create deletes
// them, and Remove deletes the WAL before the database.
func TestCreate_IgnoresOrphanWAL(t *testing.T) {
	b := &sqlite.Backend{DataDir: t.TempDir(), Options: withReuse(sqlite.Options{})}
	p := placementOf(engine.NewTenantID())
	path, err := b.Path(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	// Open twice: the second open takes the connection the first kept,
	// and its close leaves the write in the WAL.
	for i := range 2 {
		s, err := b.Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k", fmt.Sprint("old", i))); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := walSize(path); err != nil || n == 0 {
		t.Fatalf("the WAL has %d bytes (%v), want the write kept in it", n, err)
	}
	if err := os.Remove(path); err != nil { // the database alone: a removal cut short
		t.Fatal(err)
	}
	if err := b.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	s, err := b.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if hasSetting(t, s, "k") {
		v, _ := setting(t, s, "k")
		t.Fatalf("the new shard holds k=%q from the orphan WAL", v)
	}
}

// A WAL left at close is checkpointed by the sweep once its shard stayed
// closed long enough, and not before; the -wal stays, emptied. A shard
// opened again is not swept while open, and is again once closed.
func TestSweepKeptWALs(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.db")
	makeShard(t, path, "v0")
	write := func(s *shard.Shard, v string) {
		t.Helper()
		if err := s.Write(context.Background(), setSetting("k", v)); err != nil {
			t.Fatal(err)
		}
	}
	s := openReused(t, path)
	write(s, "v1")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	kept, err := walSize(path)
	if err != nil || kept == 0 {
		t.Fatalf("the WAL has %d bytes (%v), want the write kept in it", kept, err)
	}
	sqlite.SweepKeptWALs(context.Background(), time.Hour)
	if n, err := walSize(path); err != nil || n != kept {
		t.Fatalf("a sweep for shards closed an hour ago changed the WAL: %d bytes (%v), want %d", n, err, kept)
	}

	// Open again: not swept while open, even with its WAL in use.
	s = openReused(t, path)
	write(s, "v2")
	before, _ := walSize(path)
	sqlite.SweepKeptWALs(context.Background(), 0)
	if n, err := walSize(path); err != nil || n != before || n == 0 {
		t.Fatalf("the sweep touched an open shard's WAL: %d bytes (%v), had %d", n, err, before)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A reader in a transaction keeps the checkpoint from running: the
	// sweep gives up and tries again next time.
	raw, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Exec("BEGIN; SELECT count(*) FROM settings;"); err != nil {
		t.Fatal(err)
	}
	if n := sqlite.SweepKeptWALs(context.Background(), 0); n != 0 {
		t.Fatalf("the sweep emptied %d WALs beside a reader's transaction", n)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sqlite.SweepKeptWALs(context.Background(), 0); n < 1 {
		t.Fatalf("the sweep emptied %d WALs, want this one", n)
	}
	if n, err := walSize(path); err != nil || n != 0 {
		t.Fatalf("after the sweep the WAL has %d bytes (%v), want 0 and the file kept", n, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	alone := filepath.Join(dir, "alone.db")
	if err := os.WriteFile(alone, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readSetting(t, alone, "k"); got != "v2" {
		t.Fatalf("the database file alone holds %q after the sweep, want v2", got)
	}
	s = openReused(t, path)
	defer s.Close()
	if got, err := setting(t, s, "k"); err != nil || got != "v2" {
		t.Fatalf("read %q, %v after the sweep; want v2", got, err)
	}
}

// A stopping server's sweep runs several checkpoints at once: each kept
// WAL is emptied into its own file, one a reader keeps busy is left for a
// later sweep as one at a time leaves it, and a sweep whose context has
// ended empties none.
func TestSweepKeptWALsWith(t *testing.T) {
	sqlite.SweepKeptWALs(context.Background(), 0) // other tests' leftovers
	dir := t.TempDir()
	var paths []string
	for range 9 {
		paths = append(paths, keptWALAt(t, shardPath(t, dir, engine.NewTenantID())))
	}
	const busy = 4
	kept, err := walSize(paths[busy])
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sqlite3.OpenFlags(paths[busy], sqlite3.OPEN_READONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.Exec("BEGIN; SELECT count(*) FROM settings;"); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n := sqlite.SweepKeptWALsWith(ctx, 0, 4); n != 0 {
		t.Fatalf("a sweep whose context had ended emptied %d WALs", n)
	}
	for _, p := range paths {
		if n, err := walSize(p); err != nil || n == 0 {
			t.Fatalf("%s: the WAL has %d bytes (%v) after a sweep that could not run", p, n, err)
		}
	}
	// That sweep forgot them, as a stop's cut short does; the next
	// start's scan finds them again.
	if n, err := sqlite.NoteKeptWALsIn(context.Background(), dir); err != nil || n != len(paths) {
		t.Fatalf("NoteKeptWALsIn: %d, %v; want %d", n, err, len(paths))
	}

	if n := sqlite.SweepKeptWALsWith(context.Background(), 0, 4); n != len(paths)-1 {
		t.Fatalf("the sweep emptied %d WALs, want all %d but the busy one", n, len(paths)-1)
	}
	for i, p := range paths {
		n, err := walSize(p)
		switch {
		case err != nil:
			t.Fatal(err)
		case i == busy && n != kept:
			t.Fatalf("the WAL a reader kept busy has %d bytes after the sweep, want its %d", n, kept)
		case i != busy && n != 0:
			t.Fatalf("%s: the WAL has %d bytes after the sweep, want 0", p, n)
		case i != busy && readAlone(t, p) != "v1":
			t.Fatalf("%s: the database file alone does not hold the kept write", p)
		}
	}
	if err := raw.Exec("COMMIT"); err != nil {
		t.Fatal(err)
	}
	if n := sqlite.SweepKeptWALsWith(context.Background(), 0, 4); n != 1 {
		t.Fatalf("the next sweep emptied %d WALs, want the one busy before", n)
	}
	if n, err := walSize(paths[busy]); err != nil || n != 0 || readAlone(t, paths[busy]) != "v1" {
		t.Fatalf("the WAL busy before has %d bytes (%v) after the next sweep, want 0 and its write in the file", n, err)
	}
}

// A sweep whose context ends while a checkpoint runs starts no other: a
// stop keeps its deadline. One at a time, the one running is the only one;
// with 4 workers, at most the 4 handed over before the end. (Before the
// fix, a path the sweep was waiting to hand over when the context ended
// was still taken by the next free worker.)
func TestSweepKeptWALsWith_NoneStartsAfterItsContext(t *testing.T) {
	sqlite.SweepKeptWALs(context.Background(), 0) // other tests' leftovers
	dir := t.TempDir()
	const kept = 10
	for range kept {
		keptWALAt(t, shardPath(t, dir, engine.NewTenantID()))
	}
	t.Cleanup(func() { sqlite.SetSweepStarting(nil) })
	left := kept
	for _, workers := range []int{1, 4} {
		// Forgotten, as by a stop whose sweep ran out of time, and found
		// again by the next start's scan.
		ended, end := context.WithCancel(context.Background())
		end()
		sqlite.SweepKeptWALs(ended, 0)
		if n, err := sqlite.NoteKeptWALsIn(context.Background(), dir); err != nil || n != left {
			t.Fatalf("NoteKeptWALsIn: %d, %v; want %d", n, err, left)
		}
		ctx, cancel := context.WithCancel(context.Background())
		// The deadline passes during the first checkpoint, once the sweep
		// has handed the next path over or is waiting to; the other
		// workers' checkpoints (started before it) wait for it.
		var started atomic.Int64
		sqlite.SetSweepStarting(func() {
			if started.Add(1) == 1 {
				time.Sleep(20 * time.Millisecond)
				cancel()
			}
			<-ctx.Done()
		})
		n := sqlite.SweepKeptWALsWith(ctx, 0, workers)
		cancel()
		if got := started.Load(); got < 1 || got > int64(workers) {
			t.Fatalf("workers=%d: %d checkpoints started, want 1 to %d: none after the context ended", workers, got, workers)
		}
		if n < 1 || n > workers {
			t.Fatalf("workers=%d: the sweep emptied %d WALs, want 1 to %d", workers, n, workers)
		}
		left -= n
	}
}

// commitOnKept opens path's writer on a kept connection and commits k =
// value (an SQL expression) without a sync, leaving the writer open.
func commitOnKept(t *testing.T, path, value string) shard.WriteConn {
	t.Helper()
	conns, err := sqlite.NewConns(path, reuse)
	if err != nil {
		t.Fatal(err)
	}
	w, err := conns.OpenWriter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec("UPDATE settings SET value = " + value + " WHERE key = 'k'"); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return w
}

// Options.KeptWALLimit sets the largest WAL a close leaves: a small write's
// WAL stays under the default, and is checkpointed at close under a limit
// smaller than it or with none kept (negative).
func TestReuse_KeptWALLimitOption(t *testing.T) {
	for _, c := range []struct {
		name  string
		limit int64
		kept  bool
	}{{"default", 0, true}, {"smaller", 4 << 10, false}, {"none", -1, false}} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "l.db")
			makeShard(t, path, "v0")
			o := reuse
			o.KeptWALLimit = c.limit
			s, err := openOnKept(path, o)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Write(context.Background(), setSetting("k", "v1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			n, err := walSize(path)
			if err != nil {
				t.Fatalf("the WAL is gone after the close: %v", err)
			}
			if kept := n > 0; kept != c.kept || n > 4<<10 && !c.kept {
				t.Fatalf("limit %d: WAL of %d bytes after a small write's close, want kept=%t", c.limit, n, c.kept)
			}
			if got := readSetting(t, path, "k"); got != "v1" {
				t.Fatalf("read %q after the close, want v1", got)
			}
		})
	}
}

// A close whose checkpoint a reader kept busy leaves its WAL, past the
// limit, for the sweep: once the reader is gone, SweepKeptWALs empties it.
func TestReuse_BusyCloseCheckpointSwept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	makeShard(t, path, "v0")
	o := reuse
	o.KeptWALLimit = -1 // every close checkpoints
	o.BusyTimeout = 50 * time.Millisecond
	s, err := openOnKept(path, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), setSetting("k", "v1")); err != nil {
		t.Fatal(err)
	}
	reader, err := sqlite3.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if err := reader.Exec("BEGIN; SELECT count(*) FROM settings"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := walSize(path); err != nil || n == 0 {
		t.Fatalf("WAL of %d bytes (%v) after a close beside a reader, want its frames left", n, err)
	}
	if err := reader.Exec("COMMIT"); err != nil {
		t.Fatal(err)
	}
	sqlite.SweepKeptWALs(context.Background(), 0)
	if n, err := walSize(path); err != nil || n != 0 {
		t.Fatalf("WAL of %d bytes (%v) after the sweep, want the busy close's WAL swept", n, err)
	}
	if got := readSetting(t, path, "k"); got != "v1" {
		t.Fatalf("read %q, want v1", got)
	}
}

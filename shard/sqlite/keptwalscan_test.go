package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// A WAL kept before a restart is found by the next start's scan and swept
// as one this process kept: once idle (not by a sweep of shards closed an
// hour ago), in each data directory given, and only where it holds
// something; afterwards the -wal is empty and the database file alone
// holds the writes.
func TestNoteKeptWALsIn(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		data, loc := t.TempDir(), t.TempDir()
		// One whose WAL was swept before: empty, nothing to note.
		swept := keptWALAt(t, shardPath(t, data, engine.NewTenantID()))
		sqlite.SweepKeptWALs(context.Background(), 0)
		if n, err := walSize(swept); err != nil || n != 0 {
			t.Fatalf("the swept WAL has %d bytes (%v)", n, err)
		}
		b := &sqlite.Backend{DataDir: data, Options: reuse}
		var paths []string
		for _, root := range []string{"", loc, ""} {
			p := engine.Placement{TenantID: engine.NewTenantID(), Backend: engine.BackendSQLite, Location: root, Epoch: 1}
			path, err := b.Path(p)
			if err != nil {
				t.Fatal(err)
			}
			keptWALAt(t, path)
			paths = append(paths, path)
		}
		kept := forgetKeptWALs(t, paths)

		n, err := sqlite.NoteKeptWALsIn(context.Background(), data, loc, filepath.Join(t.TempDir(), "none"))
		if err != nil || n != len(paths) {
			t.Fatalf("NoteKeptWALsIn: %d, %v; want the %d shards with a WAL", n, err, len(paths))
		}
		if n := sqlite.SweepKeptWALs(context.Background(), time.Hour); n != 0 {
			t.Fatalf("a sweep of shards closed an hour ago emptied %d WALs just found", n)
		}
		for i, p := range paths {
			if n, err := walSize(p); err != nil || n != kept[i] {
				t.Fatalf("%s: the WAL has %d bytes (%v), want its %d left before it is idle", p, n, err, kept[i])
			}
		}
		if n := sqlite.SweepKeptWALs(context.Background(), 0); n != len(paths) {
			t.Fatalf("the sweep emptied %d WALs, want %d", n, len(paths))
		}
		for _, p := range paths {
			if n, err := walSize(p); err != nil || n != 0 {
				t.Fatalf("%s: after the sweep the WAL has %d bytes (%v), want 0", p, n, err)
			}
			if got := readAlone(t, p); got != "v1" {
				t.Fatalf("%s: the database file alone holds %q, want v1", p, got)
			}
		}
	})

	// A shard opened while the scan runs is its own close's to note.
	t.Run("OpenedDuringScan", func(t *testing.T) {
		data := t.TempDir()
		a := keptWALAt(t, shardPath(t, data, engine.NewTenantID()))
		open := keptWALAt(t, shardPath(t, data, engine.NewTenantID()))
		forgetKeptWALs(t, []string{a, open})
		var s *shard.Shard
		sqlite.SetScanListed(func() { s = openReused(t, open) })
		t.Cleanup(func() { sqlite.SetScanListed(nil) })
		n, err := sqlite.NoteKeptWALsIn(context.Background(), data)
		sqlite.SetScanListed(nil)
		if s == nil {
			t.Fatal("the scan did not call its hook")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err != nil || n != 1 {
			t.Fatalf("NoteKeptWALsIn: %d, %v; want 1: not the shard opened during the scan", n, err)
		}
		sqlite.SweepKeptWALs(context.Background(), 0) // its close noted it
	})

	// Files that are not shards the backend opens are never noted, nor
	// swept: a shard set aside by a node move, a scratch file named as
	// export, import and node moves name theirs, a copy beside a shard, a
	// tenant's file in the wrong directory, a copy staged under incoming/, a WAL without its
	// database, and anything reached through a symbolic link.
	t.Run("NotShards", func(t *testing.T) {
		data, elsewhere := t.TempDir(), t.TempDir()
		var odd []string
		moveTo := func(from, to string) string {
			t.Helper()
			if err := os.MkdirAll(filepath.Dir(to), 0o750); err != nil {
				t.Fatal(err)
			}
			for _, ext := range []string{"-wal", "-shm", ""} {
				if err := os.Rename(from+ext, to+ext); err != nil {
					t.Fatal(err)
				}
			}
			odd = append(odd, to)
			return to
		}
		id := engine.NewTenantID()
		leaf := filepath.Dir(shardPath(t, data, id))
		moveTo(keptWALAt(t, shardPath(t, data, id)), shardPath(t, data, id)+".replaced-1700000000")
		// Scratch names, and a copy of a shard made beside it.
		for _, name := range []string{"export.db", "export-clean.db", "staging.db", "copy.db", id + "-copy.db"} {
			moveTo(keptWALAt(t, filepath.Join(elsewhere, name)), filepath.Join(leaf, name))
		}
		other := engine.NewTenantID()
		moveTo(keptWALAt(t, filepath.Join(elsewhere, other+".db")), filepath.Join(leaf, other+".db"))
		moveTo(keptWALAt(t, filepath.Join(elsewhere, "in", other+".db")), filepath.Join(data, "incoming", other+".db"))
		// A WAL whose database is gone (a removal cut short).
		orphan := shardPath(t, data, engine.NewTenantID())
		if err := os.MkdirAll(filepath.Dir(orphan), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(keptWALAt(t, filepath.Join(elsewhere, "orphan.db"))+"-wal", orphan+"-wal"); err != nil {
			t.Fatal(err)
		}
		odd = append(odd, orphan)
		// A shard file and its WAL linked into their place.
		linked := shardPath(t, data, engine.NewTenantID())
		if err := os.MkdirAll(filepath.Dir(linked), 0o750); err != nil {
			t.Fatal(err)
		}
		target := keptWALAt(t, filepath.Join(elsewhere, "target.db"))
		odd = append(odd, target)
		for _, ext := range []string{"", "-wal", "-shm"} {
			if err := os.Symlink(target+ext, linked+ext); err != nil {
				t.Fatal(err)
			}
		}
		// A fan-out directory linked into the layout: the shard below it
		// is a real file, but not at a path of the backend's own.
		far := engine.NewTenantID()
		for {
			if _, err := os.Lstat(filepath.Join(data, "shards", far[:2])); os.IsNotExist(err) {
				break
			}
			far = engine.NewTenantID()
		}
		farDir := filepath.Join(t.TempDir(), far[:2])
		odd = append(odd, keptWALAt(t, filepath.Join(farDir, far[2:4], far+".db")))
		if err := os.Symlink(farDir, filepath.Join(data, "shards", far[:2])); err != nil {
			t.Fatal(err)
		}
		kept := forgetKeptWALs(t, odd)

		n, err := sqlite.NoteKeptWALsIn(context.Background(), data)
		if err != nil || n != 0 {
			t.Fatalf("NoteKeptWALsIn: %d, %v; want none noted", n, err)
		}
		if n := sqlite.SweepKeptWALs(context.Background(), 0); n != 0 {
			t.Fatalf("the sweep emptied %d WALs", n)
		}
		for i, p := range odd {
			if n, err := walSize(p); err != nil || n != kept[i] {
				t.Errorf("%s: the WAL has %d bytes (%v), want its %d untouched", p, n, err, kept[i])
			}
		}
	})
}

// shardPath is sqlite.Path(dir, id).
func shardPath(t *testing.T, dir, id string) string {
	t.Helper()
	p, err := sqlite.Path(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// keptWALAt makes a shard file at path whose writer, on a kept connection,
// left k = v1 in its WAL at close, and returns path.
func keptWALAt(t *testing.T, path string) string {
	t.Helper()
	makeShard(t, path, "v0")
	if err := commitOnKept(t, path, "'v1'").Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := walSize(path); err != nil || n == 0 {
		t.Fatalf("%s: the WAL has %d bytes (%v), want the write kept in it", path, n, err)
	}
	return path
}

// forgetKeptWALs makes the process forget every WAL it noted, as a stop
// whose sweep ran out of time does (the next start knows none), and
// returns the WALs' sizes at paths.
func forgetKeptWALs(t *testing.T, paths []string) []int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sqlite.SweepKeptWALs(ctx, 0)
	if n := sqlite.SweepKeptWALs(context.Background(), 0); n != 0 {
		t.Fatalf("a sweep after the one cut short emptied %d WALs: the process still knew them", n)
	}
	sizes := make([]int64, len(paths))
	for i, p := range paths {
		n, err := walSize(p)
		if err != nil || n == 0 {
			t.Fatalf("%s: the WAL has %d bytes (%v) after the sweep cut short, want it kept", p, n, err)
		}
		sizes[i] = n
	}
	return sizes
}

// readAlone reads setting k from a copy of the database file at path
// without its WAL.
func readAlone(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	alone := filepath.Join(t.TempDir(), "alone.db")
	if err := os.WriteFile(alone, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return readSetting(t, alone, "k")
}

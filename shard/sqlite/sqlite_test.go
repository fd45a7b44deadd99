package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

func latest(tb testing.TB) int64 {
	tb.Helper()
	v, err := migrations.Latest(sqlite.Dialect)
	if err != nil {
		tb.Fatal(err)
	}
	return int64(v)
}

func TestOpen(t *testing.T) {
	t.Run("AppliesSchema", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "a", "b", "shard.db") // folders created
		s := openAt(t, path, sqlite.Options{}, shard.Options{})
		if v := queryInt(t, s, "PRAGMA user_version"); v != latest(t) {
			t.Errorf("user_version = %d, want %d", v, latest(t))
		}
		for _, table := range []string{"users", "identities", "sessions", "refresh_tokens", "audit_log", "signing_keys", "settings"} {
			if n := queryInt(t, s, fmt.Sprintf("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '%s'", table)); n != 1 {
				t.Errorf("table %s missing", table)
			}
		}
		// Per-connection settings of the write connection. FULL by default
		// is pipelined: commits with FULL (2) through walVFS, which only
		// writes the WAL at a commit's sync, never spills (cache_spill 0),
		// and marks the checkpoint's syncs (checkpoint_fullfsync 1); the
		// flusher syncs the WAL before the write is answered.
		names := []string{"foreign_keys", "synchronous", "checkpoint_fullfsync", "cache_spill"}
		want := []int64{1, 2, 1, 0}
		got := make([]int64, len(names))
		if err := s.Write(context.Background(), func(tx engine.Querier) error {
			for i, n := range names {
				if err := tx.QueryRow("PRAGMA " + n).Scan(&got[i]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("writer %v = %v; want %v (walvfs.go)", names, got, want)
		}
		var sync int64
		inline := openAt(t, filepath.Join(t.TempDir(), "inline.db"), sqlite.Options{InlineSync: true}, shard.Options{})
		if err := inline.Write(context.Background(), func(tx engine.Querier) error {
			return tx.QueryRow("PRAGMA synchronous").Scan(&sync)
		}); err != nil || sync != 2 {
			t.Errorf("InlineSync: synchronous = %d, %v; want 2 (FULL)", sync, err)
		}
		var mode string
		if err := s.Read(context.Background(), func(q engine.Querier) error {
			return q.QueryRow("PRAGMA journal_mode").Scan(&mode)
		}); err != nil || mode != "wal" {
			t.Errorf("journal_mode = %q, %v; want wal", mode, err)
		}
	})

	t.Run("ReopenIsNoop", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "shard.db")
		s, err := sqlite.Open(context.Background(), path, sqlite.Options{}, shard.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		schema := queryInt(t, s, "PRAGMA schema_version") // bumped by every schema change
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			s, err := sqlite.Open(context.Background(), path, sqlite.Options{}, shard.Options{})
			if err != nil {
				t.Fatalf("reopen %d: %v", i, err)
			}
			if v := queryInt(t, s, "PRAGMA schema_version"); v != schema {
				t.Errorf("reopen %d: schema_version = %d, want %d: the schema changed", i, v, schema)
			}
			if v := queryInt(t, s, "PRAGMA user_version"); v != latest(t) {
				t.Errorf("reopen %d: user_version = %d, want %d", i, v, latest(t))
			}
			if !hasSetting(t, s, "k") {
				t.Errorf("reopen %d: data lost", i)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ErrSchemaTooNew", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "shard.db")
		// A shard written by a newer Keyshard: WAL like ours, a newer version.
		raw, err := sqlite3.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.Exec(fmt.Sprintf(`PRAGMA journal_mode=wal; CREATE TABLE future (x INTEGER); PRAGMA user_version=%d;`, latest(t)+1)); err != nil {
			t.Fatal(err)
		}
		if err := raw.Close(); err != nil {
			t.Fatal(err)
		}
		before, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}

		s, err := sqlite.Open(context.Background(), path, sqlite.Options{}, shard.Options{})
		if !errors.Is(err, migrations.ErrSchemaTooNew) {
			if s != nil {
				_ = s.Close()
			}
			t.Fatalf("open: err = %v, want ErrSchemaTooNew", err)
		}
		after, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Error("the refused shard file was changed")
		}
		for _, suffix := range []string{"-wal", "-shm"} {
			if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind: %v", suffix, err)
			}
		}
		ro, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		stmt, _, err := ro.Prepare("SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_schema WHERE name = 'users')")
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		if !stmt.Step() {
			t.Fatal(stmt.Err())
		}
		if v, users := stmt.ColumnInt64(0), stmt.ColumnInt64(1); v != latest(t)+1 || users != 0 {
			t.Errorf("user_version, users tables = %d, %d; want %d, 0", v, users, latest(t)+1)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		_, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "shard.db"), sqlite.Options{Synchronous: "OFF"}, shard.Options{})
		if !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("synchronous=OFF: err = %v, want ErrInvalid", err)
		}
	})
}

func TestShard_Write(t *testing.T) {
	t.Run("ErrBusy", func(t *testing.T) {
		s, path := openShard(t, sqlite.Options{BusyTimeout: 200 * time.Millisecond}, shard.Options{})
		if err := s.Write(context.Background(), setSetting("before", "v")); err != nil {
			t.Fatal(err)
		}

		// Another process's connection holds the write lock.
		raw, err := sqlite3.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = raw.Close() })
		if err := raw.Exec("BEGIN IMMEDIATE"); err != nil {
			t.Fatal(err)
		}
		err = s.Write(context.Background(), setSetting("blocked", "v"))
		if !errors.Is(err, engine.ErrBusy) {
			t.Errorf("write while another connection holds the lock: err = %v, want ErrBusy", err)
		}
		if st := s.Stats(); st.Busy != 1 || st.Failed != 1 {
			t.Errorf("Busy, Failed = %d, %d, want 1, 1", st.Busy, st.Failed)
		}
		// Reads still work.
		if !hasSetting(t, s, "before") {
			t.Error("read while the lock is held: committed row missing")
		}

		if err := raw.Exec("ROLLBACK"); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("after", "v")); err != nil {
			t.Fatalf("write after the lock was released: %v", err)
		}
		if !hasSetting(t, s, "after") || hasSetting(t, s, "blocked") {
			t.Error("after, blocked: want present, absent")
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		s, _ := openShard(t, sqlite.Options{}, shard.Options{})
		insert := func(tx engine.Querier) error {
			_, err := tx.Exec("INSERT INTO settings (key, value) VALUES ('k', 'v')")
			return err
		}
		if err := s.Write(context.Background(), insert); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), insert); !errors.Is(err, engine.ErrConflict) {
			t.Errorf("duplicate primary key: err = %v, want ErrConflict", err)
		}
		unique := func(tx engine.Querier) error {
			_, err := tx.Exec("INSERT INTO users (id, email, created_at, updated_at) VALUES (?, 'a@example.com', 0, 0)", engine.NewTenantID())
			return err
		}
		if err := s.Write(context.Background(), unique); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), unique); !errors.Is(err, engine.ErrConflict) {
			t.Errorf("duplicate unique email: err = %v, want ErrConflict", err)
		}
	})
}

func TestRemove(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "shard.db")
		s, err := sqlite.Open(context.Background(), path, sqlite.Options{}, shard.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sqlite.Remove(path); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still exists: %v", p, err)
			}
		}
	})

	t.Run("Absent", func(t *testing.T) {
		if err := sqlite.Remove(filepath.Join(t.TempDir(), "none.db")); err != nil {
			t.Errorf("Remove of an absent shard: %v", err)
		}
	})
}

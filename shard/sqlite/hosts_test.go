package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

var reuse = withReuse(sqlite.Options{})

// makeShard creates a shard file at the current schema holding setting k=v.
func makeShard(t *testing.T, path, v string) { makeShardWith(t, path, sqlite.Options{}, v) }

// makeShardWith creates (or opens) the shard file at path with o and sets
// k=v in it.
func makeShardWith(t *testing.T, path string, o sqlite.Options, v string) {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, o, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), setSetting("k", v)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func setting(t *testing.T, s *shard.Shard, key string) (string, error) {
	t.Helper()
	var v string
	err := s.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	})
	return v, err
}

// A writer's connection, kept after its shard closed, serves the next
// shard: that shard sees its own rows only, its writes reach its own file,
// and the rows of the shard before stay in that one's file.
func TestReuse_ShardsStayApart(t *testing.T) {
	// Directory names with the characters a file: URI gives a meaning to.
	dir := filepath.Join(t.TempDir(), "a?b#c%d")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	pa, pb := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	makeShard(t, pa, "a0")
	makeShard(t, pb, "b0")

	a, err := sqlite.Open(context.Background(), pa, reuse, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Write(context.Background(), setSetting("only-a", "x")); err != nil {
		t.Fatal(err)
	}
	if err := a.Write(context.Background(), setSetting("k", "a1")); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	idle := sqlite.IdleHosts()
	if idle == 0 {
		t.Fatal("no connection kept after the shard closed")
	}

	b, err := sqlite.Open(context.Background(), pb, reuse, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sqlite.IdleHosts(); got != idle-1 {
		t.Fatalf("idle connections %d after opening b, want %d: the kept one was not reused", got, idle-1)
	}
	if v, err := setting(t, b, "k"); err != nil || v != "b0" {
		t.Fatalf("b reads k = %q, %v; want b0", v, err)
	}
	if _, err := setting(t, b, "only-a"); !errors.Is(err, engine.ErrNoRows) {
		t.Fatalf("b reads a's row: %v", err)
	}
	if err := b.Write(context.Background(), setSetting("k", "b1")); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// Each file, opened on a connection of its own, holds its own writes.
	for path, want := range map[string]string{pa: "a1", pb: "b1"} {
		s := openAt(t, path, sqlite.Options{MustExist: true}, shard.Options{})
		if v, err := setting(t, s, "k"); err != nil || v != want {
			t.Fatalf("%s: k = %q, %v; want %q", filepath.Base(path), v, err, want)
		}
	}
}

// Something created by an unqualified name on a reused connection would
// land in its in-memory main database and vanish at close: it fails.
func TestReuse_CreateInMainFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	makeShard(t, path, "v")
	s := openAt(t, path, reuse, shard.Options{})
	err := s.Write(context.Background(), func(q engine.Querier) error {
		_, err := q.Exec("CREATE TABLE stray (a INTEGER)")
		return err
	})
	if err == nil {
		t.Fatal("CREATE TABLE on a reused connection succeeded")
	}
	// The shard's own tables are still written.
	if err := s.Write(context.Background(), setSetting("k", "w")); err != nil {
		t.Fatal(err)
	}
}

// The shard file is attached with the flags of a shard's own connection:
// a symbolic link is refused, and so is a missing file when it must exist.
func TestReuse_RefusesLinkAndMissing(t *testing.T) {
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real.db"), filepath.Join(dir, "link.db")
	makeShard(t, real, "v")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlite.Open(context.Background(), link, reuse, shard.Options{}); err == nil {
		_ = s.Close()
		t.Fatal("a symbolic link was opened")
	}
	missing := filepath.Join(dir, "missing.db")
	if s, err := sqlite.Open(context.Background(), missing, reuse, shard.Options{}); err == nil {
		_ = s.Close()
		t.Fatal("a missing file was opened")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the missing file was created: %v", err)
	}
}

// A new file, or one whose schema is not current, is opened on a
// connection of its own, which migrates it; the next open reuses.
func TestReuse_NewFileMigrates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	makeShardWith(t, path, sqlite.Options{ReuseConnections: true}, "v")
	s := openAt(t, path, reuse, shard.Options{})
	if v, err := setting(t, s, "k"); err != nil || v != "v" {
		t.Fatalf("k = %q, %v", v, err)
	}
}

// twoShards makes two shard files at the current schema (k=a0, k=b0) and
// empties the pool of kept connections, so that A's is the one B gets.
func twoShards(t *testing.T) (pa, pb string) {
	t.Helper()
	dir := t.TempDir()
	pa, pb = filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	makeShard(t, pa, "a0")
	makeShard(t, pb, "b0")
	sqlite.CloseIdleHosts()
	return pa, pb
}

func openReused(t *testing.T, path string) *shard.Shard {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, reuse, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A temporary table of A's would outlive the detach and shadow B's table
// of the same name: such a connection is closed, not kept.
func TestReuse_TempObjectsNotKept(t *testing.T) {
	pa, pb := twoShards(t)
	a := openReused(t, pa)
	if err := a.Write(context.Background(), func(q engine.Querier) error {
		if _, err := q.Exec("CREATE TEMP TABLE settings (key TEXT PRIMARY KEY, value TEXT)"); err != nil {
			return err
		}
		_, err := q.Exec("INSERT INTO temp.settings SELECT key, value FROM shard.settings")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sqlite.IdleHosts(); n != 0 {
		t.Fatalf("a connection holding a temporary table was kept (%d idle)", n)
	}
	b := openReused(t, pb)
	defer b.Close()
	if v, err := setting(t, b, "k"); err != nil || v != "b0" {
		t.Fatalf("B reads k = %q, %v; want b0", v, err)
	}
}

// The statements that would act on a reused connection's empty main
// database, or change the connection for the next shard, are refused;
// pragmas that name the schema, or look in every schema, run.
func TestReuse_MainActingStatementsRefused(t *testing.T) {
	pa, _ := twoShards(t)
	a := openReused(t, pa)
	defer a.Close()
	out := filepath.Join(t.TempDir(), "copy.db")
	for _, q := range []string{"PRAGMA foreign_keys=off", "PRAGMA user_version", "pragma  Max_Page_Count = 100",
		"PRAGMA recursive_triggers=on", "VACUUM INTO '" + out + "'", "vacuum"} {
		err := a.Read(context.Background(), func(tx engine.Querier) error {
			_, err := tx.Exec(q)
			return err
		})
		if err == nil {
			t.Errorf("%q ran on a reused connection", q)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("VACUUM INTO wrote a file: %v", err)
	}
	if err := a.Read(context.Background(), func(q engine.Querier) error {
		var id, seq int
		var table, from, to, onUpdate, onDelete, match string
		return q.QueryRow("PRAGMA foreign_key_list(sessions)").Scan(&id, &seq, &table, &from, &to, &onUpdate, &onDelete, &match)
	}); err != nil {
		t.Errorf("a pragma that looks in every schema was refused: %v", err)
	}
	if err := a.Write(context.Background(), func(q engine.Querier) error {
		var v int
		return q.QueryRow("PRAGMA shard.user_version").Scan(&v)
	}); err != nil {
		t.Errorf("a pragma naming the shard's schema was refused: %v", err)
	}
}

// After a panic the shard discards its connection: a reused one is closed,
// not kept for another tenant.
func TestReuse_PanicDiscards(t *testing.T) {
	pa, _ := twoShards(t)
	a := openReused(t, pa)
	defer a.Close()
	if err := a.Write(context.Background(), func(q engine.Querier) error { panic("driver out of memory") }); err == nil {
		t.Fatal("a panicking write succeeded")
	}
	if n := sqlite.IdleHosts(); n != 0 {
		t.Fatalf("the connection discarded after a panic was kept (%d idle)", n)
	}
	// The shard goes on, on a new connection.
	if err := a.Write(context.Background(), setSetting("k", "after")); err != nil {
		t.Fatal(err)
	}
}

// A Querier kept past its shard's Close fails instead of reaching the shard
// attached next to the same connection.
func TestReuse_KeptQuerierFails(t *testing.T) {
	pa, pb := twoShards(t)
	a := openReused(t, pa)
	var kept engine.Querier
	if err := a.Read(context.Background(), func(q engine.Querier) error { kept = q; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := openReused(t, pb)
	defer b.Close()
	var v string
	if err := kept.QueryRow("SELECT value FROM settings WHERE key = 'k'").Scan(&v); err == nil {
		t.Fatalf("a querier of closed shard A read %q, B's row", v)
	}
}

// CloseIdleHosts closes the connections kept for reuse; a shard opened
// after it makes a new one, which its close keeps again.
func TestCloseIdleHosts(t *testing.T) {
	pa, pb := twoShards(t)
	a, b := openReused(t, pa), openReused(t, pb) // both at once: two connections
	for _, s := range []*shard.Shard{a, b} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := sqlite.IdleHosts(); n != 2 {
		t.Fatalf("%d connections kept after two shards closed, want 2", n)
	}
	sqlite.CloseIdleHosts()
	if n := sqlite.IdleHosts(); n != 0 {
		t.Fatalf("%d connections kept after CloseIdleHosts, want 0", n)
	}
	a = openReused(t, pa)
	if err := a.Write(context.Background(), setSetting("k", "a1")); err != nil {
		t.Fatalf("a write on a shard opened after CloseIdleHosts: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if n := sqlite.IdleHosts(); n != 1 {
		t.Fatalf("%d connections kept after the next shard closed, want 1", n)
	}
	if got := readSetting(t, pa, "k"); got != "a1" {
		t.Fatalf("k = %q, want a1", got)
	}
}

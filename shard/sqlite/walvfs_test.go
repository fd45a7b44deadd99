package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// A pipelined writer's WAL goes through walVFS: a commit's frames reach the
// file in one write, before the commit returns, and are not synced there
// (the flusher does that); a checkpoint's syncs of the WAL stay real. On
// both kinds of writer connection.
func TestWALVFS_Syncs(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "own", true: "reused"}[reuse], func(t *testing.T) {
			counts := sqlite.WatchWALs(t.Cleanup)
			path := filepath.Join(t.TempDir(), "w.db")
			o := sqlite.Options{WALLimit: 1 << 20} // the first part stays under it
			var s *shard.Shard
			if reuse {
				var err error
				if s, err = openOnKept(path, o); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
			} else {
				s = openAt(t, path, o, shard.Options{})
			}
			wal := path + "-wal"
			ctx := context.Background()
			before := counts()[wal]

			// Each write is a batch of its own: one commit. Its value
			// spans two pages, so that a commit has several frames.
			const commits = 40
			big := string(make([]byte, 5000))
			for i := range commits {
				if err := s.Write(ctx, setSetting(fmt.Sprint("k", i%4), fmt.Sprint(i, big))); err != nil {
					t.Fatal(err)
				}
				// The commit's frames are in the file: a connection
				// of another process sees the write.
				if got := readSetting(t, path, fmt.Sprint("k", i%4)); got != fmt.Sprint(i, big) {
					t.Fatalf("commit %d: another connection read %.12q", i, got)
				}
			}
			c := counts()[wal]
			writes, syncs := c.Writes-before.Writes, c.Syncs-before.Syncs
			// Unwrapped, SQLite writes each frame as two writes: at
			// least 3 frames a commit here.
			if writes < commits || writes > commits+2 {
				t.Errorf("%d commits made %d writes to the WAL, want one each", commits, writes)
			}
			if syncs > 1 { // the WAL's header, once, when it was started
				t.Errorf("%d commits made %d real syncs of the WAL, want none (the flusher syncs)", commits, syncs)
			}

			// Past the WAL limit the writer checkpoints: that syncs the
			// WAL for real before it copies it into the database.
			for i := 0; ; i++ {
				if i == 400 {
					t.Fatal("the WAL was never checkpointed")
				}
				if err := s.Write(ctx, setSetting("k0", fmt.Sprint(i, big))); err != nil {
					t.Fatal(err)
				}
				if fi, err := os.Stat(wal); err == nil && fi.Size() == 0 {
					break // truncated: checkpointed
				}
			}
			if got := counts()[wal].Syncs - c.Syncs; got < 1 {
				t.Errorf("a checkpoint made %d real syncs of the WAL, want at least one", got)
			}
		})
	}
}

// readSetting reads a setting on a read-only connection of its own, through
// the driver's own VFS, as the sqlite3 command line would.
func readSetting(t *testing.T, path, key string) string {
	t.Helper()
	db, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
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
	if !st.Step() {
		t.Fatalf("no setting %q: %v", key, st.Err())
	}
	return st.ColumnText(0)
}

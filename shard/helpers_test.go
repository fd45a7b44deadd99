package shard_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// fastSQLite keeps tests quick: a process crash is all these tests simulate.
var fastSQLite = sqlite.Options{Synchronous: "NORMAL"}

// openShard opens a new shard file in a temporary directory and closes it
// when the test ends. It returns the shard and its path.
func openShard(tb testing.TB, opts shard.Options) (*shard.Shard, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "shard.db")
	s, err := sqlite.Open(context.Background(), path, fastSQLite, opts)
	if err != nil {
		tb.Fatalf("open shard: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close shard: %v", err)
		}
	})
	return s, path
}

// reopen opens the shard file at path again, for checking what is on disk.
func reopen(tb testing.TB, path string) *shard.Shard {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path, fastSQLite, shard.Options{})
	if err != nil {
		tb.Fatalf("reopen shard %s: %v", path, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// insertAudit is an operation inserting one audit row whose action is tag.
func insertAudit(tag string) engine.WriteFunc {
	return func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO audit_log (action, created_at) VALUES (?, ?)", tag, time.Now().UnixMicro())
		return err
	}
}

// setSetting is an operation inserting or replacing one setting.
func setSetting(key, value string) engine.WriteFunc {
	return func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)
		return err
	}
}

// auditCounts returns how many audit rows carry each action.
func auditCounts(tb testing.TB, s *shard.Shard) map[string]int {
	tb.Helper()
	counts := make(map[string]int)
	err := s.Read(context.Background(), func(q engine.Querier) error {
		rows, err := q.Query("SELECT action, count(*) FROM audit_log GROUP BY action")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var action string
			var n int
			if err := rows.Scan(&action, &n); err != nil {
				return err
			}
			counts[action] = n
		}
		return rows.Err()
	})
	if err != nil {
		tb.Fatalf("read audit log: %v", err)
	}
	return counts
}

// setting returns a setting's value, or "" with ok false when it is absent.
func setting(tb testing.TB, s *shard.Shard, key string) (value string, ok bool) {
	tb.Helper()
	return settingCtx(context.Background(), tb, s, key)
}

// settingCtx is setting with a context for the read.
func settingCtx(ctx context.Context, tb testing.TB, s *shard.Shard, key string) (value string, ok bool) {
	tb.Helper()
	err := s.Read(ctx, func(q engine.Querier) error {
		return q.QueryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&value)
	})
	switch {
	case err == nil:
		return value, true
	case errors.Is(err, engine.ErrNoRows):
		return "", false
	}
	tb.Fatalf("read setting %q: %v", key, err)
	return "", false
}

// blockWriter queues a write that holds the writer (inside the batch
// transaction) until the returned release function is called, and waits
// until the writer runs it. wait returns that write's error.
func blockWriter(tb testing.TB, s *shard.Shard) (release func(), wait func() error) {
	tb.Helper()
	started := make(chan struct{})
	unblock := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Write(context.Background(), func(tx engine.Querier) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	select {
	case <-started:
	case err := <-done:
		tb.Fatalf("blocking write returned before it ran: %v", err)
	case <-time.After(10 * time.Second):
		tb.Fatal("writer did not start the blocking write within 10s")
	}
	var released bool
	release = func() {
		if !released {
			released = true
			close(unblock)
		}
	}
	tb.Cleanup(release) // never leave the writer blocked
	wait = func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return fmt.Errorf("blocking write not answered within 10s")
		}
	}
	return release, wait
}

// waitFor polls cond every few milliseconds until it holds or timeout
// passes, and reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openFDs returns the number of open file descriptors of this process.
func openFDs(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Skipf("cannot count file descriptors: %v", err)
	}
	return len(ents)
}

// checkNoLeaks records the goroutine and file descriptor counts now and, at
// cleanup, fails the test if they have not come back down to them (polling
// briefly: background closes may still be finishing).
func checkNoLeaks(tb testing.TB) {
	tb.Helper()
	goroutines, fds := runtime.NumGoroutine(), openFDs(tb)
	tb.Cleanup(func() {
		if !waitFor(5*time.Second, func() bool { return runtime.NumGoroutine() <= goroutines }) {
			buf := make([]byte, 1<<20)
			tb.Errorf("goroutines: %d at start, %d at end\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		if !waitFor(5*time.Second, func() bool { return openFDs(tb) <= fds }) {
			tb.Errorf("open file descriptors: %d at start, %d at end", fds, openFDs(tb))
		}
	})
}

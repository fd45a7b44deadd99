package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// openShard opens a new shard file in a temporary directory and closes it
// when the test ends. It returns the shard and its path.
func openShard(tb testing.TB, opts sqlite.Options, sopts shard.Options) (*shard.Shard, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "shard.db")
	return openAt(tb, path, opts, sopts), path
}

// openAt opens the shard at path and closes it when the test ends.
func openAt(tb testing.TB, path string, opts sqlite.Options, sopts shard.Options) *shard.Shard {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path, opts, sopts)
	if err != nil {
		tb.Fatalf("open shard %s: %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close shard %s: %v", path, err)
		}
	})
	return s
}

// setSetting is an operation inserting or replacing one setting.
func setSetting(key, value string) engine.WriteFunc {
	return func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)
		return err
	}
}

// queryInt runs a query returning one integer on a read connection.
func queryInt(tb testing.TB, s *shard.Shard, query string) int64 {
	tb.Helper()
	var n int64
	if err := s.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow(query).Scan(&n)
	}); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// settingKeys returns the keys of every setting.
func settingKeys(tb testing.TB, s *shard.Shard) map[string]bool {
	tb.Helper()
	return settingKeysCtx(tb, context.Background(), s)
}

// settingKeysCtx is settingKeys with the read bound by ctx.
func settingKeysCtx(tb testing.TB, ctx context.Context, s *shard.Shard) map[string]bool {
	tb.Helper()
	keys := make(map[string]bool)
	err := s.Read(ctx, func(q engine.Querier) error {
		rows, err := q.Query("SELECT key FROM settings")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				return err
			}
			keys[k] = true
		}
		return rows.Err()
	})
	if err != nil {
		tb.Fatalf("read settings: %v", err)
	}
	return keys
}

// hasSetting reports whether key is set.
func hasSetting(tb testing.TB, s *shard.Shard, key string) bool {
	tb.Helper()
	err := s.Read(context.Background(), func(q engine.Querier) error {
		var v string
		return q.QueryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	})
	if errors.Is(err, engine.ErrNoRows) {
		return false
	}
	if err != nil {
		tb.Fatalf("read setting %q: %v", key, err)
	}
	return true
}

// withReuse is o with the writer on a kept connection (the server's default).
func withReuse(o sqlite.Options) sqlite.Options {
	o.ReuseConnections, o.MustExist = true, true
	return o
}

// openOnKept opens the shard at path with its writer on a kept connection:
// the file is made (or migrated) on a connection of its own, since a new file
// is never attached, then opened and closed once with reuse so that a
// connection is kept, then opened again, and it must take that connection.
// It takes no testing.TB: the crash tests' children call it too.
func openOnKept(path string, o sqlite.Options) (*shard.Shard, error) {
	ctx := context.Background()
	for _, opts := range []sqlite.Options{o, withReuse(o)} {
		s, err := sqlite.Open(ctx, path, opts, shard.Options{})
		if err != nil {
			return nil, err
		}
		if err := s.Close(); err != nil {
			return nil, err
		}
	}
	idle := sqlite.IdleHosts()
	s, err := sqlite.Open(ctx, path, withReuse(o), shard.Options{})
	if err == nil && (idle == 0 || sqlite.IdleHosts() != idle-1) {
		_ = s.Close()
		return nil, fmt.Errorf("kept connections %d before the open, %d after: the writer is not on a kept one", idle, sqlite.IdleHosts())
	}
	return s, err
}

package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// TestWAL_BoundedUnderReaders: with readers that never pause, SQLite's
// automatic (PASSIVE) checkpoint cannot restart the WAL, which then grows
// with every write. Past WALLimit the writer runs a TRUNCATE checkpoint
// that waits briefly for the readers, so the WAL stays near the limit
// (within about two limits when a checkpoint finds them busy).
func TestWAL_BoundedUnderReaders(t *testing.T) {
	const limit = 512 << 10
	o := sqlite.Options{Synchronous: "NORMAL", WALLimit: limit}
	t.Run("own", func(t *testing.T) {
		s, path := openShard(t, o, shard.Options{})
		walBounded(t, s, path, limit)
	})
	t.Run("reused", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "shard.db")
		s, err := openOnKept(path, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close shard: %v", err)
			}
		})
		walBounded(t, s, path, limit)
	})
}

func walBounded(t *testing.T, s *shard.Shard, path string, limit int64) {
	const writes = 1500
	ctx := context.Background()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_ = s.Read(ctx, func(q engine.Querier) error {
					var n int
					return q.QueryRow(`SELECT COUNT(*) FROM settings`).Scan(&n)
				})
			}
		}()
	}
	value := strings.Repeat("x", 2000)
	var largest int64
	for i := range writes {
		if err := s.Write(ctx, func(tx engine.Querier) error {
			_, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES (?, ?)`, fmt.Sprint("k", i), value)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > largest {
			largest = fi.Size()
		}
	}
	stop.Store(true)
	wg.Wait()
	// The limit; after a checkpoint readers kept busy, another limit
	// before the next try; plus what commits meanwhile.
	if bound := int64(4 * limit); largest > bound {
		t.Fatalf("the WAL reached %d bytes with a %d-byte limit (bound %d)", largest, limit, bound)
	}
	t.Logf("largest WAL: %d bytes (limit %d, %d writes of ~2 KB)", largest, limit, writes)
}

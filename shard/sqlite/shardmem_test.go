package sqlite_test

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// BenchmarkShardMemory measures what one open, idle shard costs: resident
// memory and file descriptors, with its writer and both readers opened by a
// write and two concurrent reads. It sizes the shard cache's default
// capacity (README: "Sizing the shard cache").
//
//	go test -run '^$' -bench ShardMemory -benchtime 1x ./shard/sqlite/
func BenchmarkShardMemory(b *testing.B) {
	const n = 300
	ctx := context.Background()
	dir := b.TempDir()
	paths := make([]string, n)
	for i := range paths {
		p, err := sqlite.Path(dir, engine.NewTenantID())
		if err != nil {
			b.Fatal(err)
		}
		paths[i] = p
		s, err := sqlite.Open(ctx, p, sqlite.Options{}, shard.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		runtime.GC()
		debug.FreeOSMemory()
		rss0, fd0 := rss(b), fds(b)
		shards := make([]*shard.Shard, n)
		for i, p := range paths {
			s, err := sqlite.Open(ctx, p, sqlite.Options{}, shard.Options{})
			if err != nil {
				b.Fatal(err)
			}
			shards[i] = s
			touch(b, s)
		}
		runtime.GC()
		debug.FreeOSMemory()
		rss1, fd1 := rss(b), fds(b)
		b.ReportMetric(float64(rss1-rss0)/n/1024, "KiB-RSS/shard")
		b.ReportMetric(float64(fd1-fd0)/n, "fds/shard")
		for _, s := range shards {
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// touch opens the writer (a write) and both readers (two reads at once).
func touch(tb testing.TB, s *shard.Shard) {
	ctx := context.Background()
	if err := s.Write(ctx, func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT OR REPLACE INTO settings(key, value) VALUES ('k', 'v')")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	inner := make(chan error, 1)
	err := s.Read(ctx, func(q engine.Querier) error {
		go func() {
			inner <- s.Read(ctx, func(q engine.Querier) error {
				var v string
				return q.QueryRow("SELECT value FROM settings WHERE key = 'k'").Scan(&v)
			})
		}()
		var v string
		if err := q.QueryRow("SELECT value FROM settings WHERE key = 'k'").Scan(&v); err != nil {
			return err
		}
		return <-inner
	})
	if err != nil {
		tb.Fatal(err)
	}
	if st := s.Stats(); st.Readers != 2 {
		tb.Fatalf("readers open = %d, want 2", st.Readers)
	}
}

func rss(tb testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	tb.Fatal("VmRSS not found")
	return 0
}

func fds(tb testing.TB) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Skip("no /proc/self/fd")
	}
	return len(es)
}

package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/shardtest"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// These benchmarks measure the storage engine on real files; they are not
// run in CI. Run them with, for example:
//
//	go test -run='^$' -bench=. -benchtime=2000x ./shard/sqlite/

// BenchmarkShard_Write compares one operation per transaction (MaxBatch 1:
// the same code path, with group commit disabled) with group commit, at
// several numbers of concurrent writers, with synchronous FULL and NORMAL.
// The body is shard/shardtest's, which the server backends run too.
func BenchmarkShard_Write(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		f := benchFactory(sqlite.Options{Synchronous: sync})
		for _, mode := range []struct {
			name     string
			maxBatch int
		}{{"OnePerTx", 1}, {"GroupCommit", 0}} {
			for _, conc := range []int{1, 16, 256} {
				b.Run(fmt.Sprintf("sync=%s/%s/conc=%d", sync, mode.name, conc), func(b *testing.B) {
					shardtest.BenchWrite(b, f, mode.maxBatch, conc)
				})
			}
		}
	}
}

// BenchmarkShard_Read measures point reads by primary key through Shard.Read.
func BenchmarkShard_Read(b *testing.B) {
	shardtest.BenchRead(b, benchFactory(sqlite.Options{}))
}

func benchFactory(o sqlite.Options) shardtest.Factory {
	return shardtest.Factory{Name: engine.BackendSQLite, Dialect: sqlite.Dialect,
		New: func(tb testing.TB, opts shard.Options) shardtest.Backend {
			return &sqlite.Backend{DataDir: tb.TempDir(), Options: o, ShardOpts: opts}
		}}
}

// BenchmarkCache_Acquire measures Acquire of an open shard (hit) and of an
// existing shard that is not open (miss: open the writer and check the
// schema version), reporting latency percentiles of Acquire alone.
func BenchmarkCache_Acquire(b *testing.B) {
	dir := b.TempDir()
	open := func(ctx context.Context, p engine.Placement) (*shard.Shard, error) {
		path, err := sqlite.Path(dir, p.TenantID)
		if err != nil {
			return nil, err
		}
		return sqlite.Open(ctx, path, sqlite.Options{}, shard.Options{})
	}
	const tenants = 16
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = engine.NewTenantID()
		s, err := open(context.Background(), placementOf(ids[i])) // create with schema
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("Hit", func(b *testing.B) {
		c := shard.NewCache(4, 0, open)
		defer c.Close()
		h, err := c.Acquire(context.Background(), placementOf(ids[0]))
		if err != nil {
			b.Fatal(err)
		}
		h.Release()
		lat := make([]time.Duration, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			h, err := c.Acquire(context.Background(), placementOf(ids[0]))
			if err != nil {
				b.Fatal(err)
			}
			h.Release()
			lat[i] = time.Since(t0)
		}
		b.StopTimer()
		shardtest.ReportPercentiles(b, lat, "acquire")
	})

	b.Run("Miss", func(b *testing.B) {
		c := shard.NewCache(1, 0, open)
		defer c.Close()
		lat := make([]time.Duration, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := ids[i%tenants]
			t0 := time.Now()
			h, err := c.Acquire(context.Background(), placementOf(id))
			lat[i] = time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			h.Release()
			// Close it (checkpoint, fsync) before the next Acquire, so every
			// Acquire misses and no close runs during the next one.
			if err := c.Evict(context.Background(), id); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if st := c.Stats(); st.Hits != 0 {
			b.Fatalf("%d hits in the miss benchmark", st.Hits)
		}
		shardtest.ReportPercentiles(b, lat, "acquire")
	})

	// Cycle is what a miss of the server's tenants workload costs in all:
	// the shard opened, one read, one write made durable, and the shard
	// closed again; with and without the writer's connection reused
	// (Options.ReuseConnections). It reports the process's CPU (user and
	// system) per cycle, since half of it is system calls and page faults.
	for _, reuse := range []bool{false, true} {
		b.Run(fmt.Sprintf("Cycle/reuse=%t", reuse), func(b *testing.B) {
			open := func(ctx context.Context, p engine.Placement) (*shard.Shard, error) {
				path, err := sqlite.Path(dir, p.TenantID)
				if err != nil {
					return nil, err
				}
				return sqlite.Open(ctx, path, sqlite.Options{MustExist: true, ReuseConnections: reuse}, shard.Options{})
			}
			c := shard.NewCache(1, 0, open)
			defer c.Close()
			cpu0 := processCPU(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := ids[i%tenants]
				h, err := c.Acquire(context.Background(), placementOf(id))
				if err != nil {
					b.Fatal(err)
				}
				if err := h.Read(context.Background(), func(q engine.Querier) error {
					var v string
					return q.QueryRow("SELECT value FROM settings WHERE key = 'k'").Scan(&v)
				}); err != nil {
					b.Fatal(err)
				}
				if err := h.Write(context.Background(), setSetting("k", fmt.Sprint(i))); err != nil {
					b.Fatal(err)
				}
				h.Release()
				if err := c.Evict(context.Background(), id); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			user, sys := processCPU(b).since(cpu0)
			b.ReportMetric(float64(user.Microseconds())/float64(b.N), "user-µs/op")
			b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "sys-µs/op")
		})
	}
}

type cpuTimes struct{ user, sys time.Duration }

func processCPU(tb testing.TB) cpuTimes {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return cpuTimes{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

func (c cpuTimes) since(c0 cpuTimes) (user, sys time.Duration) {
	return c.user - c0.user, c.sys - c0.sys
}

func placementOf(id string) engine.Placement {
	return engine.Placement{TenantID: id, Backend: engine.BackendSQLite, Epoch: 1}
}

// BenchmarkAttach splits what opening a cold shard on a kept connection
// costs (the server's default; hosts.go): the same ATTACH, first read and
// DETACH of a database of one table ("empty"), of a shard with its schema
// ("schema"), and of a shard whose WAL holds frames a closed writer kept
// ("schema+wal", about the size of the tenants workload's kept WALs), which
// SQLite reads back to rebuild the WAL index at every first open. It
// reports the process's CPU per cycle.
func BenchmarkAttach(b *testing.B) {
	dir := b.TempDir()
	empty := filepath.Join(dir, "empty.db")
	db, err := sqlite3.Open(empty)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Exec("PRAGMA journal_mode=wal; CREATE TABLE t (a)"); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	schema := filepath.Join(dir, "schema.db")
	s, err := sqlite.Open(context.Background(), schema, sqlite.Options{}, shard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	withWAL := filepath.Join(dir, "wal.db")
	if err := copyFile(schema, withWAL); err != nil {
		b.Fatal(err)
	}
	keepWAL(b, withWAL)

	for _, c := range []struct{ name, path string }{{"empty", empty}, {"schema", schema}, {"schema+wal", withWAL}} {
		b.Run(c.name, func(b *testing.B) {
			db, err := sqlite3.OpenFlags(":memory:", sqlite3.OPEN_READWRITE|sqlite3.OPEN_URI)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Config(sqlite3.DBCONFIG_NO_CKPT_ON_CLOSE, true); err != nil {
				b.Fatal(err)
			}
			attach := "ATTACH 'file:" + c.path + "' AS shard"
			cpu0 := processCPU(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := db.Exec(attach); err != nil {
					b.Fatal(err)
				}
				if err := db.Exec("SELECT count(*) FROM shard.sqlite_master"); err != nil {
					b.Fatal(err)
				}
				if err := db.Exec("DETACH shard"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			user, sys := processCPU(b).since(cpu0)
			b.ReportMetric(float64(user.Microseconds())/float64(b.N), "user-µs/op")
			b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "sys-µs/op")
		})
	}
}

// keepWAL commits 24 rows of 4 KiB each to the shard file at path and
// leaves them in its WAL (about 100 KB, the size of the tenants workload's
// kept WALs), as a writer on a kept connection leaves a small WAL at close.
func keepWAL(b *testing.B, path string) {
	b.Helper()
	db, err := sqlite3.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Config(sqlite3.DBCONFIG_NO_CKPT_ON_CLOSE, true); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 24; i++ {
		if err := db.Exec(fmt.Sprintf("INSERT INTO settings (key, value) VALUES ('k%d', hex(randomblob(2000)))", i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() < 90_000 {
		b.Fatalf("the kept WAL: %v, %v", fi, err)
	}
}

func copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, data, 0o600)
}

// BenchmarkSweepKeptWALs measures the sweep of closed shards' kept WALs, as
// a stopping server runs it: b.N shard files, each with a WAL of about
// 100 KB (24 commits of one 4 KiB row), found by the start-up scan and
// checkpointed by SweepKeptWALsWith with no idle time, by 1 to 8 workers.
// It reports the process's CPU per WAL; ns/op is the wall time per WAL.
func BenchmarkSweepKeptWALs(b *testing.B) {
	tmpl := filepath.Join(b.TempDir(), "tmpl.db")
	s, err := sqlite.Open(context.Background(), tmpl, sqlite.Options{}, shard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	keepWAL(b, tmpl)
	for _, workers := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			dir := b.TempDir()
			for i := 0; i < b.N; i++ {
				p, err := sqlite.Path(dir, engine.NewTenantID())
				if err != nil {
					b.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					b.Fatal(err)
				}
				for _, suffix := range []string{"", "-wal", "-shm"} {
					if err := copyFile(tmpl+suffix, p+suffix); err != nil {
						b.Fatal(err)
					}
				}
			}
			if n, err := sqlite.NoteKeptWALsIn(context.Background(), dir); err != nil || n != b.N {
				b.Fatalf("noted %d kept WALs (%v), want %d", n, err, b.N)
			}
			cpu0 := processCPU(b)
			b.ResetTimer()
			n := sqlite.SweepKeptWALsWith(context.Background(), 0, workers)
			b.StopTimer()
			if n != b.N {
				b.Fatalf("the sweep emptied %d WALs, want %d", n, b.N)
			}
			user, sys := processCPU(b).since(cpu0)
			b.ReportMetric(float64(user.Microseconds())/float64(b.N), "user-µs/op")
			b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "sys-µs/op")
		})
	}
}

package sqlite_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// These benchmarks measure the storage engine on real files; they are not
// run in CI. Run them with, for example:
//
//	go test -run='^$' -bench=. -benchtime=2000x ./shard/sqlite/

// BenchmarkShard_Write compares one operation per transaction (MaxBatch 1:
// the same code path, with group commit disabled) with group commit, at
// several numbers of concurrent writers, with synchronous FULL and NORMAL.
func BenchmarkShard_Write(b *testing.B) {
	for _, sync := range []string{"FULL", "NORMAL"} {
		for _, mode := range []struct {
			name     string
			maxBatch int
		}{{"OnePerTx", 1}, {"GroupCommit", 0}} {
			for _, conc := range []int{1, 16, 256} {
				b.Run(fmt.Sprintf("sync=%s/%s/conc=%d", sync, mode.name, conc), func(b *testing.B) {
					benchWrite(b, sqlite.Options{Synchronous: sync}, mode.maxBatch, conc)
				})
			}
		}
	}
}

func benchWrite(b *testing.B, opts sqlite.Options, maxBatch, conc int) {
	s, _ := openShard(b, opts, shard.Options{MaxBatch: maxBatch, QueueSize: max(shard.DefaultQueueSize, 2*conc)})
	op := func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO audit_log (action, actor_id, ip, payload, created_at) VALUES (?, ?, ?, ?, ?)",
			"token_refreshed", "3f1c2a7e-5b1d-4c7a-9d2e-8a6b4c3d2e1f", "203.0.113.7", `{"session":"s1"}`, time.Now().UnixMicro())
		return err
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := 0; g < conc; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1) - 1
				if n >= int64(b.N) {
					return
				}
				t0 := time.Now()
				if err := s.Write(context.Background(), op); err != nil {
					failed.Add(1)
				}
				lat[n] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d writes failed", n)
	}
	st := s.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64(st.Writes)/float64(max(st.Batches, 1)), "writes/batch")
	reportPercentiles(b, lat, "write")
}

// BenchmarkShard_Read measures point reads by primary key through Shard.Read.
func BenchmarkShard_Read(b *testing.B) {
	const rows = 10000
	s, _ := openShard(b, sqlite.Options{}, shard.Options{})
	if err := s.Write(context.Background(), func(tx engine.Querier) error {
		for i := 0; i < rows; i++ {
			if _, err := tx.Exec("INSERT INTO settings (key, value) VALUES (?, ?)", fmt.Sprintf("key%05d", i), fmt.Sprintf("value %d", i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	keys := make([]string, rows)
	for i := range keys {
		keys[i] = fmt.Sprintf("key%05d", (i*7919)%rows) // scattered
	}
	read := func(key string) error {
		return s.Read(context.Background(), func(q engine.Querier) error {
			var v string
			return q.QueryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&v)
		})
	}

	b.Run("conc=1", func(b *testing.B) {
		start := time.Now()
		for i := 0; i < b.N; i++ {
			if err := read(keys[i%rows]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
	})
	b.Run("parallel", func(b *testing.B) {
		var i atomic.Int64
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := read(keys[i.Add(1)%rows]); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "reads/s")
	})
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
		reportPercentiles(b, lat, "acquire")
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
		reportPercentiles(b, lat, "acquire")
	})
}

func placementOf(id string) engine.Placement {
	return engine.Placement{TenantID: id, Backend: engine.BackendSQLite, Epoch: 1}
}

// reportPercentiles reports the p50 and p99 of lat in microseconds.
func reportPercentiles(b *testing.B, lat []time.Duration, what string) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	p := func(q float64) float64 {
		return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(p(0.50), what+"-p50-us")
	b.ReportMetric(p(0.99), what+"-p99-us")
}

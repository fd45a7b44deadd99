package shardtest

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
)

// BenchWrite measures Write at conc concurrent writers: maxBatch 1 is one
// operation per transaction (the same code path with group commit off), 0
// is group commit. The operation is the audit insert of a token refresh.
// It reports writes/s, writes per batch and latency percentiles.
func BenchWrite(b *testing.B, f Factory, maxBatch, conc int) {
	be := f.New(b, shard.Options{MaxBatch: maxBatch, QueueSize: max(shard.DefaultQueueSize, 2*conc)})
	s := open(b, be, create(b, be, f.Name))
	op := func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO audit_log (action, actor_id, ip, payload, created_at) VALUES (?, ?, ?, ?, ?)",
			"token_refreshed", "3f1c2a7e-5b1d-4c7a-9d2e-8a6b4c3d2e1f", "203.0.113.7", `{"session":"s1"}`, time.Now().UnixMicro())
		return err
	}
	lat := make([]time.Duration, b.N)
	var next, failed atomic.Int64
	var firstErr atomic.Value
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
					firstErr.CompareAndSwap(nil, err.Error())
				}
				lat[n] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d writes failed, first: %v", n, firstErr.Load())
	}
	st := s.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64(st.Writes)/float64(max(st.Batches, 1)), "writes/batch")
	ReportPercentiles(b, lat, "write")
}

// BenchRead measures point reads by primary key through Shard.Read, from one
// goroutine and from GOMAXPROCS goroutines.
func BenchRead(b *testing.B, f Factory) {
	const rows = 10000
	be := f.New(b, shard.Options{})
	s := open(b, be, create(b, be, f.Name))
	if err := s.Write(context.Background(), func(tx engine.Querier) error {
		for i := 0; i < rows; i++ {
			if _, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES (?, ?)`, fmt.Sprintf("key%05d", i), fmt.Sprintf("value %d", i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	keys := make([]string, rows)
	for i := range keys {
		keys[i] = fmt.Sprintf("key%05d", (i*7919)%rows)
	}
	read := func(key string) error {
		return s.Read(context.Background(), func(q engine.Querier) error {
			var v string
			return q.QueryRow(`SELECT value FROM settings WHERE "key" = ?`, key).Scan(&v)
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

// ReportPercentiles reports the p50 and p99 of lat in microseconds.
func ReportPercentiles(b *testing.B, lat []time.Duration, what string) {
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

package transfer_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/transfer"
)

// Run with: go test -run '^$' -bench . -benchtime 1x ./transfer/
// (100k users take a while to seed: ~0.5M rows).

func benchSizes() []int { return []int{10_000, 100_000} }

// rowsOf is the rows seed writes for n users.
func rowsOf(n int) int { return n + n + n/2 + n/2 + n + 3 }

// benchBackends are the backends configured for benchmarks: sqlite, and
// postgres and mysql when their test DSNs are set.
func benchBackends(b *testing.B) []string {
	e := newEnv(b)
	return e.backends()
}

func BenchmarkExport(b *testing.B) {
	for _, backend := range benchBackends(b) {
		for _, n := range benchSizes() {
			for _, format := range []string{"sqlite", "ndjson"} {
				b.Run(fmt.Sprintf("from=%s/users=%d/format=%s", backend, n, format), func(b *testing.B) {
					benchExport(b, backend, n, format)
				})
			}
		}
	}
}

func benchExport(b *testing.B, backend string, n int, format string) {
	{
		{
			{
				e := newEnv(b)
				e.tenant("big", backend)
				e.seed("big", n)
				var size int64
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					cw := &countWriter{}
					if _, err := e.Svc.Export(context.Background(), "big", cw, transfer.ExportOptions{Format: format, IncludeSecrets: true}); err != nil {
						b.Fatal(err)
					}
					size = cw.n
				}
				b.StopTimer()
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(float64(rowsOf(n))/sec, "rows/s")
				b.ReportMetric(float64(size)/sec/1e6, "MB/s")
				b.ReportMetric(float64(size)/1e6, "MB")
			}
		}
	}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

// BenchmarkMove moves a tenant between two data directories, with and
// without a concurrent writer (a stream of small writes, as refreshes and
// signups make), and reports the fenced window and how long writes that
// arrived during it waited.
func BenchmarkMove(b *testing.B) {
	for _, to := range benchBackends(b) {
		for _, n := range benchSizes() {
			for _, load := range []bool{false, true} {
				if load && to != engine.BackendSQLite {
					continue // the fenced window under load is measured on SQLite
				}
				b.Run(fmt.Sprintf("to=%s/users=%d/load=%v", to, n, load), func(b *testing.B) {
					benchMove(b, to, n, load)
				})
			}
		}
	}
}

// benchMove moves a SQLite tenant to `to` and back, alternately (to
// another data directory when `to` is sqlite).
func benchMove(b *testing.B, to string, n int, load bool) {
	{
		{
			{
				e := newEnv(b)
				e.tenant("big", engine.BackendSQLite)
				e.seed("big", n)
				other := filepath.Join(b.TempDir(), "disk2")
				var fenced, took []time.Duration
				var waits []time.Duration
				var slow []string
				var wmu sync.Mutex
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					target := transfer.MoveOptions{Backend: to, Location: other}
					if to != engine.BackendSQLite {
						target.Location = ""
					}
					if i%2 == 1 {
						target = transfer.MoveOptions{Backend: engine.BackendSQLite}
					}
					stop := make(chan struct{})
					moveStart := time.Now()
					var wg sync.WaitGroup
					var seq atomic.Int64
					if load {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for k := 0; k < 1_000_000; k++ {
								select {
								case <-stop:
									return
								default:
								}
								ts, err := e.App.Engine.Tenant(context.Background(), "big")
								if err != nil {
									time.Sleep(time.Millisecond)
									continue
								}
								t0 := time.Now()
								id := seq.Add(1)
								err = ts.Write(context.Background(), func(tx engine.Querier) error {
									_, err := tx.Exec(`INSERT INTO audit_log (action, payload, created_at) VALUES ('bench', ?, ?)`, fmt.Sprint(id), time.Now().UnixMicro())
									return err
								})
								d := time.Since(t0)
								ts.Release()
								wmu.Lock()
								waits = append(waits, d)
								if d > 200*time.Millisecond {
									slow = append(slow, fmt.Sprintf("write at +%v took %v: %v", t0.Sub(moveStart).Round(time.Millisecond), d.Round(time.Millisecond), err))
								}
								wmu.Unlock()
								if err != nil {
									time.Sleep(time.Millisecond)
								}
							}
						}()
					}
					phase := ""
					target.Progress = func(p transfer.Progress) {
						if p.Phase != phase {
							phase = p.Phase
							wmu.Lock()
							slow = append(slow, fmt.Sprintf("phase %s at +%v", phase, time.Since(moveStart).Round(time.Millisecond)))
							wmu.Unlock()
						}
					}
					res, err := e.Svc.Move(context.Background(), "big", target)
					close(stop)
					wg.Wait()
					if err != nil {
						b.Fatal(err)
					}
					wmu.Lock()
					for _, s := range slow {
						b.Log(s)
					}
					slow = nil
					wmu.Unlock()
					fenced = append(fenced, res.Fenced)
					took = append(took, res.Took)
					b.Logf("move %d: took %v, fenced %v, rounds %d, steps %v", i, res.Took, res.Fenced, res.Rounds, res.Steps)
				}
				b.StopTimer()
				b.ReportMetric(float64(rowsOf(n))/b.Elapsed().Seconds()*float64(b.N), "rows/s")
				b.ReportMetric(ms(pct(fenced, 0.5)), "fenced-p50-ms")
				b.ReportMetric(ms(pct(fenced, 1)), "fenced-max-ms")
				if load {
					b.ReportMetric(ms(pct(waits, 0.99)), "write-p99-ms")
					b.ReportMetric(ms(pct(waits, 1)), "write-max-ms")
				}
			}
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))) - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sample is one scrape of the server's /metrics: series name with its
// labels (as printed) → value.
type Sample map[string]float64

// Scrape reads the target's /metrics in the Prometheus text format.
func (t *Target) Scrape(ctx context.Context) (Sample, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", t.base()+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := t.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil, fmt.Errorf("GET /metrics: status %d", res.StatusCode)
	}
	return parseMetrics(res.Body)
}

// parseMetrics parses the text exposition format, keeping samples whose
// name starts with keyshard_, and the process's CPU time.
func parseMetrics(r io.Reader) (Sample, error) {
	out := Sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "keyshard_") && !strings.HasPrefix(line, "process_cpu_seconds_total ") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sum adds up every series of the metric name, whatever its labels, with
// the label filter (e.g. `route="/t/:tenant/user"`) when given.
func (s Sample) sum(name string, filters ...string) float64 {
	var t float64
	for k, v := range s {
		base, labels, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, f := range filters {
			if !strings.Contains(labels, f) {
				ok = false
			}
		}
		if ok {
			t += v
		}
	}
	return t
}

// ServerMetrics are the server's own counters over a run: deltas of
// /metrics scraped before and after, and gauges sampled during it.
type ServerMetrics struct {
	Batches          float64            `json:"batches"`            // write transactions committed
	BatchedOps       float64            `json:"batched_ops"`        // operations and deferred records in them
	MeanBatchSize    float64            `json:"mean_batch_size"`    // BatchedOps / Batches
	MeanCommitMs     float64            `json:"mean_commit_ms"`     // time to run and commit one batch
	CacheHits        float64            `json:"cache_hits"`         // shard cache acquires served by an open shard
	CacheMisses      float64            `json:"cache_misses"`       // acquires that opened a shard
	CacheEvictions   float64            `json:"cache_evictions"`    // shards closed by the cache
	MaxOpenShards    float64            `json:"max_open_shards"`    // sampled each second
	Hashes           float64            `json:"hashes"`             // password hashes and verifications done
	MeanHashMs       float64            `json:"mean_hash_ms"`       // time of one
	HashRefused      float64            `json:"hash_refused"`       // admissions refused (429)
	MaxHashQueue     float64            `json:"max_hash_queue"`     // hash requests waiting, sampled each second
	MaxWriterQueue   float64            `json:"max_writer_queue"`   // writes queued, all shards, sampled each second
	WriterRejections map[string]float64 `json:"writer_rejections"`  // by reason
	HTTPRequests     float64            `json:"http_requests"`      // as the server counted them
	HTTPStatusCounts map[string]float64 `json:"http_status_counts"` // by code, as the server counted them
	// CPUSeconds is the server process's CPU time over the run (Linux;
	// its hash worker process not included; in-process, the load
	// generator's too), and CPUPerRequestUs that per request the server
	// counted: a cost that a busy machine's noise, which moves throughput,
	// moves much less.
	CPUSeconds      float64 `json:"cpu_s"`
	CPUPerRequestUs float64 `json:"cpu_per_request_us"`
	ScrapeErrors    int     `json:"scrape_errors,omitempty"`
	Available       bool    `json:"available"` // false: /metrics could not be read
}

func delta(before, after Sample, name string, filters ...string) float64 {
	return after.sum(name, filters...) - before.sum(name, filters...)
}

// metricsWatch scrapes before a run, every interval during it, and after.
type metricsWatch struct {
	t      *Target
	before Sample
	errs   int

	mu       sync.Mutex // guards the maxima
	maxHashQ float64
	maxWQ    float64
	maxOpen  float64

	stop chan struct{}
	done chan struct{}
}

func startMetricsWatch(ctx context.Context, t *Target, every time.Duration) *metricsWatch {
	w := &metricsWatch{t: t, stop: make(chan struct{}), done: make(chan struct{})}
	b, err := t.Scrape(ctx)
	if err != nil {
		w.errs++
	}
	w.before = b
	w.observe(b)
	go func() {
		defer close(w.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-tk.C:
				s, err := t.Scrape(ctx)
				if err != nil {
					w.mu.Lock()
					w.errs++
					w.mu.Unlock()
					continue
				}
				w.observe(s)
			}
		}
	}()
	return w
}

func (w *metricsWatch) observe(s Sample) {
	if s == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.maxHashQ = max(w.maxHashQ, s.sum("keyshard_hash_queue_length"))
	w.maxWQ = max(w.maxWQ, s.sum("keyshard_shard_writer_queue_depth"))
	w.maxOpen = max(w.maxOpen, s.sum("keyshard_shard_cache_open_shards"))
}

// finish stops the sampling, scrapes once more and returns the deltas.
func (w *metricsWatch) finish(ctx context.Context) ServerMetrics {
	close(w.stop)
	<-w.done
	after, err := w.t.Scrape(ctx)
	w.observe(after)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errs++
	}
	m := ServerMetrics{ScrapeErrors: w.errs}
	if w.before == nil || after == nil {
		return m
	}
	b := w.before
	m.Available = true
	m.Batches = delta(b, after, "keyshard_shard_batch_size_count")
	m.BatchedOps = delta(b, after, "keyshard_shard_batch_size_sum")
	if m.Batches > 0 {
		m.MeanBatchSize = m.BatchedOps / m.Batches
		m.MeanCommitMs = 1000 * delta(b, after, "keyshard_shard_commit_duration_seconds_sum") / delta(b, after, "keyshard_shard_commit_duration_seconds_count")
	}
	m.CacheHits = delta(b, after, "keyshard_shard_cache_hits_total")
	m.CacheMisses = delta(b, after, "keyshard_shard_cache_misses_total")
	m.CacheEvictions = delta(b, after, "keyshard_shard_cache_evictions_total")
	m.Hashes = delta(b, after, "keyshard_hash_duration_seconds_count")
	if m.Hashes > 0 {
		m.MeanHashMs = 1000 * delta(b, after, "keyshard_hash_duration_seconds_sum") / m.Hashes
	}
	m.HashRefused = delta(b, after, "keyshard_hash_admissions_refused_total")
	m.MaxHashQueue = w.maxHashQ
	m.MaxWriterQueue = w.maxWQ
	m.MaxOpenShards = w.maxOpen
	m.WriterRejections = map[string]float64{}
	for _, r := range []string{"overloaded", "busy", "deferred_full"} {
		if d := delta(b, after, "keyshard_shard_rejections_total", `reason="`+r+`"`); d != 0 {
			m.WriterRejections[r] = d
		}
	}
	m.HTTPStatusCounts = map[string]float64{}
	for k := range after {
		base, labels, _ := strings.Cut(k, "{")
		if base != "keyshard_http_requests_total" || strings.Contains(labels, `route="/metrics"`) {
			continue
		}
		_, code, ok := strings.Cut(labels, `code="`)
		if !ok {
			continue
		}
		code, _, _ = strings.Cut(code, `"`)
		d := after[k] - b[k]
		if d != 0 {
			m.HTTPStatusCounts[code] += d
			m.HTTPRequests += d
		}
	}
	m.CPUSeconds = delta(b, after, "process_cpu_seconds_total")
	if m.HTTPRequests > 0 {
		m.CPUPerRequestUs = 1e6 * m.CPUSeconds / m.HTTPRequests
	}
	return m
}

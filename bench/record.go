package bench

import (
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds from 1 µs to 5 minutes with three
// significant digits.
const (
	histMinMicros = 1
	histMaxMicros = int64(5 * time.Minute / time.Microsecond)
	histSigFigs   = 3
)

// Status keys that are not HTTP codes.
const (
	StatusTransportError = "error"      // no response (connection refused, timeout...)
	StatusDropped        = "dropped"    // open loop: in-flight limit reached, not sent
	StatusNoSession      = "no_session" // no idle session to refresh with, not sent
)

// series records the latency and outcome of one kind of request. Safe for
// concurrent use.
type series struct {
	mu      sync.Mutex // guards the fields below
	all     *hdrhistogram.Histogram
	ok      *hdrhistogram.Histogram // 2xx only
	refused *hdrhistogram.Histogram // 429 and 503 only
	status  map[string]int64
	sent    int64
}

func newSeries() *series {
	return &series{
		all:     hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs),
		ok:      hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs),
		refused: hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs),
		status:  map[string]int64{},
	}
}

// add records one request: its HTTP status (0 with err set when there was
// no response) and its latency.
func (s *series) add(status int, err error, d time.Duration) {
	us := max(int64(d/time.Microsecond), histMinMicros)
	us = min(us, histMaxMicros)
	key := StatusTransportError
	if err == nil {
		key = strconv.Itoa(status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	s.status[key]++
	_ = s.all.RecordValue(us)
	switch {
	case err != nil:
	case status >= 200 && status < 300:
		_ = s.ok.RecordValue(us)
	case status == 429 || status == 503:
		_ = s.refused.RecordValue(us)
	}
}

// skip counts a request that was due but not sent (key is StatusDropped or
// StatusNoSession).
func (s *series) skip(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[key]++
}

// Latency summarises a histogram in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P95Ms float64 `json:"p95_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50Ms: ms(h.ValueAtQuantile(50)),
		P95Ms: ms(h.ValueAtQuantile(95)),
		P99Ms: ms(h.ValueAtQuantile(99)),
		MaxMs: ms(h.Max()),
	}
}

// recorder holds one series per operation of a run.
type recorder struct {
	mu  sync.Mutex // guards ops
	ops map[Op]*series
}

func newRecorder() *recorder { return &recorder{ops: map[Op]*series{}} }

func (r *recorder) series(op Op) *series {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.ops[op]
	if s == nil {
		s = newSeries()
		r.ops[op] = s
	}
	return s
}

// merged returns the union of the series of ops (all when ops is empty).
func (r *recorder) merged(ops ...Op) *series {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := newSeries()
	for op, s := range r.ops {
		if len(ops) > 0 && !containsOp(ops, op) {
			continue
		}
		s.mu.Lock()
		out.all.Merge(s.all)
		out.ok.Merge(s.ok)
		out.refused.Merge(s.refused)
		for k, v := range s.status {
			out.status[k] += v
		}
		out.sent += s.sent
		s.mu.Unlock()
	}
	return out
}

func containsOp(ops []Op, op Op) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

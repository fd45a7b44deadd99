package bench

import (
	"runtime/metrics"
	"time"
)

// RuntimeStats describes this process's Go runtime during one run: the
// load generator's, and the server's too when it runs in-process. A
// scheduler latency or GC pause of the same order as the request latencies
// means the figures measure the process as much as the server.
type RuntimeStats struct {
	// SchedLatency is how long goroutines waited, runnable, for a thread.
	SchedLatency Latency `json:"sched_latency"`
	// GCPause is the time the world was stopped, per stop.
	GCPause  Latency `json:"gc_pause"`
	GCCycles uint64  `json:"gc_cycles"`
	// GCCPUSeconds is the CPU the collector took (mark assists included).
	GCCPUSeconds float64 `json:"gc_cpu_seconds"`
}

var runtimeSamples = []string{
	"/sched/latencies:seconds",
	"/sched/pauses/total/gc:seconds",
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
}

// runtimeWatch holds the runtime's counters at the start of a run.
type runtimeWatch struct{ start []metrics.Sample }

func startRuntimeWatch() *runtimeWatch {
	return &runtimeWatch{start: readRuntime()}
}

func readRuntime() []metrics.Sample {
	s := make([]metrics.Sample, len(runtimeSamples))
	for i, name := range runtimeSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	return s
}

// finish returns what happened since the watch started; metrics this Go
// does not have stay zero.
func (w *runtimeWatch) finish() *RuntimeStats {
	end := readRuntime()
	out := &RuntimeStats{}
	for i := range end {
		a, b := w.start[i].Value, end[i].Value
		if b.Kind() == metrics.KindBad {
			continue
		}
		switch end[i].Name {
		case "/sched/latencies:seconds":
			out.SchedLatency = histogramDelta(a.Float64Histogram(), b.Float64Histogram())
		case "/sched/pauses/total/gc:seconds":
			out.GCPause = histogramDelta(a.Float64Histogram(), b.Float64Histogram())
		case "/gc/cycles/total:gc-cycles":
			out.GCCycles = b.Uint64() - a.Uint64()
		case "/cpu/classes/gc/total:cpu-seconds":
			out.GCCPUSeconds = b.Float64() - a.Float64()
		}
	}
	return out
}

// histogramDelta summarizes the observations b has and a had not, each
// taken at its bucket's upper bound (so quantiles err high, by at most one
// bucket: the runtime's buckets are a few per power of two).
func histogramDelta(a, b *metrics.Float64Histogram) Latency {
	counts := make([]uint64, len(b.Counts))
	var total uint64
	for i, c := range b.Counts {
		if a != nil && i < len(a.Counts) {
			c -= a.Counts[i]
		}
		counts[i] = c
		total += c
	}
	l := Latency{Count: int64(total)}
	if total == 0 {
		return l
	}
	at := func(q float64) float64 {
		rank := uint64(q * float64(total-1))
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen > rank {
				return bucketMs(b.Buckets[i+1])
			}
		}
		return bucketMs(b.Buckets[len(b.Buckets)-1])
	}
	l.P50Ms, l.P95Ms, l.P99Ms, l.MaxMs = at(0.50), at(0.95), at(0.99), at(1)
	return l
}

// bucketMs converts a bucket bound in seconds to milliseconds; the last
// bucket's +Inf bound reads as the largest finite one would (an hour).
func bucketMs(s float64) float64 {
	if s > float64(time.Hour/time.Second) {
		s = float64(time.Hour / time.Second)
	}
	return s * 1e3
}

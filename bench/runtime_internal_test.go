package bench

import (
	"math"
	"runtime/metrics"
	"testing"
)

func TestHistogramDelta(t *testing.T) {
	buckets := []float64{0, 0.001, 0.002, 0.004, 0.008, 0.016}
	before := &metrics.Float64Histogram{Buckets: buckets, Counts: []uint64{5, 5, 0, 0, 0}}
	// Since before: 90 observations in [2, 4) ms and 9 in [8, 16) ms.
	after := &metrics.Float64Histogram{Buckets: buckets, Counts: []uint64{5, 5, 90, 0, 9}}
	l := histogramDelta(before, after)
	if l.Count != 99 {
		t.Fatalf("count %d, want 99", l.Count)
	}
	if l.P50Ms != 4 || l.P95Ms != 16 || l.MaxMs != 16 {
		t.Errorf("p50 %v p95 %v max %v ms, want 4, 16, 16 (bucket upper bounds)", l.P50Ms, l.P95Ms, l.MaxMs)
	}
	if got := histogramDelta(after, after); got.Count != 0 || got.P99Ms != 0 {
		t.Errorf("no new observations: %+v", got)
	}
	inf := &metrics.Float64Histogram{Buckets: []float64{0, 1, math.Inf(1)}, Counts: []uint64{0, 1}}
	if got := histogramDelta(nil, inf); got.MaxMs != 3.6e6 {
		t.Errorf("an observation in the +Inf bucket reads %v ms, want an hour", got.MaxMs)
	}
}

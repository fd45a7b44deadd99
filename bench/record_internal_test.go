package bench

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestSeries_Add(t *testing.T) {
	s := newSeries()
	s.add(200, nil, time.Millisecond)
	s.add(429, nil, 2*time.Millisecond)
	s.add(429, nil, 2*time.Millisecond)
	s.add(503, nil, 3*time.Millisecond)
	s.add(400, nil, 4*time.Millisecond)
	s.add(0, errors.New("connection refused"), 5*time.Millisecond)
	s.skip(StatusDropped)
	want := map[string]int64{"200": 1, "429": 2, "503": 1, "400": 1, StatusTransportError: 1, StatusDropped: 1}
	if len(s.status) != len(want) {
		t.Fatalf("status %v, want %v", s.status, want)
	}
	for k, v := range want {
		if s.status[k] != v {
			t.Errorf("status[%s] = %d, want %d", k, s.status[k], v)
		}
	}
	if s.all.TotalCount() != 6 || s.ok.TotalCount() != 1 || s.refused.TotalCount() != 3 {
		t.Errorf("histograms all %d ok %d refused %d, want 6 1 3", s.all.TotalCount(), s.ok.TotalCount(), s.refused.TotalCount())
	}
	if l := summarize(s.refused); l.MaxMs < 2.9 || l.MaxMs > 3.1 {
		t.Errorf("refused max %v ms, want 3", l.MaxMs)
	}
}

func TestMix_Pick(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	counts := map[Op]int{}
	const n = 200_000
	for range n {
		counts[DefaultMix.pick(rng)]++
	}
	for _, e := range DefaultMix {
		got, want := float64(counts[e.Op])/n, e.Weight/100
		if got < want*0.8-0.001 || got > want*1.2+0.001 {
			t.Errorf("%s: %.4f, want %.4f", e.Op, got, want)
		}
	}
}

func TestZipfPicker(t *testing.T) {
	// The tenants workload: tenant 0 is drawn far more often than the
	// last one, every draw is a valid tenant, and the mix still holds.
	const nt, n = 100, 100_000
	next := zipfPicker(Mix{{OpUser, 3}, {OpRefresh, 1}}, nt, 1.1)(rand.New(rand.NewPCG(3, 4)))
	counts := make([]int, nt)
	users := 0
	for range n {
		c := next()
		if c.tenant < 0 || c.tenant >= nt {
			t.Fatalf("tenant %d out of range", c.tenant)
		}
		counts[c.tenant]++
		if c.op == OpUser {
			users++
		}
	}
	if counts[0] < 10*counts[nt-1] || counts[nt-1] == 0 {
		t.Errorf("tenant 0 drawn %d times, tenant %d %d times: want skewed, all reachable", counts[0], nt-1, counts[nt-1])
	}
	if share := float64(users) / n; share < 0.73 || share > 0.77 {
		t.Errorf("user share %.3f, want 0.75", share)
	}
}

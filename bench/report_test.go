package bench_test

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/bench"
)

func TestReport_LoginShares(t *testing.T) {
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	login := &bench.Result{Workload: "login", Mode: "closed", Concurrency: 64, AchievedRPS: 63}
	refresh := &bench.Result{Workload: "refresh", Mode: "closed", Concurrency: 16, AchievedRPS: 4000}
	r := &bench.Report{HashRate: 80, HashRateAfter: 60, Results: []*bench.Result{login, refresh}}
	r.SetLoginShares()
	s := login.LoginShare
	if s == nil || !near(s.OfBefore, 63.0/80) || !near(s.OfAfter, 63.0/60) || !near(s.OfMean, 63.0/70) {
		t.Fatalf("login share = %+v, want 63/80, 63/60 and 63/70", s)
	}
	if refresh.LoginShare != nil {
		t.Errorf("a refresh run has a login share: %+v", refresh.LoginShare)
	}
	var out bytes.Buffer
	r.PrintTable(&out)
	if !strings.Contains(out.String(), "login c=64: 0.90 of the raw Argon2id rate (mean of before and after the runs; 0.79 of before, 1.05 of after)") {
		t.Errorf("the table does not give the share:\n%s", out.String())
	}

	// No rate measured after the runs: the share against the one before.
	login.LoginShare = nil
	r.HashRateAfter = 0
	r.SetLoginShares()
	if s := login.LoginShare; s == nil || !near(s.OfBefore, 63.0/80) || s.OfAfter != 0 || s.OfMean != 0 {
		t.Fatalf("login share without an after rate = %+v", s)
	}
}

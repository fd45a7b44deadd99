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

// TestReport_LoginRefusals: the table gives the refused logins' latency
// apart (the target is theirs), and no such row when none was refused.
func TestReport_LoginRefusals(t *testing.T) {
	login := &bench.Result{Workload: "login", Mode: "closed", Concurrency: 256, AchievedRPS: 70, Ops: map[string]bench.OpResult{
		"login": {All: bench.Latency{Count: 4000, P95Ms: 1015}, Refused: bench.Latency{Count: 2800, P50Ms: 0.5, P95Ms: 4.25, P99Ms: 9.5, MaxMs: 30}},
	}}
	refresh := &bench.Result{Workload: "refresh", Mode: "closed", Concurrency: 16, AchievedRPS: 4000, Ops: map[string]bench.OpResult{
		"refresh": {All: bench.Latency{Count: 60000}},
	}}
	var out bytes.Buffer
	(&bench.Report{Results: []*bench.Result{login, refresh}}).PrintTable(&out)
	lines := strings.Split(out.String(), "\n")
	var rows []string
	for _, l := range lines {
		if strings.Contains(l, "refused") {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
	}
	if len(rows) != 1 || rows[0] != "login refused 2800 0.50 4.25 9.50 30.0 429/503" {
		t.Fatalf("refused rows = %q, want one for login\n%s", rows, out.String())
	}
	// A storm prints its refusals in its own row, once.
	storm := &bench.Result{Workload: "storm", Mode: "closed", Concurrency: 16, Ops: login.Ops,
		Storm: &bench.StormResult{LoginRefused: bench.Latency{Count: 2800, P95Ms: 4.25}}}
	out.Reset()
	(&bench.Report{Results: []*bench.Result{storm}}).PrintTable(&out)
	if n := strings.Count(out.String(), "refused"); n != 1 {
		t.Fatalf("a storm's table has %d refused rows, want 1\n%s", n, out.String())
	}
}

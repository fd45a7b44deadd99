package bench_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/bench"
)

// tinyHash keeps the tests fast under -race on two shared cores.
var tinyHash = hash.Params{MemoryKiB: 64, Time: 1, Threads: 1}

// testBench starts an in-process server on loopback and sets up tenants ×
// users on it.
func testBench(tb testing.TB, tenants, users int) (*bench.Bench, *bench.LocalServer) {
	tb.Helper()
	ctx := context.Background()
	srv, err := bench.StartServer(ctx, bench.ServerConfig{Server: app.ServerConfig{
		Storage: app.Config{DataDir: tb.TempDir(), Synchronous: "NORMAL"},
		Hash:    hash.Config{Params: tinyHash, Workers: 2},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Errorf("close server: %v", err)
		}
	})
	t := &bench.Target{URL: srv.URL, AdminToken: srv.AdminToken, HTTP: bench.NewHTTPClient(64, 30*time.Second)}
	fx, err := bench.Setup(ctx, t, bench.SetupConfig{Tenants: tenants, Users: users, Concurrency: 4})
	if err != nil {
		tb.Fatal(err)
	}
	if got := fx.Sessions(); got != tenants*users {
		tb.Fatalf("setup made %d sessions, want %d", got, tenants*users)
	}
	return &bench.Bench{Target: t, Fixture: fx, HashRate: 100}, srv
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// checkServerAgrees checks that the server counted exactly the requests
// the report says were answered, status by status.
func checkServerAgrees(t *testing.T, res *bench.Result) {
	t.Helper()
	if !res.Server.Available {
		t.Fatalf("server metrics not scraped (%d errors)", res.Server.ScrapeErrors)
	}
	var answered int64
	for code, n := range res.StatusCount {
		if _, err := strconv.Atoi(code); err != nil {
			continue // error, dropped, no_session: the server saw none
		}
		answered += n
		if got := res.Server.HTTPStatusCounts[code]; got != float64(n) {
			t.Errorf("status %s: report %d, server counted %v", code, n, got)
		}
	}
	if res.Server.HTTPRequests != float64(answered) {
		t.Errorf("server counted %v requests, report answered %d (%v)", res.Server.HTTPRequests, answered, res.StatusCount)
	}
	// Every request woke goroutines of this process (the generator's, and
	// the in-process server's): the scheduler saw them.
	if res.Runtime == nil || res.Runtime.SchedLatency.Count == 0 {
		t.Errorf("no runtime statistics: %+v", res.Runtime)
	}
}

func TestBench_Run(t *testing.T) {
	b, _ := testBench(t, 2, 4)
	ctx := context.Background()

	t.Run("MixedCountsAndMix", func(t *testing.T) {
		mix, err := bench.ParseMix("user=50,refresh=30,update=10,login=6,signup=4")
		if err != nil {
			t.Fatal(err)
		}
		const n = 1500
		res, err := b.Run(ctx, bench.RunConfig{Workload: "mixed", Mix: mix,
			Load: bench.Load{Concurrency: 8, Requests: n, Duration: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != n || sum(res.OpCounts) != n || sum(res.StatusCount) != n {
			t.Fatalf("requests %d, op counts %v, status counts %v; want %d each", res.Requests, res.OpCounts, res.StatusCount, n)
		}
		if res.StatusCount["200"] != n {
			t.Errorf("status counts %v, want %d × 200", res.StatusCount, n)
		}
		for _, e := range mix {
			p := mix.Share(e.Op)
			got := float64(res.OpCounts[string(e.Op)]) / n
			tol := 5*math.Sqrt(p*(1-p)/n) + 0.01
			if math.Abs(got-p) > tol {
				t.Errorf("%s: share %.3f, want %.3f ± %.3f", e.Op, got, p, tol)
			}
		}
		if res.Mix != mix.String() || res.Mix == "" {
			t.Errorf("mix stated as %q, want %q", res.Mix, mix.String())
		}
		checkServerAgrees(t, res)
		if res.Server.Batches == 0 || res.Server.CacheHits == 0 {
			t.Errorf("server metrics deltas empty: %+v", res.Server)
		}
	})

	t.Run("RefreshRotates", func(t *testing.T) {
		// 8 clients share 8 sessions: a token reused concurrently or an
		// old token presented after the grace would answer 400.
		const n = 400
		res, err := b.Run(ctx, bench.RunConfig{Workload: "refresh",
			Load: bench.Load{Concurrency: 8, Requests: n, Duration: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCount["200"] != n || len(res.StatusCount) != 1 {
			t.Fatalf("status counts %v, want %d × 200", res.StatusCount, n)
		}
		// Every session still holds a live chain: another round at
		// concurrency 1 passes too.
		res, err = b.Run(ctx, bench.RunConfig{Workload: "refresh", Load: bench.Load{Concurrency: 1, Requests: 16, Duration: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCount["200"] != 16 {
			t.Fatalf("after the run: status counts %v", res.StatusCount)
		}
		checkServerAgrees(t, res)
	})

	t.Run("OpenLoop", func(t *testing.T) {
		const n = 100
		res, err := b.Run(ctx, bench.RunConfig{Workload: "user",
			Load: bench.Load{Rate: 200, Requests: n, Duration: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Mode != "open" || res.OfferedRPS != 200 {
			t.Errorf("mode %s offered %v, want open at 200", res.Mode, res.OfferedRPS)
		}
		if sum(res.StatusCount) != n || res.OpCounts["user"] != n {
			t.Fatalf("status counts %v, op counts %v, want %d requests", res.StatusCount, res.OpCounts, n)
		}
		checkServerAgrees(t, res)
	})

	t.Run("TenantsWorkload", func(t *testing.T) {
		const n = 300
		res, err := b.Run(ctx, bench.RunConfig{Workload: "tenants", Load: bench.Load{Concurrency: 4, Requests: n, Duration: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		if sum(res.OpCounts) != n || res.Tenants != 2 {
			t.Fatalf("op counts %v tenants %d", res.OpCounts, res.Tenants)
		}
		checkServerAgrees(t, res)
	})

	t.Run("Storm", func(t *testing.T) {
		res, err := b.Run(ctx, bench.RunConfig{Workload: "storm", StormFactor: 2, StormRate: 40,
			Load: bench.Load{Duration: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Storm == nil || res.Storm.LoginOfferedRPS != 200 {
			t.Fatalf("storm result %+v, want logins offered at 2 × 100/s", res.Storm)
		}
		logins := res.OpCounts["login"]
		other := res.OpCounts["refresh"] + res.OpCounts["user"]
		if logins != 200 || other != 40 {
			t.Errorf("op counts %v, want 200 logins and 40 others in 1 s", res.OpCounts)
		}
		if got := res.Storm.LoginOK.Count + res.Storm.LoginRefused.Count; got > logins {
			t.Errorf("login ok+refused %d > logins %d", got, logins)
		}
		checkServerAgrees(t, res)
	})

	t.Run("Sweep", func(t *testing.T) {
		res, err := b.Sweep(ctx, bench.RunConfig{Workload: "user", Load: bench.Load{Duration: 300 * time.Millisecond}},
			bench.SweepConfig{Start: 20, Factor: 2, MaxSteps: 3, Refine: 1, P95BoundMs: 10_000, Half: true})
		if err != nil {
			t.Fatal(err)
		}
		sw := res.Sweep
		if sw == nil || len(sw.Steps) == 0 {
			t.Fatal("no sweep steps")
		}
		var best float64
		for _, st := range sw.Steps {
			if st.Sustained {
				best = max(best, st.OfferedRPS)
			}
		}
		if sw.SaturationRPS != best {
			t.Errorf("saturation %v, highest sustained step %v (%+v)", sw.SaturationRPS, best, sw.Steps)
		}
		if best > 0 && (sw.Half == nil || sw.Half.OfferedRPS != best/2) {
			t.Errorf("half run %+v, want one at %v", sw.Half, best/2)
		}
	})
}

func TestSweep_NothingSustained(t *testing.T) {
	b, _ := testBench(t, 1, 2)
	// No P95 can meet a 1 ns bound: the sweep comes down from its start
	// and gives up after MaxSteps.
	res, err := b.Sweep(context.Background(), bench.RunConfig{Workload: "user", Load: bench.Load{Duration: 200 * time.Millisecond}},
		bench.SweepConfig{Start: 40, Factor: 2, MaxSteps: 3, P95BoundMs: 1e-6})
	if err != nil {
		t.Fatal(err)
	}
	sw := res.Sweep
	if len(sw.Steps) != 3 || sw.SaturationRPS != 0 || sw.Half != nil {
		t.Fatalf("sweep %+v, want 3 steps, none sustained", sw)
	}
	for i, want := range []float64{40, 20, 10} {
		if sw.Steps[i].OfferedRPS != want || sw.Steps[i].Sustained {
			t.Errorf("step %d: %+v, want %v not sustained", i, sw.Steps[i], want)
		}
	}
}

func TestSetup_BaseTenants(t *testing.T) {
	ctx := context.Background()
	srv, err := bench.StartServer(ctx, bench.ServerConfig{Server: app.ServerConfig{
		Storage: app.Config{DataDir: t.TempDir(), Synchronous: "NORMAL"},
		Hash:    hash.Config{Params: tinyHash, Workers: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tg := &bench.Target{URL: srv.URL, AdminToken: srv.AdminToken, HTTP: bench.NewHTTPClient(16, 30*time.Second)}
	fx, err := bench.Setup(ctx, tg, bench.SetupConfig{Tenants: 3, BaseTenants: 1, Users: 3, OtherUsers: 1, Backend: "sqlite"})
	if err != nil {
		t.Fatal(err)
	}
	if fx.Sessions() != 5 || fx.BaseTenants() != 1 || len(fx.Slugs) != 3 {
		t.Fatalf("sessions %d base %d tenants %d, want 5, 1, 3", fx.Sessions(), fx.BaseTenants(), len(fx.Slugs))
	}
	b := &bench.Bench{Target: tg, Fixture: fx, HashRate: 100}
	res, err := b.Run(ctx, bench.RunConfig{Workload: "refresh", Load: bench.Load{Concurrency: 3, Requests: 60, Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tenants != 1 || res.StatusCount["200"] != 60 {
		t.Errorf("refresh on the base tenant: tenants %d, status %v", res.Tenants, res.StatusCount)
	}
	res, err = b.Run(ctx, bench.RunConfig{Workload: "tenants", Load: bench.Load{Concurrency: 2, Requests: 60, Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tenants != 3 || res.StatusCount["200"] != 60 {
		t.Errorf("tenants workload: tenants %d, status %v", res.Tenants, res.StatusCount)
	}
	if res.Backend != "sqlite" {
		t.Errorf("backend %q", res.Backend)
	}
	if err := fx.Cleanup(ctx, tg, 2); err != nil {
		t.Fatal(err)
	}
	for _, slug := range fx.Slugs {
		req, _ := http.NewRequest("GET", srv.URL+"/admin/tenants/"+slug, nil)
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("tenant %s after cleanup: %d, want 404", slug, r.StatusCode)
		}
	}
}

func TestBench_StatusCodesCounted(t *testing.T) {
	b, _ := testBench(t, 2, 2)
	ctx := context.Background()
	// Suspend the second tenant: its requests answer 403.
	req, _ := http.NewRequest("POST", b.Target.URL+"/admin/tenants/"+b.Fixture.Slugs[1]+"/suspend", nil)
	req.Header.Set("Authorization", "Bearer "+b.Target.AdminToken)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("suspend: %d", r.StatusCode)
	}
	const n = 200
	res, err := b.Run(ctx, bench.RunConfig{Workload: "user", Load: bench.Load{Concurrency: 4, Requests: n, Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCount["200"] == 0 || res.StatusCount["403"] == 0 || res.StatusCount["200"]+res.StatusCount["403"] != n {
		t.Fatalf("status counts %v, want 200s and 403s adding up to %d", res.StatusCount, n)
	}
	if want := float64(res.StatusCount["403"]) / n; math.Abs(res.ErrorRate-want) > 1e-9 {
		t.Errorf("error rate %v, want %v", res.ErrorRate, want)
	}
	if res.AchievedRPS <= 0 || res.AchievedRPS*res.DurationS > float64(res.StatusCount["200"])+0.5 {
		t.Errorf("achieved %v/s over %vs counts more than the %d 200s", res.AchievedRPS, res.DurationS, res.StatusCount["200"])
	}
	checkServerAgrees(t, res)
}

func TestReport_JSON(t *testing.T) {
	b, _ := testBench(t, 1, 2)
	res, err := b.Run(context.Background(), bench.RunConfig{Workload: "mixed", Load: bench.Load{Concurrency: 2, Requests: 50, Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	rep := &bench.Report{Target: b.Target.URL, HashRate: 100, Results: []*bench.Result{res}}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := rep.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		HashRate float64          `json:"hash_rate"`
		Results  []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.HashRate != 100 || len(doc.Results) != 1 {
		t.Fatalf("report %s", raw)
	}
	r := doc.Results[0]
	for _, k := range []string{"workload", "offered_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "status_counts", "hash_rate", "mix", "server"} {
		if _, ok := r[k]; !ok {
			t.Errorf("result has no %q: %s", k, raw)
		}
	}
	if r["workload"] != "mixed" || r["hash_rate"] != 100.0 {
		t.Errorf("workload %v hash_rate %v", r["workload"], r["hash_rate"])
	}
	sc, _ := r["status_counts"].(map[string]any)
	if sc["200"] != 50.0 {
		t.Errorf("status_counts %v, want 50 × 200", sc)
	}
	p50, p95, p99, mx := r["p50_ms"].(float64), r["p95_ms"].(float64), r["p99_ms"].(float64), r["max_ms"].(float64)
	if !(0 < p50 && p50 <= p95 && p95 <= p99 && p99 <= mx) {
		t.Errorf("percentiles out of order: %v %v %v %v", p50, p95, p99, mx)
	}
}

func TestParseMix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want string
	}{
		{"user=65,refresh=30,update=4.8,login=0.15,signup=0.05", true, "user=65%,refresh=30%,update=4.8%,login=0.15%,signup=0.05%"},
		{"user=1,refresh=1", true, "user=50%,refresh=50%"},
		{"refresh=3, user=0", true, "refresh=100%"},
		{"user=65,bogus=1", false, ""},
		{"user", false, ""},
		{"user=-1", false, ""},
		{"user=0", false, ""},
		{"user=1,user=2", false, ""},
	} {
		m, err := bench.ParseMix(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseMix(%q) error %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && m.String() != tc.want {
			t.Errorf("ParseMix(%q) = %s, want %s", tc.in, m, tc.want)
		}
	}
	if got := bench.DefaultMix.String(); got != "user=65%,refresh=30%,update=4.8%,login=0.15%,signup=0.05%" {
		t.Errorf("default mix %s", got)
	}
}

// TestBench_OAuthWorkloads: client_credentials and authorization_code run
// against a real server; every exchange of a minted code succeeds once,
// and the run stops when the codes are used up.
func TestBench_OAuthWorkloads(t *testing.T) {
	ctx := context.Background()
	srv, err := bench.StartServer(ctx, bench.ServerConfig{Server: app.ServerConfig{
		Storage: app.Config{DataDir: t.TempDir(), Synchronous: "NORMAL"},
		Hash:    hash.Config{Params: tinyHash, Workers: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tg := &bench.Target{URL: srv.URL, AdminToken: srv.AdminToken, HTTP: bench.NewHTTPClient(16, 30*time.Second)}
	fx, err := bench.Setup(ctx, tg, bench.SetupConfig{Tenants: 2, Users: 2, OAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	b := &bench.Bench{Target: tg, Fixture: fx, HashRate: 100}
	res, err := b.Run(ctx, bench.RunConfig{Workload: "client_credentials", Load: bench.Load{Concurrency: 4, Requests: 200, Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCount["200"] != 200 {
		t.Fatalf("client_credentials: %v", res.StatusCount)
	}
	if err := fx.MintCodes(ctx, tg, 40, 4); err != nil {
		t.Fatal(err)
	}
	res, err = b.Run(ctx, bench.RunConfig{Workload: "authorization_code", Load: bench.Load{Concurrency: 4, Duration: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCount["200"] != 40 || len(res.StatusCount) > 2 {
		t.Fatalf("authorization_code: %v", res.StatusCount)
	}
}

package api_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/keyshard/keyshard/auth/hash"
)

// Phase lengths and per-client caps of BenchmarkAuth_Throughput: every loop
// stops at its deadline or its count, whichever comes first.
const (
	benchUsers        = 20
	benchLoginClients = 16
	benchReadClients  = 16 // refresh and GET /user without load
	benchMixClients   = 4  // refresh and GET /user each, under login load
	// benchOpenRate is the rate of refresh and of GET /user (each) in the
	// open-loop phases, near the case study's 210 req/s.
	benchOpenRate     = 100
	benchRawHashDur   = 3 * time.Second
	benchLoginDur     = 5 * time.Second
	benchReadDur      = 3 * time.Second
	benchMixDur       = 5 * time.Second
	benchMaxRawHashes = 10_000 // per goroutine
	benchMaxOps       = 50_000 // per client and phase
)

// benchClient is the HTTP client of the benchmark's load generators.
func benchClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32},
	}
}

// benchDo sends one request and returns its status, latency and (when want
// is set) the decoded body; the body is always read to the end so that the
// connection is reused.
func benchDo(c *http.Client, method, url, bearer string, body []byte, want bool) (int, time.Duration, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	start := time.Now()
	res, err := c.Do(req)
	if err != nil {
		return 0, time.Since(start), nil, err
	}
	defer res.Body.Close()
	var out map[string]any
	if want && res.StatusCode == http.StatusOK {
		err = json.NewDecoder(res.Body).Decode(&out)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, time.Since(start), out, err
}

// benchStats collects the outcome of one kind of request across clients.
type benchStats struct {
	mu       sync.Mutex
	ok       []time.Duration // latencies of 200s
	tooMany  []time.Duration // latencies of 429s
	other    int             // other statuses and transport errors
	firstErr string
}

func (s *benchStats) add(status int, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil && status == http.StatusOK:
		s.ok = append(s.ok, d)
	case err == nil && status == http.StatusTooManyRequests:
		s.tooMany = append(s.tooMany, d)
	default:
		s.other++
		if s.firstErr == "" {
			s.firstErr = fmt.Sprintf("status %d err %v", status, err)
		}
	}
}

// pct returns the q-quantile of ds in milliseconds (0 when empty).
func pct(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return float64(s[i]) / float64(time.Millisecond)
}

// runClients runs n clients, each calling step until the deadline passes or
// it has made benchMaxOps calls (or step returns false), and returns the
// elapsed wall time.
func runClients(n int, dur time.Duration, step func(client, i int) bool) time.Duration {
	start := time.Now()
	deadline := start.Add(dur)
	var wg sync.WaitGroup
	for c := range n {
		wg.Go(func() {
			for i := 0; i < benchMaxOps && time.Now().Before(deadline); i++ {
				if !step(c, i) {
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// openLoop calls fn at rate per second for dur (at most benchMaxOps
// calls), each on its own goroutine, passing the time the call was due:
// latency timed from it includes any wait the generator or the server
// imposed, so a slow server cannot slow the offered load down.
func openLoop(rate float64, dur time.Duration, fn func(due time.Time)) {
	start := time.Now()
	var wg sync.WaitGroup
	for i := range benchMaxOps {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if due.Sub(start) >= dur {
			break
		}
		time.Sleep(time.Until(due))
		wg.Go(func() { fn(due) })
	}
	wg.Wait()
}

// fsyncProbe returns an open-loop step that overwrites one 4 KiB block of
// a preallocated file in dir and fdatasyncs it, as a WAL commit of a small
// transaction does: the disk's own share of a refresh's latency.
func fsyncProbe(b *testing.B, dir string, st *benchStats) (step func(due time.Time), done func()) {
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		b.Fatal(err)
	}
	const blocks = 256
	block := make([]byte, 4096)
	if _, err := f.Write(make([]byte, blocks*len(block))); err != nil {
		b.Fatal(err)
	}
	if err := fdatasync(f); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex // one commit at a time, like one shard's writer
	var n int64
	step = func(due time.Time) {
		mu.Lock()
		defer mu.Unlock()
		n++
		_, err := f.WriteAt(block, (n%blocks)*int64(len(block)))
		if err == nil {
			err = fdatasync(f)
		}
		st.add(http.StatusOK, time.Since(due), err)
	}
	return step, func() { _ = f.Close(); _ = os.Remove(f.Name()) }
}

// benchSession is one client's session chain.
type benchSession struct {
	access, refresh string
}

// BenchmarkAuth_Throughput measures, on a real loopback server with OWASP
// Argon2id parameters and the default pool (NumCPU workers, 1 s budget):
// the raw hash rate, password logins against it, refresh and GET /user
// without load, refresh and GET /user in closed loops while logins saturate
// the pool, and refresh and GET /user at a fixed rate (open loop) without
// and with that login load.
// The workload runs once whatever b.N; use -benchtime 1x.
func BenchmarkAuth_Throughput(b *testing.B) {
	if b.N > 1 {
		return // the first run (b.N == 1) already measured everything
	}
	params := hash.DefaultParams
	workers := runtime.NumCPU()

	// (a) Raw Argon2id rate on all cores, outside the server and the pool.
	var raw atomic.Int64
	rawStart := time.Now()
	rawDeadline := rawStart.Add(benchRawHashDur)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			salt := make([]byte, params.SaltLen)
			_, _ = rand.Read(salt)
			for i := 0; i < benchMaxRawHashes && time.Now().Before(rawDeadline); i++ {
				argon2.IDKey([]byte("benchmark password"), salt, params.Time, params.MemoryKiB, params.Threads, params.KeyLen)
				raw.Add(1)
			}
		})
	}
	wg.Wait()
	rawRate := float64(raw.Load()) / time.Since(rawStart).Seconds()

	// The same workload with the hash workers at normal priority and as
	// background threads (hash.Config.Background), compared in one run.
	for _, background := range []bool{false, true} {
		b.Run(fmt.Sprintf("background=%v", background), func(b *testing.B) {
			if b.N > 1 {
				return
			}
			benchAuthThroughput(b, params, workers, rawRate, background)
		})
	}
}

func benchAuthThroughput(b *testing.B, params hash.Params, workers int, rawRate float64, background bool) {
	var wg sync.WaitGroup
	// Setup (not measured): server, tenant, users. Durability as in
	// production (synchronous FULL).
	e := newAuthEnv(b, authEnvOptions{params: params, workers: workers, budget: hash.DefaultBudget, sync: "FULL", background: background})
	base := e.tenant("bench")
	logins := make([][]byte, benchUsers)
	for i := range logins {
		email, pw := fmt.Sprintf("user%02d@example.com", i), fmt.Sprintf("password-%02d", i)
		e.signup(base, email, pw)
		logins[i], _ = json.Marshal(map[string]string{"email": email, "password": pw})
	}
	client := benchClient()
	loginURL := base + "/token?grant_type=password"
	refreshURL := base + "/token?grant_type=refresh_token"
	userURL := base + "/user"

	// login hammers logins; with polite, a client answered 429 waits its
	// Retry-After (1 s) first, as a well-behaved client does.
	login := func(st *benchStats, polite bool) func(c, i int) bool {
		return func(c, i int) bool {
			status, d, _, err := benchDo(client, "POST", loginURL, "", logins[(c+i*benchLoginClients)%benchUsers], false)
			st.add(status, d, err)
			if polite && status == http.StatusTooManyRequests {
				time.Sleep(time.Second)
			}
			return true
		}
	}

	// One session chain per reading client.
	sessions := make([]benchSession, benchReadClients)
	for c := range sessions {
		status, _, body, err := benchDo(client, "POST", loginURL, "", logins[c%benchUsers], true)
		if err != nil || status != http.StatusOK {
			b.Fatalf("login for session %d: %d %v", c, status, err)
		}
		sessions[c] = benchSession{access: body["access_token"].(string), refresh: body["refresh_token"].(string)}
	}
	refresh := func(st *benchStats) func(c, i int) bool {
		return func(c, i int) bool {
			s := &sessions[c]
			req, _ := json.Marshal(map[string]string{"refresh_token": s.refresh})
			status, d, body, err := benchDo(client, "POST", refreshURL, "", req, true)
			st.add(status, d, err)
			if status == http.StatusOK && err == nil {
				s.access, _ = body["access_token"].(string)
				s.refresh, _ = body["refresh_token"].(string)
			}
			return true
		}
	}
	getUser := func(st *benchStats, offset int) func(c, i int) bool {
		return func(c, i int) bool {
			status, d, _, err := benchDo(client, "GET", userURL, sessions[offset+c].access, nil, false)
			st.add(status, d, err)
			return true
		}
	}
	// Open-loop refresh takes a session chain that no other refresh holds;
	// open-loop GET /user reads with the access tokens of the chains that
	// no refresh touches in those phases.
	free := make(chan int, benchReadClients/2)
	for c := range benchReadClients / 2 {
		free <- c
	}
	openRefresh := func(st *benchStats) func(due time.Time) {
		return func(due time.Time) {
			c := <-free
			defer func() { free <- c }()
			s := &sessions[c]
			req, _ := json.Marshal(map[string]string{"refresh_token": s.refresh})
			status, _, body, err := benchDo(client, "POST", refreshURL, "", req, true)
			st.add(status, time.Since(due), err)
			if status == http.StatusOK && err == nil {
				s.access, _ = body["access_token"].(string)
				s.refresh, _ = body["refresh_token"].(string)
			}
		}
	}
	openUser := func(st *benchStats) func(due time.Time) {
		var n atomic.Int64
		return func(due time.Time) {
			c := benchReadClients/2 + int(n.Add(1))%(benchReadClients/2)
			status, _, _, err := benchDo(client, "GET", userURL, sessions[c].access, nil, false)
			st.add(status, time.Since(due), err)
		}
	}
	check := func(name string, st *benchStats) {
		if st.other > 0 {
			b.Errorf("%s: %d unexpected responses, first: %s", name, st.other, st.firstErr)
		}
	}
	b.ResetTimer()

	// (b) Logins at 16 clients.
	var lst benchStats
	el := runClients(benchLoginClients, benchLoginDur, login(&lst, false))
	loginRate := float64(len(lst.ok)) / el.Seconds()
	check("login", &lst)

	// (c) Refresh, then GET /user, at 16 clients with no login load.
	var rst, ust benchStats
	er := runClients(benchReadClients, benchReadDur, refresh(&rst))
	eu := runClients(benchReadClients, benchReadDur, getUser(&ust, 0))
	check("refresh", &rst)
	check("user", &ust)

	// (d) Refresh and GET /user at benchOpenRate each (open loop), first
	// alone, then while 16 clients keep the hash pool saturated: the
	// storm's effect on their latency at a fixed load, which (e) cannot
	// show because its closed loops saturate the CPU by themselves. These
	// login clients behave: answered 429, one waits its Retry-After (1 s).
	var orst, oust benchStats
	wg.Go(func() { openLoop(benchOpenRate, benchMixDur, openRefresh(&orst)) })
	wg.Go(func() { openLoop(benchOpenRate, benchMixDur, openUser(&oust)) })
	wg.Wait()
	var olst, olrst, olust benchStats
	var oel time.Duration
	wg.Go(func() { oel = runClients(benchLoginClients, benchMixDur, login(&olst, true)) })
	wg.Go(func() { openLoop(benchOpenRate, benchMixDur, openRefresh(&olrst)) })
	wg.Go(func() { openLoop(benchOpenRate, benchMixDur, openUser(&olust)) })
	wg.Wait()
	check("open-loop refresh", &orst)
	check("open-loop user", &oust)
	check("login beside the open loop", &olst)
	check("open-loop refresh under load", &olrst)
	check("open-loop user under load", &olust)

	// (f) The disk alone: a 4 KiB overwrite + fdatasync at benchOpenRate,
	// without and with the same login load, in the data directory.
	var fst, flst, fllst benchStats
	probe, closeProbe := fsyncProbe(b, e.dataDir, &fst)
	openLoop(benchOpenRate, benchReadDur, probe)
	closeProbe()
	probe, closeProbe = fsyncProbe(b, e.dataDir, &flst)
	wg.Go(func() { runClients(benchLoginClients, benchReadDur, login(&fllst, true)) })
	wg.Go(func() { openLoop(benchOpenRate, benchReadDur, probe) })
	wg.Wait()
	closeProbe()
	check("fdatasync", &fst)
	check("fdatasync under load", &flst)

	// (e) 4 refresh and 4 GET /user clients in closed loops while 16
	// clients hammer logins, a refused one retrying at once.
	var mlst, mrst, must benchStats
	var mel time.Duration
	wg.Go(func() { mel = runClients(benchLoginClients, benchMixDur, login(&mlst, false)) })
	wg.Go(func() { runClients(benchMixClients, benchMixDur, refresh(&mrst)) })
	wg.Go(func() { runClients(benchMixClients, benchMixDur, getUser(&must, benchMixClients)) })
	wg.Wait()
	check("login under load", &mlst)
	check("refresh under load", &mrst)
	check("user under load", &must)

	b.StopTimer()

	b.ReportMetric(rawRate, "raw_hashes/s")
	b.ReportMetric(loginRate, "logins/s")
	b.ReportMetric(loginRate/rawRate, "login/hash")
	b.ReportMetric(float64(len(lst.tooMany)), "login_429s")
	b.ReportMetric(pct(lst.ok, 0.5), "login_p50_ms")
	b.ReportMetric(pct(lst.ok, 0.95), "login_p95_ms")
	b.ReportMetric(float64(len(rst.ok))/er.Seconds(), "refresh/s")
	b.ReportMetric(pct(rst.ok, 0.5), "refresh_p50_ms")
	b.ReportMetric(pct(rst.ok, 0.95), "refresh_p95_ms")
	b.ReportMetric(float64(len(ust.ok))/eu.Seconds(), "user/s")
	b.ReportMetric(pct(ust.ok, 0.5), "user_p50_ms")
	b.ReportMetric(pct(ust.ok, 0.95), "user_p95_ms")
	b.ReportMetric(float64(len(mlst.ok))/mel.Seconds(), "load_logins/s")
	b.ReportMetric(float64(len(mlst.tooMany)), "load_login_429s")
	b.ReportMetric(pct(mlst.tooMany, 0.95), "load_429_p95_ms")
	b.ReportMetric(pct(mrst.ok, 0.95), "load_refresh_p95_ms")
	b.ReportMetric(pct(must.ok, 0.95), "load_user_p95_ms")
	b.ReportMetric(pct(orst.ok, 0.95), "open_refresh_p95_ms")
	b.ReportMetric(pct(oust.ok, 0.95), "open_user_p95_ms")
	b.ReportMetric(pct(olrst.ok, 0.95), "open_load_refresh_p95_ms")
	b.ReportMetric(pct(olust.ok, 0.95), "open_load_user_p95_ms")
	b.ReportMetric(float64(len(olst.ok))/oel.Seconds(), "open_load_logins/s")
	b.ReportMetric(float64(len(olst.tooMany)), "open_load_login_429s")
	b.ReportMetric(pct(fst.ok, 0.5), "fdatasync_p50_ms")
	b.ReportMetric(pct(fst.ok, 0.95), "fdatasync_p95_ms")
	b.ReportMetric(pct(flst.ok, 0.95), "load_fdatasync_p95_ms")
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/bench"
)

// benchFlags are the flags of `keyshard bench`.
type benchFlags struct {
	url, adminToken     string
	workloads           string
	rate                float64
	concurrency         int
	duration            time.Duration
	requests            int64
	retryAfter          bool
	clientAddrs         int
	tenants, users      int
	baseTenants         int
	tenantUsers         int
	backend             string
	node                string
	setupConcurrency    int
	mix                 string
	zipfS               float64
	stormFactor         float64
	stormRate           float64
	sweep               bool
	sweepStart          float64
	sweepFactor         float64
	sweepP95            time.Duration
	sweepMaxErrors      float64
	sweepSteps          int
	sweepRefine         int
	hashRateDur         time.Duration
	jsonPath            string
	quiet               bool
	cpuProfile          string
	mutexProfile        string
	pprof               bool
	serverData          string
	synchronous         string
	cacheCapacity       int
	maxOpenShards       int
	queueSize, maxBatch int
	readers             int
	postgresDSN         string
	mysqlDSN            string
	cleanup             bool
	codes               int
	webhookBlackhole    bool
}

func (f *benchFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", "", "base URL of a running server (default: start one in this process on a temporary data directory)")
	fs.StringVar(&f.adminToken, "admin-token", "", "platform admin token of the server at --url (setup creates tenants with it)")
	fs.StringVar(&f.workloads, "workload", "mixed", "comma-separated workloads: "+strings.Join(bench.Workloads, ", "))
	fs.Float64Var(&f.rate, "rate", 0, "open loop: requests due per second (0: closed loop at --concurrency)")
	fs.IntVar(&f.concurrency, "concurrency", 0, "closed loop: clients (default 16); open loop: most requests in flight (default 2048)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "length of each run (each sweep step)")
	fs.Int64Var(&f.requests, "requests", 0, "most requests per run (0: bounded by --duration only)")
	fs.IntVar(&f.clientAddrs, "client-addresses", 0, fmt.Sprintf("give each closed-loop client (open loop: each request in turn) one of this many addresses of 198.18.0.0/15, sent as X-Forwarded-For: clients behind a reverse proxy, told apart by a server run with --rate-limit-header X-Forwarded-For (the in-process server is; a server elsewhere must list this generator's address in --trusted-proxies); at most %d (0: none, every client is the generator's address)", bench.MaxClientAddresses))
	fs.BoolVar(&f.retryAfter, "retry-after", false, "closed loop: a client answered 429/503 waits its Retry-After (at most 1 s) before its next request, as a well-behaved client does")
	fs.IntVar(&f.tenants, "tenants", 1, "tenants created by setup (the tenants workload spreads over all of them with a Zipf skew)")
	fs.IntVar(&f.users, "users", 64, "users signed up in each base tenant; each holds one session that refreshes rotate")
	fs.IntVar(&f.baseTenants, "base-tenants", 1, "the first tenants, with --users users each, over which every workload but tenants spreads (uniformly)")
	fs.IntVar(&f.tenantUsers, "tenant-users", 1, "users signed up in each of the other tenants (used by the tenants workload)")
	fs.StringVar(&f.backend, "backend", "", "backend of the tenants setup creates (sqlite, postgres, mysql; default: the server's)")
	fs.StringVar(&f.node, "node", "", "with --url on one of several nodes: the node that owns the tenants setup creates (another node than --url's measures forwarded requests; default: --url's)")
	fs.IntVar(&f.setupConcurrency, "setup-concurrency", 16, "concurrent setup requests")
	fs.StringVar(&f.mix, "mix", "", "mix of the mixed and tenants workloads, op=percent (default "+mixFlagDefault()+")")
	fs.Float64Var(&f.zipfS, "zipf-s", 1.1, "skew of the tenants workload: tenant k drawn ∝ 1/(1+k)^s (> 1)")
	fs.Float64Var(&f.stormFactor, "storm-factor", 4, "storm: logins offered at this multiple of the raw hash rate")
	fs.Float64Var(&f.stormRate, "storm-rate", 400, "storm: refresh + GET /user requests per second (half each) beside the logins")
	fs.BoolVar(&f.sweep, "sweep", false, "raise the open-loop rate until a step is not sustained; report the saturation rate and the run at half of it")
	fs.Float64Var(&f.sweepStart, "sweep-start", 100, "sweep: first rate (requests/s)")
	fs.Float64Var(&f.sweepFactor, "sweep-factor", 1.5, "sweep: rate multiplier between steps")
	fs.DurationVar(&f.sweepP95, "sweep-p95", 50*time.Millisecond, "sweep: a step whose P95 exceeds this is not sustained")
	fs.Float64Var(&f.sweepMaxErrors, "sweep-max-errors", 0.001, "sweep: nor one where more than this share of requests got no 2xx")
	fs.IntVar(&f.sweepSteps, "sweep-steps", 15, "sweep: most geometric steps")
	fs.IntVar(&f.sweepRefine, "sweep-refine", 3, "sweep: bisection steps after the first step not sustained")
	fs.DurationVar(&f.hashRateDur, "hash-rate-duration", 3*time.Second, "how long to measure the raw Argon2id rate before the runs")
	fs.StringVar(&f.jsonPath, "json", "", "write the report as JSON to this file")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (load generator, and the server when in-process) to this file")
	fs.StringVar(&f.mutexProfile, "mutexprofile", "", "write a mutex contention profile of this process to this file")
	fs.BoolVar(&f.pprof, "pprof", false, "in-process server: serve net/http/pprof under /debug/pprof/")
	fs.StringVar(&f.serverData, "server-data", "", "in-process server: data directory (default: a temporary one, removed at the end)")
	fs.StringVar(&f.synchronous, "synchronous", "FULL", "in-process server: SQLite durability (FULL or NORMAL)")
	fs.IntVar(&f.cacheCapacity, "cache-capacity", app.DefaultCacheCapacity, "in-process server: shards kept open")
	fs.IntVar(&f.maxOpenShards, "max-open-shards", 0, "in-process server: hard limit of open shards (default 1.5 × capacity)")
	fs.IntVar(&f.queueSize, "queue-size", 1024, "in-process server: writes queued per shard")
	fs.IntVar(&f.maxBatch, "max-batch", 512, "in-process server: most writes per transaction")
	fs.IntVar(&f.readers, "readers", 2, "in-process server: read connections per shard")
	fs.StringVar(&f.postgresDSN, "postgres-dsn", "", "in-process server: PostgreSQL server for --backend postgres")
	fs.StringVar(&f.mysqlDSN, "mysql-dsn", "", "in-process server: MySQL/MariaDB server for --backend mysql")
	fs.IntVar(&f.codes, "codes", 20000, "authorization_code: codes minted (through the hosted pages, with a signed-in browser) before each run; a run that uses them all skips the rest as no_session")
	fs.BoolVar(&f.webhookBlackhole, "webhook-blackhole", false, "give every base tenant a webhook endpoint for all events on a loopback receiver that accepts connections and never answers (in-process server: outbound private addresses allowed), to measure the auth path beside stuck deliveries")
	fs.BoolVar(&f.cleanup, "cleanup", true, "delete the tenants setup created when the runs are done (with their schemas or databases on a server backend)")
}

func mixFlagDefault() string {
	var parts []string
	for _, e := range bench.DefaultMix {
		parts = append(parts, fmt.Sprintf("%s=%g", e.Op, e.Weight))
	}
	return strings.Join(parts, ",")
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	var f benchFlags
	f.register(fs)
	var af authFlags
	af.register(fs)
	// The in-process server measures capacity: its setup alone signs up
	// hundreds of users from one address.
	for _, name := range []string{"signups-per-address", "signups-per-tenant"} {
		_ = fs.Set(name, "0")
		fs.Lookup(name).DefValue = "0"
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	return benchMain(f, af, os.Stdout, os.Stderr)
}

func benchMain(f benchFlags, af authFlags, stdout, stderr io.Writer) (err error) {
	// The in-process server runs as serve would. Against --url the
	// generator usually shares the machine with the server: with Go's
	// default GOGC its own collector took ≈ 10–20 % of GET /user's
	// throughput from the server it measures (docs/benchmarks.md).
	af.applyGCPercent()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var mix bench.Mix
	if f.mix != "" {
		if mix, err = bench.ParseMix(f.mix); err != nil {
			return err
		}
	}
	if f.clientAddrs < 0 || f.clientAddrs > bench.MaxClientAddresses {
		return fmt.Errorf("--client-addresses %d: between 0 and %d", f.clientAddrs, bench.MaxClientAddresses)
	}
	workloads := strings.Split(f.workloads, ",")
	for i, w := range workloads {
		workloads[i] = strings.TrimSpace(w)
		if !containsString(bench.Workloads, workloads[i]) {
			return fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(bench.Workloads, ", "))
		}
	}
	params := af.params()

	if f.mutexProfile != "" {
		runtime.SetMutexProfileFraction(5)
		defer func() {
			if werr := writeProfile("mutex", f.mutexProfile); werr != nil && err == nil {
				err = werr
			}
		}()
	}

	target := &bench.Target{URL: f.url, AdminToken: f.adminToken, HTTP: bench.NewHTTPClient(4096, 30*time.Second)}
	where := f.url
	if f.url == "" {
		sc, err := af.serverConfig(app.Config{DataDir: f.serverData, Synchronous: f.synchronous, CacheCapacity: f.cacheCapacity,
			MaxOpenShards: f.maxOpenShards, QueueSize: f.queueSize, MaxBatch: f.maxBatch, Readers: f.readers,
			PostgresDSN: f.postgresDSN, MySQLDSN: f.mysqlDSN}, nil)
		if err != nil {
			return err
		}
		sc.Events.Webhooks.AllowPrivate = f.webhookBlackhole
		if f.clientAddrs > 0 {
			sc.ClientHeader, sc.TrustedProxies = "X-Forwarded-For", api.DefaultTrustedProxies
		}
		srv, err := bench.StartServer(ctx, bench.ServerConfig{Server: sc, Pprof: f.pprof})
		if err != nil {
			return fmt.Errorf("start in-process server: %w", err)
		}
		defer func() {
			if cerr := srv.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		target.URL, target.AdminToken = srv.URL, srv.AdminToken
		where = "in-process " + srv.URL
		fmt.Fprintf(stderr, "in-process server at %s (synchronous %s, cache capacity %d)\n", srv.URL, f.synchronous, f.cacheCapacity)
	} else if f.adminToken == "" {
		return errors.New("--url needs --admin-token (or KEYSHARD_ADMIN_TOKEN) to create the benchmark's tenants")
	} else if af.procs != 0 {
		// It sets the in-process server's threads; accepted and ignored
		// against --url, it read as if it set the generator's.
		return errors.New("--gomaxprocs (or KEYSHARD_GOMAXPROCS) sets the in-process server's threads; with --url it would do nothing (GOMAXPROCS in the environment sets the generator's)")
	}

	rep := &bench.Report{Started: time.Now().UTC(), Target: where, GoMaxProcs: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
		HashParams: fmt.Sprintf("m=%d,t=%d,p=%d", params.MemoryKiB, params.Time, params.Threads)}
	if f.hashRateDur > 0 {
		fmt.Fprintf(stderr, "measuring the raw Argon2id rate (%s, %d goroutines)…\n", f.hashRateDur, runtime.NumCPU())
		rep.HashRate = bench.HashRate(ctx, params, 0, f.hashRateDur)
		fmt.Fprintf(stderr, "raw Argon2id rate: %.1f hashes/s\n", rep.HashRate)
	}

	var progress io.Writer = stderr
	if f.quiet {
		progress = nil
	}
	oauth := false
	for _, w := range workloads {
		oauth = oauth || bench.NeedsOAuth(w)
	}
	webhookURL := ""
	if f.webhookBlackhole {
		hole, err := bench.Blackhole()
		if err != nil {
			return err
		}
		defer hole.Close()
		webhookURL = "http://" + hole.Addr().String() + "/hook"
		fmt.Fprintf(stderr, "webhook endpoints post to %s, which never answers\n", webhookURL)
	}
	fx, err := bench.Setup(ctx, target, bench.SetupConfig{Tenants: f.tenants, Users: f.users, BaseTenants: f.baseTenants, OtherUsers: f.tenantUsers, Backend: f.backend, Node: f.node,
		Concurrency: f.setupConcurrency, Progress: progress, OAuth: oauth, WebhookURL: webhookURL})
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	b := &bench.Bench{Target: target, Fixture: fx, HashRate: rep.HashRate}
	if f.cleanup && (f.url != "" || (f.backend != "" && f.backend != "sqlite")) {
		defer func() {
			fmt.Fprintf(stderr, "deleting the %d benchmark tenants…\n", len(fx.Slugs))
			if cerr := fx.Cleanup(context.Background(), target, f.setupConcurrency); cerr != nil && err == nil {
				err = fmt.Errorf("cleanup: %w", cerr)
			}
		}()
	}

	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			_ = pf.Close()
			return err
		}
		defer func() {
			pprof.StopCPUProfile()
			if cerr := pf.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
	}

	for _, w := range workloads {
		cfg := bench.RunConfig{
			Workload: w, Mix: mix, ZipfS: f.zipfS, StormFactor: f.stormFactor, StormRate: f.stormRate,
			Load: bench.Load{Rate: f.rate, Concurrency: f.concurrency, Duration: f.duration, Requests: f.requests, RetryAfter: f.retryAfter, ClientAddresses: f.clientAddrs},
		}
		if w == string(bench.OpAuthorizationCode) {
			n := f.codes
			if f.requests > 0 {
				n = int(min(int64(n), f.requests))
			}
			fmt.Fprintf(stderr, "minting %d authorization codes…\n", n)
			if err := fx.MintCodes(ctx, target, n, f.setupConcurrency); err != nil {
				return fmt.Errorf("mint codes: %w", err)
			}
		}
		var res *bench.Result
		if f.sweep && w != "storm" {
			fmt.Fprintf(stderr, "sweeping %s from %.0f/s…\n", w, f.sweepStart)
			res, err = b.Sweep(ctx, cfg, bench.SweepConfig{Start: f.sweepStart, Factor: f.sweepFactor, MaxSteps: f.sweepSteps,
				Refine: f.sweepRefine, P95BoundMs: float64(f.sweepP95) / float64(time.Millisecond), MaxErrorRate: f.sweepMaxErrors, Half: true})
		} else {
			fmt.Fprintf(stderr, "running %s for %s…\n", w, f.duration)
			res, err = b.Run(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", w, err)
		}
		rep.Results = append(rep.Results, res)
	}
	if f.hashRateDur > 0 && slices.ContainsFunc(workloads, func(w string) bool { return w == "login" || w == "storm" }) {
		rep.HashRateAfter = bench.HashRate(ctx, params, 0, f.hashRateDur)
	}
	rep.SetLoginShares()
	rep.PrintTable(stdout)
	if f.jsonPath != "" {
		if err := rep.WriteJSON(f.jsonPath); err != nil {
			return err
		}
	}
	return nil
}

func writeProfile(name, path string) error {
	pf, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(pf, 0); err != nil {
		_ = pf.Close()
		return err
	}
	return pf.Close()
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

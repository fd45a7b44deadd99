package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
)

// authFlags configure the end-user auth API of `serve`.
type authFlags struct {
	memoryKiB, time, threads uint
	workers                  int
	budget                   time.Duration
	background               bool
	accessTTL                time.Duration
	publicURL                string
	throttle                 auth.ThrottleConfig
	signups                  auth.SignupLimits
	gcPercent                int
	procs                    int
}

func (f *authFlags) register(fs *flag.FlagSet) {
	fs.UintVar(&f.memoryKiB, "argon2-memory-kib", uint(hash.DefaultParams.MemoryKiB), "Argon2id memory per hash, KiB (OWASP: 19456)")
	fs.UintVar(&f.time, "argon2-time", uint(hash.DefaultParams.Time), "Argon2id passes per hash")
	fs.UintVar(&f.threads, "argon2-threads", uint(hash.DefaultParams.Threads), "Argon2id lanes per hash")
	fs.IntVar(&f.workers, "hash-workers", 0, "password hashing workers shared by all tenants (default: number of CPUs)")
	fs.DurationVar(&f.budget, "hash-budget", hash.DefaultBudget, "longest expected wait for a password hash; past it login/signup answer 429")
	fs.BoolVar(&f.background, "hash-background", true, "compute password hashes in a worker process (this executable, restarted if it dies) at idle CPU priority (SCHED_IDLE on Linux), so that refresh and GET /user keep their latency during a login storm; false hashes on this process's own threads (docs/benchmarks.md)")
	fs.DurationVar(&f.accessTTL, "access-token-ttl", auth.DefaultAccessTokenTTL, "lifetime of access tokens")
	fs.StringVar(&f.publicURL, "public-url", "", "external base URL; tokens of tenant S carry iss PUBLIC_URL/t/S (default: from each request's Host)")
	fs.IntVar(&f.throttle.PairFailures, "login-pair-failures", auth.DefaultThrottle.PairFailures, "failed logins of one account from one client address per --login-failure-window; then that address gets 429 for that account (0: no limit)")
	fs.IntVar(&f.throttle.AccountFailures, "login-account-failures", auth.DefaultThrottle.AccountFailures, "failed logins of one account from all addresses per --login-failure-window past which every attempt on it is slowed down, never refused (0: no slow-down)")
	fs.DurationVar(&f.throttle.SlowDown, "login-slowdown", auth.DefaultThrottle.SlowDown, "wait added per failure past --login-account-failures")
	fs.DurationVar(&f.throttle.MaxSlowDown, "login-max-slowdown", auth.DefaultThrottle.MaxSlowDown, "longest wait of a slowed-down login")
	fs.IntVar(&f.signups.PerAddress, "signups-per-address", 30, "signups from one client address to one tenant at once, refilled over --signup-window; past it 429 with Retry-After (0: no limit)")
	fs.IntVar(&f.signups.PerTenant, "signups-per-tenant", 3000, "signups to one tenant from all addresses at once, refilled over --signup-window (0: no limit)")
	fs.DurationVar(&f.signups.Window, "signup-window", 5*time.Minute, "time in which the signup limits refill")
	fs.IntVar(&f.throttle.IPFailures, "login-ip-failures", auth.DefaultThrottle.IPFailures, "failed logins from one IP address to one tenant per --login-failure-window before 429 (0: no limit)")
	fs.DurationVar(&f.throttle.Window, "login-failure-window", auth.DefaultThrottle.Window, "window in which failed logins are counted")
	fs.IntVar(&f.procs, "gomaxprocs", 0, "Go threads running Go code at once (as GOMAXPROCS, which wins when set); 0: Go's default (the CPUs, or the container's CPU limit) plus one; negative: Go's default; the extra thread is so that a shard's fdatasync or a long batch on its writer does not leave requests waiting for a thread")
	fs.IntVar(&f.gcPercent, "gc-percent", defaultGCPercent, "Go GC target (as GOGC, which wins when set): every Argon2id hash allocates its memory anew, and a higher target runs the collector less often under logins, for lower latency of the other requests at the cost of a larger heap")
}

// defaultGCPercent: with --hash-background=false each hash allocates
// --argon2-memory-kib (19 MiB) in this process that is garbage a moment
// later, so at the default GOGC=100 a login storm runs the collector many
// times a second, and its assists and pauses land on every request. With
// 400 (measured when hashing still ran in this process), a storm's non-login
// P95 was 6.8 ms (3 rounds: 6.8, 7.9, 6.8) instead of 9.4 (9.4, 11.5, 7.9);
// the heap may grow to about five times what is live. With the default
// worker process the hashes allocate there, and 400 only spaces the
// collections that requests cause.
const defaultGCPercent = 400

// applyGCPercent sets the GC target from --gc-percent unless GOGC is set
// to a value the runtime takes ("off" or a whole number; it ignores any
// other, and then the flag applies).
func (f *authFlags) applyGCPercent() {
	if gogcFromEnv() || f.gcPercent == 0 {
		return
	}
	debug.SetGCPercent(f.gcPercent)
}

func gogcFromEnv() bool {
	v := os.Getenv("GOGC")
	_, err := strconv.Atoi(v)
	return v == "off" || err == nil
}

// startProcs is GOMAXPROCS as the runtime set it at start, before
// applyProcs (which may run more than once in a process: tests).
var startProcs = runtime.GOMAXPROCS(0)

// applyProcs sets GOMAXPROCS from --gomaxprocs unless the GOMAXPROCS
// variable is set, and returns the value in force.
//
// Go's default, one per CPU, left requests waiting for a thread with a CPU
// idle (the machine was ≈ 20 % idle under refresh with 16 clients). With
// 2 CPUs, 16 clients, three alternating rounds of `keyshard bench --url`
// (docs/benchmarks.md, twelfth part), the CPUs plus one against 2: refresh
// 8,364/9,222/9,136 against 8,102/8,270/8,751 per second, GET /user
// 53,503/58,177/53,573 against 49,490/51,250/55,563, mixed
// 13,011/13,437/13,151 against 11,218/11,488/11,233; 4 did less well than 3.
// The likely cause: a shard's flusher holds its thread through fdatasync
// (≈ 0.2 ms) until the runtime's monitor hands the thread's slot on, and
// its writer holds one for a batch's SQL, so requests that became ready
// meanwhile queued behind them.
//
// The base is what Go chose at start: the CPUs, or fewer under a
// container's CPU limit (Go 1.25+), never the host's CPUs. Setting it stops
// the runtime from following later changes of that limit.
func (f *authFlags) applyProcs() int {
	if procsFromEnv() || f.procs < 0 {
		return runtime.GOMAXPROCS(0)
	}
	n := f.procs
	if n == 0 {
		n = startProcs + 1
	}
	runtime.GOMAXPROCS(n)
	return n
}

// procsFromEnv reports whether the runtime took GOMAXPROCS from the
// environment: it does only for a positive whole number, and ignores an
// empty or malformed value (then the flag applies).
func procsFromEnv() bool {
	n, err := strconv.Atoi(os.Getenv("GOMAXPROCS"))
	return err == nil && n > 0
}

// serverConfig returns what `serve` (and bench's in-process server) runs
// with: the storage configuration and these flags. The master key and the
// admin token come from KEYSHARD_MASTER_KEY and KEYSHARD_ADMIN_TOKEN when
// set, else from files in the data directory.
func (f *authFlags) serverConfig(storage app.Config, log *slog.Logger) (app.ServerConfig, error) {
	if f.threads > 255 || f.memoryKiB > 1<<22 || f.time > 64 {
		return app.ServerConfig{}, fmt.Errorf("argon2 parameters out of range")
	}
	f.applyGCPercent()
	f.applyProcs()
	throttle := f.throttle
	return app.ServerConfig{
		Storage:        storage,
		Hash:           hash.Config{Params: f.params(), Workers: f.workers, Budget: f.budget, Background: f.background},
		MasterKeyText:  os.Getenv("KEYSHARD_MASTER_KEY"),
		AdminToken:     os.Getenv("KEYSHARD_ADMIN_TOKEN"),
		AccessTokenTTL: f.accessTTL,
		PublicURL:      f.publicURL,
		Throttle:       &throttle,
		Signups:        f.signups,
		Logger:         log,
	}, nil
}

// params returns the Argon2id parameters of the flags.
func (f *authFlags) params() hash.Params {
	return hash.Params{MemoryKiB: uint32(f.memoryKiB), Time: uint32(f.time), Threads: uint8(f.threads)}
}

// rotateKey publishes a new signing key for the tenant (see
// token.Keys.Rotate); the old one verifies and stays in the JWKS until its
// tokens have expired (the server's --access-token-ttl decides how long
// that is).
// localKeys opens the signing keys with the data directory's master key,
// for CLI commands that act on shards directly.
func localKeys(dataDir string) (*token.Keys, error) {
	master, _, _, err := token.LoadMasterKey(dataDir, os.Getenv("KEYSHARD_MASTER_KEY"))
	if err != nil {
		return nil, err
	}
	return token.NewKeys(token.KeysConfig{MasterKey: master})
}

// ensureKey creates an approved tenant's first signing key.
func ensureKey(a *app.App, dataDir, tenantID string) error {
	keys, err := localKeys(dataDir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	ts, err := a.Engine.Tenant(ctx, tenantID)
	if err != nil {
		return err
	}
	defer ts.Release()
	if err := keys.EnsureKey(ctx, tenantID, ts); err != nil {
		return fmt.Errorf("tenant approved, but its signing key was not created (it will be at first use): %w", err)
	}
	return nil
}

func rotateKey(a *app.App, dataDir, slug string, o token.RotateOptions) error {
	keys, err := localKeys(dataDir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	ts, err := a.Engine.Tenant(ctx, slug)
	if err != nil {
		return err
	}
	defer ts.Release()
	kid, signsAt, err := keys.Rotate(ctx, ts.Tenant.ID, ts, o)
	if err != nil {
		return err
	}
	fmt.Printf("tenant %s: new signing key %s is published and signs from %s; the previous key verifies until its tokens expire\n",
		ts.Tenant.Slug, kid, signsAt.UTC().Format(time.RFC3339))
	if o.Algorithm == token.HS256 {
		secret, err := keys.Secret(ctx, ts.Tenant.ID, ts, kid)
		if err != nil {
			return err
		}
		fmt.Printf("HS256 secret (base64url), for the tenant's backends; shown once: %s\n", base64.RawURLEncoding.EncodeToString(secret))
	}
	return nil
}

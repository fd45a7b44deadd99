package auth

import (
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/keyshard/keyshard/engine"
)

// ThrottleConfig limits failed password logins in fixed windows, per
// account (tenant + email) and per client IP (tenant + IP). A limit of 0
// turns that limit off.
type ThrottleConfig struct {
	// AccountFailures is the most failed logins of one account per window.
	AccountFailures int
	// IPFailures is the most failed logins from one IP address per window,
	// all accounts of the tenant together.
	IPFailures int
	// Window is the length of a counting window; it starts at the first
	// failure and the count resets when it ends.
	Window time.Duration
	// MaxEntries bounds the accounts and the addresses remembered (each);
	// past it the least recently failed ones are forgotten.
	MaxEntries int
}

// DefaultThrottle is used when Config.LoginThrottle is nil: 10 failures per
// account and 100 per address within 5 minutes.
var DefaultThrottle = ThrottleConfig{AccountFailures: 10, IPFailures: 100, Window: 5 * time.Minute, MaxEntries: 100_000}

var throttled = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_auth_login_throttled_total",
	Help: "Password logins refused with 429 because of earlier failures, by scope (account, ip).",
}, []string{"scope"})

func init() {
	throttled.WithLabelValues("account")
	throttled.WithLabelValues("ip")
}

// Throttle counts failed logins in memory, in two bounded LRU tables. It
// is safe for concurrent use. Counts live in one process: they are lost on
// restart and not shared between nodes.
type Throttle struct {
	cfg      ThrottleConfig
	now      func() time.Time
	accounts *lru.Cache[string, *failures]
	ips      *lru.Cache[string, *failures]
}

// failures is one key's count in its current window.
type failures struct {
	mu    sync.Mutex // guards the fields below
	start time.Time
	n     int
}

// NewThrottle returns a throttle with cfg (zero Window and MaxEntries take
// the defaults) on the clock now (nil: time.Now).
func NewThrottle(cfg ThrottleConfig, now func() time.Time) (*Throttle, error) {
	if cfg.AccountFailures < 0 || cfg.IPFailures < 0 || cfg.Window < 0 || cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("login throttle: negative setting")
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultThrottle.Window
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultThrottle.MaxEntries
	}
	if now == nil {
		now = time.Now
	}
	th := &Throttle{cfg: cfg, now: now}
	var err error
	if th.accounts, err = lru.New[string, *failures](cfg.MaxEntries); err != nil {
		return nil, err
	}
	if th.ips, err = lru.New[string, *failures](cfg.MaxEntries); err != nil {
		return nil, err
	}
	return th, nil
}

func accountKey(tenantID, email string) string { return tenantID + "\x00" + email }
func ipKey(tenantID, ip string) string         { return tenantID + "\x00" + ip }

// Allow returns nil when a login of email from ip may be tried, else a 429
// over_request_rate_limit Error whose RetryAfter is the end of the window.
func (th *Throttle) Allow(tenantID, email, ip string) error {
	if th == nil {
		return nil
	}
	now := th.now()
	if wait := th.blocked(th.accounts, accountKey(tenantID, email), th.cfg.AccountFailures, now); wait > 0 {
		throttled.WithLabelValues("account").Inc()
		return throttleError(wait)
	}
	if wait := th.blocked(th.ips, ipKey(tenantID, ip), th.cfg.IPFailures, now); wait > 0 {
		throttled.WithLabelValues("ip").Inc()
		return throttleError(wait)
	}
	return nil
}

// Fail records a failed login of email from ip.
func (th *Throttle) Fail(tenantID, email, ip string) {
	if th == nil {
		return
	}
	now := th.now()
	if th.cfg.AccountFailures > 0 {
		th.add(th.accounts, accountKey(tenantID, email), now)
	}
	if th.cfg.IPFailures > 0 {
		th.add(th.ips, ipKey(tenantID, ip), now)
	}
}

// Succeed forgets the account's failures: its owner proved the password.
// The address keeps its count.
func (th *Throttle) Succeed(tenantID, email string) {
	if th == nil {
		return
	}
	th.accounts.Remove(accountKey(tenantID, email))
}

// blocked returns how long key stays blocked, or 0.
func (th *Throttle) blocked(c *lru.Cache[string, *failures], key string, limit int, now time.Time) time.Duration {
	if limit <= 0 {
		return 0
	}
	f, ok := c.Peek(key)
	if !ok {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.start.Add(th.cfg.Window)
	if f.n < limit || !now.Before(end) {
		return 0
	}
	return end.Sub(now)
}

func (th *Throttle) add(c *lru.Cache[string, *failures], key string, now time.Time) {
	f, ok := c.Get(key)
	if !ok {
		// Two first failures at once may both add: one count is lost,
		// which errs on the side of the client.
		f = &failures{start: now}
		c.Add(key, f)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !now.Before(f.start.Add(th.cfg.Window)) {
		f.start, f.n = now, 0
	}
	f.n++
}

func throttleError(wait time.Duration) *engine.Error {
	return &engine.Error{Kind: engine.KindRateLimited, Code: CodeOverRequestRateLimit,
		Message: "Too many failed login attempts, retry later", RetryAfter: wait}
}

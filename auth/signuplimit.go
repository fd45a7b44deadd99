package auth

import (
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/time/rate"

	"github.com/keyshard/keyshard/engine"
)

// SignupLimits bound signups with token buckets: at most PerAddress from
// one client address to one tenant, and PerTenant to one tenant from all
// addresses, at once, refilled over Window. Zero turns a limit off. Past a
// limit a signup is answered 429 over_request_rate_limit with Retry-After,
// before any work is done for it.
type SignupLimits struct {
	PerAddress int
	PerTenant  int
	// Window is how long an emptied bucket takes to fill (default 5 min).
	Window time.Duration
	// MaxEntries bounds the addresses and the tenants remembered (each,
	// default 100,000); past it the least recently seen are forgotten.
	MaxEntries int
}

var signupsLimited = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_auth_signups_limited_total",
	Help: "Signups refused with 429 by the signup rate limits, by scope (address, tenant).",
}, []string{"scope"})

func init() {
	signupsLimited.WithLabelValues("address")
	signupsLimited.WithLabelValues("tenant")
}

// SignupLimiter applies SignupLimits. Safe for concurrent use; in memory,
// per process.
type SignupLimiter struct {
	cfg     SignupLimits
	now     func() time.Time
	addrs   *lru.Cache[string, *rate.Limiter]
	tenants *lru.Cache[string, *rate.Limiter]
}

// NewSignupLimiter returns a limiter on the clock now (nil: time.Now); nil
// when cfg sets no limit.
func NewSignupLimiter(cfg SignupLimits, now func() time.Time) (*SignupLimiter, error) {
	if cfg.PerAddress < 0 || cfg.PerTenant < 0 || cfg.Window < 0 || cfg.MaxEntries < 0 {
		return nil, fmt.Errorf("signup limits: negative setting")
	}
	if cfg.PerAddress == 0 && cfg.PerTenant == 0 {
		return nil, nil
	}
	if cfg.Window == 0 {
		cfg.Window = 5 * time.Minute
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = 100_000
	}
	if now == nil {
		now = time.Now
	}
	l := &SignupLimiter{cfg: cfg, now: now}
	var err error
	if l.addrs, err = lru.New[string, *rate.Limiter](cfg.MaxEntries); err != nil {
		return nil, err
	}
	if l.tenants, err = lru.New[string, *rate.Limiter](cfg.MaxEntries); err != nil {
		return nil, err
	}
	return l, nil
}

// bucket returns key's limiter in c, made with n tokens per window.
func (l *SignupLimiter) bucket(c *lru.Cache[string, *rate.Limiter], key string, n int) *rate.Limiter {
	if b, ok := c.Get(key); ok {
		return b
	}
	b := rate.NewLimiter(rate.Limit(float64(n)/l.cfg.Window.Seconds()), n)
	if prev, ok, _ := c.PeekOrAdd(key, b); ok {
		return prev
	}
	return b
}

// allow takes a token for a signup from ip to the tenant, or says when to
// retry. A signup refused by the tenant's bucket gives the address's token
// back: it was not the address's doing.
func (l *SignupLimiter) allow(tenantID, ip string) error {
	if l == nil {
		return nil
	}
	now := l.now()
	var addr *rate.Reservation
	if l.cfg.PerAddress > 0 {
		addr = l.bucket(l.addrs, tenantID+"\x00"+addrKey(ip), l.cfg.PerAddress).ReserveN(now, 1)
		if d := addr.DelayFrom(now); d > 0 {
			addr.CancelAt(now)
			signupsLimited.WithLabelValues("address").Inc()
			return signupLimited(d)
		}
	}
	if l.cfg.PerTenant > 0 {
		r := l.bucket(l.tenants, tenantID, l.cfg.PerTenant).ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			if addr != nil {
				addr.CancelAt(now)
			}
			signupsLimited.WithLabelValues("tenant").Inc()
			return signupLimited(d)
		}
	}
	return nil
}

func signupLimited(retry time.Duration) *engine.Error {
	return &engine.Error{Kind: engine.KindRateLimited, Code: CodeOverRequestRateLimit,
		Message: "Too many signups, retry later", RetryAfter: retry}
}

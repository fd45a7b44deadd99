package auth

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/keyshard/keyshard/engine"
)

// ThrottleConfig limits failed password logins in fixed windows. A limit
// of 0 turns it off.
//
// Nothing an attacker does from one address can lock an account's owner
// out from another: guesses are refused per account and address pair
// (and per address over all accounts, against spraying), while the
// account as a whole, guessed from many addresses, is only slowed down:
// past AccountFailures every attempt on it waits before its password is
// checked, the right one included, and then succeeds. Keycloak's brute
// force detection instead locks the account itself (temporarily or for
// good), which lets anyone who knows an account keep its owner out; GoTrue
// has no per-account limit at all, only per-address rate limits, which
// leave an account open to guessing from many addresses.
type ThrottleConfig struct {
	// PairFailures is the most failed logins of one account from one
	// address per window; then that address is refused (429) for that
	// account until the window ends.
	PairFailures int
	// AccountFailures is the failed logins of one account, from all
	// addresses, per window past which every attempt on it is slowed down.
	AccountFailures int
	// IPFailures is the most failed logins from one address per window,
	// all accounts of the tenant together; then the address is refused.
	IPFailures int
	// SlowDown is the wait added per failure past AccountFailures, up to
	// MaxSlowDown (defaults 1 s and 10 s).
	SlowDown, MaxSlowDown time.Duration
	// Window is the length of a counting window; it starts at the first
	// failure and the count resets when it ends.
	Window time.Duration
	// MaxEntries bounds the pairs, accounts and addresses remembered
	// (each); past it the least recently failed ones are forgotten.
	MaxEntries int
}

// DefaultThrottle is used when Config.LoginThrottle is nil: 10 failures per
// account and address, a slow-down past 10 per account, 100 failures per
// address, within 5 minutes.
var DefaultThrottle = ThrottleConfig{PairFailures: 10, AccountFailures: 10, IPFailures: 100,
	SlowDown: time.Second, MaxSlowDown: 10 * time.Second, Window: 5 * time.Minute, MaxEntries: 100_000}

var (
	throttled = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "keyshard_auth_login_throttled_total",
		Help: "Password logins refused with 429 because of earlier failures, by scope (pair: account and address; ip: address).",
	}, []string{"scope"})
	slowed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "keyshard_auth_login_slowed_total",
		Help: "Password logins made to wait because their account had many failed logins.",
	})
)

func init() {
	throttled.WithLabelValues("pair")
	throttled.WithLabelValues("ip")
}

// Throttle counts failed logins in memory, in bounded LRU tables. It is
// safe for concurrent use. A tenant's counts start, in each process, from
// its audit log (Seed): failures counted by another node before the tenant
// moved, or by this node before a restart, still count.
type Throttle struct {
	cfg      ThrottleConfig
	now      func() time.Time
	pairs    *lru.Cache[string, *failures]
	accounts *lru.Cache[string, *failures]
	ips      *lru.Cache[string, *failures]

	seeding sync.Map                     // tenant id → *sync.Mutex held while its seed is read
	seeded  *lru.Cache[string, struct{}] // tenants counted from their audit log here
}

// Attempt is a login attempt as a tenant's audit log keeps it.
type Attempt struct {
	Email, IP string
	At        time.Time
	OK        bool
}

// Seed counts a tenant's recent attempts, from load (its audit log since
// the window's start, in order), the first time this process sees the
// tenant; then it does nothing.
func (th *Throttle) Seed(tenantID string, load func(since time.Time) ([]Attempt, error)) error {
	if th == nil {
		return nil
	}
	if _, ok := th.seeded.Get(tenantID); ok {
		return nil
	}
	// One reader per tenant; other tenants' first logins do not wait.
	m, _ := th.seeding.LoadOrStore(tenantID, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer func() {
		mu.Unlock()
		th.seeding.Delete(tenantID)
	}()
	if _, ok := th.seeded.Get(tenantID); ok {
		return nil
	}
	atts, err := load(th.now().Add(-th.cfg.Window))
	if err != nil {
		return err
	}
	for _, a := range atts {
		if a.OK {
			th.Succeed(tenantID, a.Email, a.IP)
		} else {
			th.failAt(tenantID, a.Email, a.IP, a.At)
		}
	}
	th.seeded.Add(tenantID, struct{}{})
	return nil
}

// failures is one key's count in its current window.
type failures struct {
	mu    sync.Mutex // guards the fields below
	start time.Time
	n     int
}

// NewThrottle returns a throttle with cfg (zero Window, MaxEntries,
// SlowDown and MaxSlowDown take the defaults) on the clock now (nil:
// time.Now).
func NewThrottle(cfg ThrottleConfig, now func() time.Time) (*Throttle, error) {
	if cfg.PairFailures < 0 || cfg.AccountFailures < 0 || cfg.IPFailures < 0 || cfg.Window < 0 || cfg.MaxEntries < 0 ||
		cfg.SlowDown < 0 || cfg.MaxSlowDown < 0 {
		return nil, fmt.Errorf("login throttle: negative setting")
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultThrottle.Window
	}
	if cfg.MaxEntries == 0 {
		cfg.MaxEntries = DefaultThrottle.MaxEntries
	}
	if cfg.SlowDown == 0 {
		cfg.SlowDown = DefaultThrottle.SlowDown
	}
	if cfg.MaxSlowDown == 0 {
		cfg.MaxSlowDown = DefaultThrottle.MaxSlowDown
	}
	if now == nil {
		now = time.Now
	}
	th := &Throttle{cfg: cfg, now: now}
	var err error
	if th.seeded, err = lru.New[string, struct{}](cfg.MaxEntries); err != nil {
		return nil, err
	}
	for _, c := range []**lru.Cache[string, *failures]{&th.pairs, &th.accounts, &th.ips} {
		var err error
		if *c, err = lru.New[string, *failures](cfg.MaxEntries); err != nil {
			return nil, err
		}
	}
	return th, nil
}

func accountKey(tenantID, email string) string { return tenantID + "\x00" + email }
func ipKey(tenantID, ip string) string         { return tenantID + "\x00" + addrKey(ip) }
func pairKey(tenantID, email, ip string) string {
	return tenantID + "\x00" + email + "\x00" + addrKey(ip)
}

// addrKey is the client an address is counted as: an IPv4 address, or an
// IPv6 address's /64, which one host usually holds whole (counting each
// address would let it step around every limit).
func addrKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Unmap().Is4() {
		return ip
	}
	p, err := a.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}

// Allow says whether a login of email from ip may be tried: an error (429
// over_request_rate_limit, RetryAfter the end of the window) when this
// address is refused for this account or for all, else how long the
// attempt must wait first because its account was failed too often.
func (th *Throttle) Allow(tenantID, email, ip string) (time.Duration, error) {
	if th == nil {
		return 0, nil
	}
	now := th.now()
	if wait := th.blocked(th.pairs, pairKey(tenantID, email, ip), th.cfg.PairFailures, now); wait > 0 {
		throttled.WithLabelValues("pair").Inc()
		return 0, throttleError(wait)
	}
	if wait := th.blocked(th.ips, ipKey(tenantID, ip), th.cfg.IPFailures, now); wait > 0 {
		throttled.WithLabelValues("ip").Inc()
		return 0, throttleError(wait)
	}
	if th.cfg.AccountFailures <= 0 {
		return 0, nil
	}
	n := th.count(th.accounts, accountKey(tenantID, email), now)
	if n < th.cfg.AccountFailures {
		return 0, nil
	}
	slowed.Inc()
	return min(time.Duration(n-th.cfg.AccountFailures+1)*th.cfg.SlowDown, th.cfg.MaxSlowDown), nil
}

// Fail records a failed login of email from ip.
func (th *Throttle) Fail(tenantID, email, ip string) {
	if th == nil {
		return
	}
	th.failAt(tenantID, email, ip, th.now())
}

func (th *Throttle) failAt(tenantID, email, ip string, now time.Time) {
	if th.cfg.PairFailures > 0 {
		th.add(th.pairs, pairKey(tenantID, email, ip), now)
	}
	if th.cfg.AccountFailures > 0 {
		th.add(th.accounts, accountKey(tenantID, email), now)
	}
	if th.cfg.IPFailures > 0 {
		th.add(th.ips, ipKey(tenantID, ip), now)
	}
}

// Succeed forgets the account's failures, and its address's for it: its
// owner proved the password. The address keeps its count over all
// accounts.
func (th *Throttle) Succeed(tenantID, email, ip string) {
	if th == nil {
		return
	}
	th.accounts.Remove(accountKey(tenantID, email))
	th.pairs.Remove(pairKey(tenantID, email, ip))
}

// count returns key's failures in the current window.
func (th *Throttle) count(c *lru.Cache[string, *failures], key string, now time.Time) int {
	f, ok := c.Peek(key)
	if !ok {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !now.Before(f.start.Add(th.cfg.Window)) {
		return 0
	}
	return f.n
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

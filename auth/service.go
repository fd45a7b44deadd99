// Package auth holds Keyshard's end-user flows (signup, password login,
// refresh with rotation and reuse detection, user read and update, logout)
// and their SQL, written over engine.Querier with portable SQL.
package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// Config configures a Service. Zero fields take the defaults.
type Config struct {
	// AccessTokenTTL is the lifetime of an access token; default 1 h.
	AccessTokenTTL time.Duration
	// RefreshGrace is how long a revoked refresh token still returns the
	// current session; default 10 s.
	RefreshGrace time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// LoginThrottle limits failed logins; nil: NewThrottle(DefaultThrottle, Now).
	LoginThrottle *Throttle
	// Events records what the flows do (audit rows, outbox rows); nil
	// writes audit rows only.
	Events *event.Recorder
	// Signups limits signups per address and per tenant; nil: no limit.
	Signups *SignupLimiter
}

// Defaults.
const (
	DefaultAccessTokenTTL = time.Hour
	DefaultRefreshGrace   = 10 * time.Second
)

// Service runs the auth flows of every tenant. Safe for concurrent use.
type Service struct {
	hashes *hash.Pool
	keys   *token.Keys
	ttl    time.Duration
	grace  time.Duration
	now    func() time.Time
	// deriveKey makes a child refresh token from its parent (see derive).
	deriveKey []byte
	// stateKey signs the states of logins through upstream providers.
	stateKey []byte
	throttle *Throttle
	events   *event.Recorder
	signups  *SignupLimiter
	settings *lru.Cache[string, cachedSettings] // see CachedSettings
	sessions *lru.Cache[string, *sessionEntry]  // see Authenticate
	mails    *mailLimiter
	pace     *pacer

	settingsMu sync.Mutex // orders the check and the add of cacheSettings
}

// New returns a Service hashing on pool and signing with keys. secret is the
// server master key; a key for refresh token derivation is derived from it.
func New(pool *hash.Pool, keys *token.Keys, secret []byte, cfg Config) *Service {
	if cfg.AccessTokenTTL <= 0 {
		cfg.AccessTokenTTL = DefaultAccessTokenTTL
	}
	if cfg.RefreshGrace <= 0 {
		cfg.RefreshGrace = DefaultRefreshGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LoginThrottle == nil {
		cfg.LoginThrottle, _ = NewThrottle(DefaultThrottle, cfg.Now) // valid by construction
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("keyshard refresh token derivation v1"))
	sk := hmac.New(sha256.New, secret)
	sk.Write([]byte("keyshard upstream login state v1"))
	return &Service{stateKey: sk.Sum(nil), hashes: pool, keys: keys, ttl: cfg.AccessTokenTTL, grace: cfg.RefreshGrace, now: cfg.Now, deriveKey: m.Sum(nil),
		throttle: cfg.LoginThrottle, events: cfg.Events, signups: cfg.Signups, settings: newSettingsCache(), sessions: newSessionCache(),
		mails: newMailLimiter(cfg.Now), pace: newPacer(cfg.Now)}
}

// Keys returns the signing key manager.
func (s *Service) Keys() *token.Keys { return s.keys }

// Tenant is the tenant a flow runs for: its shard, pinned by the caller,
// and the issuer its tokens carry.
type Tenant struct {
	ID     string
	Shard  engine.Shard
	Issuer string
	// IssuerOK accepts the iss of a presented token; nil means equal to
	// Issuer.
	IssuerOK func(string) bool
	// LinkBase is the tenant's base URL in mailed links and upstream
	// callbacks when it is not Issuer (an issuer taken from the request's
	// Host must not place links: a client chooses it).
	LinkBase string
}

// Links returns the tenant's base URL for links that leave by mail or go
// to an upstream provider.
func (t Tenant) Links() string {
	if t.LinkBase != "" {
		return t.LinkBase
	}
	return t.Issuer
}

// Client describes where a request came from, for sessions and audit.
type Client struct {
	IP        string
	UserAgent string
	// Actor and ActorRole: who acts through the tenant's admin API (zero:
	// the service key), and that user's role in the tenant.
	Actor     event.Actor
	ActorRole string
}

// A refresh token is a time prefix and a secret: 14 lowercase hex digits of
// its issue time in Unix microseconds, then 32 characters of base62 (about
// 190 bits). Tokens issued before the prefix existed are the secret alone,
// and are still accepted.
//
// The prefix is for the database, not for the client: a token is stored as
// refreshKey, the prefix followed by the token's SHA-256, so the unique
// index of refresh_tokens.token_hash grows at its end, like a time-ordered
// id, instead of at a random leaf. A refresh wrote one random page of that
// index into the WAL; with a batch's tokens side by side at the index's end
// it writes its share of one (measured in docs/benchmarks.md). Hex digits
// sort the same under every collation of the three backends.
const (
	refreshSecretLen = 32
	refreshPrefixLen = 14
	refreshTokenLen  = refreshPrefixLen + refreshSecretLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newRefreshToken returns a new refresh token issued at now.
func newRefreshToken(now time.Time) string {
	return refreshPrefix(now) + randomBase62(refreshSecretLen)
}

// refreshPrefix is a token's time prefix: now in Unix microseconds, in
// refreshPrefixLen lowercase hex digits (until the year 4254).
func refreshPrefix(now time.Time) string {
	var b [refreshPrefixLen]byte
	v := uint64(max(now.UnixMicro(), 0))
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = "0123456789abcdef"[v&15]
		v >>= 4
	}
	return string(b[:])
}

// randomBase62 returns n random characters of base62, without modulo bias.
func randomBase62(n int) string {
	b := make([]byte, 0, n)
	var buf [64]byte
	for len(b) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			panic(err)
		}
		for _, c := range buf {
			if c < 248 && len(b) < n { // 248 = 4×62: no modulo bias
				b = append(b, base62[c%62])
			}
		}
	}
	return string(b)
}

// refreshSecret is the secret part of a refresh token: all of a token
// issued before the time prefix existed.
func refreshSecret(t string) string { return t[len(t)-refreshSecretLen:] }

// refreshKey is what refresh_tokens.token_hash holds for a token: its time
// prefix and its SHA-256 in hex (the SHA-256 alone for a token without a
// prefix). The hash covers the whole token, prefix included.
func refreshKey(t string) string {
	if len(t) == refreshSecretLen {
		return hashToken(t)
	}
	return t[:refreshPrefixLen] + hashToken(t)
}

// refreshKeyPrefix is the time prefix a refresh key keeps in clear: the
// prefix of the token it was made of, "" for a token without one.
func refreshKeyPrefix(key string) string {
	if len(key) == refreshPrefixLen+sha256.Size*2 {
		return key[:refreshPrefixLen]
	}
	return ""
}

// derive returns the secret of the refresh token that replaces parent on
// rotation: HMAC(server key, tenant, parent's secret) in base62; the child
// is that secret behind its own time prefix. Only keys are stored, yet a
// client presenting an ancestor of the active token within the grace
// interval can be handed the active token itself, recomputed from the
// ancestor it proved to hold and the active token's prefix, which its key
// keeps in clear. (A token without a prefix is its own secret, so chains
// begun before the prefix existed go on.)
func (s *Service) derive(tenantID, parent string) string {
	m := hmac.New(sha256.New, s.deriveKey)
	m.Write([]byte(tenantID))
	m.Write([]byte{0})
	m.Write([]byte(refreshSecret(parent)))
	sum := m.Sum(nil) // 32 bytes → 32 characters; the bias of %62 costs < 0.1 bit each
	out := make([]byte, refreshSecretLen)
	for i := range out {
		out[i] = base62[sum[i]%62]
	}
	return string(out)
}

// validRefreshToken says whether t has the shape of a refresh token: a
// time prefix and a secret, or a secret alone (issued before prefixes).
func validRefreshToken(t string) bool {
	switch len(t) {
	case refreshTokenLen:
		for i := 0; i < refreshPrefixLen; i++ {
			if !strings.ContainsRune("0123456789abcdef", rune(t[i])) {
				return false
			}
		}
	case refreshSecretLen:
	default:
		return false
	}
	for i := len(t) - refreshSecretLen; i < len(t); i++ {
		if !strings.ContainsRune(base62, rune(t[i])) {
			return false
		}
	}
	return true
}

func hashToken(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// record records ev, caused by the write whose transaction is tx, through
// the one event seam: its audit row, and its outbox rows when a sink
// subscribes to it.
func (s *Service) record(tx engine.Querier, t Tenant, ev *event.Event) error {
	return s.events.Record(tx, t.ID, ev)
}

// hashError maps a hash pool failure: a refused admission is 429
// over_request_rate_limit with Retry-After; a hash worker process that died
// is 503 with Retry-After (the next request starts a new one).
func hashError(err error) error {
	var oe *hash.OverloadedError
	switch {
	case errors.As(err, &oe):
		return &engine.Error{Kind: engine.KindRateLimited, Code: CodeOverRequestRateLimit,
			Message: "Too many requests: password hashing is saturated, retry later", RetryAfter: oe.RetryAfter, Err: err}
	case errors.Is(err, hash.ErrWorkerFailed):
		return &engine.Error{Kind: engine.KindUnavailable, Code: CodeServiceUnavailable,
			Message: "Password hashing is unavailable, retry shortly", RetryAfter: time.Second, Err: err}
	}
	return err
}

// admitHash asks the hash pool whether the hash of a login or signup of
// k (an address and account, pacer.key) may start. A refusal goes to the
// pacer first: a client that was told to come back later and comes back
// early is held, then asked about again (see pacer).
func (s *Service) admitHash(ctx context.Context, k paceKey) error {
	err := s.hashes.Admit()
	if err == nil {
		s.pace.admitted(k)
		return nil
	}
	var oe *hash.OverloadedError
	if !errors.As(err, &oe) {
		return hashError(err)
	}
	held, werr := s.pace.wait(ctx, k)
	if werr != nil {
		return werr
	}
	if held {
		if err = s.hashes.Admit(); err == nil {
			return nil
		}
	}
	return s.hashRefusal(k, err)
}

// hashRefusal maps a hash pool failure of a client's login or signup, and
// notes a refusal's Retry-After for the pacer.
func (s *Service) hashRefusal(k paceKey, err error) error {
	s.pace.refused(k, err)
	return hashError(err)
}

// writeError maps a failed shard write of a flow whose client should back
// off (kind KindRateLimited: login, signup) or retry (KindUnavailable:
// refresh) when the tenant's writer is overloaded or busy.
func writeError(err error, kind engine.Kind) error {
	var ae *engine.Error
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, engine.ErrOverloaded) || errors.Is(err, engine.ErrBusy) {
		code := CodeOverRequestRateLimit
		if kind != engine.KindRateLimited {
			code = CodeServiceUnavailable
		}
		return &engine.Error{Kind: kind, Code: code, Message: "The tenant's database is saturated, retry later", RetryAfter: time.Second, Err: err}
	}
	return err
}

func (t Tenant) issuerOK(iss string) bool {
	if t.IssuerOK != nil {
		return t.IssuerOK(iss)
	}
	return iss == t.Issuer
}

package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"
)

// SetupConfig says what Setup creates.
type SetupConfig struct {
	Tenants int // tenants to create and approve; default 1
	Users   int // users per base tenant, each signed up (one session each); default 1
	// BaseTenants are the first tenants, those every workload but
	// "tenants" spreads over (0: all); the others get OtherUsers users
	// each (default 1).
	BaseTenants int
	OtherUsers  int
	Backend     string // tenant backend ("" = the server's default)
	// Node owns the tenants (several nodes sharing a catalog): a node other
	// than the one at the URL measures forwarded requests. "" = that node.
	Node string
	// Concurrency of the setup requests; default 16.
	Concurrency int
	// Progress receives a progress bar; nil shows none.
	Progress io.Writer
	// OAuth registers an OAuth client in every base tenant and signs a
	// browser in to its hosted pages (the OAuth workloads).
	OAuth bool
	// WebhookURL, when set, gives every base tenant a webhook endpoint for
	// all events at that URL, before the users sign up.
	WebhookURL string
}

// Fixture is what Setup created: tenants, users and one session per user
// that the workloads use and keep rotating.
type Fixture struct {
	Slugs    []string
	Password string
	Backend  string
	base     int // tenants of the single-tenant workloads
	runID    string
	signups  atomic.Int64 // emails handed out by the signup operation

	mu       sync.Mutex     // guards idle and the sessions' busy flags
	sessions [][]*session   // by tenant, fixed after Setup
	idle     [][]*session   // by tenant: sessions no refresh is using
	clients  []*oauthClient // by base tenant (SetupConfig.OAuth)
}

// session is one virtual client's session chain.
type session struct {
	tenant int
	email  string
	busy   bool // a refresh holds it (Fixture.mu)

	mu      sync.Mutex // guards the tokens
	access  string
	refresh string
}

func (s *session) tokens() (access, refresh string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.access, s.refresh
}

func (s *session) set(b sessionBody) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.AccessToken != "" {
		s.access = b.AccessToken
	}
	if b.RefreshToken != "" {
		s.refresh = b.RefreshToken
	}
}

// BaseTenants returns the number of tenants the workloads other than
// "tenants" spread over.
func (f *Fixture) BaseTenants() int { return f.base }

// users returns the number of users set up in tenant t.
func (f *Fixture) users(t int) int { return len(f.sessions[t]) }

// Sessions returns the number of sessions.
func (f *Fixture) Sessions() int {
	n := 0
	for _, s := range f.sessions {
		n += len(s)
	}
	return n
}

// email returns the address of user j of tenant i.
func (f *Fixture) email(i, j int) string {
	return fmt.Sprintf("u%d.t%d.%s@bench.example.com", j, i, f.runID)
}

// newEmail returns an address no user has yet, for the signup operation.
func (f *Fixture) newEmail() string {
	return fmt.Sprintf("s%d.%s@bench.example.com", f.signups.Add(1), f.runID)
}

// acquire takes an idle session of tenant t for a refresh, or of another
// of the first n tenants when t has none idle; nil when every one is in
// use. The caller gives it back with release.
func (f *Fixture) acquire(t, n int) *session {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.popLocked(t); s != nil {
		return s
	}
	start := mrand.IntN(n)
	for k := range n {
		if s := f.popLocked((start + k) % n); s != nil {
			return s
		}
	}
	return nil
}

func (f *Fixture) popLocked(t int) *session {
	l := f.idle[t]
	if len(l) == 0 {
		return nil
	}
	i := mrand.IntN(len(l))
	s := l[i]
	l[i] = l[len(l)-1]
	f.idle[t] = l[:len(l)-1]
	s.busy = true
	return s
}

func (f *Fixture) release(s *session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s.busy = false
	f.idle[s.tenant] = append(f.idle[s.tenant], s)
}

// any returns a session of tenant t for a request that only needs its
// access token (shared between requests).
func (f *Fixture) any(t int) *session {
	l := f.sessions[t]
	return l[mrand.IntN(len(l))]
}

// Setup creates cfg.Tenants tenants through the admin API (create, then
// approve) and signs cfg.Users users up in each through the auth API.
func Setup(ctx context.Context, t *Target, cfg SetupConfig) (*Fixture, error) {
	cfg.Tenants = max(cfg.Tenants, 1)
	cfg.Users = max(cfg.Users, 1)
	cfg.OtherUsers = max(cfg.OtherUsers, 1)
	if cfg.BaseTenants <= 0 || cfg.BaseTenants > cfg.Tenants {
		cfg.BaseTenants = cfg.Tenants
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	f := &Fixture{
		Slugs:    make([]string, cfg.Tenants),
		Password: "bench-password-" + randomID(8),
		Backend:  cfg.Backend,
		base:     cfg.BaseTenants,
		runID:    randomID(6),
		sessions: make([][]*session, cfg.Tenants),
		idle:     make([][]*session, cfg.Tenants),
	}
	for i := range f.Slugs {
		f.Slugs[i] = fmt.Sprintf("bench-%s-%d", f.runID, i)
		n := cfg.Users
		if i >= cfg.BaseTenants {
			n = cfg.OtherUsers
		}
		f.sessions[i] = make([]*session, n)
	}
	var bar *progressbar.ProgressBar
	if cfg.Progress != nil {
		bar = progressbar.NewOptions(cfg.Tenants+cfg.BaseTenants*cfg.Users+(cfg.Tenants-cfg.BaseTenants)*cfg.OtherUsers,
			progressbar.OptionSetWriter(cfg.Progress),
			progressbar.OptionSetDescription(fmt.Sprintf("setup: %d tenants, %d users", cfg.Tenants, cfg.BaseTenants*cfg.Users+(cfg.Tenants-cfg.BaseTenants)*cfg.OtherUsers)),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(cfg.Progress) }),
		)
	}
	step := func() {
		if bar != nil {
			_ = bar.Add(1)
		}
	}
	// Tenants first, then users: a tenant's signups need it active.
	base := cfg.BaseTenants
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Concurrency)
	for i, slug := range f.Slugs {
		g.Go(func() error {
			body := map[string]string{"slug": slug, "name": fmt.Sprintf("Bench tenant %d", i)}
			if cfg.Backend != "" {
				body["backend"] = cfg.Backend
			}
			if cfg.Node != "" {
				body["node"] = cfg.Node
			}
			if err := t.mustCall(gctx, "POST", "/admin/tenants", t.AdminToken, body, http.StatusCreated, nil); err != nil {
				return fmt.Errorf("create tenant: %w", err)
			}
			if err := t.mustCall(gctx, "POST", "/admin/tenants/"+slug+"/approve", t.AdminToken, nil, http.StatusOK, nil); err != nil {
				return fmt.Errorf("approve tenant: %w", err)
			}
			if cfg.WebhookURL != "" && i < base {
				if err := t.mustCall(gctx, "POST", "/t/"+slug+"/admin/webhooks", t.AdminToken, map[string]any{"url": cfg.WebhookURL},
					http.StatusCreated, nil); err != nil {
					return fmt.Errorf("webhook endpoint: %w", err)
				}
			}
			step()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(cfg.Concurrency)
	for i := range f.Slugs {
		for j := range f.sessions[i] {
			g.Go(func() error {
				s, err := f.signup(gctx, t, i, f.email(i, j))
				if err != nil {
					return err
				}
				f.sessions[i][j] = s
				step()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i := range f.sessions {
		f.idle[i] = append([]*session(nil), f.sessions[i]...)
	}
	if cfg.OAuth {
		if err := f.setupOAuth(ctx, t, cfg.Concurrency); err != nil {
			return nil, err
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return f, nil
}

// signup signs a user up during setup, retrying while the hash pool
// answers 429 (bounded: 50 tries).
func (f *Fixture) signup(ctx context.Context, t *Target, tenant int, email string) (*session, error) {
	body := map[string]any{"email": email, "password": f.Password}
	var err error
	for try := 0; try < 50; try++ {
		var sb sessionBody
		err = t.mustCall(ctx, "POST", "/t/"+f.Slugs[tenant]+"/signup", "", body, http.StatusOK, &sb)
		if err == nil {
			if sb.AccessToken == "" || sb.RefreshToken == "" {
				return nil, fmt.Errorf("signup %s: answer has no session", email)
			}
			return &session{tenant: tenant, email: email, access: sb.AccessToken, refresh: sb.RefreshToken}, nil
		}
		if !isStatus(err, 429) && !isStatus(err, 503) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(50+mrand.IntN(200)) * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("signup: %w", err)
}

func isStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == code
}

// randomID returns n random lower-case letters and digits.
func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Cleanup deletes the fixture's tenants through the admin API (their
// shards, schemas or databases with them), concurrency at a time.
func (f *Fixture) Cleanup(ctx context.Context, t *Target, concurrency int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for _, slug := range f.Slugs {
		g.Go(func() error {
			err := t.mustCall(gctx, "DELETE", "/admin/tenants/"+slug, t.AdminToken, nil, http.StatusNoContent, nil)
			if isStatus(err, http.StatusNotFound) {
				return nil
			}
			return err
		})
	}
	return g.Wait()
}

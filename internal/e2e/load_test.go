package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The load model: every user is driven by one goroutine at a time, so the
// state each acknowledged (2xx) request left is known exactly. A request
// without an answer (the server died, or shut down) leaves the user
// uncertain: its chain stops there, and checks that request could have
// changed accept either outcome.

// session is a login session as the client knows it.
type session struct {
	id      string // session_id claim
	access  string
	refresh string   // the latest acknowledged refresh token
	rotated []string // refresh tokens acknowledged as replaced
}

// user is one end user of one tenant and what it was acknowledged.
type user struct {
	tenant          tenantInfo
	email, password string
	id              string
	cur             *session
	ended           []*session     // sessions whose logout was acknowledged
	acks            map[string]int // audit action → acknowledged requests that wrote it
	meta            int            // last acknowledged user_metadata "n"
	pendingMeta     int            // value of an unanswered update, or -1
	inflight        string         // the op left without an answer, or ""
	failedAcked     int            // wrong-password logins answered 400
	touched         bool           // changed in the current round
}

// load is the model of every user across restarts.
type load struct {
	tenants []tenantInfo
	rng     *rand.Rand
	mu      sync.Mutex // guards users, rng and the counters below
	users   []*user
	acked   int // 2xx writes
	unknown int // requests without an answer

	secretsMu sync.Mutex // guards secrets
	secrets   []string   // passwords and tokens seen, for the log scan
}

func newLoad(tenants []tenantInfo, seed uint64) *load {
	return &load{tenants: tenants, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (l *load) secret(s ...string) {
	l.secretsMu.Lock()
	l.secrets = append(l.secrets, s...)
	l.secretsMu.Unlock()
}

func (l *load) intn(n int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.IntN(n)
}

// run drives the server with workers goroutines until ctx ends or each
// worker made maxOps requests. failEvery > 0 adds a wrong-password login
// to about one op in failEvery.
func (l *load) run(ctx context.Context, s *server, workers, maxOps, failEvery int) {
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			ops := 0
			for ops < maxOps && ctx.Err() == nil {
				u := &user{tenant: l.tenants[l.intn(len(l.tenants))], acks: map[string]int{}, pendingMeta: -1, touched: true}
				n := seq.Add(1)
				u.email = fmt.Sprintf("u%d-%s@example.com", n, randHex(3))
				u.password = "pw-" + randHex(8)
				l.secret(u.password)
				l.mu.Lock()
				l.users = append(l.users, u)
				l.mu.Unlock()
				steps := 3 + l.intn(8)
				for i := 0; i < steps && ops < maxOps && ctx.Err() == nil && u.inflight == ""; i++ {
					ops++
					if u.id == "" {
						l.signup(ctx, s, u)
						continue
					}
					switch k := l.intn(10); {
					case failEvery > 0 && l.intn(failEvery) == 0:
						l.failLogin(ctx, s, u)
					case k < 3:
						l.refresh(ctx, s, u)
					case k < 6:
						l.update(ctx, s, u)
					case k < 8:
						l.logoutLogin(ctx, s, u)
					default:
						l.getUser(ctx, s, u)
					}
				}
			}
		})
	}
	wg.Wait()
}

// answered classifies r: ok for want, else the user becomes uncertain
// (no answer, or an answer we cannot interpret as "not written").
func (l *load) answered(u *user, op string, r resp, want int) bool {
	if r.Status == want {
		if want < 300 && op != "get" {
			l.mu.Lock()
			l.acked++
			l.mu.Unlock()
		}
		return true
	}
	u.inflight = op
	l.mu.Lock()
	l.unknown++
	l.mu.Unlock()
	return false
}

func (l *load) signup(ctx context.Context, s *server, u *user) {
	r := s.do(ctx, "POST", "/t/"+u.tenant.Slug+"/signup", "", map[string]any{"email": u.email, "password": u.password, "data": map[string]any{"n": 0}})
	if !l.answered(u, "signup", r, 200) {
		return
	}
	u.id = nested(r.Body, "user", "id")
	u.cur = l.sessionFrom(r)
	u.acks["user_signedup"]++
}

func (l *load) sessionFrom(r resp) *session {
	s := &session{access: r.str("access_token"), refresh: r.str("refresh_token")}
	s.id = jwtClaim(s.access, "session_id")
	l.secret(s.access, s.refresh)
	return s
}

func (l *load) refresh(ctx context.Context, s *server, u *user) {
	r := s.do(ctx, "POST", "/t/"+u.tenant.Slug+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": u.cur.refresh})
	if !l.answered(u, "refresh", r, 200) {
		return
	}
	ns := l.sessionFrom(r)
	if ns.id != u.cur.id || ns.refresh == u.cur.refresh {
		u.inflight = "refresh" // not a rotation: do not reason further
		return
	}
	u.cur.rotated = append(u.cur.rotated, u.cur.refresh)
	u.cur.refresh, u.cur.access = ns.refresh, ns.access
	u.acks["token_refreshed"]++
}

func (l *load) update(ctx context.Context, s *server, u *user) {
	n := u.meta + 1 + l.intn(1000)
	u.pendingMeta = n
	r := s.do(ctx, "PUT", "/t/"+u.tenant.Slug+"/user", u.cur.access, map[string]any{"data": map[string]any{"n": n}})
	if !l.answered(u, "update", r, 200) {
		return
	}
	u.meta, u.pendingMeta = n, -1
	u.acks["user_modified"]++
}

func (l *load) logoutLogin(ctx context.Context, s *server, u *user) {
	r := s.do(ctx, "POST", "/t/"+u.tenant.Slug+"/logout?scope=local", u.cur.access, nil)
	if !l.answered(u, "logout", r, 204) {
		return
	}
	u.ended = append(u.ended, u.cur)
	u.cur = nil
	u.acks["logout"]++
	r = s.do(ctx, "POST", "/t/"+u.tenant.Slug+"/token?grant_type=password", "", map[string]any{"email": u.email, "password": u.password})
	if !l.answered(u, "login", r, 200) {
		return
	}
	u.cur = l.sessionFrom(r)
	u.acks["login"]++
}

func (l *load) failLogin(ctx context.Context, s *server, u *user) {
	r := s.do(ctx, "POST", "/t/"+u.tenant.Slug+"/token?grant_type=password", "", map[string]any{"email": u.email, "password": "wrong-" + randHex(4)})
	if r.Status == 400 && r.code() == "invalid_credentials" {
		u.failedAcked++
		return
	}
	l.answered(u, "faillogin", r, 400)
}

func (l *load) getUser(ctx context.Context, s *server, u *user) {
	r := s.do(ctx, "GET", "/t/"+u.tenant.Slug+"/user", u.cur.access, nil)
	l.answered(u, "get", r, 200)
}

// nested returns body[k1][k2] as a string.
func nested(body map[string]any, k1, k2 string) string {
	m, _ := body[k1].(map[string]any)
	s, _ := m[k2].(string)
	return s
}

// jwtClaim returns a string claim of a JWT without verifying it.
func jwtClaim(tok, claim string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	s, _ := m[claim].(string)
	return s
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// refreshKey is what refresh_tokens.token_hash holds for a refresh token:
// the token's 14-digit time prefix and its SHA-256 (the SHA-256 alone for a
// token of 32 characters, issued before prefixes).
func refreshKey(s string) string {
	if len(s) == 46 {
		return s[:14] + sha(s)
	}
	return sha(s)
}

// verifyStats counts what a verification checked.
type verifyStats struct {
	users, facts int
}

// verify opens every shard of the stopped server read-only, runs
// integrity_check, and checks every acknowledged fact of the users touched
// since the last verify (all users when all is set). checkFailed also
// requires every answered failed login's audit event (graceful shutdown
// flushes the buffer; a SIGKILL may lose it, as designed).
func (l *load) verify(tb testing.TB, dataDir string, all, checkFailed bool) verifyStats {
	tb.Helper()
	var st verifyStats
	byTenant := map[string][]*user{}
	l.mu.Lock()
	for _, u := range l.users {
		if u.touched || all {
			byTenant[u.tenant.ID] = append(byTenant[u.tenant.ID], u)
			u.touched = false
		}
	}
	l.mu.Unlock()
	for _, t := range l.tenants {
		d := openDB(tb, shardPath(dataDir, t.ID))
		d.integrity()
		for _, u := range byTenant[t.ID] {
			if u.id == "" {
				continue
			}
			st.users++
			st.facts += l.verifyUser(tb, d, u, checkFailed)
		}
		d.close()
	}
	return st
}

func (l *load) verifyUser(tb testing.TB, d *db, u *user, checkFailed bool) (facts int) {
	tb.Helper()
	fail := func(format string, args ...any) {
		tb.Errorf("tenant %s user %s (%s, in flight: %q): %s", u.tenant.Slug, u.email, u.id, u.inflight, fmt.Sprintf(format, args...))
	}
	if got := d.one(`SELECT email FROM users WHERE id = ?`, u.id); got != u.email {
		fail("acknowledged signup lost: email %q", got)
		return 1
	}
	facts++
	for action, n := range u.acks {
		got, _ := strconv.Atoi(d.one(`SELECT count(*) FROM audit_log WHERE actor_id = ? AND action = ?`, u.id, action))
		if got < n {
			fail("%d %s audit events, %d acknowledged", got, action, n)
		}
		facts += n
	}
	if checkFailed && u.failedAcked > 0 {
		got, _ := strconv.Atoi(d.one(`SELECT count(*) FROM audit_log WHERE actor_id = ? AND action = 'login_failed'`, u.id))
		if got < u.failedAcked {
			fail("%d login_failed audit events, %d failed logins answered", got, u.failedAcked)
		}
		facts += u.failedAcked
	}
	var meta map[string]any
	_ = json.Unmarshal([]byte(d.one(`SELECT raw_user_meta_data FROM users WHERE id = ?`, u.id)), &meta)
	if n, _ := meta["n"].(float64); int(n) != u.meta && int(n) != u.pendingMeta {
		fail("user_metadata n = %v, acknowledged %d (in flight %d)", meta["n"], u.meta, u.pendingMeta)
	}
	facts++
	for _, s := range u.ended {
		if d.one(`SELECT count(*) FROM sessions WHERE id = ?`, s.id) != "0" ||
			d.one(`SELECT count(*) FROM refresh_tokens WHERE session_id = ?`, s.id) != "0" {
			fail("session %s survives its acknowledged logout", s.id)
		}
		facts++
	}
	if s := u.cur; s != nil {
		// An unanswered logout or refresh may have ended or rotated it.
		uncertain := u.inflight == "logout" || u.inflight == "refresh"
		exists := d.one(`SELECT count(*) FROM sessions WHERE id = ?`, s.id) == "1"
		if !exists && !uncertain {
			fail("acknowledged session %s lost", s.id)
		}
		if exists {
			rev := d.one(`SELECT revoked FROM refresh_tokens WHERE token_hash = ?`, refreshKey(s.refresh))
			if rev != "0" && !(uncertain && rev == "1") {
				fail("latest refresh token of session %s: revoked = %q", s.id, rev)
			}
			for _, old := range s.rotated {
				if rev := d.one(`SELECT revoked FROM refresh_tokens WHERE token_hash = ?`, refreshKey(old)); rev != "1" {
					fail("rotated refresh token of session %s: revoked = %q", s.id, rev)
				}
			}
		}
		facts += 2 + len(s.rotated)
	}
	return facts
}

// scanSecrets fails for every secret found in logs.
func scanSecrets(tb testing.TB, logs string, secrets map[string]string) {
	tb.Helper()
	if logs == "" {
		tb.Fatal("no logs captured")
	}
	for what, s := range secrets {
		if len(s) >= 8 && strings.Contains(logs, s) {
			tb.Errorf("a %s appears in the server's logs", what)
		}
	}
}

// secretsOf returns the secrets of the load and the cluster.
func (l *load) secretsOf(tb testing.TB, c *cluster) map[string]string {
	tb.Helper()
	out := map[string]string{"admin token": c.adminToken}
	l.secretsMu.Lock()
	for i, s := range l.secrets {
		out[fmt.Sprintf("client secret #%d (password or token)", i)] = s
	}
	l.secretsMu.Unlock()
	for _, f := range []string{"master-key", "admin-token"} {
		if b, err := readFile(c.dataDir, f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			out[f] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// doneAfter returns a context that ends after d.
func doneAfter(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func readFile(dir, name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }

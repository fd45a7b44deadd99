package api_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/engine"
)

func sessionID(tb testing.TB, r authResp) string {
	tb.Helper()
	_, c := claimsOf(tb, r.str("access_token"))
	return c["session_id"].(string)
}

func TestAuth_Refresh(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	e.signup(base, "ivan@example.com", "password1")

	t.Run("Rotate", func(t *testing.T) {
		s1 := e.login(base, "ivan@example.com", "password1")
		s2 := e.refresh(base, s1.str("refresh_token"))
		checkSession(t, s2, "ivan@example.com")
		if _, ok := s2.Body["weak_password"]; ok {
			t.Fatal("refresh must not carry weak_password")
		}
		if s2.str("refresh_token") == s1.str("refresh_token") {
			t.Fatal("refresh token not rotated")
		}
		if sessionID(t, s1) != sessionID(t, s2) {
			t.Fatal("refresh changed the session")
		}
		if r := e.call("GET", base+"/user", s2.str("access_token"), nil); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
	})
	t.Run("GraceReturnsCurrentSession", func(t *testing.T) {
		s1 := e.login(base, "ivan@example.com", "password1")
		s2 := e.refresh(base, s1.str("refresh_token"))
		// The parent of the active token: the client lost the response.
		again := e.refresh(base, s1.str("refresh_token"))
		if again.Status != 200 || again.str("refresh_token") != s2.str("refresh_token") || sessionID(t, again) != sessionID(t, s1) {
			t.Fatalf("reuse of the parent: %d %s", again.Status, again.Raw)
		}
		// A grandparent revoked within the grace interval reaches the active token too.
		s3 := e.refresh(base, s2.str("refresh_token"))
		r := e.refresh(base, s1.str("refresh_token"))
		if r.Status != 200 || r.str("refresh_token") != s3.str("refresh_token") {
			t.Fatalf("reuse within grace: %d %s", r.Status, r.Raw)
		}
		// The current token still rotates normally.
		if r := e.refresh(base, s3.str("refresh_token")); r.Status != 200 || r.str("refresh_token") == s3.str("refresh_token") {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
	})
	t.Run("ParentAfterGrace", func(t *testing.T) {
		s1 := e.login(base, "ivan@example.com", "password1")
		s2 := e.refresh(base, s1.str("refresh_token"))
		e.advance(11 * time.Second)
		r := e.refresh(base, s1.str("refresh_token"))
		if r.Status != 200 || r.str("refresh_token") != s2.str("refresh_token") {
			t.Fatalf("parent of the active token: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("ReuseAfterGraceRevokesSession", func(t *testing.T) {
		s1 := e.login(base, "ivan@example.com", "password1")
		s2 := e.refresh(base, s1.str("refresh_token"))
		s3 := e.refresh(base, s2.str("refresh_token"))
		e.advance(11 * time.Second)
		wantAuthError(t, e.refresh(base, s1.str("refresh_token")), 400, "refresh_token_already_used")
		for _, s := range []authResp{s1, s2, s3} {
			wantAuthError(t, e.refresh(base, s.str("refresh_token")), 400, "refresh_token_already_used")
		}
		wantAuthError(t, e.call("GET", base+"/user", s3.str("access_token"), nil), 403, "session_not_found")
		if acts := auditActions(t, e, "acme"); acts["token_revoked"] != 1 {
			t.Fatalf("audit %v", acts)
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		for _, rt := range []string{"", "short", "exwv3sfpicmj", "0123456789012345678901234567890!", "01234567890123456789012345678901x"} {
			r := e.refresh(base, rt)
			wantAuthError(t, r, 400, "validation_failed")
			if r.str("msg") != "Refresh token is not valid" {
				t.Fatalf("msg %q", r.str("msg"))
			}
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		wantAuthError(t, e.refresh(base, "0123456789abcdefghijABCDEFGHIJ01"), 400, "refresh_token_not_found")
	})
	t.Run("NewErrorShape", func(t *testing.T) {
		r := e.call("POST", base+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": "0123456789abcdefghijABCDEFGHIJ01"}, "X-Supabase-Api-Version", "2024-01-01")
		if r.Status != 400 || r.Body["code"] != "refresh_token_not_found" || r.str("message") == "" {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		sameKeys(t, "error", r.Body, "code", "message")
	})
}

// Refresh tokens carry their issue time as a prefix (for the index of
// stored keys, not for clients); tokens issued before the prefix existed
// (32 characters, stored as their SHA-256) still refresh, and their
// parent's grace reaches a prefixed child.
func TestAuth_RefreshTokenPrefix(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	e.signup(base, "ivan@example.com", "password1")
	s1 := e.login(base, "ivan@example.com", "password1")
	rt := s1.str("refresh_token")
	if len(rt) != 46 {
		t.Fatalf("refresh token %q: want 46 characters", rt)
	}
	issued, err := strconv.ParseInt(rt[:14], 16, 64)
	if err != nil || time.Since(time.UnixMicro(issued)).Abs() > time.Minute || strings.ToLower(rt[:14]) != rt[:14] {
		t.Fatalf("refresh token %q: its first 14 characters are not its issue time in hex (%v)", rt, err)
	}
	// The session's token as an older server issued it.
	legacy := strings.Repeat("k", 20) + "Q1w2E3r4T5y6"
	sum := sha256.Sum256([]byte(legacy))
	e.write("acme", func(tx engine.Querier) error {
		n, err := tx.Exec(`UPDATE refresh_tokens SET token_hash = ? WHERE session_id = ? AND revoked = 0`, hex.EncodeToString(sum[:]), sessionID(t, s1))
		if err == nil && n != 1 {
			err = fmt.Errorf("%d rows", n)
		}
		return err
	})
	if r := e.refresh(base, rt); r.Status != 400 {
		t.Fatalf("the replaced token: %d %s", r.Status, r.Raw)
	}
	s2 := e.refresh(base, legacy)
	if s2.Status != 200 || len(s2.str("refresh_token")) != 46 || sessionID(t, s2) != sessionID(t, s1) {
		t.Fatalf("a token without a prefix: %d %s", s2.Status, s2.Raw)
	}
	again := e.refresh(base, legacy)
	if again.Status != 200 || again.str("refresh_token") != s2.str("refresh_token") {
		t.Fatalf("the parent without a prefix within grace: %d %s, want the active %q", again.Status, again.Raw, s2.str("refresh_token"))
	}
	if s3 := e.refresh(base, s2.str("refresh_token")); s3.Status != 200 || s3.str("refresh_token") == s2.str("refresh_token") {
		t.Fatalf("the prefixed child: %d %s", s3.Status, s3.Raw)
	}
	// A prefix that is not lowercase hex is not a token's.
	bad := strings.ToUpper(rt[:14]) + rt[14:]
	if bad == rt {
		bad = "g" + rt[1:]
	}
	if r := e.refresh(base, bad); r.Status != 400 {
		t.Fatalf("a malformed prefix: %d %s", r.Status, r.Raw)
	}
}

func TestAuth_ConcurrentRefresh(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")

	t.Run("DistinctSessions", func(t *testing.T) {
		const n = 200
		e.signup(base, "many@example.com", "password1")
		tokens := make([]string, n)
		for i := range tokens {
			r := e.login(base, "many@example.com", "password1")
			if r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Raw)
			}
			tokens[i] = r.str("refresh_token")
		}
		results := make([]authResp, n)
		var wg sync.WaitGroup
		for i := range tokens {
			wg.Go(func() { results[i] = e.refresh(base, tokens[i]) })
		}
		wg.Wait()
		seen := map[string]bool{}
		for i, r := range results {
			if r.Status != 200 {
				t.Fatalf("refresh %d: %d %s", i, r.Status, r.Raw)
			}
			if seen[r.str("refresh_token")] {
				t.Fatalf("refresh token handed out twice")
			}
			seen[r.str("refresh_token")] = true
		}
	})
	t.Run("OneToken", func(t *testing.T) {
		const n = 20
		s := e.signup(base, "one@example.com", "password1")
		results := make([]authResp, n)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() { results[i] = e.refresh(base, s.str("refresh_token")) })
		}
		wg.Wait()
		// Documented outcome: the first rotates, the others reuse the
		// parent of the active token and get the same current session.
		want := ""
		for i, r := range results {
			if r.Status != 200 {
				t.Fatalf("refresh %d: %d %s", i, r.Status, r.Raw)
			}
			if sessionID(t, r) != sessionID(t, s) {
				t.Fatalf("refresh %d changed the session", i)
			}
			if want == "" {
				want = r.str("refresh_token")
			}
			if r.str("refresh_token") != want || want == s.str("refresh_token") {
				t.Fatalf("refresh %d got another token", i)
			}
		}
		if acts := auditActions(t, e, "acme"); acts["token_refreshed"] != 201 {
			t.Fatalf("token_refreshed events %d, want 201 (one per rotation)", acts["token_refreshed"])
		}
	})
}

// TestAuth_LoadShedding: with one hash worker and a budget below one hash,
// a burst of logins gets 429 over_request_rate_limit with Retry-After,
// while requests that need no hash (GET /user) all succeed.
func TestAuth_LoadShedding(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{params: hash.Params{MemoryKiB: 4096, Time: 1, Threads: 1}, workers: 1, budget: time.Microsecond})
	base := e.tenant("acme")
	s := e.signup(base, "load@example.com", "password1")
	at := s.str("access_token")

	const logins, reads = 16, 40
	shed := 0
	for round := 0; round < 5 && shed == 0; round++ {
		var wg sync.WaitGroup
		loginRes := make([]authResp, logins)
		readRes := make([]authResp, reads)
		for i := range loginRes {
			wg.Go(func() { loginRes[i] = e.login(base, "load@example.com", "password1") })
		}
		for i := range readRes {
			wg.Go(func() { readRes[i] = e.call("GET", base+"/user", at, nil) })
		}
		wg.Wait()
		for i, r := range readRes {
			if r.Status != 200 {
				t.Fatalf("GET /user %d during the login burst: %d %s", i, r.Status, r.Raw)
			}
		}
		for _, r := range loginRes {
			switch r.Status {
			case 200:
			case 429:
				wantAuthError(t, r, 429, "over_request_rate_limit")
				if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
					t.Fatalf("Retry-After %q", r.Header.Get("Retry-After"))
				}
				shed++
			default:
				t.Fatalf("login: %d %s", r.Status, r.Raw)
			}
		}
	}
	if shed == 0 {
		t.Fatal("no login was refused")
	}
	if st := e.Pool.Stats(); st.Refused < int64(shed) {
		t.Fatalf("pool refused %d, HTTP saw %d", st.Refused, shed)
	}
	t.Log(fmt.Sprintf("%d logins shed", shed))
}

// TestAuth_WriterOverload: with a writer queue of one, a burst of refreshes
// gets 200 or 503 with Retry-After (auth-js retries 5xx but drops the
// session on 4xx), never anything else.
func TestAuth_WriterOverload(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{queue: 1, sync: "FULL"})
	base := e.tenant("acme")
	e.signup(base, "busy@example.com", "password1")
	const n = 40
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i] = e.login(base, "busy@example.com", "password1").str("refresh_token")
	}
	overloaded := 0
	for round := 0; round < 5 && overloaded == 0; round++ {
		results := make([]authResp, n)
		var wg sync.WaitGroup
		for i := range tokens {
			wg.Go(func() { results[i] = e.refresh(base, tokens[i]) })
		}
		wg.Wait()
		for i, r := range results {
			switch r.Status {
			case 200:
				tokens[i] = r.str("refresh_token")
			case 503:
				if r.Header.Get("Retry-After") == "" || r.Header.Get("X-Sb-Error-Code") == "" {
					t.Fatalf("503 without Retry-After or code: %v %s", r.Header, r.Raw)
				}
				overloaded++
			default:
				t.Fatalf("refresh: %d %s", r.Status, r.Raw)
			}
		}
	}
	if overloaded == 0 {
		t.Fatal("no refresh was refused in 5 bursts of 40 with a writer queue of 1: the overload path was not exercised")
	}
	t.Logf("%d refreshes refused with 503", overloaded)
}

// pacedTotal sums keyshard_auth_hash_paced_total over its reasons, from the
// server's /metrics.
func pacedTotal(t *testing.T, e *authEnv) float64 {
	t.Helper()
	res, err := http.Get(e.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	sum, reasons := 0.0, 0
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, `keyshard_auth_hash_paced_total{reason="`)
		if !ok {
			continue
		}
		_, v, ok := strings.Cut(rest, "} ")
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || err != nil {
			t.Fatalf("bad metric line %q", line)
		}
		sum += f
		reasons++
	}
	if reasons != 3 {
		t.Fatalf("keyshard_auth_hash_paced_total has %d reasons in /metrics, want early, no_pass and busy", reasons)
	}
	return sum
}

// TestAuth_PacerHoldsEarlyRetries: clients of one address that retry at
// once on 429, past the address's spare refusals, are held (the pacer is
// wired into the login flow): the pacer's counter moves and fewer
// refusals are answered than the clients could send.
func TestAuth_PacerHoldsEarlyRetries(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{params: hash.Params{MemoryKiB: 8192, Time: 2, Threads: 1}, workers: 1, budget: time.Microsecond})
	base := e.tenant("acme")
	e.signup(base, "storm@example.com", "password1")
	before := pacedTotal(t, e)
	var refused, ok atomic.Int64
	var stop atomic.Bool
	defer stop.Store(true) // the clients stop even if the watch below fails
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				switch r := e.login(base, "storm@example.com", "password1"); r.Status {
				case 200:
					ok.Add(1)
				case 429:
					refused.Add(1) // and again at once
				default:
					t.Errorf("login: %d %s", r.Status, r.Raw)
					return
				}
			}
		})
	}
	// At least 4 s, and on a slow machine until the address's spares are
	// spent and a retry is held (at most 30 s).
	var held float64
	for {
		time.Sleep(100 * time.Millisecond)
		held = pacedTotal(t, e) - before
		if el := time.Since(start); el >= 30*time.Second || (el >= 4*time.Second && held >= 1) {
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	held = pacedTotal(t, e) - before
	t.Logf("%v: %d logins, %d refusals, %.0f held", elapsed.Round(time.Millisecond), ok.Load(), refused.Load(), held)
	if held < 1 {
		t.Fatalf("no early retry was held (%d refusals answered)", refused.Load())
	}
	// Unpaced, 8 clients answered in well under a millisecond send
	// thousands of refusals a second; paced, an address gets its 256 spare
	// refusals, one more for each hashed login, 8 a second refilled, and
	// an account at most its 64 passes a second (each ready up to 50 ms
	// early: a margin of two seconds).
	secs := int64(elapsed/time.Second) + 1
	if n := refused.Load(); n > 256+ok.Load()+(64+8)*(secs+2) {
		t.Fatalf("%d refusals in %v: the retries were not paced", n, elapsed.Round(time.Millisecond))
	}
}

package api_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// TestAuth_LoginThrottle: failed logins are limited per account and per
// client address, per tenant, answered 429 over_request_rate_limit with
// Retry-After until the window ends.
func TestAuth_LoginThrottle(t *testing.T) {
	t.Run("Account", func(t *testing.T) {
		e := newAuthEnv(t, authEnvOptions{})
		a, b := e.tenant("acme"), e.tenant("beta")
		e.signup(a, "victim@example.com", "password1")
		e.signup(a, "bystander@example.com", "password1")
		e.signup(b, "victim@example.com", "password1")
		for i := 0; i < 10; i++ {
			wantAuthError(t, e.login(a, "victim@example.com", "guess-"+strconv.Itoa(i)), 400, "invalid_credentials")
		}
		// Even the right password is refused now from this address:
		// guessing stops here.
		r := e.login(a, "victim@example.com", "password1")
		wantAuthError(t, r, 429, "over_request_rate_limit")
		if s, _ := strconv.Atoi(r.Header.Get("Retry-After")); s <= 0 || s > 300 {
			t.Fatalf("Retry-After %q, want 1..300 s", r.Header.Get("Retry-After"))
		}
		// But the owner, from another address, is not locked out: the
		// account is only slowed down (a second for the first attempt past
		// its limit), and the right password works.
		owner := fromAddress(t, "127.0.0.2")
		start := time.Now()
		res, err := owner.Post(a+"/token?grant_type=password", "application/json",
			strings.NewReader(`{"email":"victim@example.com","password":"password1"}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || time.Since(start) < 900*time.Millisecond {
			t.Fatalf("the owner from another address: %d after %v, want 200 after a slow-down of 1 s", res.StatusCode, time.Since(start))
		}
		// Other accounts, and the same email at another tenant, are not affected.
		if r := e.login(a, "bystander@example.com", "password1"); r.Status != 200 {
			t.Fatalf("another account: %d %s", r.Status, r.Raw)
		}
		if r := e.login(b, "victim@example.com", "password1"); r.Status != 200 {
			t.Fatalf("same email at another tenant: %d %s", r.Status, r.Raw)
		}
		e.advance(5*time.Minute + time.Second)
		if r := e.login(a, "victim@example.com", "password1"); r.Status != 200 {
			t.Fatalf("after the window: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("SuccessResetsAccount", func(t *testing.T) {
		e := newAuthEnv(t, authEnvOptions{})
		a := e.tenant("acme")
		e.signup(a, "typo@example.com", "password1")
		for round := 0; round < 3; round++ {
			for i := 0; i < 9; i++ {
				wantAuthError(t, e.login(a, "typo@example.com", "typo"), 400, "invalid_credentials")
			}
			if r := e.login(a, "typo@example.com", "password1"); r.Status != 200 {
				t.Fatalf("round %d: %d %s", round, r.Status, r.Raw)
			}
		}
	})
	t.Run("Address", func(t *testing.T) {
		e := newAuthEnv(t, authEnvOptions{})
		a, b := e.tenant("acme"), e.tenant("beta")
		e.signup(a, "real@example.com", "password1")
		for i := 0; i < 100; i++ { // a spray: one guess per account
			r := e.login(a, "spray"+strconv.Itoa(i)+"@example.com", "password1")
			wantAuthError(t, r, 400, "invalid_credentials")
		}
		wantAuthError(t, e.login(a, "real@example.com", "password1"), 429, "over_request_rate_limit")
		e.signup(b, "real@example.com", "password1")
		if r := e.login(b, "real@example.com", "password1"); r.Status != 200 {
			t.Fatalf("the same address at another tenant: %d %s", r.Status, r.Raw)
		}
	})
}

// fromAddress returns a client whose connections come from src, another
// loopback address (Linux routes all of 127.0.0.0/8 to lo).
func fromAddress(tb testing.TB, src string) *http.Client {
	tb.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TestSecurity_CrossTenantServiceKey extends TestAuth_TenantAdmin: a
// tenant's service key opens no route of another tenant, cannot reach
// another tenant's users through its own routes, and the platform token is
// not a service key.
func TestSecurity_CrossTenantServiceKey(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	a, b := e.tenant("acme"), e.tenant("beta")
	key := func(slug string) string {
		r := e.call("POST", e.URL+"/admin/tenants/"+slug+"/service-key", "admin-secret", nil)
		if r.Status != 200 {
			t.Fatalf("service key: %d %s", r.Status, r.Raw)
		}
		return r.str("service_key")
	}
	keyA := key("acme")
	key("beta")
	ub := e.signup(b, "b@example.com", "password1")
	idB, _ := ub.Body["user"].(map[string]any)["id"].(string)
	body := map[string]any{"email": "x@example.com", "password": "password1"}
	for _, c := range []struct{ method, path string }{
		{"GET", "/admin/users"}, {"POST", "/admin/users"}, {"GET", "/admin/users/" + idB},
		{"PUT", "/admin/users/" + idB}, {"DELETE", "/admin/users/" + idB}, {"GET", "/admin/audit"},
	} {
		wantAuthError(t, e.call(c.method, b+c.path, keyA, body), 401, "no_authorization")
		wantAuthError(t, e.call(c.method, b+c.path, "admin-secret", body), 401, "no_authorization")
	}
	// Tenant B's user id through tenant A's own routes: not found there.
	for _, m := range []string{"GET", "PUT", "DELETE"} {
		if r := e.call(m, a+"/admin/users/"+idB, keyA, map[string]any{}); r.Status != 404 {
			t.Fatalf("%s acme/admin/users/<beta's user>: %d %s, want 404", m, r.Status, r.Raw)
		}
	}
	if r := e.login(b, "b@example.com", "password1"); r.Status != 200 {
		t.Fatalf("beta's user after the attempts: %d %s", r.Status, r.Raw)
	}
}

// injections are strings that would change a query built by concatenation.
var injections = []string{
	`'; DROP TABLE users; --`, `" OR "1"="1`, `' OR '1'='1' --`, `1); DELETE FROM sessions; --`,
	`\'; SELECT * FROM settings; --`, "NUL\x00byte", `%' AND 1=0 UNION SELECT encrypted_password FROM users --`,
}

// TestSecurity_SQLInjectionStoredLiterally sends injection strings in every
// field a client controls and checks they are stored and returned as sent.
func TestSecurity_SQLInjectionStoredLiterally(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	a := e.tenant("acme")
	svc := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	for i, inj := range injections {
		email := "o'brien" + strconv.Itoa(i) + "+'or'1'='1@example.com"
		password := "pw" + inj
		agent := strings.ReplaceAll(inj, "\x00", "") // not valid in a header
		r := e.call("POST", a+"/signup", "", map[string]any{"email": email, "password": password, "data": map[string]any{"k": inj, inj: "v"}},
			"User-Agent", agent)
		if r.Status != 200 {
			t.Fatalf("signup with %q: %d %s", inj, r.Status, r.Raw)
		}
		if r := e.login(a, email, password); r.Status != 200 {
			t.Fatalf("login with password %q: %d %s", password, r.Status, r.Raw)
		}
		wantAuthError(t, e.login(a, email, "pw' OR '1'='1"), 400, "invalid_credentials")
		tok := r.str("access_token")
		u := e.call("PUT", a+"/user", tok, map[string]any{"data": map[string]any{"u": inj}})
		meta, _ := u.Body["user_metadata"].(map[string]any)
		if u.Status != 200 || meta["k"] != inj || meta[inj] != "v" || meta["u"] != inj {
			t.Fatalf("metadata with %q: %d %s", inj, u.Status, u.Raw)
		}
		c := e.call("POST", a+"/admin/users", svc, map[string]any{"email": "adm" + strconv.Itoa(i) + "'--@example.com", "password": password,
			"user_metadata": map[string]any{"m": inj}, "app_metadata": map[string]any{"a": inj}})
		if c.Status != 200 {
			t.Fatalf("admin create with %q: %d %s", inj, c.Status, c.Raw)
		}
		// On disk, as sent.
		ts, err := e.App.Engine.Tenant(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		var gotEmail, ua string
		err = ts.Read(context.Background(), func(q engine.Querier) error {
			if err := q.QueryRow(`SELECT email FROM users WHERE email = ?`, email).Scan(&gotEmail); err != nil {
				return err
			}
			return q.QueryRow(`SELECT s.user_agent FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = ? ORDER BY s.created_at LIMIT 1`, email).Scan(&ua)
		})
		ts.Release()
		if err != nil || gotEmail != email || ua != agent {
			t.Fatalf("stored email %q, user agent %q, %v; want %q, %q", gotEmail, ua, err, email, agent)
		}
	}
	// The tables are all there, and every user still logs in.
	if r := e.call("GET", a+"/admin/users?per_page=1000", svc, nil); r.Status != 200 || len(r.Body["users"].([]any)) != 2*len(injections) {
		t.Fatalf("list users: %d %s", r.Status, r.Raw)
	}
	// A tenant name is stored literally too; a slug never is.
	for _, inj := range injections {
		r := e.call("POST", e.URL+"/admin/tenants", "admin-secret", map[string]any{"slug": "s" + strconv.Itoa(len(inj)) + "x", "name": strings.ReplaceAll(inj, "\x00", "")})
		if r.Status != 201 && r.Status != 409 && r.Status != 400 {
			t.Fatalf("tenant named %q: %d %s", inj, r.Status, r.Raw)
		}
		if r := e.call("POST", e.URL+"/admin/tenants", "admin-secret", map[string]any{"slug": inj, "name": "x"}); r.Status != 400 {
			t.Fatalf("slug %q: %d %s, want 400", inj, r.Status, r.Raw)
		}
	}
}

// TestSecurity_PathTraversal: slugs that climb out of /t/{slug} or name
// files are refused at creation and never resolve a tenant.
func TestSecurity_PathTraversal(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	e.tenant("acme")
	for _, slug := range []string{"..", "../acme", "acme/..", "..%2facme", "%2e%2e", "acme%00", "acme\x00", "/etc/passwd", `..\acme`, "acme/../../catalog.db"} {
		if r := e.call("POST", e.URL+"/admin/tenants", "admin-secret", map[string]any{"slug": slug, "name": "x"}); r.Status != 400 {
			t.Errorf("create slug %q: %d %s, want 400", slug, r.Status, r.Raw)
		}
	}
	for _, p := range []string{"/t/..%2facme/health", "/t/%2e%2e/health", "/t/acme%2f..%2facme/health", "/admin/tenants/..%2facme",
		"/t/ACME/health", "/t/acme%00/health"} {
		req, err := http.NewRequest("GET", e.URL+p, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer admin-secret")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 404 && res.StatusCode != 400 {
			t.Errorf("GET %s: %d, want 404 or 400", p, res.StatusCode)
		}
	}
}

// TestServer_OversizedBodies: every route that reads a body answers 413
// with a code past 1 MiB, also when a valid value is padded with space.
func TestServer_OversizedBodies(t *testing.T) {
	e := newInproc(t)
	big := `{"email":"big@example.com","password":"password1","data":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`
	padded := `{"email":"pad@example.com","password":"password1"}` + strings.Repeat(" ", 1<<20)
	for _, ep := range bodyEndpoints {
		path := strings.Replace(ep.path, "{id}", e.user, 1)
		for name, body := range map[string]string{"big": big, "padded": padded} {
			code, out := e.serve(ep.method, path, e.bearerFor(ep.auth), body)
			if code != http.StatusRequestEntityTooLarge || !strings.Contains(string(out), "request_too_large") {
				t.Errorf("%s %s, %s body: %d %.200s, want 413 request_too_large", ep.method, path, name, code, out)
			}
		}
		code, out := e.serve(ep.method, path, e.bearerFor(ep.auth), `{"email": "x@example.com",`)
		if code != http.StatusBadRequest || !strings.Contains(string(out), "bad_json") {
			t.Errorf("%s %s, malformed JSON: %d %s, want 400 bad_json", ep.method, path, code, out)
		}
	}
}

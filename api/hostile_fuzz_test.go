package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
)

// inproc is a real app served in-process (no listener): fuzzing calls the
// handler directly.
type inproc struct {
	h                 http.Handler
	access, svc, user string // a signed-up user's access token and id; the tenant's service key
	refresh           string
}

func newInproc(tb testing.TB) *inproc {
	tb.Helper()
	srv, err := app.OpenServer(context.Background(), app.ServerConfig{
		Storage:   app.Config{DataDir: tb.TempDir(), Synchronous: "NORMAL"},
		Hash:      hash.Config{Params: authTestParams, Workers: 2},
		MasterKey: bytes.Repeat([]byte{9}, token.MasterKeySize), AdminToken: "admin-secret",
		Throttle: &auth.ThrottleConfig{}, // fuzzing explores past the throttle
	})
	if err != nil {
		tb.Fatal(err)
	}
	a := srv.App
	tb.Cleanup(func() { _ = srv.Close() })
	e := &inproc{h: srv.Handler()}
	for _, slug := range []string{"acme", "other"} {
		if _, err := a.Engine.CreateTenant(context.Background(), slug, slug, ""); err != nil {
			tb.Fatal(err)
		}
		if _, err := a.Engine.ApproveTenant(context.Background(), slug); err != nil {
			tb.Fatal(err)
		}
	}
	code, body := e.serve("POST", "/t/acme/signup", "", `{"email":"fuzz@example.com","password":"password1"}`)
	if code != 200 {
		tb.Fatalf("signup: %d %s", code, body)
	}
	var s struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		User         struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	_ = json.Unmarshal(body, &s)
	e.access, e.refresh, e.user = s.AccessToken, s.RefreshToken, s.User.ID
	code, body = e.serve("POST", "/admin/tenants/acme/service-key", "admin-secret", "")
	var k struct {
		Key string `json:"service_key"`
	}
	if code != 200 || json.Unmarshal(body, &k) != nil || k.Key == "" {
		tb.Fatalf("service key: %d %s", code, body)
	}
	e.svc = k.Key
	return e
}

func (e *inproc) serve(method, target, bearer, body string) (int, []byte) {
	req := httptest.NewRequest(method, "http://keyshard.test/", strings.NewReader(body))
	req.URL.RawQuery = ""
	if u, err := req.URL.Parse(target); err == nil {
		req.URL = u
		req.RequestURI = target
	} else {
		req.URL.Path = target
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// checkAnswer fails on a 5xx other than 503 and on an error without a
// stable code in a JSON body.
func checkAnswer(t *testing.T, what string, code int, body []byte) {
	t.Helper()
	if code >= 500 && code != http.StatusServiceUnavailable {
		t.Fatalf("%s: %d %s", what, code, body)
	}
	if code < 400 {
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: %d with a body that is not JSON: %q", what, code, body)
	}
	c, _ := m["error_code"].(string)
	if c == "" {
		c, _ = m["code"].(string)
	}
	if c == "" {
		t.Fatalf("%s: %d without an error code: %s", what, code, body)
	}
}

// bodyEndpoints are the routes that read a JSON body, with their caller.
var bodyEndpoints = []struct {
	method, path string
	auth         string // "", "user", "service", "admin"
}{
	{"POST", "/t/acme/signup", ""},
	{"POST", "/t/acme/token?grant_type=password", ""},
	{"POST", "/t/acme/token?grant_type=refresh_token", ""},
	{"PUT", "/t/acme/user", "user"},
	{"POST", "/t/acme/admin/users", "service"},
	{"PUT", "/t/acme/admin/users/{id}", "service"},
	{"POST", "/admin/tenants", "admin"},
}

func (e *inproc) bearerFor(who string) string {
	switch who {
	case "user":
		return e.access
	case "service":
		return e.svc
	case "admin":
		return "admin-secret"
	}
	return ""
}

// FuzzRequestBodies sends arbitrary bodies to every route that reads one:
// no body produces a 500, every refusal carries a stable code.
func FuzzRequestBodies(f *testing.F) {
	seeds := []string{
		``, `{}`, `null`, `[]`, `"x"`, `{"email":`, `{"email":"a@b.co","password":"password1"}`,
		`{"email":"a@b.co","password":"password1"} trailing`, `{"email":5}`, `{"data":{"a":{"b":[1,2,{"c":null}]}}}`,
		`{"email":"' OR 1=1 --@x.io","password":"'); DROP TABLE users; --"}`, `{"refresh_token":"` + strings.Repeat("A", 32) + `"}`,
		`{"refresh_token":"../../etc/passwd"}`, `{"data":{"n":1e999}}`, `{"user_metadata":{"\u0000":"\ud800"}}`,
		`{"slug":"../x","name":"x"}`, `{"slug":"ok-slug","name":"` + strings.Repeat("n", 300) + `"}`,
		`{"password":null,"email":null}`, strings.Repeat("[", 20000), `{"email":"` + strings.Repeat("a", 70000) + `@x.io"}`,
	}
	for i, s := range seeds {
		f.Add(uint8(i), s)
	}
	e := newInproc(f)
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		ep := bodyEndpoints[int(which)%len(bodyEndpoints)]
		path := strings.Replace(ep.path, "{id}", e.user, 1)
		code, out := e.serve(ep.method, path, e.bearerFor(ep.auth), body)
		checkAnswer(t, ep.method+" "+path, code, out)
	})
}

// FuzzTenantRoutes sends requests to arbitrary paths and queries under /t/:
// nothing answers 500, and no path reaches a tenant other than the one its
// first segment names.
func FuzzTenantRoutes(f *testing.F) {
	for _, s := range []string{"acme/health", "acme/user", "../admin/tenants", "acme%2f..%2fother/health", "acme/../other/health",
		"ACME/health", "acme/token?grant_type=%00", "acme/logout?scope=' OR 1=1", "acme/admin/users/../../other/admin/users",
		"acme/admin/users?page=-1&per_page=999999999999999999999", "acme/admin/audit?page=9223372036854775807",
		"%2e%2e/health", "acme/.well-known/jwks.json", "other/user", "acme/admin/users/%00"} {
		f.Add(s, uint8(0))
	}
	e := newInproc(f)
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	f.Fuzz(func(t *testing.T, rest string, m uint8) {
		target := "/t/" + rest
		if strings.ContainsAny(target, " \r\n\t#") || !strings.HasPrefix(target, "/t/") {
			return // not a request line a client can send
		}
		for _, who := range []string{"user", "service"} {
			code, out := e.serve(methods[int(m)%len(methods)], target, e.bearerFor(who), "")
			checkAnswer(t, target, code, out)
			// Credentials of tenant acme never work on another tenant.
			u, err := url.Parse(target)
			if err != nil {
				return
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/t/"), "/")
			if code < 300 && first != "acme" && !strings.HasSuffix(target, "/health") && !strings.Contains(target, "/.well-known/") &&
				!strings.Contains(target, "/settings") {
				t.Fatalf("%s with a %s credential of acme: %d %s", target, who, code, out)
			}
		}
	})
}

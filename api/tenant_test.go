package api_test

import (
	"net/http"
	"strings"
	"testing"
)

func TestServer_TenantHealth(t *testing.T) {
	s := newServer(t)
	for _, slug := range []string{"acme", "x"} {
		wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": slug}), http.StatusCreated)
		wantTenant(t, "approve", s.admin(t, http.MethodPost, "/admin/tenants/"+slug+"/approve", nil), http.StatusOK)
	}

	t.Run("OK", func(t *testing.T) {
		if r := s.do(t, http.MethodGet, "/t/acme/health", "", nil); r.Status != http.StatusOK {
			t.Fatalf("health: %d %s", r.Status, r.Body)
		}
	})
	t.Run("ErrTenantNotFound", func(t *testing.T) {
		for _, p := range []string{"/t/nope/health", "/t/" + strings.Repeat("a", 64) + "/health", "/t/ACME/health", "/t/acme-/health"} {
			wantError(t, p, s.do(t, http.MethodGet, p, "", nil), http.StatusNotFound, "tenant_not_found")
		}
	})
	t.Run("PathTricks", func(t *testing.T) {
		// Encoded separators and dot segments never reach a file, never
		// resolve to another tenant and never fail with 500.
		paths := []string{
			"/t/..%2fx/health",
			"/t/..%2Fx/health",
			"/t/%2e%2e/health",
			"/t/.%2e/health",
			"/t/%2e/health",
			"/t/%2e%2e%2f%2e%2e%2fcatalog.db/health",
			"/t/..%2f..%2fcatalog.db/health",
			"/t/a%2fb/health",
			"/t/acme%2fx/health",
			"/t/acme%2f..%2fx/health",
			"/t/acme/..%2fx/health",
			"/t/acme/../x/health",
			"/t/./x/health",
			"/T/x/health",
			"/t/..%5cx/health",
			"/t/%5c..%5cx/health",
			"/t/%00/health",
			"/t/acme%00/health",
			"/t/acme%20/health",
			"/t/%20acme/health",
			"/t/acme;x/health",
			"/t/caf%C3%A9/health",
			"/t/%EF%BD%85%EF%BD%96%EF%BD%89%EF%BD%8C/health", // ｅｖｉｌ
			"/t/x'%20OR%20'1'='1/health",
			"/t/%25/health",
			"/t/%252e%252e/health",
			"/t//health",
			"/t/health",
		}
		for _, p := range paths {
			r := s.do(t, http.MethodGet, p, "", nil)
			wantError(t, "GET "+p, r, http.StatusNotFound, "")
		}
		admin := []struct{ method, path string }{
			{http.MethodGet, "/admin/tenants/%2e%2e"},
			{http.MethodGet, "/admin/tenants/..%2fcatalog.db"},
			{http.MethodDelete, "/admin/tenants/%2e%2e"},
			{http.MethodDelete, "/admin/tenants/..%2f..%2fdata"},
			{http.MethodDelete, "/admin/tenants/acme%2f..%2fx"},
			{http.MethodPost, "/admin/tenants/%2e%2e/approve"},
			{http.MethodPost, "/admin/tenants/..%2fx/suspend"},
			{http.MethodPost, "/admin/tenants/x%00/suspend"},
		}
		for _, rt := range admin {
			wantError(t, rt.method+" "+rt.path, s.admin(t, rt.method, rt.path, nil), http.StatusNotFound, "")
		}
		// Both tenants are untouched.
		for _, slug := range []string{"acme", "x"} {
			if r := s.do(t, http.MethodGet, "/t/"+slug+"/health", "", nil); r.Status != http.StatusOK {
				t.Fatalf("%s after path tricks: %d %s", slug, r.Status, r.Body)
			}
		}
	})
	t.Run("UnknownRoute", func(t *testing.T) {
		wantError(t, "unknown route", s.do(t, http.MethodGet, "/nope", "", nil), http.StatusNotFound, "not_found")
		wantError(t, "wrong method", s.do(t, http.MethodPost, "/t/acme/health", "", nil), http.StatusMethodNotAllowed, "method_not_allowed")
	})
	t.Run("Healthz", func(t *testing.T) {
		r := s.do(t, http.MethodGet, "/healthz", "", nil)
		if r.Status != http.StatusOK || r.Header.Get("X-Request-Id") == "" {
			t.Fatalf("healthz: %d %v %s", r.Status, r.Header, r.Body)
		}
	})
}

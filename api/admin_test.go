package api_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/api/platform"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testbackend"
)

func TestServer_TenantLifecycle(t *testing.T) {
	s := newServer(t)
	var tn engine.Tenant

	t.Run("Create", func(t *testing.T) {
		tn = wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "acme", "name": "Acme Inc."}), http.StatusCreated)
		if tn.Slug != "acme" || tn.Name != "Acme Inc." || tn.Status != engine.StatusPending || tn.Backend != testbackend.Name() {
			t.Fatalf("created %+v", tn)
		}
		if !engine.ValidTenantID(tn.ID) {
			t.Fatalf("id %q is not a valid tenant id", tn.ID)
		}
		if tn.ApprovedAt != nil || tn.CreatedAt.IsZero() {
			t.Fatalf("times of a new tenant: %+v", tn)
		}
		if fs := files(t, filepath.Join(s.DataDir, "shards")); len(fs) != 0 {
			t.Fatalf("a pending tenant has shard files: %v", fs)
		}
		for _, key := range []string{"acme", tn.ID} {
			got := wantTenant(t, "get "+key, s.admin(t, http.MethodGet, "/admin/tenants/"+key, nil), http.StatusOK)
			if got.ID != tn.ID || got.Status != engine.StatusPending {
				t.Fatalf("get %s: %+v", key, got)
			}
		}
		if got := s.listTenants(t); strings.Join(got, ",") != "acme" {
			t.Fatalf("list = %v", got)
		}
	})
	t.Run("PendingHealth", func(t *testing.T) {
		wantError(t, "health of a pending tenant", s.do(t, http.MethodGet, "/t/acme/health", "", nil), http.StatusForbidden, "tenant_pending")
	})
	t.Run("Approve", func(t *testing.T) {
		got := wantTenant(t, "approve", s.admin(t, http.MethodPost, "/admin/tenants/acme/approve", nil), http.StatusOK)
		if got.Status != engine.StatusActive || got.ApprovedAt == nil || got.ID != tn.ID {
			t.Fatalf("approved %+v", got)
		}
		r := s.do(t, http.MethodGet, "/t/acme/health", "", nil)
		if r.Status != http.StatusOK {
			t.Fatalf("health of an active tenant: %d %s", r.Status, r.Body)
		}
		var h map[string]string
		if err := json.Unmarshal(r.Body, &h); err != nil || h["status"] != "ok" || h["tenant"] != "acme" {
			t.Fatalf("health body %s (%v)", r.Body, err)
		}
	})
	t.Run("ShardFile", func(t *testing.T) {
		if tn.Backend != engine.BackendSQLite {
			if !testbackend.Exists(t, s.App, &tn) {
				t.Fatalf("no %s schema or database for approved tenant %s", tn.Backend, tn.ID)
			}
			return
		}
		// Exactly one SQLite database under shards/, named by the id.
		var dbs []string
		for _, rel := range files(t, filepath.Join(s.DataDir, "shards")) {
			p := filepath.Join(s.DataDir, "shards", rel)
			if fi, err := os.Stat(p); err != nil || fi.IsDir() {
				continue
			}
			if !strings.HasPrefix(filepath.Base(rel), tn.ID+".db") {
				t.Errorf("unexpected file under shards/: %s", rel)
			}
			if isSQLite(t, p) {
				dbs = append(dbs, rel)
			}
		}
		if len(dbs) != 1 || filepath.Base(dbs[0]) != tn.ID+".db" {
			t.Fatalf("SQLite files under shards/: %v, want one named %s.db", dbs, tn.ID)
		}
	})
	t.Run("Suspend", func(t *testing.T) {
		got := wantTenant(t, "suspend", s.admin(t, http.MethodPost, "/admin/tenants/acme/suspend", nil), http.StatusOK)
		if got.Status != engine.StatusSuspended {
			t.Fatalf("suspended %+v", got)
		}
		wantError(t, "health of a suspended tenant", s.do(t, http.MethodGet, "/t/acme/health", "", nil), http.StatusForbidden, "tenant_suspended")
		wantError(t, "suspend twice", s.admin(t, http.MethodPost, "/admin/tenants/acme/suspend", nil), http.StatusConflict, "invalid_tenant_status")
		wantError(t, "approve suspended", s.admin(t, http.MethodPost, "/admin/tenants/acme/approve", nil), http.StatusConflict, "invalid_tenant_status")
	})
	t.Run("Resume", func(t *testing.T) {
		got := wantTenant(t, "resume", s.admin(t, http.MethodPost, "/admin/tenants/"+tn.ID+"/resume", nil), http.StatusOK)
		if got.Status != engine.StatusActive {
			t.Fatalf("resumed %+v", got)
		}
		if r := s.do(t, http.MethodGet, "/t/acme/health", "", nil); r.Status != http.StatusOK {
			t.Fatalf("health after resume: %d %s", r.Status, r.Body)
		}
		wantError(t, "resume active", s.admin(t, http.MethodPost, "/admin/tenants/acme/resume", nil), http.StatusConflict, "invalid_tenant_status")
	})
	t.Run("Delete", func(t *testing.T) {
		r := s.admin(t, http.MethodDelete, "/admin/tenants/acme", nil)
		if r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Fatalf("delete: %d %q", r.Status, r.Body)
		}
		wantError(t, "health of a deleted tenant", s.do(t, http.MethodGet, "/t/acme/health", "", nil), http.StatusNotFound, "tenant_not_found")
		wantError(t, "get a deleted tenant", s.admin(t, http.MethodGet, "/admin/tenants/acme", nil), http.StatusNotFound, "tenant_not_found")
		wantError(t, "get a deleted tenant by id", s.admin(t, http.MethodGet, "/admin/tenants/"+tn.ID, nil), http.StatusNotFound, "tenant_not_found")
		wantError(t, "delete twice", s.admin(t, http.MethodDelete, "/admin/tenants/acme", nil), http.StatusNotFound, "tenant_not_found")
		if got := s.listTenants(t); len(got) != 0 {
			t.Fatalf("list after delete = %v", got)
		}
		if tn.Backend != engine.BackendSQLite && testbackend.Exists(t, s.App, &tn) {
			t.Errorf("the %s schema or database of deleted tenant %s is still there", tn.Backend, tn.ID)
		}
		// The database and its -wal and -shm companions are gone.
		for _, rel := range files(t, filepath.Join(s.DataDir, "shards")) {
			if fi, err := os.Stat(filepath.Join(s.DataDir, "shards", rel)); err == nil && !fi.IsDir() {
				t.Errorf("file left after delete: shards/%s", rel)
			}
		}
	})
}

// isSQLite reports whether the file at p starts with the SQLite header.
func isSQLite(tb testing.TB, p string) bool {
	tb.Helper()
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var h [16]byte
	n, _ := f.Read(h[:])
	return n == 16 && string(h[:]) == "SQLite format 3\x00"
}

func TestServer_AdminAuth(t *testing.T) {
	s := newServer(t)
	routes := []struct{ method, path string }{
		{http.MethodPost, "/admin/tenants"},
		{http.MethodGet, "/admin/tenants"},
		{http.MethodGet, "/admin/tenants/acme"},
		{http.MethodDelete, "/admin/tenants/acme"},
		{http.MethodPost, "/admin/tenants/acme/approve"},
		{http.MethodPost, "/admin/tenants/acme/suspend"},
		{http.MethodPost, "/admin/tenants/acme/resume"},
	}
	wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "acme"}), http.StatusCreated)
	body := map[string]string{"slug": "intruder"}

	cases := []struct {
		name string
		set  func(*http.Request)
	}{
		{"Missing", func(*http.Request) {}},
		{"Wrong", func(r *http.Request) { r.Header.Set("Authorization", "Bearer wrong") }},
		{"Prefix", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+adminToken[:len(adminToken)-1]) }},
		{"Longer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+adminToken+"x") }},
		{"Empty", func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }},
		{"NoScheme", func(r *http.Request) { r.Header.Set("Authorization", adminToken) }},
		{"Basic", func(r *http.Request) { r.SetBasicAuth("admin", adminToken) }},
		{"LowerScheme", func(r *http.Request) { r.Header.Set("Authorization", "bearer x"+adminToken) }},
		{"OtherHeader", func(r *http.Request) { r.Header.Set("X-Admin-Token", adminToken) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, rt := range routes {
				b, _ := json.Marshal(body)
				req, err := http.NewRequest(rt.method, s.URL+rt.path, bytes.NewReader(b))
				if err != nil {
					t.Fatal(err)
				}
				c.set(req)
				resp, err := s.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				_, _ = buf.ReadFrom(resp.Body)
				resp.Body.Close()
				r := response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}
				wantError(t, rt.method+" "+rt.path, r, http.StatusUnauthorized, "unauthorized")
				if r.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s: 401 without WWW-Authenticate", rt.method, rt.path)
				}
			}
		})
	}
	t.Run("NothingChanged", func(t *testing.T) {
		if got := s.listTenants(t); strings.Join(got, ",") != "acme" {
			t.Fatalf("tenants after refused requests: %v", got)
		}
		got := wantTenant(t, "get", s.admin(t, http.MethodGet, "/admin/tenants/acme", nil), http.StatusOK)
		if got.Status != engine.StatusPending {
			t.Fatalf("status after refused requests: %s", got.Status)
		}
	})
	t.Run("EmptyServerToken", func(t *testing.T) {
		// A server configured without a token refuses every admin request,
		// including one presenting an empty token.
		srv := api.NewServer(s.App.Engine, nil)
		platform.Register(srv, platform.Config{})
		h := srv.Handler()
		for _, auth := range []string{"", "Bearer ", "Bearer  "} {
			req, _ := http.NewRequest(http.MethodGet, "/admin/tenants", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusUnauthorized {
				t.Errorf("Authorization %q with no server token: %d", auth, w.Code)
			}
		}
	})
}

func TestServer_CreateTenant(t *testing.T) {
	s := newServer(t)
	t.Run("OK", func(t *testing.T) {
		tn := wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "beta", "backend": "sqlite"}), http.StatusCreated)
		if tn.Name != "beta" {
			t.Fatalf("default name %q, want the slug", tn.Name)
		}
	})
	t.Run("Conflict", func(t *testing.T) {
		wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "acme"}), http.StatusCreated)
		wantError(t, "duplicate slug", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "acme", "name": "Other"}), http.StatusConflict, "conflict")
		got := wantTenant(t, "get", s.admin(t, http.MethodGet, "/admin/tenants/acme", nil), http.StatusOK)
		if got.Name != "acme" {
			t.Fatalf("the duplicate replaced the tenant: %+v", got)
		}
	})
	t.Run("ApproveTwice", func(t *testing.T) {
		wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "twice"}), http.StatusCreated)
		wantTenant(t, "approve", s.admin(t, http.MethodPost, "/admin/tenants/twice/approve", nil), http.StatusOK)
		wantError(t, "approve twice", s.admin(t, http.MethodPost, "/admin/tenants/twice/approve", nil), http.StatusConflict, "invalid_tenant_status")
		wantError(t, "suspend unknown", s.admin(t, http.MethodPost, "/admin/tenants/nope/suspend", nil), http.StatusNotFound, "tenant_not_found")
		wantError(t, "approve unknown", s.admin(t, http.MethodPost, "/admin/tenants/nope/approve", nil), http.StatusNotFound, "tenant_not_found")
	})
	t.Run("BadJSON", func(t *testing.T) {
		for _, body := range []string{"", "{", "not json", `{"slug":`, `{"slug": 5}`, `["acme"]`, `{"slug":"x1"} {"slug":"x2"}`, `{"slug":"x3"}garbage`, "\x00"} {
			wantError(t, "body "+body, s.admin(t, http.MethodPost, "/admin/tenants", body), http.StatusBadRequest, "")
		}
		if got := s.listTenants(t); strings.Join(got, ",") != "acme,beta,twice" {
			t.Fatalf("tenants after malformed requests: %v", got)
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		// A body just over the limit: the server reads past 1 MiB, answers,
		// and the rest is small enough to be drained.
		body := `{"slug":"big","name":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`
		wantError(t, "body over 1 MiB", s.admin(t, http.MethodPost, "/admin/tenants", body), http.StatusRequestEntityTooLarge, "request_too_large")
		if _, err := s.App.Engine.Get(t.Context(), "big"); err == nil {
			t.Fatal("an oversized request created a tenant")
		}
	})
	t.Run("BadFields", func(t *testing.T) {
		unconfigured := engine.BackendPostgres
		if testbackend.Name() == engine.BackendPostgres {
			unconfigured = engine.BackendMySQL
		}
		for _, body := range []map[string]string{
			{"slug": "ok-slug", "backend": "oracle"},
			{"slug": "ok-slug", "backend": unconfigured}, // a known backend without its DSN
			{"slug": "ok-slug", "name": strings.Repeat("n", 201)},
			{"slug": "ok-slug", "name": "   "},
		} {
			b, _ := json.Marshal(body)
			wantError(t, string(b), s.admin(t, http.MethodPost, "/admin/tenants", body), http.StatusBadRequest, "validation_failed")
		}
	})
}

// badSlugs are refused by the create route and must leave no trace.
var badSlugs = []string{
	"", ".", "..", "../evil", "../../evil", "/", "a/b", "/abs", `a\b`, `..\evil`,
	"%2f", "%2e%2e", "%2e%2e%2fevil", "..%2fevil",
	"Acme", "ACME", strings.Repeat("a", 64), strings.Repeat("b", 300),
	"café", "ｅｖｉｌ", "\u0430cme", "acme\u200b",
	"-acme", "acme-", "-",
	"a;drop table tenants", "x' OR '1'='1", `x" OR "1"="1`, "acme); DROP TABLE tenants;--",
	"a b", " acme", "acme\n", "a\x00b", "acme?x=1", "acme#frag", "catalog.db",
}

func TestServer_CreateTenantBadSlug(t *testing.T) {
	s := newServer(t)
	before := outsideDataDir(t, s)
	for _, slug := range badSlugs {
		r := s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": slug, "name": "Evil"})
		wantError(t, "slug "+strconvQuote(slug), r, http.StatusBadRequest, "validation_failed")
	}
	if got := s.listTenants(t); len(got) != 0 {
		t.Fatalf("tenants created from bad slugs: %q", got)
	}
	// Nothing appeared outside the data directory...
	after := outsideDataDir(t, s)
	if strings.Join(before, "\n") != strings.Join(after, "\n") {
		t.Fatalf("files outside the data dir changed:\nbefore %q\nafter  %q", before, after)
	}
	// ...and nothing inside it is named after a slug.
	all := files(t, s.Parent)
	for _, slug := range badSlugs {
		for _, needle := range needles(slug) {
			for _, rel := range all {
				if strings.Contains(strings.ToLower(filepath.Base(rel)), needle) {
					t.Errorf("file %s is named after slug %q", rel, slug)
				}
			}
		}
	}
	// The engine-level paths refuse them too (the CLI goes there).
	for _, slug := range badSlugs {
		if _, err := s.App.Engine.CreateTenant(t.Context(), slug, "Evil", ""); err == nil {
			t.Errorf("engine accepted slug %q", slug)
		}
	}
	if got := s.listTenants(t); len(got) != 0 {
		t.Fatalf("tenants created from bad slugs: %q", got)
	}
}

// outsideDataDir lists what the data directory's parent holds besides it.
func outsideDataDir(tb testing.TB, s *testServer) []string {
	tb.Helper()
	var out []string
	for _, rel := range files(tb, s.Parent) {
		if rel != "data" && !strings.HasPrefix(rel, "data"+string(filepath.Separator)) {
			out = append(out, rel)
		}
	}
	sort.Strings(out)
	return out
}

// needles returns the parts of a bad slug that would give it away in a file
// name: the whole slug and its runs of three or more letters or digits,
// lower-cased, except the names the data directory legitimately holds.
func needles(slug string) []string {
	legit := map[string]bool{"data": true, "catalog": true, "shards": true, "db": true, "catalog.db": true}
	var out []string
	add := func(s string) {
		s = strings.ToLower(s)
		if len(s) >= 3 && !legit[s] {
			out = append(out, s)
		}
	}
	add(slug)
	for _, f := range strings.FieldsFunc(slug, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		add(f)
	}
	return out
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestServer_AdminActionsLogged: every admin action logs one line naming
// it and the tenant, and never a secret.
func TestServer_AdminActionsLogged(t *testing.T) {
	s := newServer(t)
	wantTenant(t, "create", s.admin(t, http.MethodPost, "/admin/tenants", map[string]string{"slug": "logged", "name": "L"}), http.StatusCreated)
	wantTenant(t, "approve", s.admin(t, http.MethodPost, "/admin/tenants/logged/approve", nil), http.StatusOK)
	key := s.admin(t, http.MethodPost, "/admin/tenants/logged/service-key", nil)
	wantTenant(t, "suspend", s.admin(t, http.MethodPost, "/admin/tenants/logged/suspend", nil), http.StatusOK)
	wantTenant(t, "resume", s.admin(t, http.MethodPost, "/admin/tenants/logged/resume", nil), http.StatusOK)
	if r := s.admin(t, http.MethodPost, "/admin/tenants/logged/signing-keys", nil); r.Status != http.StatusOK {
		t.Fatalf("rotate: %d %s", r.Status, r.Body)
	}
	if r := s.admin(t, http.MethodDelete, "/admin/tenants/logged", nil); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	logs := s.log.String()
	for _, action := range []string{"tenant created", "tenant approved", "service key issued", "tenant suspended", "tenant resumed", "signing key rotated", "tenant deleted"} {
		if !strings.Contains(logs, `msg="`+action+`" tenant=logged`) {
			t.Errorf("no log line %q for tenant logged:\n%s", action, logs)
		}
	}
	var k struct {
		Key string `json:"service_key"`
	}
	if err := json.Unmarshal(key.Body, &k); err != nil || k.Key == "" || strings.Contains(logs, k.Key) || strings.Contains(logs, adminToken) {
		t.Fatalf("a secret in the logs (or no key: %v)", err)
	}
}

package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testbackend"
	"github.com/keyshard/keyshard/internal/testskip"
	"github.com/keyshard/keyshard/transfer"
)

// newTransferEnv is an auth environment (as newAuthEnv makes) whose server
// also exports, imports and moves tenants, with the PostgreSQL and MySQL
// backends when KEYSHARD_TEST_POSTGRES_DSN / KEYSHARD_TEST_MYSQL_DSN are set.
func newTransferEnv(tb testing.TB) *authEnv {
	tb.Helper()
	srv, err := app.OpenServer(context.Background(), app.ServerConfig{
		Storage: app.Config{DataDir: tb.TempDir(), Synchronous: "NORMAL",
			PostgresDSN: os.Getenv("KEYSHARD_TEST_POSTGRES_DSN"), MySQLDSN: os.Getenv("KEYSHARD_TEST_MYSQL_DSN")},
		Hash:      hash.Config{Params: authTestParams},
		MasterKey: bytes.Repeat([]byte{7}, token.MasterKeySize), AdminToken: "admin-secret",
		TransferTempDir: tb.TempDir(), FenceWait: time.Second,
	})
	if err != nil {
		tb.Fatal(err)
	}
	e := &authEnv{tb: tb, App: srv.App, Pool: srv.Pool, Keys: srv.Keys, Auth: srv.Auth, Transfer: srv.Transfer}
	hs := httptest.NewServer(srv.Handler())
	e.URL = hs.URL
	e.http = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	tb.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			tb.Errorf("close server: %v", err)
		}
	})
	return e
}

// serverBackends returns the server backends configured for the test, and
// logs the ones skipped.
func (e *authEnv) serverBackends() []string {
	var out []string
	for _, b := range []struct{ name, env string }{{"postgres", "KEYSHARD_TEST_POSTGRES_DSN"}, {"mysql", "KEYSHARD_TEST_MYSQL_DSN"}} {
		if _, ok := e.App.Engine.Backends[b.name]; ok {
			out = append(out, b.name)
		} else {
			e.tb.Logf("%s is unset: the hops through %s are skipped", b.env, b.name)
			testskip.Announce()
		}
	}
	return out
}

const transferAdmin = "admin-secret"

func (e *authEnv) countRows(slug, query string, args ...any) int64 {
	e.tb.Helper()
	var n int64
	e.read(slug, func(q engine.Querier) error { return q.QueryRow(query, args...).Scan(&n) })
	return n
}

// databaseExists reports whether t's shard file (SQLite), schema
// (PostgreSQL) or database (MySQL) exists.
func (e *authEnv) databaseExists(t *engine.Tenant) bool {
	e.tb.Helper()
	if t.Backend != engine.BackendSQLite {
		return testbackend.Exists(e.tb, e.App, t)
	}
	path, err := e.App.SQLite.Path(t.Placement())
	if err != nil {
		e.tb.Fatal(err)
	}
	_, err = os.Stat(path)
	return err == nil
}

func TestAdminTransfer_ExportImport(t *testing.T) {
	e := newTransferEnv(t)
	base := e.tenant("acme")
	e.tenant("other")
	e.signup(e.URL+"/t/other", "someone@other.test", "password-other")
	var sessions []authResp
	for i := 0; i < 3; i++ {
		sessions = append(sessions, e.signup(base, fmt.Sprintf("u%d@acme.test", i), fmt.Sprintf("password-%d", i)))
	}
	sourceKey := e.call("POST", e.URL+"/admin/tenants/acme/service-key", transferAdmin, nil).str("service_key")
	for _, format := range []string{"sqlite", "ndjson"} {
		t.Run(format, func(t *testing.T) {
			r := e.call("GET", e.URL+"/admin/tenants/acme/export?format="+format+"&include_secrets=true", transferAdmin, nil)
			if r.Status != 200 || len(r.Raw) == 0 {
				t.Fatalf("export: %d %s", r.Status, r.Raw)
			}
			if strings.Contains(string(r.Raw), "someone@other.test") {
				t.Fatalf("the export of acme holds a user of another tenant")
			}
			slug := "acme-" + format
			imp := e.call("POST", e.URL+"/admin/tenants/import?slug="+slug, transferAdmin, r.Raw)
			if imp.Status != http.StatusCreated {
				t.Fatalf("import: %d %s", imp.Status, imp.Raw)
			}
			// An import follows the approval lifecycle: pending, its data
			// in place, served once approved.
			var res struct {
				Tenant struct {
					Status     string  `json:"status"`
					ImportedAt *string `json:"imported_at"`
					ApprovedAt *string `json:"approved_at"`
				} `json:"tenant"`
			}
			if err := json.Unmarshal(imp.Raw, &res); err != nil || res.Tenant.Status != "pending" || res.Tenant.ImportedAt == nil || res.Tenant.ApprovedAt != nil {
				t.Fatalf("imported tenant: %+v %v, want pending with imported_at", res.Tenant, err)
			}
			wantAuthError(t, e.login(e.URL+"/t/"+slug, "u0@acme.test", "password-0"), 403, "tenant_pending")
			if ap := e.call("POST", e.URL+"/admin/tenants/"+slug+"/approve", transferAdmin, nil); ap.Status != 200 || ap.str("status") != "active" {
				t.Fatalf("approve the import: %d %s", ap.Status, ap.Raw)
			}
			// Users log in with their passwords; tokens carry the new tenant.
			for i := 0; i < 3; i++ {
				lr := e.login(e.URL+"/t/"+slug, fmt.Sprintf("u%d@acme.test", i), fmt.Sprintf("password-%d", i))
				if lr.Status != 200 || lr.str("access_token") == "" {
					t.Fatalf("login after import: %d %s", lr.Status, lr.Raw)
				}
				u := e.call("GET", e.URL+"/t/"+slug+"/user", lr.str("access_token"), nil)
				if u.Status != 200 {
					t.Fatalf("user after import: %d %s", u.Status, u.Raw)
				}
			}
			if lr := e.login(e.URL+"/t/"+slug, "someone@other.test", "password-other"); lr.Status != 400 {
				t.Fatalf("a user of another tenant logs in to the import: %d", lr.Status)
			}
			// A copy shares no live credential with its source: neither
			// the source's refresh tokens nor its service key open it.
			for _, s := range sessions {
				wantAuthError(t, e.refresh(e.URL+"/t/"+slug, s.str("refresh_token")), 400, "refresh_token_not_found")
			}
			wantAuthError(t, e.call("GET", e.URL+"/t/"+slug+"/admin/users", sourceKey, nil), 401, "no_authorization")
			if n := e.countRows(slug, `SELECT count(*) FROM sessions`); n != 3 { // the logins above
				t.Fatalf("%d sessions in the copy, want only the 3 opened in it", n)
			}
		})
	}
	t.Run("WithoutSecrets", func(t *testing.T) {
		r := e.call("GET", e.URL+"/admin/tenants/acme/export?format=ndjson", transferAdmin, nil)
		if r.Status != 200 || strings.Contains(string(r.Raw), "$argon2id$") {
			t.Fatalf("export without secrets: %d, holds a password hash: %v", r.Status, strings.Contains(string(r.Raw), "$argon2id$"))
		}
		// approve=true: active at once, no approval step.
		imp := e.call("POST", e.URL+"/admin/tenants/import?slug=acme-nosecrets&approve=true", transferAdmin, r.Raw)
		if imp.Status != http.StatusCreated || !strings.Contains(string(imp.Raw), `"status":"active"`) {
			t.Fatalf("import: %d %s", imp.Status, imp.Raw)
		}
		// No password: no login, but the tenant signs up new users with a
		// signing key of its own.
		wantAuthError(t, e.login(e.URL+"/t/acme-nosecrets", "u0@acme.test", "password-0"), 400, "invalid_credentials")
		e.signup(e.URL+"/t/acme-nosecrets", "new@acme.test", "password-new")
	})
	t.Run("PendingImport", func(t *testing.T) {
		// On every backend: a pending import holds its data (an export
		// of it has acme's users), cannot be served, and its database is
		// dropped when it is deleted instead of approved.
		r := e.call("GET", e.URL+"/admin/tenants/acme/export?format=sqlite&include_secrets=true", transferAdmin, nil)
		for _, b := range append([]string{"sqlite"}, e.serverBackends()...) {
			slug := "pending-" + b
			imp := e.call("POST", e.URL+"/admin/tenants/import?slug="+slug+"&backend="+b, transferAdmin, r.Raw)
			if imp.Status != http.StatusCreated || !strings.Contains(string(imp.Raw), `"status":"pending"`) {
				t.Fatalf("%s: import: %d %s", b, imp.Status, imp.Raw)
			}
			tn, err := e.App.Engine.Get(context.Background(), slug)
			if err != nil {
				t.Fatal(err)
			}
			if !e.databaseExists(tn) {
				t.Fatalf("%s: the pending import has no database", b)
			}
			ex := e.call("GET", e.URL+"/admin/tenants/"+slug+"/export?format=ndjson", transferAdmin, nil)
			if ex.Status != 200 || !strings.Contains(string(ex.Raw), "u2@acme.test") {
				t.Fatalf("%s: export of the pending import: %d", b, ex.Status)
			}
			wantAuthError(t, e.login(e.URL+"/t/"+slug, "u0@acme.test", "password-0"), 403, "tenant_pending")
			if d := e.call("DELETE", e.URL+"/admin/tenants/"+slug, transferAdmin, nil); d.Status != http.StatusNoContent {
				t.Fatalf("%s: delete: %d %s", b, d.Status, d.Raw)
			}
			if e.databaseExists(tn) {
				t.Fatalf("%s: the deleted pending import left its database", b)
			}
		}
	})
	t.Run("DeleteWhileImporting", func(t *testing.T) {
		// The import is held in the middle of its copy: deleting its
		// tenant is refused until it ends, then allowed.
		r := e.call("GET", e.URL+"/admin/tenants/acme/export?format=sqlite&include_secrets=true", transferAdmin, nil)
		held, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		done := make(chan error, 1)
		go func() {
			_, err := e.Transfer.Import(context.Background(), bytes.NewReader(r.Raw), transfer.ImportOptions{Slug: "held", Progress: func(transfer.Progress) {
				once.Do(func() { close(held); <-release })
			}})
			done <- err
		}()
		select {
		case <-held:
		case err := <-done:
			t.Fatalf("the import ended before it copied a row: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("the import never reported progress")
		}
		d := e.call("DELETE", e.URL+"/admin/tenants/held", transferAdmin, nil)
		close(release)
		if d.Status != http.StatusConflict || d.str("code") != "conflict" {
			t.Fatalf("delete during the import: %d %s", d.Status, d.Raw)
		}
		if err := <-done; err != nil {
			t.Fatalf("the import failed after the refused delete: %v", err)
		}
		if d := e.call("DELETE", e.URL+"/admin/tenants/held", transferAdmin, nil); d.Status != http.StatusNoContent {
			t.Fatalf("delete after the import: %d %s", d.Status, d.Raw)
		}
	})
	t.Run("Damaged", func(t *testing.T) {
		r := e.call("GET", e.URL+"/admin/tenants/acme/export?format=ndjson&include_secrets=true", transferAdmin, nil)
		imp := e.call("POST", e.URL+"/admin/tenants/import?slug=broken", transferAdmin, r.Raw[:len(r.Raw)-10])
		if imp.Status != 400 || imp.str("code") != "validation_failed" || !strings.Contains(imp.str("message"), "truncated") {
			t.Fatalf("truncated import: %d %s", imp.Status, imp.Raw)
		}
		if g := e.call("GET", e.URL+"/admin/tenants/broken", transferAdmin, nil); g.Status != 404 {
			t.Fatalf("a refused import left a tenant: %d %s", g.Status, g.Raw)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		for _, c := range []struct {
			method, path string
			body         any
			status       int
		}{
			{"GET", "/admin/tenants/acme/export?format=csv", nil, 400},
			{"GET", "/admin/tenants/acme/export?include_secrets=maybe", nil, 400},
			{"GET", "/admin/tenants/nope/export", nil, 404},
			{"POST", "/admin/tenants/acme", "x", 405},
			{"POST", "/admin/tenants/acme/move", map[string]any{"backend": "oracle"}, 400},
			{"POST", "/admin/tenants/acme/move", map[string]any{"backend": "sqlite"}, 400}, // already there
			{"POST", "/admin/tenants/import?slug=acme", "{}", 409},
			{"POST", "/admin/tenants/import?slug=x&approve=maybe", "{}", 400},
		} {
			if r := e.call(c.method, e.URL+c.path, transferAdmin, c.body); r.Status != c.status {
				t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, r.Status, c.status, r.Raw)
			}
		}
		if r := e.call("GET", e.URL+"/admin/tenants/acme/export", "", nil); r.Status != 401 {
			t.Errorf("export without the admin token: %d", r.Status)
		}
	})
}

func TestAdminTransfer_Move(t *testing.T) {
	e := newTransferEnv(t)
	base := e.tenant("acme")
	s := e.signup(base, "mover@acme.test", "password-1")
	rt := s.str("refresh_token")
	type hop struct{ backend, location string }
	hops := []hop{{"sqlite", filepath.Join(t.TempDir(), "disk-b")}}
	for _, b := range e.serverBackends() {
		hops = append(hops, hop{b, ""})
	}
	hops = append(hops, hop{"sqlite", ""})
	for i, h := range hops {
		r := e.call("POST", e.URL+"/admin/tenants/acme/move", transferAdmin, map[string]any{"backend": h.backend, "location": h.location})
		if r.Status != 200 {
			t.Fatalf("move %d: %d %s", i, r.Status, r.Raw)
		}
		g := e.call("GET", e.URL+"/admin/tenants/acme", transferAdmin, nil)
		if g.str("backend") != h.backend || g.str("location") != h.location || g.Body["epoch"] != float64(2+i) {
			t.Fatalf("tenant after move %d: %s", i, g.Raw)
		}
		// A refresh token issued before the move works after it.
		rr := e.refresh(base, rt)
		if rr.Status != 200 {
			t.Fatalf("refresh after move %d: %d %s", i, rr.Status, rr.Raw)
		}
		rt = rr.str("refresh_token")
		if lr := e.login(base, "mover@acme.test", "password-1"); lr.Status != 200 {
			t.Fatalf("login after move %d: %d %s", i, lr.Status, lr.Raw)
		}
	}
	p := e.call("GET", e.URL+"/admin/tenants/acme/move", transferAdmin, nil)
	if p.Status != 200 || p.Body["moving"] != false {
		t.Fatalf("move progress when idle: %d %s", p.Status, p.Raw)
	}
}

// TestAdminTransfer_MoveUnderLoad moves a tenant from one data directory
// to another and back while clients sign up and refresh; afterwards every
// acknowledged write is there exactly once and no answer was a 5xx other
// than 503.
func TestAdminTransfer_MoveUnderLoad(t *testing.T) {
	e := newTransferEnv(t)
	base := e.tenant("acme")
	const workers = 4
	const opsPerWorker = 300 // a bound: the load stops when both moves are done
	// Each worker starts with a session to refresh.
	chains := make([]string, workers)
	for w := range chains {
		chains[w] = e.signup(base, fmt.Sprintf("seed%d@acme.test", w), "password-seed").str("refresh_token")
	}
	var mu sync.Mutex
	var signedUp []string
	statuses := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	deadline := time.Now().Add(90 * time.Second)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < opsPerWorker && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				var r authResp
				email := fmt.Sprintf("load%d-%d@acme.test", w, i)
				if i%2 == 0 {
					r = e.call("POST", base+"/signup", "", map[string]any{"email": email, "password": "password-load"})
				} else {
					r = e.call("POST", base+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": chains[w]})
				}
				mu.Lock()
				statuses[r.Status]++
				if r.Status == 200 {
					if i%2 == 0 {
						signedUp = append(signedUp, email)
					} else {
						chains[w] = r.str("refresh_token")
					}
				}
				mu.Unlock()
				if r.Status == 503 && r.Header.Get("Retry-After") == "" {
					t.Errorf("503 without Retry-After: %s", r.Raw)
				}
				if r.Status >= 500 && r.Status != 503 {
					t.Errorf("%d during the move: %s", r.Status, r.Raw)
				}
			}
		}(w)
	}
	// SQLite dir A → dir B → PostgreSQL → MySQL → SQLite dir A (the server
	// hops when configured).
	hops := []map[string]any{{"backend": "sqlite", "location": filepath.Join(t.TempDir(), "disk-b")}}
	for _, b := range e.serverBackends() {
		hops = append(hops, map[string]any{"backend": b})
	}
	hops = append(hops, map[string]any{"backend": "sqlite", "location": ""})
	for i, hop := range hops {
		time.Sleep(50 * time.Millisecond) // let the load run on each copy
		r := e.call("POST", e.URL+"/admin/tenants/acme/move", transferAdmin, hop)
		if r.Status != 200 {
			close(stop)
			wg.Wait()
			t.Fatalf("move %d (%v) under load: %d %s", i, hop, r.Status, r.Raw)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("answers during the moves: %v; %d signups acknowledged", statuses, len(signedUp))
	if len(signedUp) == 0 {
		t.Fatalf("no signup succeeded: %v", statuses)
	}
	for _, email := range signedUp {
		if n := e.countRows("acme", "SELECT count(*) FROM users WHERE email = ?", email); n != 1 {
			t.Errorf("acknowledged signup %s: %d rows", email, n)
		}
		if n := e.countRows("acme", "SELECT count(*) FROM identities WHERE email = ?", email); n != 1 {
			t.Errorf("acknowledged signup %s: %d identities", email, n)
		}
	}
	// Every chain's last acknowledged refresh token is the live one.
	for w, rt := range chains {
		if r := e.refresh(base, rt); r.Status != 200 {
			t.Errorf("worker %d: the last acknowledged refresh token fails after the moves: %d %s", w, r.Status, r.Raw)
		}
	}
	if got := e.call("GET", e.URL+"/admin/tenants/acme", transferAdmin, nil); got.str("location") != "" || got.str("backend") != "sqlite" {
		t.Fatalf("tenant not back home: %s", got.Raw)
	}
}

package main_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/shardtest"
)

// TestServe_ServerBackends drives the CLI and the server end to end with a
// tenant on PostgreSQL (and the catalog on PostgreSQL too, as several servers
// would share it) and one on MariaDB: create --backend, approve, sign up and
// log in over HTTP, delete.
func TestServe_ServerBackends(t *testing.T) {
	needBinary(t)
	pg := shardtest.DSN(t, "KEYSHARD_TEST_POSTGRES_DSN")
	my := shardtest.DSN(t, "KEYSHARD_TEST_MYSQL_DSN")
	for _, tc := range []struct {
		backend string
		catalog string
	}{
		{engine.BackendPostgres, pg},
		{engine.BackendMySQL, ""},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			const token = "backend-test-token-77aa"
			var sfx [4]byte
			_, _ = rand.Read(sfx[:])
			slug := "b-" + tc.backend + "-" + hex.EncodeToString(sfx[:]) // the catalog may be shared
			data := filepath.Join(t.TempDir(), "data")
			env := []string{"KEYSHARD_POSTGRES_DSN=" + pg, "KEYSHARD_MYSQL_DSN=" + my, "KEYSHARD_ADMIN_TOKEN=" + token,
				"KEYSHARD_ARGON2_MEMORY_KIB=1024", "KEYSHARD_ARGON2_TIME=1"}
			if tc.catalog != "" {
				env = append(env, "KEYSHARD_CATALOG="+tc.catalog)
			}
			run := func(args ...string) result {
				t.Helper()
				r := keyshard(t, "", env, append(args, "--data", data)...)
				if r.code != 0 {
					t.Fatalf("keyshard %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
				}
				return r
			}
			var tn engine.Tenant
			if err := json.Unmarshal([]byte(run("tenant", "create", "--slug", slug, "--backend", tc.backend).stdout), &tn); err != nil {
				t.Fatal(err)
			}
			if tn.Backend != tc.backend {
				t.Fatalf("created on %q, want %q", tn.Backend, tc.backend)
			}
			run("tenant", "approve", slug)
			deleted := false
			t.Cleanup(func() {
				if !deleted {
					_ = keyshard(t, "", env, "tenant", "delete", slug, "--data", data)
				}
			})

			p := startServe(t, data, env)
			code, b := p.call(t, http.MethodPost, "/t/"+slug+"/signup", "", map[string]string{"email": "ann@example.com", "password": "correct horse 1"})
			if code != http.StatusOK {
				t.Fatalf("signup: %d %s", code, b)
			}
			code, b = p.call(t, http.MethodPost, "/t/"+slug+"/token?grant_type=password", "", map[string]string{"email": "ann@example.com", "password": "correct horse 1"})
			if code != http.StatusOK {
				t.Fatalf("login: %d %s", code, b)
			}
			var sess struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(b, &sess); err != nil || sess.AccessToken == "" {
				t.Fatalf("login body %s: %v", b, err)
			}
			code, b = p.call(t, http.MethodGet, "/t/"+slug+"/user", sess.AccessToken, nil)
			if code != http.StatusOK || !strings.Contains(string(b), "ann@example.com") {
				t.Fatalf("GET /user: %d %s", code, b)
			}
			code, b = p.call(t, http.MethodGet, "/admin/tenants/"+slug, token, nil)
			if code != http.StatusOK || !strings.Contains(string(b), `"backend":"`+tc.backend+`"`) {
				t.Fatalf("GET /admin/tenants/%s: %d %s", slug, code, b)
			}
			if code, b = p.call(t, http.MethodDelete, "/admin/tenants/"+slug, token, nil); code != http.StatusNoContent {
				t.Fatalf("delete: %d %s", code, b)
			}
			deleted = true
			if code, _ = p.call(t, http.MethodPost, "/t/"+slug+"/token?grant_type=password", "", map[string]string{"email": "ann@example.com", "password": "correct horse 1"}); code != http.StatusNotFound {
				t.Fatalf("login after delete: %d, want 404", code)
			}
			if c := p.stop(t); c != 0 {
				t.Fatalf("exit %d:\n%s", c, p.stderr.String())
			}
			if strings.Contains(p.stderr.String(), pg) || strings.Contains(p.stderr.String(), my) {
				t.Fatal("a DSN reached the log")
			}
		})
	}
}

package transfer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testskip"
	"github.com/keyshard/keyshard/transfer"
)

// env is an engine in a temporary data directory with a transfer service.
type env struct {
	tb  testing.TB
	App *app.App
	Svc *transfer.Service
	Dir string
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "data")
	// The server backends join when their DSN is set (see backends).
	a, err := app.Open(context.Background(), app.Config{DataDir: dir, Synchronous: "NORMAL",
		PostgresDSN: os.Getenv("KEYSHARD_TEST_POSTGRES_DSN"), MySQLDSN: os.Getenv("KEYSHARD_TEST_MYSQL_DSN")})
	if err != nil {
		tb.Fatal(err)
	}
	tmp := filepath.Join(tb.TempDir(), "tmp")
	if err := os.MkdirAll(tmp, 0o750); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if st := a.Cache.Stats(); st.Pinned != 0 {
			tb.Errorf("%d shards still pinned", st.Pinned)
		}
		// The schemas and databases of tenants on a server backend outlive
		// the data directory: drop them.
		ctx := context.Background()
		if ts, err := a.Engine.Catalog.List(ctx); err == nil {
			for _, t := range ts {
				if st, ok := a.Engine.Backends[t.Backend]; ok && t.Backend != engine.BackendSQLite {
					_ = a.Engine.Shards.Evict(ctx, t.ID)
					if err := st.Destroy(ctx, t.Placement()); err != nil {
						tb.Errorf("drop tenant %s on %s: %v", t.ID, t.Backend, err)
					}
				}
			}
		}
		if err := a.Close(); err != nil {
			tb.Errorf("close app: %v", err)
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			tb.Errorf("staging files left behind: %v", left)
		}
	})
	return &env{tb: tb, App: a, Dir: dir, Svc: &transfer.Service{Engine: a.Engine, Backends: a.Backends, TempDir: tmp}}
}

// backends returns the backends the cross-backend tests run on: sqlite
// always, postgres and mysql when configured in the engine and their DSN is
// set (the test is skipped for them with a message otherwise).
func (e *env) backends() []string {
	out := []string{engine.BackendSQLite}
	for _, b := range []struct{ name, env string }{
		{engine.BackendPostgres, "KEYSHARD_TEST_POSTGRES_DSN"},
		{engine.BackendMySQL, "KEYSHARD_TEST_MYSQL_DSN"},
	} {
		if _, ok := e.App.Engine.Backends[b.name]; !ok {
			e.tb.Logf("backend %s: not configured in app.Engine.Backends; its pairs are skipped", b.name)
			continue
		}
		if os.Getenv(b.env) == "" {
			e.tb.Logf("backend %s: %s is unset; its pairs are skipped", b.name, b.env)
			testskip.Announce()
			continue
		}
		out = append(out, b.name)
	}
	return out
}

// tenant creates and approves a tenant on backend.
func (e *env) tenant(slug, backend string) *engine.Tenant {
	e.tb.Helper()
	ctx := context.Background()
	if _, err := e.App.Engine.CreateTenant(ctx, slug, "Tenant "+slug, backend); err != nil {
		e.tb.Fatal(err)
	}
	t, err := e.App.Engine.ApproveTenant(ctx, slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	return t
}

// seed writes n users with an identity each, a session and a refresh token
// for every other user, an audit event per user, an outbox row for every
// tenth, a signing key and settings, directly through the engine (no
// password hashing).
func (e *env) seed(slug string, n int) {
	e.tb.Helper()
	ctx := context.Background()
	ts, err := e.App.Engine.Tenant(ctx, slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	now := time.Now().UnixMicro()
	const per = 1000
	for lo := 0; lo < n; lo += per {
		hi := min(lo+per, n)
		err := ts.Write(ctx, func(tx engine.Querier) error {
			for i := lo; i < hi; i++ {
				id := fmt.Sprintf("%s-user-%07d", slug, i)
				email := fmt.Sprintf("user%d@%s.example", i, slug)
				if _, err := tx.Exec(`INSERT INTO users (id, email, encrypted_password, raw_app_meta_data, raw_user_meta_data, email_confirmed_at, created_at, updated_at) VALUES (?, ?, ?, '{}', ?, ?, ?, ?)`,
					id, email, "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$"+id, `{"n":`+fmt.Sprint(i)+`}`, now, now, now); err != nil {
					return err
				}
				if _, err := tx.Exec(`INSERT INTO identities (id, user_id, provider, provider_id, identity_data, email, created_at, updated_at) VALUES (?, ?, 'email', ?, '{}', ?, ?, ?)`,
					"ident-"+id, id, id, email, now, now); err != nil {
					return err
				}
				if i%2 == 0 {
					sid := "sess-" + id
					if _, err := tx.Exec(`INSERT INTO sessions (id, user_id, created_at, updated_at) VALUES (?, ?, ?, ?)`, sid, id, now, now); err != nil {
						return err
					}
					if _, err := tx.Exec(`INSERT INTO refresh_tokens (token_hash, user_id, session_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
						"hash-"+id, id, sid, now, now); err != nil {
						return err
					}
				}
				if _, err := tx.Exec(`INSERT INTO audit_log (action, actor_id, actor_email, payload, created_at) VALUES ('user_signedup', ?, ?, '{}', ?)`, id, email, now); err != nil {
					return err
				}
				if i%10 == 0 { // an event waiting for delivery
					if _, err := tx.Exec(`INSERT INTO outbox (event_id, topic, event_type, payload, attempts, next_at, created_at) VALUES (?, 'webhook', 'user.created', ?, 0, ?, ?)`,
						"evt-"+id, `{"type":"user.created","user":"`+id+`"}`, now, now); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			e.tb.Fatal(err)
		}
	}
	err = ts.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES ('service_key_sha256', 'deadbeef'), ('password_min_length', '8')`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO signing_keys (kid, algorithm, public_key, private_key, active, created_at) VALUES (?, 'EdDSA', ?, ?, 1, ?)`,
			"kid-"+slug, []byte("public-"+slug), []byte("encrypted-private-"+slug), now)
		return err
	})
	if err != nil {
		e.tb.Fatal(err)
	}
}

// digests returns the table digests of a tenant's live shard.
func (e *env) digests(slug string) map[string]transfer.Digest {
	e.tb.Helper()
	ctx := context.Background()
	ts, err := e.App.Engine.Tenant(ctx, slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	d, err := transfer.Digests(ctx, ts, ts.Tenant.Backend)
	if err != nil {
		e.tb.Fatal(err)
	}
	return d
}

// count runs a count query on a tenant's shard.
func (e *env) count(slug, query string, args ...any) int64 {
	e.tb.Helper()
	ctx := context.Background()
	ts, err := e.App.Engine.Tenant(ctx, slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	var n int64
	if err := ts.Read(ctx, func(q engine.Querier) error { return q.QueryRow(query, args...).Scan(&n) }); err != nil {
		e.tb.Fatal(err)
	}
	return n
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

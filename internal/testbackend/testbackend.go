// Package testbackend lets end-to-end tests run unchanged on every backend:
// KEYSHARD_TEST_BACKEND=postgres|mysql places the tenants a test creates on
// that server (DSN from KEYSHARD_TEST_POSTGRES_DSN / KEYSHARD_TEST_MYSQL_DSN),
// and their schemas or databases are dropped when the test ends.
package testbackend

import (
	"context"
	"database/sql"
	"os"
	"testing"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/sqldb"
)

// Env names the backend tests place tenants on (default sqlite).
const Env = "KEYSHARD_TEST_BACKEND"

var dsnEnv = map[string]string{
	engine.BackendPostgres: "KEYSHARD_TEST_POSTGRES_DSN",
	engine.BackendMySQL:    "KEYSHARD_TEST_MYSQL_DSN",
}

// Name returns the backend under test.
func Name() string {
	if b := os.Getenv(Env); b != "" {
		return b
	}
	return engine.BackendSQLite
}

// Configure makes cfg place new tenants on the backend under test. A server
// backend without its DSN fails the test: asking for it and not getting it
// would silently test SQLite instead.
func Configure(tb testing.TB, cfg *app.Config) {
	tb.Helper()
	b := Name()
	if err := engine.ValidateBackend(b); err != nil {
		tb.Fatalf("%s=%s: %v", Env, b, err)
	}
	cfg.DefaultBackend = b
	if b == engine.BackendSQLite {
		return
	}
	dsn := os.Getenv(dsnEnv[b])
	if dsn == "" {
		tb.Fatalf("%s=%s needs %s", Env, b, dsnEnv[b])
	}
	switch b {
	case engine.BackendPostgres:
		cfg.PostgresDSN = dsn
	case engine.BackendMySQL:
		cfg.MySQLDSN = dsn
	}
	if cfg.ServerPool == 0 {
		cfg.ServerPool = 8 // many test servers run at once in one package
	}
}

// Open opens an app configured for the backend under test; the caller
// closes it. When the test ends, after the caller's own cleanups, the
// schemas or databases of every tenant the catalog placed on a server backend
// are dropped (through a second app opened on the same data directory).
func Open(tb testing.TB, cfg app.Config) *app.App {
	tb.Helper()
	prepare(tb, &cfg)
	a, err := app.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("app.Open: %v", err)
	}
	return a
}

// OpenServer is Open for the whole server (app.OpenServer); the caller
// closes it.
func OpenServer(tb testing.TB, cfg app.ServerConfig) *app.Server {
	tb.Helper()
	prepare(tb, &cfg.Storage)
	s, err := app.OpenServer(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("app.OpenServer: %v", err)
	}
	return s
}

// prepare configures cfg for the backend under test and drops its test
// tenants when the test ends.
func prepare(tb testing.TB, cfg *app.Config) {
	tb.Helper()
	Configure(tb, cfg)
	if cfg.DefaultBackend != engine.BackendSQLite {
		c := *cfg
		tb.Cleanup(func() { dropAll(tb, c) })
	}
}

func dropAll(tb testing.TB, cfg app.Config) {
	ctx := context.Background()
	a, err := app.Open(ctx, cfg)
	if err != nil {
		tb.Errorf("reopen to drop test tenants: %v", err)
		return
	}
	defer a.Close()
	ts, err := a.Engine.Catalog.List(ctx)
	if err != nil {
		tb.Errorf("list tenants: %v", err)
		return
	}
	for _, t := range ts {
		if st, ok := a.Engine.Backends[t.Backend]; ok && t.Backend != engine.BackendSQLite {
			if err := st.Destroy(ctx, t.Placement()); err != nil {
				tb.Errorf("drop tenant %s: %v", t.ID, err)
			}
		}
	}
}

// Exists reports whether the tenant's schema (PostgreSQL) or database (MySQL)
// exists on its server.
func Exists(tb testing.TB, a *app.App, t *engine.Tenant) bool {
	tb.Helper()
	var srv *sqldb.Server
	switch t.Backend {
	case engine.BackendPostgres:
		srv = a.Postgres
	case engine.BackendMySQL:
		srv = a.MySQL
	default:
		tb.Fatalf("Exists: backend %s is not a server", t.Backend)
	}
	ns, err := sqldb.Namespace(t.ID)
	if err != nil {
		tb.Fatal(err)
	}
	var n int64
	if err := srv.DB.QueryRowContext(context.Background(), srv.Dialect.Exists, ns).Scan(&n); err != nil && err != sql.ErrNoRows {
		tb.Fatalf("look for %s: %v", ns, err)
	}
	return n > 0
}

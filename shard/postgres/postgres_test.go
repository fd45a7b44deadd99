package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/postgres"
	"github.com/keyshard/keyshard/shard/shardtest"
)

const dsnEnv = "KEYSHARD_TEST_POSTGRES_DSN"

func TestConformance(t *testing.T) {
	dsn := shardtest.DSN(t, dsnEnv)
	// 200 tenants' writers share one pool on a shared 2-core machine: this
	// suite tests correctness, so waits for a pooled connection may be long.
	// The 3 s default bound is tested by the overload cases of api.
	shardtest.Run(t, shardtest.Factory{
		Name:    engine.BackendPostgres,
		Dialect: postgres.Dialect,
		Tenants: 200,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := postgres.Open(context.Background(), dsn, postgres.Options{LockTimeout: 30 * time.Second}, opts)
			if err != nil {
				t.Fatalf("postgres.Open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	})
}

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT 1":     "SELECT 1",
		"SELECT ? , ?": "SELECT $1 , $2",
		`SELECT '?' , "a?b", ? FROM t WHERE x = ?`: `SELECT '?' , "a?b", $1 FROM t WHERE x = $2`,
		"SELECT 'it''s ?', ?":                      "SELECT 'it''s ?', $1",
	} {
		if got := postgres.Rebind(in); got != want {
			t.Errorf("Rebind(%q) = %q, want %q", in, got, want)
		}
	}
}

// One pooled connection serves both tenants in turn: its search_path and its
// cached prepared statements must never answer for the previous tenant.
func TestIsolation_OneConnection(t *testing.T) {
	dsn := shardtest.DSN(t, dsnEnv)
	shardtest.TestIsolation(t, shardtest.Factory{
		Name: engine.BackendPostgres, Dialect: postgres.Dialect,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConns: 1}, opts)
			if err != nil {
				t.Fatalf("postgres.Open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	})
}

func TestConnectionLoss(t *testing.T) {
	dsn := shardtest.DSN(t, dsnEnv)
	shardtest.TestConnectionLoss(t, shardtest.Factory{
		Name: engine.BackendPostgres, Dialect: postgres.Dialect,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := postgres.Open(context.Background(), dsn, postgres.Options{}, opts)
			if err != nil {
				t.Fatalf("postgres.Open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	}, "SELECT pg_terminate_backend(pg_backend_pid())")
}

package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/postgres"
	"github.com/keyshard/keyshard/shard/shardtest"
	"github.com/keyshard/keyshard/shard/sqldb"
)

const dsnEnv = "KEYSHARD_TEST_POSTGRES_DSN"

// factory is the conformance suite's view of this backend with options o.
func factory(t testing.TB, o postgres.Options) shardtest.Factory {
	return shardtest.Server(t, engine.BackendPostgres, postgres.Dialect, dsnEnv,
		func(ctx context.Context, dsn string, opts shard.Options) (*sqldb.Server, error) {
			return postgres.Open(ctx, dsn, o, opts)
		})
}

func TestConformance(t *testing.T) {
	// 200 tenants' writers share one pool on a shared 2-core machine: this
	// suite tests correctness, so waits for a pooled connection may be long.
	// The 3 s default bound is tested by the overload cases of api.
	f := factory(t, postgres.Options{LockTimeout: 30 * time.Second})
	f.Tenants = 200
	shardtest.Run(t, f)
}

// One pooled connection serves both tenants in turn: its search_path and its
// cached prepared statements must never
// answer for the previous tenant.
func TestIsolation_OneConnection(t *testing.T) {
	shardtest.TestIsolation(t, factory(t, postgres.Options{MaxConns: 1}))
}

func TestConnectionLoss(t *testing.T) {
	shardtest.TestConnectionLoss(t, factory(t, postgres.Options{}), "SELECT pg_terminate_backend(pg_backend_pid())")
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

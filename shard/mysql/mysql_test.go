package mysql_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/mysql"
	"github.com/keyshard/keyshard/shard/shardtest"
	"github.com/keyshard/keyshard/shard/sqldb"
)

const dsnEnv = "KEYSHARD_TEST_MYSQL_DSN"

// factory is the conformance suite's view of this backend with options o.
func factory(t testing.TB, o mysql.Options) shardtest.Factory {
	return shardtest.Server(t, engine.BackendMySQL, mysql.Dialect, dsnEnv,
		func(ctx context.Context, dsn string, opts shard.Options) (*sqldb.Server, error) {
			return mysql.Open(ctx, dsn, o, opts)
		})
}

func TestConformance(t *testing.T) {
	// 200 tenants' writers share one pool on a shared 2-core machine: this
	// suite tests correctness, so waits for a pooled connection may be long.
	// The 3 s default bound is tested by the overload cases of api.
	f := factory(t, mysql.Options{LockTimeout: 30 * time.Second})
	f.Tenants = 200
	shardtest.Run(t, f)
}

// One pooled connection serves both tenants in turn: its current database must never
// answer for the previous tenant.
func TestIsolation_OneConnection(t *testing.T) {
	shardtest.TestIsolation(t, factory(t, mysql.Options{MaxConns: 1}))
}

func TestConnectionLoss(t *testing.T) {
	shardtest.TestConnectionLoss(t, factory(t, mysql.Options{}), "KILL CONNECTION_ID()")
}

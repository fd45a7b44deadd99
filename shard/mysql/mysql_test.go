package mysql_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/mysql"
	"github.com/keyshard/keyshard/shard/shardtest"
)

const dsnEnv = "KEYSHARD_TEST_MYSQL_DSN"

func TestConformance(t *testing.T) {
	dsn := shardtest.DSN(t, dsnEnv)
	// 200 tenants' writers share one pool on a shared 2-core machine: this
	// suite tests correctness, so waits for a pooled connection may be long.
	// The 3 s default bound is tested by the overload cases of api.
	shardtest.Run(t, shardtest.Factory{
		Name:    engine.BackendMySQL,
		Dialect: mysql.Dialect,
		Tenants: 200,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := mysql.Open(context.Background(), dsn, mysql.Options{LockTimeout: 30 * time.Second}, opts)
			if err != nil {
				t.Fatalf("mysql.Open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	})
}

// One pooled connection serves both tenants in turn: its current database
// must never answer for the previous tenant.
func TestIsolation_OneConnection(t *testing.T) {
	dsn := shardtest.DSN(t, dsnEnv)
	shardtest.TestIsolation(t, shardtest.Factory{
		Name: engine.BackendMySQL, Dialect: mysql.Dialect,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := mysql.Open(context.Background(), dsn, mysql.Options{MaxConns: 1}, opts)
			if err != nil {
				t.Fatalf("mysql.Open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	})
}

func TestConnectionLoss(t *testing.T) {
	dsn := shardtest.DSN(t, dsnEnv)
	shardtest.TestConnectionLoss(t, shardtest.Factory{
		Name: engine.BackendMySQL, Dialect: mysql.Dialect,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := mysql.Open(context.Background(), dsn, mysql.Options{}, opts)
			if err != nil {
				t.Fatalf("mysql.Open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	}, "KILL CONNECTION_ID()")
}

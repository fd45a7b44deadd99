package sqlite_test

import (
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/shardtest"
	"github.com/keyshard/keyshard/shard/sqlite"
)

func TestConformance(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "own connections", true: "reused connections"}[reuse], func(t *testing.T) {
			shardtest.Run(t, shardtest.Factory{
				Name:    engine.BackendSQLite,
				Dialect: sqlite.Dialect,
				New: func(t testing.TB, opts shard.Options) shardtest.Backend {
					return &sqlite.Backend{DataDir: t.TempDir(), Options: sqlite.Options{ReuseConnections: reuse}, ShardOpts: opts}
				},
			})
		})
	}
}

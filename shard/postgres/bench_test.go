package postgres_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/postgres"
	"github.com/keyshard/keyshard/shard/shardtest"
)

// The same write and read benchmarks as shard/sqlite's, on this server; not
// run in CI. For example:
//
//	KEYSHARD_TEST_POSTGRES_DSN=... go test -run='^$' -bench=. -benchtime=2000x ./shard/postgres/

func factory(b *testing.B) shardtest.Factory {
	dsn := shardtest.DSN(b, dsnEnv)
	return shardtest.Factory{
		Name: engine.BackendPostgres, Dialect: postgres.Dialect,
		New: func(t testing.TB, opts shard.Options) shardtest.Backend {
			srv, err := postgres.Open(context.Background(), dsn, postgres.Options{}, opts)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			return srv
		},
	}
}

// BenchmarkShard_Write compares one operation per transaction with group
// commit at 1, 16 and 256 concurrent writers.
func BenchmarkShard_Write(b *testing.B) {
	f := factory(b)
	for _, mode := range []struct {
		name     string
		maxBatch int
	}{{"OnePerTx", 1}, {"GroupCommit", 0}} {
		for _, conc := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/conc=%d", mode.name, conc), func(b *testing.B) {
				shardtest.BenchWrite(b, f, mode.maxBatch, conc)
			})
		}
	}
}

// BenchmarkShard_Read measures point reads by primary key.
func BenchmarkShard_Read(b *testing.B) { shardtest.BenchRead(b, factory(b)) }

package mysql_test

import (
	"fmt"
	"testing"

	"github.com/keyshard/keyshard/shard/mysql"
	"github.com/keyshard/keyshard/shard/shardtest"
)

// The same write and read benchmarks as shard/sqlite's, on this server; not
// run in CI. For example:
//
//	KEYSHARD_TEST_MYSQL_DSN=... go test -run='^$' -bench=. -benchtime=2000x ./shard/mysql/

// BenchmarkShard_Write compares one operation per transaction with group
// commit at 1, 16 and 256 concurrent writers.
func BenchmarkShard_Write(b *testing.B) {
	f := factory(b, mysql.Options{})
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
func BenchmarkShard_Read(b *testing.B) { shardtest.BenchRead(b, factory(b, mysql.Options{})) }

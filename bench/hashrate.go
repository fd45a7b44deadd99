package bench

import (
	"context"
	"crypto/rand"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/keyshard/keyshard/auth/hash"
)

// HashRate measures the raw Argon2id rate with params on workers goroutines
// (default: the number of CPUs) for d, outside any server or pool: the
// bound of password logins on this machine. Each goroutine stops at d or
// after 100,000 hashes.
func HashRate(ctx context.Context, params hash.Params, workers int, d time.Duration) float64 {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	if params.SaltLen == 0 {
		params.SaltLen = hash.DefaultParams.SaltLen
	}
	if params.KeyLen == 0 {
		params.KeyLen = hash.DefaultParams.KeyLen
	}
	var n atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			salt := make([]byte, params.SaltLen)
			_, _ = rand.Read(salt)
			for i := 0; i < 100_000 && ctx.Err() == nil && time.Now().Before(deadline); i++ {
				argon2.IDKey([]byte("bench password"), salt, params.Time, params.MemoryKiB, params.Threads, params.KeyLen)
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

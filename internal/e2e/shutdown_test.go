//go:build unix

package e2e_test

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestShutdown_SIGTERM sends SIGTERM under a load that includes failed
// logins (whose audit events wait in the shards' deferred buffers) and
// checks, after exit 0, that every acknowledged write and every answered
// failed login's event is on disk.
func TestShutdown_SIGTERM(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	seed := envInt(t, seedEnv, uint64(time.Now().UnixNano()))
	t.Logf("shutdown test seed %d (replay with %s=%d)", seed, seedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	const rounds = 3
	c := newCluster(t, "")
	s := c.start()
	tenants := s.createTenants("term", 8)
	l := newLoad(tenants, seed)
	failed := 0
	for k := 0; k < rounds; k++ {
		ctx, cancel := doneAfter(time.Minute)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.run(ctx, s, 12, 3000, 3)
		}()
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		s.stop() // fails unless exit 0
		cancel()
		<-done
		l.verify(t, c.dataDir, k == rounds-1, true)
		if t.Failed() {
			t.Fatalf("round %d (seed %d): acknowledged writes or buffered audit events lost at shutdown", k, seed)
		}
		s = c.start()
	}
	s.stop()
	for _, u := range l.users {
		failed += u.failedAcked
	}
	t.Logf("SIGTERM rounds: %d; writes acknowledged: %d; failed-login events checked: %d", rounds, l.acked, failed)
	if failed == 0 {
		t.Fatal("no failed login was answered: the buffered-audit check did not run")
	}
	scanSecrets(t, c.allLogs(), l.secretsOf(t, c))
}

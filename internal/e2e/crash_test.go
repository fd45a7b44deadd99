//go:build unix

package e2e_test

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// Environment variables of the crash test.
const (
	seedEnv  = "KEYSHARD_CRASH_SEED"  // replay a run: the seed it printed
	killsEnv = "KEYSHARD_CRASH_KILLS" // kill points (default 10)
)

func envInt(tb testing.TB, name string, def uint64) uint64 {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		tb.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

// TestCrash_SIGKILL drives a mixed load across 20 tenants, SIGKILLs the
// server at a random moment, restarts it, and checks on disk that every
// acknowledged write survived and every shard passes integrity_check;
// several kill points on one data directory, so later rounds also recover
// from earlier crashes.
func TestCrash_SIGKILL(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	seed := envInt(t, seedEnv, uint64(time.Now().UnixNano()))
	kills := int(envInt(t, killsEnv, 10))
	t.Logf("crash test seed %d (replay with %s=%d), %d kill points", seed, seedEnv, seed, kills)
	rng := rand.New(rand.NewPCG(seed, 1))

	c := newCluster(t, "")
	s := c.start()
	tenants := s.createTenants("crash", 20)
	l := newLoad(tenants, seed)
	total := verifyStats{}
	for k := 0; k < kills; k++ {
		// Load for a random time, then SIGKILL with requests in flight.
		after := time.Duration(150+rng.IntN(1200)) * time.Millisecond
		ctx, cancel := doneAfter(time.Minute)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.run(ctx, s, 12, 3000, 0)
		}()
		time.Sleep(after)
		s.kill()
		cancel()
		<-done
		// Recovery: the restarted server serves every tenant.
		s = c.start()
		for _, tn := range tenants {
			s.must(200, "GET", "/t/"+tn.Slug+"/health", "", nil)
		}
		s.stop()
		st := l.verify(t, c.dataDir, k == kills-1, false)
		total.users += st.users
		total.facts += st.facts
		if t.Failed() {
			t.Fatalf("kill point %d (after %v, seed %d): acknowledged writes lost", k, after, seed)
		}
		s = c.start()
	}
	s.stop()
	t.Logf("kill points survived: %d; writes acknowledged: %d; requests without an answer: %d; users checked: %d; facts verified: %d",
		kills, l.acked, l.unknown, total.users, total.facts)
	if l.acked == 0 {
		t.Fatal("no write was acknowledged: the load did not run")
	}
	scanSecrets(t, c.allLogs(), l.secretsOf(t, c))
}

//go:build linux

package e2e_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Soak settings: KEYSHARD_SOAK=1 runs the soak (not in CI's default run);
// KEYSHARD_SOAK_DURATION sets its length (default 3m).
const (
	soakEnv         = "KEYSHARD_SOAK"
	soakDurationEnv = "KEYSHARD_SOAK_DURATION"
)

// TestSoak drives a steady load for a few minutes and samples the server's
// resident memory and open file descriptors: after the first half
// (warm-up), neither may grow past a tolerance.
func TestSoak(t *testing.T) {
	needBinary(t)
	if os.Getenv(soakEnv) == "" {
		t.Skip("soak test: set " + soakEnv + "=1 (and optionally " + soakDurationEnv + ")")
	}
	dur := 3 * time.Minute
	if v := os.Getenv(soakDurationEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 30*time.Second || d > time.Hour {
			t.Fatalf("%s=%q: want a duration between 30s and 1h", soakDurationEnv, v)
		}
		dur = d
	}
	c := newCluster(t, "")
	s := c.start()
	// Few tenants: each connection's page cache (up to ~3 MB per shard,
	// kept until the shard closes) fills during the warm-up, so growth
	// after it is a leak and not a cache filling.
	tenants := s.createTenants("soak", 4)
	l := newLoad(tenants, uint64(time.Now().UnixNano()))
	ctx, cancel := doneAfter(dur)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.run(ctx, s, 8, 1<<30, 5)
	}()
	pid := s.cmd.Process.Pid
	type sample struct {
		at       time.Duration
		rssKiB   int
		fds      int
		acked    int
		requests int
	}
	var samples []sample
	start := time.Now()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
sampling:
	for {
		select {
		case <-done:
			break sampling
		case <-tick.C:
			l.mu.Lock()
			acked := l.acked
			l.mu.Unlock()
			samples = append(samples, sample{at: time.Since(start).Round(time.Second), rssKiB: rssKiB(t, pid), fds: openFDs(t, pid), acked: acked})
			sm := samples[len(samples)-1]
			t.Logf("%v: rss %d KiB, fds %d, writes acknowledged %d", sm.at, sm.rssKiB, sm.fds, sm.acked)
		}
	}
	s.stop()
	if len(samples) < 6 {
		t.Fatalf("only %d samples", len(samples))
	}
	warm := samples[len(samples)/2]
	maxRSS, maxFDs := 0, 0
	for _, sm := range samples[len(samples)/2:] {
		maxRSS, maxFDs = max(maxRSS, sm.rssKiB), max(maxFDs, sm.fds)
	}
	t.Logf("after warm-up (%v): rss %d → max %d KiB, fds %d → max %d; writes acknowledged %d", warm.at, warm.rssKiB, maxRSS, warm.fds, maxFDs, l.acked)
	// Tolerances: Go's heap breathes with GC cycles; descriptors move with
	// keep-alive connections of the load.
	if maxRSS > warm.rssKiB*5/4+16*1024 {
		t.Errorf("resident memory grew after warm-up: %d → %d KiB", warm.rssKiB, maxRSS)
	}
	if maxFDs > warm.fds+32 {
		t.Errorf("open descriptors grew after warm-up: %d → %d", warm.fds, maxFDs)
	}
	l.verify(t, c.dataDir, true, true)
}

func rssKiB(tb testing.TB, pid int) int {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

func openFDs(tb testing.TB, pid int) int {
	tb.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	return len(es)
}

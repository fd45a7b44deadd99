package hash

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/keyshard/keyshard/engine"
)

// TestPool_Admission blocks the only worker with a job of its own, then
// checks that a request is admitted only while its expected wait fits.
func TestPool_Admission(t *testing.T) {
	p, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 1, Budget: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.ewma.Store(int64(400 * time.Millisecond)) // as if one hash took 400 ms

	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 2)
	go func() { done <- p.run(context.Background(), func(kdfFunc) { close(started); <-release }) }()
	<-started
	if err := p.Admit(); err != nil {
		t.Fatalf("Admit with the worker busy and no queue: %v", err)
	}
	// One waiting job: expected (0/1 + 1) × 400 ms fits 1 s.
	go func() { done <- p.run(context.Background(), func(kdfFunc) {}) }()
	for p.waiting.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	// The next one would wait (1/1 + 1) × 400 ms = 800 ms: still admitted…
	go func() { done <- p.run(context.Background(), func(kdfFunc) {}) }()
	for p.waiting.Load() != 2 {
		time.Sleep(time.Millisecond)
	}
	if err := p.Admit(); err == nil {
		t.Fatal("Admit accepts a request that would wait 1.2 s")
	}
	if p.waiting.Load() != 2 {
		t.Fatalf("Admit changed the queue: %d waiting", p.waiting.Load())
	}
	// …but a third would expect 1.2 s: refused at once.
	err = p.run(context.Background(), func(kdfFunc) { t.Error("refused job ran") })
	var oe *OverloadedError
	if !errors.As(err, &oe) || !errors.Is(err, engine.ErrOverloaded) || oe.RetryAfter < time.Second {
		t.Fatalf("err %v", err)
	}
	if p.Stats().Refused != 2 { // Admit's and run's
		t.Fatalf("refused %d", p.Stats().Refused)
	}
	close(release)
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// TestPool_CallerGone: a queued job whose caller left is not run.
func TestPool_CallerGone(t *testing.T) {
	p, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 1, Budget: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	release := make(chan struct{})
	started := make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- p.run(context.Background(), func(kdfFunc) { close(started); <-release }) }()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.run(ctx, func(kdfFunc) { t.Error("job of a gone caller ran") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The skipped job is drained before this one runs.
	if err := p.run(context.Background(), func(kdfFunc) {}); err != nil {
		t.Fatal(err)
	}
}

// TestPool_RescueStalledWorkers: a worker process left no CPU (its every
// thread stuck on a hash) does not leave the queued requests waiting:
// they, and new ones, are computed in this process, one at a time; the
// requests stuck in the worker process are refused after three budgets;
// and no job runs twice.
func TestPool_RescueStalledWorkers(t *testing.T) {
	params := Params{MemoryKiB: 64, Time: 1, Threads: 1}
	p, release, free := gatedPool(t, Config{Params: params, Workers: 2, Budget: 400 * time.Millisecond})
	var remote atomic.Int32
	p.background = true // as with a worker process, whose stand-in starves:
	p.kdf = func(r kdfRequest) (kdfResult, error) {
		if r.MemoryKiB != probeRequest.MemoryKiB {
			remote.Add(1)
		}
		<-release
		return computeLocal(r), nil
	}
	rescued0, abandoned0 := counterValue(t, rescuedTotal), counterValue(t, abandonedTotal)

	stuck := make(chan error, 2)
	for i := range 2 {
		go func() { _, err := p.Hash(context.Background(), "stuck"); stuck <- err }()
		waitFor(t, func() bool { return p.busy.Load() == int64(i+1) }, "a worker to take the stuck hash")
	}
	type result struct {
		pw, enc string
		err     error
	}
	queued := make(chan result, 3)
	for i := range 3 {
		pw := fmt.Sprintf("queued-%d", i)
		go func() { enc, err := p.Hash(context.Background(), pw); queued <- result{pw, enc, err} }()
	}
	for range 3 {
		r := <-queued
		if r.err != nil {
			t.Fatalf("a queued hash behind stalled workers: %v", r.err)
		}
		if ok, _, err := verify(localKDF, r.enc, r.pw, params); !ok || err != nil {
			t.Fatalf("a rescued hash does not verify: %v %v", ok, err)
		}
	}
	if n := counterValue(t, rescuedTotal) - rescued0; n != 3 {
		t.Fatalf("%v hashes rescued, want the 3 queued", n)
	}
	// Still starved: a new request is admitted on the rescue's pace, and
	// served by it.
	if err := p.Admit(); err != nil {
		t.Fatalf("Admit while the rescue serves: %v", err)
	}
	if _, err := p.Hash(context.Background(), "later"); err != nil {
		t.Fatalf("a new hash while the workers are starved: %v", err)
	}
	if n := counterValue(t, rescuedTotal) - rescued0; n != 4 {
		t.Fatalf("%v hashes rescued, want 4", n)
	}
	var oe *OverloadedError
	// The two stuck requests are refused after three budgets.
	for range 2 {
		select {
		case err := <-stuck:
			if !errors.As(err, &oe) || oe.RetryAfter <= 0 {
				t.Fatalf("a request stuck on a stalled worker: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request stuck on a stalled worker was not answered within 10 s (3 budgets: 1.2 s)")
		}
	}
	if n := counterValue(t, abandonedTotal) - abandoned0; n != 2 {
		t.Fatalf("%v requests abandoned, want 2", n)
	}
	// The worker process recovers; every job ran once: the 2 stuck ones in
	// the worker process, the 5 others rescued or (the last, once the
	// rescue saw the workers free) in the worker process.
	free()
	waitFor(t, func() bool { return p.busy.Load() == 0 }, "the workers to be free")
	if _, err := p.Hash(context.Background(), "after"); err != nil {
		t.Fatal(err)
	}
	if n := float64(remote.Load()) + counterValue(t, rescuedTotal) - rescued0; n != 7 {
		t.Fatalf("%v computations for 7 jobs: a job ran twice, or not at all", n)
	}
	if w := p.waiting.Load(); w != 0 {
		t.Fatalf("%d jobs still counted as waiting", w)
	}
}

// TestPool_StarvedStaysRescued: once a hash of the worker process took
// stallAfter or more, the worker that ran it sends no job there until a
// probe comes back quickly: the next request is rescued, not fed to the
// starved process; and a slow average does not put the rescue past the
// bound on waits.
func TestPool_StarvedStaysRescued(t *testing.T) {
	p, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 2, Budget: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	gate, probes := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(gate); close(probes) }) }
	defer free()
	var remote atomic.Int32
	p.background = true
	p.kdf = func(r kdfRequest) (kdfResult, error) {
		if r.MemoryKiB == probeRequest.MemoryKiB {
			<-probes // the process stays starved until the test says
		} else {
			remote.Add(1)
			<-gate
		}
		return computeLocal(r), nil
	}
	rescued0 := counterValue(t, rescuedTotal)
	stuck := make(chan error, 2)
	for i := range 2 {
		go func() { _, err := p.Hash(context.Background(), "stuck"); stuck <- err }()
		waitFor(t, func() bool { return p.busy.Load() == int64(i+1) }, "a worker to take the stuck hash")
	}
	p.ewma.Store(int64(p.budget * 9 / 10)) // a slow average: stallAfter must not grow past the bound
	if _, err := p.Hash(context.Background(), "queued"); err != nil {
		t.Fatalf("a request behind stalled workers with a slow average: %v", err)
	}
	// One stalled hash ends, slowly: its worker probes, and the probe does
	// not come back.
	gate <- struct{}{}
	waitFor(t, func() bool { return p.busy.Load() == 1 }, "the slow hash to end")
	// Long enough for a rescue that no longer saw the stall to have ended
	// (it looks every rescueCheck): the next request shows which it is.
	time.Sleep(3 * rescueCheck)
	if _, err := p.Hash(context.Background(), "next"); err != nil {
		t.Fatalf("the request after a slow hash: %v", err)
	}
	if n := counterValue(t, rescuedTotal) - rescued0; n != 2 {
		t.Fatalf("%v hashes rescued, want 2 (the queued one, and the one after a slow hash)", n)
	}
	if n := remote.Load(); n != 2 {
		t.Fatalf("%d jobs sent to the starved worker process, want only the 2 stuck ones", n)
	}
	free()
	for range 2 {
		<-stuck
	}
}

// TestPool_WaitBounded: in a pool that computes in this process no job is
// rescued; an admitted request whose worker never frees is refused after
// three budgets, and its job never runs later; the request whose hash is
// running is waited for.
func TestPool_WaitBounded(t *testing.T) {
	p, release, free := gatedPool(t, Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 1, Budget: 100 * time.Millisecond})
	started := make(chan struct{})
	first := make(chan error, 1)
	go func() { first <- p.run(context.Background(), func(kdfFunc) { close(started); <-release }) }()
	<-started
	var ran atomic.Bool
	err := p.run(context.Background(), func(kdfFunc) { ran.Store(true) })
	var oe *OverloadedError
	if !errors.As(err, &oe) {
		t.Fatalf("a request queued behind a worker that never frees: %v", err)
	}
	// The request whose hash is running reached its bound too (it was
	// admitted first): it waits for the hash rather than lose the core's
	// work, past the bound.
	select {
	case err := <-first:
		t.Fatalf("the request whose hash runs in this process answered before its hash ended: %v", err)
	case <-time.After(4 * rescueCheck):
	}
	free()
	if err := <-first; err != nil {
		t.Fatalf("the request whose hash ran in this process: %v", err)
	}
	waitFor(t, func() bool { return p.busy.Load() == 0 }, "the workers to be free")
	if err := p.run(context.Background(), func(kdfFunc) {}); err != nil {
		t.Fatal(err)
	}
	if ran.Load() {
		t.Fatal("the refused request's job ran later")
	}
	if w := p.waiting.Load(); w != 0 {
		t.Fatalf("%d jobs still counted as waiting", w)
	}
}

// written reads a Prometheus metric's current value.
func written(t *testing.T, c prometheus.Metric) *dto.Metric {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	return written(t, c).GetCounter().GetValue()
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

// gatedPool returns a pool and a gate its test's stand-ins wait on. The
// gate opens (free: safe to call twice) before the pool closes, even when
// the test fails, since Close waits for the workers.
func gatedPool(t *testing.T, cfg Config) (p *Pool, gate chan struct{}, free func()) {
	t.Helper()
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	gate = make(chan struct{})
	var once sync.Once
	free = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(free) // runs first: cleanups run last added, first called
	return p, gate, free
}

// histogramCount reads a Prometheus histogram's sample count.
func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	return written(t, h).GetHistogram().GetSampleCount()
}

// TestSeedWithin: a new pool's first hash is the worker process's when it
// answers in time, and this process's when it does not (a worker process
// left no CPU), whose time is then the measure; without a bound it waits.
func TestSeedWithin(t *testing.T) {
	t.Run("RemoteInTime", func(t *testing.T) {
		enc, d, local, err := seedWithin(func() (string, error) { return "remote", nil },
			func() (string, error) { t.Error("local hashed though remote answered"); return "", nil }, time.Minute)
		if enc != "remote" || local || err != nil || d <= 0 || d > time.Minute {
			t.Fatalf("seedWithin = %q, %v, %v, %v", enc, d, local, err)
		}
	})
	t.Run("RemoteStarved", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release) // remote ends after the test: its answer must not block
		const wait = 100 * time.Millisecond
		type out struct {
			enc   string
			d     time.Duration
			local bool
			err   error
		}
		res := make(chan out, 1)
		go func() {
			enc, d, local, err := seedWithin(func() (string, error) { <-release; return "remote", nil },
				func() (string, error) { time.Sleep(5 * time.Millisecond); return "local", nil }, wait)
			res <- out{enc, d, local, err}
		}()
		var o out
		select {
		case o = <-res:
		case <-time.After(10 * time.Second):
			t.Fatal("seedWithin waited for a remote that does not answer 10 s past its bound")
		}
		enc, d, local, err := o.enc, o.d, o.local, o.err
		if enc != "local" || !local || err != nil {
			t.Fatalf("seedWithin = %q, %v, %v, want local's hash", enc, local, err)
		}
		if d < 5*time.Millisecond || d >= wait {
			t.Fatalf("measured %v: want local's own time (≥ 5 ms), not counting the %v waited before it", d, wait)
		}
	})
	t.Run("NoBound", func(t *testing.T) {
		enc, _, local, err := seedWithin(func() (string, error) { time.Sleep(30 * time.Millisecond); return "", errors.New("remote failed") },
			func() (string, error) { t.Error("local hashed without a bound"); return "", nil }, 0)
		if enc != "" || local || err == nil || err.Error() != "remote failed" {
			t.Fatalf("seedWithin = %q, %v, %v, want remote's error", enc, local, err)
		}
	})
}

package hash

import (
	"context"
	"errors"
	"testing"
	"time"

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
	go func() { done <- p.run(context.Background(), func() { close(started); <-release }) }()
	<-started
	if err := p.Admit(); err != nil {
		t.Fatalf("Admit with the worker busy and no queue: %v", err)
	}
	// One waiting job: expected (0/1 + 1) × 400 ms fits 1 s.
	go func() { done <- p.run(context.Background(), func() {}) }()
	for p.waiting.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	// The next one would wait (1/1 + 1) × 400 ms = 800 ms: still admitted…
	go func() { done <- p.run(context.Background(), func() {}) }()
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
	err = p.run(context.Background(), func() { t.Error("refused job ran") })
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
	go func() { first <- p.run(context.Background(), func() { close(started); <-release }) }()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.run(ctx, func() { t.Error("job of a gone caller ran") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The skipped job is drained before this one runs.
	if err := p.run(context.Background(), func() {}); err != nil {
		t.Fatal(err)
	}
}

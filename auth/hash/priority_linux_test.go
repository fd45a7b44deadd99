package hash

import (
	"context"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPool_Background(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	p, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 2, Background: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != before+2 {
		t.Errorf("GOMAXPROCS with a background pool of 2 = %d, want %d", got, before+2)
	}
	var nice int
	var prioErr error
	if err := p.run(context.Background(), func() {
		// getpriority returns 20-nice for a thread id (the raw syscall).
		prio, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
		nice, prioErr = 20-prio, err
	}); err != nil {
		t.Fatal(err)
	}
	if prioErr != nil {
		t.Fatalf("getpriority: %v", prioErr)
	}
	if nice != 19 {
		t.Errorf("worker thread nice = %d, want 19", nice)
	}
	if _, err := p.Hash(context.Background(), "password"); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS after Close = %d, want %d", got, before)
	}
	// The test's own thread keeps its priority.
	if prio, _ := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid()); 20-prio == 19 {
		t.Error("the caller's thread was niced")
	}
}

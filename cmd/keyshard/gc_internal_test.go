package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"testing"
)

func TestApplyGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	t.Setenv("GOGC", "") // restored, or unset again, when the test ends
	os.Unsetenv("GOGC")
	(&authFlags{gcPercent: 250}).applyGCPercent()
	if got := debug.SetGCPercent(100); got != 250 {
		t.Fatalf("GC percent %d after --gc-percent 250 without GOGC, want 250", got)
	}
	os.Setenv("GOGC", "100")
	(&authFlags{gcPercent: 250}).applyGCPercent()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent %d with GOGC set, want GOGC's 100 kept", got)
	}
	// A value the runtime ignores (it then runs at 100) leaves the flag
	// in force.
	for _, v := range []string{"", "abc"} {
		os.Setenv("GOGC", v)
		(&authFlags{gcPercent: 250}).applyGCPercent()
		if got := debug.SetGCPercent(100); got != 250 {
			t.Fatalf("GC percent %d with GOGC=%q, want --gc-percent's 250", got, v)
		}
	}
}

func TestApplyProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	t.Setenv("GOMAXPROCS", "") // restored, or unset again, when the test ends
	os.Unsetenv("GOMAXPROCS")
	if got := (&authFlags{}).applyProcs(); got != startProcs+1 || runtime.GOMAXPROCS(0) != got {
		t.Fatalf("default: applyProcs %d, GOMAXPROCS %d, want Go's default plus one (%d)", got, runtime.GOMAXPROCS(0), startProcs+1)
	}
	// Again (bench's in-process server and serve's flags share it): not
	// one more each time.
	if got := (&authFlags{}).applyProcs(); got != startProcs+1 {
		t.Fatalf("second call: applyProcs %d, want %d", got, startProcs+1)
	}
	if got := (&authFlags{procs: 5}).applyProcs(); got != 5 || runtime.GOMAXPROCS(0) != 5 {
		t.Fatalf("--gomaxprocs 5: applyProcs %d, GOMAXPROCS %d", got, runtime.GOMAXPROCS(0))
	}
	// A value the runtime ignores (empty, zero, not a number) leaves the
	// flag in force.
	for _, v := range []string{"", "0", "abc"} {
		os.Setenv("GOMAXPROCS", v)
		if got := (&authFlags{procs: 4}).applyProcs(); got != 4 || runtime.GOMAXPROCS(0) != 4 {
			t.Fatalf("GOMAXPROCS=%q, --gomaxprocs 4: applyProcs %d, GOMAXPROCS %d", v, got, runtime.GOMAXPROCS(0))
		}
	}
	os.Setenv("GOMAXPROCS", "5")
	runtime.GOMAXPROCS(7) // stands for what the runtime took from the variable
	if got := (&authFlags{procs: 3}).applyProcs(); got != 7 || runtime.GOMAXPROCS(0) != 7 {
		t.Fatalf("with GOMAXPROCS set: applyProcs %d, GOMAXPROCS %d, want 7 kept", got, runtime.GOMAXPROCS(0))
	}
}

package main

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestApplyGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	gogc, had := os.LookupEnv("GOGC")
	t.Cleanup(func() {
		if had {
			os.Setenv("GOGC", gogc)
		} else {
			os.Unsetenv("GOGC")
		}
	})

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
}

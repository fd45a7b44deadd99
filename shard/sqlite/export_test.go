package sqlite

import (
	"context"
	"sync"
)

// SetSyncHook makes every Sync (pipelined durability) call f first, failing
// with its error; nil removes it. Set it while no shard syncs.
func SetSyncHook(f func() error) { syncHook = f }

// IdleHosts is the number of writer connections kept for reuse.
func IdleHosts() int {
	hosts.mu.Lock()
	defer hosts.mu.Unlock()
	return len(hosts.idle)
}

// SetScanListed makes NoteKeptWALsIn call f once it has read the
// directories, before it notes what it found; nil removes it.
func SetScanListed(f func()) { scanListed = f }

// WALCounts are what reached a WAL file opened through walVFS: writes
// (system calls) and real syncs.
type WALCounts struct{ Writes, Syncs int64 }

// WatchWALs records the WAL files walVFS opens from now on, until the test
// ends; counts returns what reached each so far, by path. Not for parallel
// tests.
func WatchWALs(cleanup func(func())) (counts func() map[string]WALCounts) {
	var mu sync.Mutex
	files := map[string][]*walFile{}
	walOpened = func(path string, f *walFile) {
		mu.Lock()
		files[path] = append(files[path], f)
		mu.Unlock()
	}
	cleanup(func() { walOpened = nil })
	return func() map[string]WALCounts {
		mu.Lock()
		defer mu.Unlock()
		m := map[string]WALCounts{}
		for p, fs := range files {
			var c WALCounts
			for _, f := range fs {
				c.Writes += f.writes.Load()
				c.Syncs += f.syncs.Load()
			}
			m[p] = c
		}
		return m
	}
}

// KeptWALLimit is the largest WAL a kept connection's writer leaves at close
// by default.
const KeptWALLimit = DefaultKeptWALLimit

// NoteKeptWALsIn is ScanKeptWALs over the directories dirs.
func NoteKeptWALsIn(ctx context.Context, dirs ...string) (int, error) {
	return ScanKeptWALs(ctx, func(context.Context) []string { return dirs })
}

// SetSweepStarting sets a function run as each checkpoint of a sweep starts.
func SetSweepStarting(f func()) { sweepStarting = f }

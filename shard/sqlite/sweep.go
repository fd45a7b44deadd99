package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
)

// A WAL a writer left at close (keepsWAL) is checkpointed later, once its
// shard has stayed closed for SweepIdle, so that a tenant that is not
// coming back does not hold its WAL's disk (up to Options.KeptWALLimit) for good.
// A tenant visited again within that time pays no checkpoint at all; one
// that is not pays one, off the request path, instead of one at each
// eviction.
//
// The sweep checkpoints through a connection of its own that, like the
// kept ones, never checkpoints or deletes at close: the -wal is truncated
// to nothing and stays, with the -shm. (Deleting them by name at close
// could delete another file's WAL: a node move may have renamed this file
// aside and put a new one at its path meanwhile.) A shard opened again
// meanwhile is forgotten at its open; a checkpoint that meets its writer
// or readers gives up at once (busy) and the shard's next close notes it
// again.
//
// The list is the process's: a WAL kept before a restart (a crash, or a
// shutdown whose sweep ran out of time) is found at the next start by
// ScanKeptWALs, which reads the shard directories and notes every shard
// file whose WAL holds something as if it had closed then; the sweep
// checkpoints it SweepIdle later, unless its tenant came back meanwhile.

// SweepIdle is how long a shard stays closed before SweepKeptWALs, as the
// server runs it every minute, checkpoints the WAL it left.
const SweepIdle = 5 * time.Minute

var keptWALs = struct {
	mu sync.Mutex           // guards the fields below
	at map[string]time.Time // shard path → when its writer closed leaving a WAL
	// scans counts the ScanKeptWALs running; while there are any, opened
	// holds the shards opened (or removed) since the first began.
	scans  int
	opened map[string]struct{}
}{at: map[string]time.Time{}}

func noteKeptWAL(path string) {
	keptWALs.mu.Lock()
	keptWALs.at[path] = time.Now()
	keptWALs.mu.Unlock()
}

func forgetKeptWAL(path string) {
	keptWALs.mu.Lock()
	delete(keptWALs.at, path)
	if keptWALs.opened != nil {
		keptWALs.opened[path] = struct{}{}
	}
	keptWALs.mu.Unlock()
}

// SweepKeptWALs checkpoints the WALs writers left at close at least idle
// ago, of shards not opened since, and returns how many it emptied. Safe to
// run beside the shards' use. It checkpoints one at a time: the server's
// sweep every minute runs beside requests.
func SweepKeptWALs(ctx context.Context, idle time.Duration) int {
	return SweepKeptWALsWith(ctx, idle, 1)
}

// SweepKeptWALsWith is SweepKeptWALs with up to workers checkpoints at once
// (each on a connection of its own, of another file), for a stopping
// server, which has nothing else to run. A checkpoint took about 2 ms on
// a 2-core machine (BenchmarkSweepKeptWALs), about half of it CPU, mostly
// in the kernel (its own connection and -shm mapped, the frames read,
// written back and synced), the rest waiting for its syncs; on a slower
// machine a stop's sweep of 10,000 WALs one at a time outlasted its 30 s.
func SweepKeptWALsWith(ctx context.Context, idle time.Duration, workers int) int {
	now := time.Now()
	var due []string
	keptWALs.mu.Lock()
	for p, at := range keptWALs.at {
		if now.Sub(at) >= idle {
			due = append(due, p)
			delete(keptWALs.at, p)
		}
	}
	keptWALs.mu.Unlock()
	if len(due) == 0 {
		return 0
	}
	workers = max(1, min(workers, len(due)))
	paths := make(chan string)
	var n atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range paths {
				// A path handed over as ctx ended is left too.
				if ctx.Err() == nil && sweepOne(p, now, idle) {
					n.Add(1)
				}
			}
		}()
	}
	// Once ctx ends no checkpoint starts (one running then finishes):
	// what is left stays kept, for the next start to find.
hand:
	for _, p := range due {
		if ctx.Err() != nil { // first: of two ready cases, select picks either
			break
		}
		select {
		case paths <- p:
		case <-ctx.Done():
			break hand
		}
	}
	close(paths)
	wg.Wait()
	return int(n.Load())
}

// sweepOne checkpoints the kept WAL of the shard at p (SweepKeptWALsWith)
// and reports whether it emptied it.
func sweepOne(p string, now time.Time, idle time.Duration) bool {
	if sweepStarting != nil {
		sweepStarting()
	}
	err := checkpointClosed(p)
	walSweeps.WithLabelValues(sweepOutcome(err)).Inc()
	switch {
	case err == nil:
		return true
	case errors.Is(err, errReplaced):
	default:
		if _, serr := os.Lstat(p); serr == nil {
			// Busy (a reader, or the shard open again) or a passing
			// error: tried again at the next sweep, unless the shard's
			// own close noted it meanwhile.
			keptWALs.mu.Lock()
			if _, ok := keptWALs.at[p]; !ok {
				keptWALs.at[p] = now.Add(-idle)
			}
			keptWALs.mu.Unlock()
		}
	}
	return false
}

// sweepStarting, when set (tests), runs as each checkpoint of a sweep
// starts.
var sweepStarting func()

// errReplaced: the file at the path changed while the sweep opened it.
var errReplaced = errors.New("sqlite: the shard file was replaced during the sweep")

func sweepOutcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, sqlite3.BUSY) || errors.Is(err, sqlite3.LOCKED):
		return "busy"
	case errors.Is(err, errReplaced) || errors.Is(err, os.ErrNotExist):
		return "gone"
	}
	return "error"
}

// checkpointClosed runs a TRUNCATE checkpoint of the shard file at path on
// a connection of its own: a missing file (a tenant deleted) fails to open
// and is left alone.
//
// The database is opened first and its -wal and -shm only at the first
// read, each by name: a file put at the path in between (a node move
// replacing it) would have its WAL checkpointed into the other file. So
// the path must name the same file before the open and after the read.
func checkpointClosed(path string) error {
	before, err := os.Lstat(path)
	if err != nil {
		return err
	}
	db, err := sqlite3.OpenFlags(fileURI(path, "rw"), sqlite3.OPEN_READWRITE|sqlite3.OPEN_NOFOLLOW|sqlite3.OPEN_URI)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Config(sqlite3.DBCONFIG_NO_CKPT_ON_CLOSE, true); err != nil {
		return err
	}
	// A read opens the WAL: a checkpoint before any read has none to copy.
	if err := db.Exec("PRAGMA main.user_version"); err != nil {
		return err
	}
	if after, err := os.Lstat(path); err != nil || !os.SameFile(before, after) {
		return errReplaced
	}
	_, _, err = db.WALCheckpoint("main", sqlite3.CHECKPOINT_TRUNCATE)
	return err
}

// ScanKeptWALs finds the shard files under the data directories that dirs
// returns (a Backend's DataDir and the Locations its placements name; it
// calls dirs once it watches the shards' opens, so that a shard opened
// while dirs runs, the server listing the catalog, is not noted) whose WAL holds
// something, and notes them as if their shards had closed now, so that
// SweepKeptWALs checkpoints them once idle: WALs kept before this process
// started, which no sweep of this process knows of otherwise. A crash
// leaves the WALs of the shards it found open too; they are found alike.
// It returns how many it noted, with the errors of the directories it could
// not read (a missing one is none); it stops early, noting what it found,
// when ctx ends. Safe to run beside the shards' use: a shard opened (or
// removed) while it runs is not noted, its own close decides. One opened
// before it began and still open is (the server runs it as it starts, so
// few can be): the sweep gives up on it while busy, or checkpoints it as
// a bounding checkpoint would.
//
// It reads only the directories of the layout Path makes (shards/xx/yy)
// and considers only the files Path names for some tenant there: a
// regular file <tenant-id>.db in the directories of its id's first
// characters, with a regular, non-empty <tenant-id>.db-wal beside it. A
// file a node move set aside (<id>.db.replaced-<time>), a new file not yet
// in place (.new-*), a copy a node move stages (incoming/ beside shards/)
// and an export's or import's scratch files (in temporary directories,
// named export.db, staging.db, copy.db) are none of these. The directories
// dirs and their shards are resolved as the backend's opens resolve them;
// a symbolic link found below them is never followed. It costs one ReadDir
// per directory of the layout and one Lstat per WAL found.
func ScanKeptWALs(ctx context.Context, dirs func(context.Context) []string) (int, error) {
	keptWALs.mu.Lock()
	if keptWALs.scans++; keptWALs.opened == nil {
		keptWALs.opened = map[string]struct{}{}
	}
	keptWALs.mu.Unlock()
	defer func() {
		keptWALs.mu.Lock()
		if keptWALs.scans--; keptWALs.scans == 0 {
			keptWALs.opened = nil
		}
		keptWALs.mu.Unlock()
	}()
	var found []string
	var errs []error
	for _, dir := range dirs(ctx) {
		paths, err := keptWALsUnder(ctx, dir)
		found = append(found, paths...)
		if err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if scanListed != nil {
		scanListed()
	}
	now := time.Now()
	n := 0
	keptWALs.mu.Lock()
	for _, p := range found {
		_, opened := keptWALs.opened[p]
		_, noted := keptWALs.at[p]
		if !opened && !noted {
			keptWALs.at[p] = now
			n++
		}
	}
	keptWALs.mu.Unlock()
	keptWALsFound.Add(float64(n))
	return n, errors.Join(errs...)
}

// scanListed, when set (tests), runs in ScanKeptWALs once it has read
// the directories, before it notes what it found.
var scanListed func()

// keptWALsUnder returns the shard files under the data directory dir whose
// WAL holds something (ScanKeptWALs).
func keptWALsUnder(ctx context.Context, dir string) ([]string, error) {
	var errs []error
	read := func(d string) []os.DirEntry {
		es, err := os.ReadDir(d)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("find kept WALs: %w", err))
		}
		return es // what it read before an error
	}
	root := filepath.Join(dir, "shards")
	var found []string
	for _, a := range fanOut(read(root)) {
		for _, b := range fanOut(read(filepath.Join(root, a))) {
			if err := ctx.Err(); err != nil {
				return found, errors.Join(append(errs, err)...)
			}
			leaf := filepath.Join(root, a, b)
			found = append(found, shardsWithWAL(leaf, a+b, read(leaf))...)
		}
	}
	return found, errors.Join(errs...)
}

// fanOut returns the names of the entries that are directories of Path's
// fan-out (two characters), symbolic links excluded.
func fanOut(es []os.DirEntry) []string {
	var names []string
	for _, e := range es {
		if e.IsDir() && len(e.Name()) == 2 {
			names = append(names, e.Name())
		}
	}
	return names
}

// shardsWithWAL returns the shard files among the entries of the
// directory dir, the fan-out directory of the ids that start with prefix,
// whose -wal is not empty.
func shardsWithWAL(dir, prefix string, es []os.DirEntry) []string {
	regular := make(map[string]bool, len(es))
	for _, e := range es {
		regular[e.Name()] = e.Type().IsRegular()
	}
	var paths []string
	for _, e := range es {
		id, ok := strings.CutSuffix(e.Name(), ".db-wal")
		if !ok || !regular[e.Name()] || !regular[id+".db"] || !engine.ValidTenantID(id) || id[:len(prefix)] != prefix {
			continue
		}
		if fi, err := e.Info(); err != nil || fi.Size() == 0 {
			continue // gone meanwhile, or empty: nothing to checkpoint
		}
		paths = append(paths, filepath.Join(dir, id+".db"))
	}
	return paths
}

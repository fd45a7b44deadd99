package sqlite

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/ncruces/go-sqlite3"
)

// A WAL a writer left at close (keepsWAL) is checkpointed later, once its
// shard has stayed closed for SweepIdle, so that a tenant that is not
// coming back does not hold its WAL's disk (up to keptWALLimit) for good.
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
// again. The list is the process's: WALs kept before a restart stay until
// their tenant's next visit ends.

// SweepIdle is how long a shard stays closed before SweepKeptWALs, as the
// server runs it every minute, checkpoints the WAL it left.
const SweepIdle = 5 * time.Minute

var keptWALs = struct {
	mu sync.Mutex
	at map[string]time.Time // shard path → when its writer closed leaving a WAL
}{at: map[string]time.Time{}}

func noteKeptWAL(path string) {
	keptWALs.mu.Lock()
	keptWALs.at[path] = time.Now()
	keptWALs.mu.Unlock()
}

func forgetKeptWAL(path string) {
	keptWALs.mu.Lock()
	delete(keptWALs.at, path)
	keptWALs.mu.Unlock()
}

// SweepKeptWALs checkpoints the WALs writers left at close at least idle
// ago, of shards not opened since, and returns how many it emptied. Safe to
// run beside the shards' use.
func SweepKeptWALs(ctx context.Context, idle time.Duration) int {
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
	n := 0
	for _, p := range due {
		if ctx.Err() != nil {
			break // the server stops: what is left stays kept, as after a restart
		}
		err := checkpointClosed(p)
		walSweeps.WithLabelValues(sweepOutcome(err)).Inc()
		switch {
		case err == nil:
			n++
		case errors.Is(err, errReplaced):
		default:
			if _, serr := os.Lstat(p); serr == nil {
				// Busy (a reader, or the shard open again) or a passing
				// error: tried again at the next sweep, unless the
				// shard's own close noted it meanwhile.
				keptWALs.mu.Lock()
				if _, ok := keptWALs.at[p]; !ok {
					keptWALs.at[p] = now.Add(-idle)
				}
				keptWALs.mu.Unlock()
			}
		}
	}
	return n
}

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

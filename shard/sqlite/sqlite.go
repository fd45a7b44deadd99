// Package sqlite is the embedded backend: one tenant is one SQLite file,
// opened through the driver's direct API (github.com/ncruces/go-sqlite3).
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
	"syscall"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
)

// Dialect names this backend's migrations folder.
const Dialect = migrations.DialectSQLite

// Options are the SQLite settings of every shard.
type Options struct {
	// Synchronous is FULL (default: an acknowledged write survives power
	// loss) or NORMAL (survives a process crash; a power loss may lose the
	// last commits).
	Synchronous string
	// BusyTimeout bounds the wait for the database lock (default 3 s).
	BusyTimeout time.Duration
	// WriterCacheKiB and ReaderCacheKiB set cache_size per connection
	// (defaults 2000 and 500): the driver's default lets every connection grow
	// to ~2.5 MB.
	WriterCacheKiB, ReaderCacheKiB int
	// MustExist refuses to create a missing file: the engine opens only
	// shards that approval created, so a deleted tenant is never recreated.
	MustExist bool
	// InlineSync makes Synchronous FULL sync inside each commit on the
	// writer goroutine, as before pipelined durability. By default FULL
	// commits without a sync of the WAL (through walVFS, walvfs.go) and a
	// separate goroutine fdatasyncs the WAL while the writer commits the
	// next batch; a batch is answered only after a sync that began after
	// its commit returned (shard.Syncer). Either way an acknowledged write
	// survives power loss.
	InlineSync bool
	// ReuseConnections runs a shard's writer on a connection kept from a
	// shard closed before, with the file attached to it (hosts.go): a cold
	// tenant's visit then costs about 40 % less CPU. The engine's tenants
	// use it; scratch files (export, import) do not, and a file that is new
	// or not at the current schema is opened on a connection of its own.
	ReuseConnections bool
	// WALLimit bounds a shard's WAL (default DefaultWALLimit; negative:
	// none). SQLite's automatic checkpoint is PASSIVE: with readers that
	// never pause it cannot restart the WAL, which then grows with every
	// write. Past the limit the writer runs a TRUNCATE checkpoint after a
	// commit, waiting up to walCheckpointWait for the readers.
	WALLimit int64
	// KeptWALLimit is the largest WAL a writer on a reused connection
	// leaves in place at close instead of checkpointing it (default
	// DefaultKeptWALLimit; negative: none, every close checkpoints). The
	// disk it costs is up to the limit for each shard closed less than
	// SweepIdle ago (keepsWAL, sweep.go); whatever the limit, a file once
	// opened on a reused connection keeps its 32 KiB -shm and a -wal,
	// emptied, beside it.
	KeptWALLimit int64
}

// DefaultWALLimit is a shard's WAL bound by default.
const DefaultWALLimit = 16 << 20

// DefaultKeptWALLimit is the largest WAL a closed shard keeps by default.
// In the tenants workload 16 KiB gave nothing, 64 KiB about half the gain
// of 256 KiB, and 1 MiB no more than 256 KiB (docs/benchmarks.md, ninth
// and tenth parts).
const DefaultKeptWALLimit = 256 << 10

// walCheckpointWait bounds the writer's wait for readers in a bounding
// checkpoint; a checkpoint that could not finish is tried again later.
const walCheckpointWait = 100 * time.Millisecond

func (o Options) withDefaults() (Options, error) {
	o.Synchronous = strings.ToUpper(o.Synchronous)
	switch o.Synchronous {
	case "":
		o.Synchronous = "FULL"
	case "FULL", "NORMAL":
	default:
		return o, engine.Invalidf("synchronous must be FULL or NORMAL, not %q", o.Synchronous)
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 3 * time.Second
	}
	if o.WriterCacheKiB <= 0 {
		o.WriterCacheKiB = 2000
	}
	if o.ReaderCacheKiB <= 0 {
		o.ReaderCacheKiB = 500
	}
	if o.KeptWALLimit == 0 {
		o.KeptWALLimit = DefaultKeptWALLimit
	}
	if o.WALLimit == 0 {
		o.WALLimit = DefaultWALLimit
	}
	return o, nil
}

// Path returns the shard file of a tenant under dataDir, fanned out in two
// levels of sub-folders by the id's first characters. Only a valid tenant id
// (never a slug or other user input) becomes part of the path.
func Path(dataDir, tenantID string) (string, error) {
	if !engine.ValidTenantID(tenantID) {
		return "", engine.Invalidf("invalid tenant id")
	}
	return filepath.Join(dataDir, "shards", tenantID[0:2], tenantID[2:4], tenantID+".db"), nil
}

// Conns opens the connections of one shard file. It implements shard.Conns.
type Conns struct {
	path string
	opts Options
}

var _ shard.Conns = (*Conns)(nil)

// NewConns returns the connection opener of the shard file at path.
func NewConns(path string, opts Options) (*Conns, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Conns{path: path, opts: o}, nil
}

// Open opens (creating if needed) the shard at path with its schema brought
// up to date, and starts its writer.
func Open(ctx context.Context, path string, opts Options, sopts shard.Options) (*shard.Shard, error) {
	c, err := NewConns(path, opts)
	if err != nil {
		return nil, err
	}
	if !c.opts.MustExist {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
		}
	}
	return shard.Open(ctx, c, sopts)
}

// Remove deletes a closed shard's file and its -wal and -shm companions,
// the WAL first: SQLite does not tie a WAL to its database, and one left
// without its file (a removal cut short) would be replayed onto a new file
// at the path (see also removeOrphans).
func Remove(path string) error {
	forgetKeptWAL(path)
	return removeFiles(path+"-wal", path+"-shm", path)
}

// removeOrphans deletes a -wal and -shm at path whose database file is
// missing: left by a removal cut short (before Remove deleted the WAL
// first), they belong to no file, and the next file made at path would
// replay them.
func removeOrphans(path string) error {
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return removeFiles(path+"-wal", path+"-shm")
}

// removeFiles deletes the files in order; a missing one is no error.
func removeFiles(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Conns) pragmas(cacheKiB int, writer bool) string {
	p := fmt.Sprintf("PRAGMA busy_timeout=%d; PRAGMA cache_size=-%d;", c.opts.BusyTimeout.Milliseconds(), cacheKiB)
	if writer {
		// The connection's sync settings come before the WAL is opened:
		// a close after a failed pragma checkpoints.
		p += " " + c.connSyncPragmas() + " PRAGMA journal_mode=wal; " + c.syncPragmas("main") + " PRAGMA foreign_keys=on;"
	}
	return p
}

// pipelined reports whether the writer syncs outside its commits.
func (c *Conns) pipelined() bool { return c.opts.Synchronous == "FULL" && !c.opts.InlineSync }

// syncPragmas are the writer's durability setting for the schema: a
// pipelined writer commits with synchronous=FULL through walVFS, whose
// commit syncs only write the gathered frames (a Syncer makes them durable
// after the fact).
func (c *Conns) syncPragmas(schema string) string {
	if c.pipelined() {
		return "PRAGMA " + schema + ".synchronous=FULL;"
	}
	return "PRAGMA " + schema + ".synchronous=" + c.opts.Synchronous + ";"
}

// connSyncPragmas are the connection-wide settings walVFS relies on
// (walvfs.go), set before a writer's file is opened or attached (ATTACH
// gives the new file the connection's flags): checkpoint_fullfsync marks
// the syncs walVFS must make real, and cache_spill=0 keeps a transaction's
// frames from being written before its commit.
func (c *Conns) connSyncPragmas() string {
	if c.pipelined() {
		return "PRAGMA checkpoint_fullfsync=1; PRAGMA cache_spill=0;"
	}
	return "PRAGMA checkpoint_fullfsync=0; PRAGMA cache_spill=1;"
}

// writerURI is the URI a writer opens (or attaches) the shard by: through
// walVFS when the writer is pipelined. mode is rw or rwc.
func (c *Conns) writerURI(mode string) string {
	u := fileURI(c.path, mode)
	if c.pipelined() {
		u += "&vfs=" + walVFSName
	}
	return u
}

// OpenWriter opens the write connection and migrates the schema.
func (c *Conns) OpenWriter(ctx context.Context) (shard.WriteConn, error) {
	forgetKeptWAL(c.path) // open again: its own close decides (sweep.go)
	flags := sqlite3.OPEN_READWRITE | sqlite3.OPEN_NOFOLLOW | sqlite3.OPEN_URI
	mode := "rwc"
	if c.opts.MustExist {
		mode = "rw"
	} else {
		flags |= sqlite3.OPEN_CREATE
	}
	if c.opts.ReuseConnections {
		w, err := c.attachWriter(ctx)
		if err != nil {
			return nil, err
		}
		if w != nil {
			if c.pipelined() {
				w.pipelined = true
				return &syncWriteConn{w}, nil
			}
			return w, nil
		}
	}
	db, err := sqlite3.OpenFlags(c.writerURI(mode), flags)
	if err != nil {
		return nil, translate(err)
	}
	writerConns.WithLabelValues("own").Inc()
	if err := db.Exec(c.pragmas(c.opts.WriterCacheKiB, true)); err != nil {
		_ = db.Close()
		return nil, translate(err)
	}
	w := &writeConn{querier: newQuerier(db), schema: "main", walPath: c.path + "-wal", walLimit: c.opts.WALLimit, busy: c.opts.BusyTimeout}
	applied, err := migrations.Up(ctx, w, Dialect)
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	if c.pipelined() {
		// The migrations committed without a sync of their own.
		if applied > 0 {
			if err := w.Sync(); err != nil {
				_ = w.Close()
				return nil, err
			}
		}
		w.pipelined = true
		return &syncWriteConn{w}, nil
	}
	return w, nil
}

// syncWriteConn is a writer with pipelined durability: it commits with
// walVFS, whose commit syncs only write the WAL (walvfs.go), and implements
// shard.Syncer.
type syncWriteConn struct{ *writeConn }

var _ shard.Syncer = (*syncWriteConn)(nil)

// Sync makes every commit so far durable: an fdatasync of the WAL through a
// descriptor of its own, so that it can run while the writer goroutine
// uses the connection. SQLite never unlinks the WAL while the writer's
// connection is open (only the last connection to close does), and its
// TRUNCATE checkpoints truncate the same file, so the descriptor stays the
// WAL's.
func (w *writeConn) Sync() error {
	w.walMu.Lock()
	defer w.walMu.Unlock()
	if syncHook != nil {
		if err := syncHook(); err != nil {
			w.syncFailed = true // as a failed fdatasync below
			return err
		}
	}
	if w.closed {
		// Close checkpointed (or synced) everything this connection
		// committed; its WAL may be gone.
		return nil
	}
	upTo := w.committed.Load() // what this sync covers: commits that returned before it began
	if w.walFile == nil {
		f, err := os.OpenFile(w.walPath, os.O_RDWR|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("open WAL to sync: %w", err)
		}
		// The WAL may be new since the shard was opened: its directory
		// entry must be durable too, once.
		if err := syncDir(filepath.Dir(w.walPath)); err != nil {
			_ = f.Close()
			return err
		}
		w.walFile = f
	}
	if err := fdatasync(w.walFile); err != nil {
		// Linux reports a writeback error once: a later fdatasync of the
		// same file may succeed without the lost pages. Close must not
		// trust it (keepsWAL).
		w.syncFailed = true
		return err
	}
	w.synced = upTo
	return nil
}

// keepsWAL reports whether Close leaves the WAL as it is, and its size: on a reused
// connection (hosts.go), when the WAL is at most Options.KeptWALLimit. The
// connection never checkpoints on its own at close
// (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE), so the -wal and -shm files stay,
// emptied or not, for the file's next open.
//
// A cold tenant's visit then neither checkpoints (a write of the pages
// and two fdatasyncs, the database's and the WAL's) nor deletes and
// creates the two files again. Its next open recovers the WAL index from
// the frames left, which is cheap for a WAL this small, and its first
// commit appends to them instead of restarting the WAL, which SQLite
// follows with a sync of the WAL's header (a real fdatasync inside the
// commit, walvfs.go). With FULL nothing of durability changes: the frames
// left were synced (syncCommits), and any connection to the file, in this
// process or another, replays them as it would after a crash. After a
// failed sync the WAL is checkpointed instead: the checkpoint writes the
// frames from the WAL into the database and syncs it, where a second
// fdatasync of the WAL could report success for pages the first lost.
// With NORMAL a closed shard's last commits are synced by nobody, as that
// setting promises (a power loss may lose them).
//
// A WAL can now outlive its writer's close: code that deletes or replaces
// a shard file handles its -wal and -shm first (Remove, removeOrphans,
// transfer's node moves).
func (w *writeConn) keepsWAL() (keep bool, size int64) {
	w.walMu.Lock()
	failed := w.syncFailed
	w.walMu.Unlock()
	if !w.pooled || failed {
		return false, 0
	}
	fi, err := os.Stat(w.walPath)
	if err != nil {
		return errors.Is(err, os.ErrNotExist), 0 // nothing to checkpoint
	}
	return fi.Size() <= w.keptLimit, fi.Size()
}

// syncCommits makes the writer's commits durable when some were not
// synced yet (a pipelined writer's flusher syncs them before it answers;
// this is for commits whose batches failed after committing). A writer
// that syncs inside its commits, or that promises no sync, needs none.
func (w *writeConn) syncCommits() error {
	if !w.pipelined {
		return nil
	}
	w.walMu.Lock()
	pending := w.synced != w.committed.Load()
	w.walMu.Unlock()
	if !pending {
		return nil
	}
	return w.Sync()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open shard directory to sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync shard directory: %w", err)
	}
	return nil
}

// syncHook, when set (tests), runs at the start of every Sync; an error
// fails the Sync as a failed fdatasync would.
var syncHook func() error

// OpenReader opens a read-only connection.
func (c *Conns) OpenReader(ctx context.Context) (shard.ReadConn, error) {
	db, err := sqlite3.OpenFlags(c.path, sqlite3.OPEN_READONLY|sqlite3.OPEN_NOFOLLOW)
	if err != nil {
		return nil, translate(err)
	}
	if err := db.Exec(c.pragmas(c.opts.ReaderCacheKiB, false)); err != nil {
		_ = db.Close()
		return nil, translate(err)
	}
	return &readConn{querier: newQuerier(db)}, nil
}

type readConn struct{ *querier }

func (r *readConn) Close() error {
	r.querier.close()
	return r.db.Close()
}

// writeConn is the writer's connection: batch transaction and savepoints.
type writeConn struct {
	*querier
	schema   string // the shard's schema on the connection: main, or shardSchema when pooled
	pooled   bool   // the connection is kept for another shard at Close (hosts.go)
	walPath  string
	walLimit int64
	// keptLimit: Options.KeptWALLimit (keepsWAL).
	keptLimit int64
	busy      time.Duration
	// pipelined: a Syncer makes the commits durable (syncWriteConn).
	pipelined bool
	// committed counts commits (boundWAL looks every 8th); synced, under
	// walMu, is what the last successful Sync covered.
	committed atomic.Int64
	walMu     sync.Mutex // guards walFile: Sync runs on the flusher goroutine
	walFile   *os.File   // the WAL, opened by the first Sync
	synced    int64
	// syncFailed, under walMu: a Sync failed; Close then checkpoints.
	syncFailed bool
	closed     bool // under walMu: Close ran
	// walRetrySize: after a bounding checkpoint that readers kept busy,
	// the next is tried once the WAL has grown by another limit: a reader
	// holding its snapshot for long (an export) must not make every few
	// commits wait the full walCheckpointWait, and a short busy spell must
	// not let the WAL run far past the limit.
	walRetrySize int64
}

var _ shard.ReadingWriter = (*writeConn)(nil)

// ServesReads implements shard.ReadingWriter.
func (w *writeConn) ServesReads() {}

func (w *writeConn) Begin() error {
	_, err := w.Exec("BEGIN IMMEDIATE")
	return err
}
func (w *writeConn) Savepoint() error {
	_, err := w.Exec("SAVEPOINT op")
	return err
}
func (w *writeConn) ReleaseSavepoint() error {
	_, err := w.Exec("RELEASE op")
	return err
}
func (w *writeConn) RollbackSavepoint() error {
	if _, err := w.Exec("ROLLBACK TO op"); err != nil {
		return err
	}
	_, err := w.Exec("RELEASE op")
	return err
}
func (w *writeConn) Commit() error {
	if _, err := w.Exec("COMMIT"); err != nil {
		return err
	}
	w.committed.Add(1)
	w.boundWAL()
	return nil
}

// boundWAL checks the WAL's size every few commits and, past the limit,
// restarts it with a TRUNCATE checkpoint that waits briefly for readers.
// A checkpoint that could not finish (readers kept the WAL busy) is tried
// again once the WAL has grown by another limit: the commit has already
// succeeded either way.
func (w *writeConn) boundWAL() {
	if w.walLimit < 0 || w.committed.Load()%8 != 0 {
		return
	}
	fi, err := os.Stat(w.walPath)
	if err != nil || fi.Size() < max(w.walLimit, w.walRetrySize) {
		return
	}
	_ = w.db.BusyTimeout(walCheckpointWait)
	_, _, err = w.db.WALCheckpoint(w.schema, sqlite3.CHECKPOINT_TRUNCATE)
	_ = w.db.BusyTimeout(w.busy)
	walCheckpoints.WithLabelValues(checkpointOutcome(err)).Inc()
	if err == nil {
		w.walRetrySize = 0
		return
	}
	w.walRetrySize = fi.Size() + w.walLimit
}

func checkpointOutcome(err error) string {
	if err == nil {
		return "ok"
	}
	return "busy"
}
func (w *writeConn) Rollback() error {
	if w.db == nil || w.db.GetAutocommit() {
		return nil
	}
	_, err := w.Exec("ROLLBACK")
	return err
}

// Close checkpoints the WAL into the database file and closes the
// connection; as the last connection to the file it also removes the -wal
// and -shm files. A reused connection's file is detached and the connection
// kept; its WAL is checkpointed only past Options.KeptWALLimit, and the -wal and
// -shm files stay (keepsWAL).
func (w *writeConn) Close() error {
	if w.db == nil {
		return nil // closed before
	}
	_ = w.Rollback()
	w.querier.close()
	var cerr error
	path := strings.TrimSuffix(w.walPath, "-wal") // the sweep's key (sweep.go)
	keep, size := w.keepsWAL()
	if keep && w.syncCommits() != nil {
		keep = false // a failed sync: the checkpoint below writes the frames into the database and syncs it
	}
	if keep {
		if size > 0 {
			noteKeptWAL(path)
		}
	} else if _, _, cerr = w.db.WALCheckpoint(w.schema, sqlite3.CHECKPOINT_TRUNCATE); cerr != nil {
		// Readers kept the checkpoint from finishing: what the writer
		// committed without a sync must still be durable at close.
		if err := w.Sync(); err != nil && !errors.Is(err, os.ErrNotExist) {
			cerr = err
		}
		if w.pooled && errors.Is(cerr, sqlite3.BUSY) {
			// The WAL stays past the limit: the sweep tries again once
			// the shard has stayed closed (sweep.go).
			noteKeptWAL(path)
		}
	}
	w.walMu.Lock()
	if w.walFile != nil {
		_ = w.walFile.Close()
		w.walFile = nil
	}
	w.closed = true
	w.walMu.Unlock()
	if w.pooled {
		if err := w.detach(); err != nil {
			return err
		}
	} else {
		db := w.db
		w.querier.db = nil
		if err := db.Close(); err != nil {
			return translate(err)
		}
	}
	if cerr != nil && !errors.Is(cerr, sqlite3.BUSY) {
		return translate(cerr)
	}
	return nil
}

// Discard implements shard.Discarder: after a panic the connection is
// suspect, so a reused one is closed rather than kept.
func (w *writeConn) Discard() error {
	w.pooled = false
	return w.Close()
}

// Version implements migrations.Target with PRAGMA user_version.
func (w *writeConn) Version(ctx context.Context) (int, error) {
	var v int
	err := w.QueryRow("PRAGMA " + w.schema + ".user_version").Scan(&v)
	return v, err
}

// ApplyAll implements migrations.Batcher: every migration newer than the
// file's version, and the new version, in one transaction (a new shard is
// made with one commit, not one per migration).
func (w *writeConn) ApplyAll(ctx context.Context, ms []migrations.Migration) (err error) {
	if err := w.Begin(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = w.Rollback()
		}
	}()
	var cur int
	if err := w.QueryRow("PRAGMA user_version").Scan(&cur); err != nil {
		return err
	}
	last := cur
	for _, m := range ms {
		if m.Version <= cur {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := w.db.Exec(m.SQL); err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, translate(err))
		}
		last = m.Version
	}
	if last != cur {
		if err := w.db.Exec(fmt.Sprintf("PRAGMA user_version=%d", last)); err != nil {
			return translate(err)
		}
	}
	return w.Commit()
}

// Apply implements migrations.Target: the script and the new version commit
// together (ApplyAll of one; a version already reached, by another process
// migrating the same file, is skipped).
func (w *writeConn) Apply(ctx context.Context, m migrations.Migration) error {
	return w.ApplyAll(ctx, []migrations.Migration{m})
}

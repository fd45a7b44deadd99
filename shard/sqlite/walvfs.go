package sqlite

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ncruces/go-sqlite3/vfs"
)

// A pipelined writer's WAL is written through walVFS, which gathers the
// frames of a commit and writes them with one system call.
//
// SQLite writes a WAL frame as two writes, its 24-byte header and then its
// page, and the driver's VFS makes each a pwrite: a refresh's commit made
// about eight, which cost 9 % of the server's CPU under refresh (a 4-frame
// commit as eight pwrites took 17.8 µs here, as one 3.1 µs). walVFS keeps a
// WAL file's writes in memory while they extend one another and hands them
// to the file at the next sync, read, size query, truncation or close, or
// when they would pass walBufferLimit.
//
// When the writes reach the file matters to the other connections, which
// read the WAL through descriptors of their own: a commit's frames must be
// there before the commit is published in the WAL index. A writer with
// pipelined durability therefore commits with synchronous=FULL, so that
// SQLite syncs the WAL at every commit before it publishes it, and walVFS
// turns that sync into the write of the gathered frames and nothing more:
// the shard's flusher (writeConn.Sync) makes them durable after the fact,
// as it did when the writer committed with synchronous=NORMAL. SQLite tells
// a commit's sync (SYNC_NORMAL) from a checkpoint's, and from the sync of a
// restarted WAL's header, by the pragma checkpoint_fullfsync, which makes
// the latter SYNC_FULL: those stay real fdatasyncs, as the checkpoint
// overwrites the database with the WAL's content right after. A writer
// that opens files through walVFS must therefore set checkpoint_fullfsync
// (Conns.connSyncPragmas); a sync with no frames gathered is real whatever
// its flags, too. TestWALVFS_Syncs checks which syncs reach the disk.
//
// The frames gathered must never outlive the write transaction that wrote
// them: after a rollback another connection may write its own frames at the
// same offsets, and a late write of the gathered ones would overwrite them.
// SQLite writes frames before the commit only when a transaction's pages
// spill out of the page cache; the writer turns that off (cache_spill=0,
// Conns.connSyncPragmas), so frames are written only by a commit, whose sync
// comes before it releases the write lock, and every failure in between
// fails a write or that sync, which forget the frames. A writer's
// transactions then hold their pages in memory until they commit: the
// engine's batches are bounded (--max-batch). walVFS also relies on the
// database file's powersafe overwrite (the driver's default; walVFS
// refuses a URI with psow=0): without it SQLite pads a commit and syncs in
// the middle of a frame.
//
// Only the WAL is wrapped; the database file and its shared memory are the
// driver's own.
const walVFSName = "keyshard-wal"

// walBufferLimit bounds what a WAL file keeps in memory between two
// writes to the file (a batch of a few thousand writes can pass it).
const walBufferLimit = 1 << 20

// walBufs holds the buffers WAL files gather in, between two commits: a
// file holds one only from its first write to the next flush, so a thousand
// open shards do not each keep one, and a commit does not grow a new one
// (growing them cost 5 % of the server's CPU under refresh).
var walBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

func init() {
	vfs.Register(walVFSName, walVFS{vfs.Find("os").(vfs.VFSFilename)})
}

type walVFS struct{ vfs.VFSFilename }

func (v walVFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	if flags&vfs.OPEN_MAIN_DB != 0 && name != nil && !psowOn(name.URIParameter("psow")) {
		// Without powersafe overwrite SQLite pads a commit and syncs in
		// the middle of a frame, after which the commit's tail would still
		// be gathered when SQLite publishes it.
		return nil, flags, errors.New("keyshard-wal: psow must stay on")
	}
	f, out, err := v.VFSFilename.OpenFilename(name, flags)
	if err != nil || flags&vfs.OPEN_WAL == 0 {
		return f, out, err
	}
	w := &walFile{File: f}
	if walOpened != nil {
		walOpened(name.String(), w)
	}
	return w, out, nil
}

// psowOn reports whether a psow URI parameter leaves powersafe overwrite
// on: absent, or a value the driver reads as true (a digit 1–9 first, or
// true, yes, on). Anything else is refused, whether the driver would read it
// as false (any value starting with 0, false, no, off) or ignore it.
func psowOn(v string) bool {
	if v == "" {
		return true
	}
	if '1' <= v[0] && v[0] <= '9' {
		return true
	}
	switch strings.ToLower(v) {
	case "true", "yes", "on":
		return true
	}
	return false
}

// walOpened, when set (tests), is called with every WAL file walVFS opens.
var walOpened func(path string, f *walFile)

// walFile is a WAL file whose contiguous writes are gathered in buf, which
// belongs at offset off of the file.
type walFile struct {
	vfs.File
	buf []byte
	off int64

	// writes and syncs count what reaches the file (tests read them).
	writes, syncs atomic.Int64
}

func (f *walFile) WriteAt(p []byte, off int64) (int, error) {
	end := f.off + int64(len(f.buf))
	switch {
	case len(f.buf) > 0 && off == end && len(f.buf)+len(p) <= walBufferLimit:
		f.buf = append(f.buf, p...)
	case len(f.buf) > 0 && off >= f.off && off+int64(len(p)) <= end:
		// A frame of the transaction written again (SQLite rewrites a
		// page's frame when the page changes twice in one transaction).
		copy(f.buf[off-f.off:], p)
	default:
		if err := f.flush(); err != nil {
			return 0, err
		}
		if len(p) > walBufferLimit {
			f.writes.Add(1)
			return f.File.WriteAt(p, off)
		}
		if f.buf == nil {
			f.buf = *walBufs.Get().(*[]byte)
		}
		f.buf = append(f.buf[:0], p...)
		f.off = off
	}
	return len(p), nil
}

// flush writes the gathered frames to the file. It forgets them even when
// the write fails: SQLite then fails the transaction, which it writes again
// from its own pages.
func (f *walFile) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	f.writes.Add(1)
	_, err := f.File.WriteAt(f.buf, f.off)
	b := f.buf[:0]
	f.buf = nil
	walBufs.Put(&b) // never longer than walBufferLimit
	return err
}

func (f *walFile) Sync(flags vfs.SyncFlag) error {
	// A commit's sync has its frames gathered (at least the commit frame);
	// a sync with nothing gathered is never a commit's, and stays real
	// whatever its flags.
	commit := len(f.buf) > 0 && flags&(vfs.SYNC_NORMAL|vfs.SYNC_FULL) == vfs.SYNC_NORMAL
	if err := f.flush(); err != nil {
		return err
	}
	if commit {
		return nil // the shard's flusher syncs it
	}
	f.syncs.Add(1)
	return f.File.Sync(flags)
}

func (f *walFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *walFile) Size() (int64, error) {
	if err := f.flush(); err != nil {
		return 0, err
	}
	return f.File.Size()
}

func (f *walFile) Truncate(size int64) error {
	if err := f.flush(); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func (f *walFile) Close() error {
	err := f.flush()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}

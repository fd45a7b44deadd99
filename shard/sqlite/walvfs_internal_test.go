package sqlite

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"
)

// memFile is a vfs.File in memory that counts what reaches it.
type memFile struct {
	data          []byte
	writes, syncs int
}

func (m *memFile) grow(n int64) {
	if int64(len(m.data)) < n {
		m.data = append(m.data, make([]byte, n-int64(len(m.data)))...)
	}
}
func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	m.grow(off + int64(len(p)))
	copy(m.data[off:], p)
	return len(p), nil
}
func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memFile) Truncate(size int64) error {
	if size < int64(len(m.data)) {
		m.data = m.data[:size]
	} else {
		m.grow(size)
	}
	return nil
}
func (m *memFile) Sync(vfs.SyncFlag) error                         { m.syncs++; return nil }
func (m *memFile) Size() (int64, error)                            { return int64(len(m.data)), nil }
func (m *memFile) Close() error                                    { return nil }
func (m *memFile) Lock(vfs.LockLevel) error                        { return nil }
func (m *memFile) Unlock(vfs.LockLevel) error                      { return nil }
func (m *memFile) CheckReservedLock() (bool, error)                { return false, nil }
func (m *memFile) SectorSize() int                                 { return 4096 }
func (m *memFile) DeviceCharacteristics() vfs.DeviceCharacteristic { return 0 }

// walFile, under random writes (runs that extend one another, frames
// written again inside the buffer, writes that overlap its start or end,
// gaps, writes past the limit) and every call that must hand the buffer to
// the file, leaves the file as plain writes would, reads what plain writes
// would have left, and reaches the file once per run of writes.
func TestWALFile_AsPlainWrites(t *testing.T) {
	seed := rand.Uint64()
	if s, err := strconv.ParseUint(os.Getenv("KEYSHARD_WALFILE_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (KEYSHARD_WALFILE_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	// Writes are slices of this at random places: filling each byte by
	// byte took seconds under the race detector.
	noise := make([]byte, 2*walBufferLimit+8192)
	var key [32]byte
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	_, _ = rand.NewChaCha8(key).Read(noise)
	inner, want := &memFile{}, &memFile{}
	f := &walFile{File: inner}
	// Nothing gathered: not a commit's sync, whatever its flags.
	if err := f.Sync(vfs.SYNC_NORMAL); err != nil || inner.syncs != 1 {
		t.Fatalf("a sync with nothing gathered reached the file %d times (%v), want once", inner.syncs, err)
	}
	var end int64 // where the next frame goes
	for i := range 20000 {
		var off int64
		var n int
		switch k := rng.IntN(20); {
		case k < 12: // the next frame's header or page
			off, n = end, []int{24, 4096}[rng.IntN(2)]
			end += int64(n)
		case k < 15 && end > 0: // a frame written again
			off = rng.Int64N(end)
			n = 1 + rng.IntN(int(min(4096, end-off)))
		case k < 17 && end > 0: // across the buffer's start or end, or a gap
			off = max(0, end-2048+rng.Int64N(8192))
			n = 1 + rng.IntN(8192)
			end = max(end, off+int64(n))
		case k < 18 && rng.IntN(20) == 0: // larger than the limit
			off, n = end, walBufferLimit+1+rng.IntN(100)
			end += int64(n)
		case k == 18: // a commit's sync, or one of the calls that flush
			switch rng.IntN(5) {
			case 0:
				if err := f.Sync(vfs.SYNC_NORMAL); err != nil {
					t.Fatal(err)
				}
			case 1:
				if err := f.Sync(vfs.SYNC_FULL); err != nil {
					t.Fatal(err)
				}
			case 2:
				if end > 0 {
					off := rng.Int64N(end)
					got, wantb := make([]byte, 100), make([]byte, 100)
					gn, _ := f.ReadAt(got, off)
					wn, _ := want.ReadAt(wantb, off)
					if gn != wn || !bytes.Equal(got[:gn], wantb[:wn]) {
						t.Fatalf("op %d: read at %d differs from plain writes", i, off)
					}
				}
			case 3:
				size, _ := f.Size()
				if size != int64(len(want.data)) {
					t.Fatalf("op %d: size %d, plain writes %d", i, size, len(want.data))
				}
			case 4:
				if end > 2<<20 { // a restarted WAL
					end = 0
					_ = f.Truncate(0)
					_ = want.Truncate(0)
				}
			}
			continue
		default:
			continue
		}
		at := rng.IntN(len(noise) - n)
		p := noise[at : at+n : at+n]
		if _, err := f.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		_, _ = want.WriteAt(p, off)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inner.data, want.data) {
		t.Fatalf("after close the file (%d bytes) differs from plain writes (%d bytes)", len(inner.data), len(want.data))
	}
	if inner.writes >= want.writes/2 {
		t.Errorf("%d writes reached the file for %d plain ones: nothing gathered", inner.writes, want.writes)
	}
	if int64(inner.syncs) != f.syncs.Load() || inner.syncs == 0 {
		t.Errorf("%d syncs reached the file, %d counted (SYNC_FULL ones only)", inner.syncs, f.syncs.Load())
	}
}

// A writer whose transaction outgrows its page cache and rolls back leaves
// nothing gathered behind: another connection then commits at the offsets
// that transaction had used, and the first writer's next read and commit
// must not write anything over them. (Before cache_spill=0 the spilled
// frames stayed gathered and were written over the other connection's, and
// the file read "file is not a database".) On both kinds of writer
// connection.
func TestWALVFS_RollbackLeavesNothing(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "own", true: "reused"}[reuse], func(t *testing.T) {
			ctx := context.Background()
			var files []*walFile
			walOpened = func(_ string, f *walFile) { files = append(files, f) }
			defer func() { walOpened = nil }()
			path := filepath.Join(t.TempDir(), "r.db")
			c, err := NewConns(path, Options{ReuseConnections: reuse})
			if err != nil {
				t.Fatal(err)
			}
			w0, err := c.OpenWriter(ctx) // makes the file, at the current schema
			if err != nil {
				t.Fatal(err)
			}
			if err := w0.Close(); err != nil {
				t.Fatal(err)
			}
			wc, err := c.OpenWriter(ctx)
			if err != nil {
				t.Fatal(err)
			}
			w := wc.(*syncWriteConn).writeConn
			defer w.Close()
			if reuse != w.pooled {
				t.Fatalf("writer on a kept connection: %v, want %v", w.pooled, reuse)
			}
			exec := func(q string, args ...any) {
				t.Helper()
				if _, err := w.Exec(q, args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			// Ten pages of cache: the big transaction below (600 KB, less
			// than a WAL file gathers) outgrows it.
			if err := w.db.Exec("PRAGMA " + w.schema + ".cache_size=10"); err != nil {
				t.Fatal(err)
			}
			exec("BEGIN")
			exec("INSERT INTO settings (key, value) VALUES ('first', 'x')")
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			exec("BEGIN")
			exec("INSERT INTO settings (key, value) SELECT 'big' || value, hex(randomblob(1500)) FROM generate_series(1, 200)")
			if err := w.Rollback(); err != nil {
				t.Fatal(err)
			}
			gathered := 0
			for _, f := range files {
				gathered += len(f.buf)
			}
			if gathered != 0 {
				t.Errorf("%d bytes gathered after the rollback", gathered)
			}

			// Another writer (a fence raised through a connection of its
			// own does this) commits.
			b, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READWRITE)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Exec("PRAGMA busy_timeout=1000; BEGIN IMMEDIATE; INSERT INTO settings (key, value) SELECT 'b' || value, hex(zeroblob(3000)) FROM generate_series(1, 20); COMMIT;"); err != nil {
				t.Fatal(err)
			}
			_ = b.Close()

			// The first writer reads and commits again.
			var n int64
			if err := w.QueryRow("SELECT count(*) FROM settings WHERE key LIKE 'b%'").Scan(&n); err != nil || n != 20 {
				t.Fatalf("the writer sees %d of the other connection's 20 rows (%v)", n, err)
			}
			exec("BEGIN")
			exec("INSERT INTO settings (key, value) VALUES ('after', 'y')")
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}

			r, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for q, want := range map[string]string{
				"PRAGMA integrity_check": "ok",
				"SELECT count(*) FROM settings WHERE key LIKE 'b%' OR key IN ('first', 'after')": "22",
				"SELECT count(*) FROM settings WHERE key LIKE 'big%'":                            "0",
			} {
				st, _, err := r.Prepare(q)
				if err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				got := ""
				if st.Step() {
					got = st.ColumnText(0)
				}
				if err := st.Close(); err != nil || got != want {
					t.Errorf("%s = %q (%v), want %q", q, got, err, want)
				}
			}
		})
	}
}

// walVFS refuses a database without powersafe overwrite, which would
// publish a commit whose tail is still gathered.
func TestWALVFS_RefusesPSOWOff(t *testing.T) {
	c, err := NewConns(filepath.Join(t.TempDir(), "p.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The driver reads any value starting with 0 as false.
	for _, v := range []string{"0", "00", "0x", "OFF", "false", "No", "maybe"} {
		db, err := sqlite3.OpenFlags(c.writerURI("rwc")+"&psow="+v, sqlite3.OPEN_READWRITE|sqlite3.OPEN_CREATE|sqlite3.OPEN_URI)
		if err == nil {
			err = db.Exec("CREATE TABLE t (x)") // the driver may open lazily
			_ = db.Close()
		}
		if err == nil {
			t.Errorf("a database with psow=%s opened through walVFS", v)
		}
	}
	for _, v := range []string{"1", "on", "TRUE"} {
		db, err := sqlite3.OpenFlags(c.writerURI("rwc")+"&psow="+v, sqlite3.OPEN_READWRITE|sqlite3.OPEN_CREATE|sqlite3.OPEN_URI)
		if err != nil {
			t.Fatalf("psow=%s: %v", v, err)
		}
		_ = db.Close()
	}
}

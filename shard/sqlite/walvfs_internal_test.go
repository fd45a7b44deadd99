package sqlite

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

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
	inner, want := &memFile{}, &memFile{}
	f := &walFile{File: inner}
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
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
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

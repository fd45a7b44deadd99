package transfer

import (
	"context"
	"fmt"
	"maps"

	"golang.org/x/sync/errgroup"

	"github.com/keyshard/keyshard/engine"
)

// copier makes a target shard (dst) equal to a source shard (src), first by
// a full copy, then by rounds that copy only what changed. It keeps an index
// of what dst holds, the primary key and hash of every row, so that a round
// reads only the source: every row whose hash differs is updated, every new
// one inserted, every one gone deleted.
type copier struct {
	src        engine.Shard
	srcBackend string
	dst        engine.Shard
	// progress, when set, is told of every batch of source rows read.
	progress func(table string, rows int64)
	// snap runs a function in a snapshot of src (default Snapshot).
	snap func(ctx context.Context, fn func(q engine.Querier) error) error
	// noIndex: a one-off copy into an empty dst, with no index kept (a
	// move verifies otherwise; an export does not need it).
	noIndex bool

	idx map[string]map[string]entry // by table, by primary key
	gen uint32                      // the current round
}

type entry struct {
	h   rowHash
	gen uint32 // the last round whose scan saw the row in the source
}

// roundResult is what one round did.
type roundResult struct {
	Digests map[string]Digest // of the source, as the round read it
	Changes int
}

type tableBatch struct {
	t       *Table
	changes []change
}

// round reads a consistent snapshot of src and writes to dst what differs
// from the index, in foreign-key order (deletions last, children first).
func (c *copier) round(ctx context.Context) (*roundResult, error) {
	if c.idx == nil {
		c.idx = make(map[string]map[string]entry, len(Tables))
		for _, t := range Tables {
			c.idx[t.Name] = make(map[string]entry)
		}
	}
	c.gen++
	gen := c.gen
	res := &roundResult{Digests: make(map[string]Digest, len(Tables))}
	batches := make(chan tableBatch, 4)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // the writer: applies batches in order
		for b := range batches {
			if err := applyChanges(gctx, c.dst, b.t, b.changes); err != nil {
				// Drain so that the reader never blocks on a dead writer.
				for range batches {
				}
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		defer close(batches)
		send := func(b tableBatch) error {
			res.Changes += len(b.changes)
			select {
			case batches <- b:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		var deletes []tableBatch
		snap := c.snap
		if snap == nil {
			snap = func(ctx context.Context, fn func(q engine.Querier) error) error {
				return Snapshot(ctx, c.src, c.srcBackend, fn)
			}
		}
		err := snap(gctx, func(q engine.Querier) error {
			for i := range Tables {
				t := &Tables[i]
				idx := c.idx[t.Name]
				var d digester
				var buf []byte
				var pending []change
				var read int64
				err := scanTable(gctx, q, t, false, func(r Row) error {
					var h rowHash
					h, buf = hashRow(buf, r)
					d.add(h)
					if c.noIndex {
						pending = append(pending, change{'i', r})
					} else {
						k := t.keyOf(r)
						old, ok := idx[k]
						idx[k] = entry{h: h, gen: gen}
						switch {
						case !ok:
							pending = append(pending, change{'i', r})
						case old.h != h:
							pending = append(pending, change{'u', r})
						}
					}
					if read++; read%writeBatchSize == 0 && c.progress != nil {
						c.progress(t.Name, writeBatchSize)
					}
					if len(pending) >= writeBatchSize {
						if err := send(tableBatch{t, pending}); err != nil {
							return err
						}
						pending = nil
					}
					return nil
				})
				if err != nil {
					return err
				}
				if c.progress != nil && read%writeBatchSize != 0 {
					c.progress(t.Name, read%writeBatchSize)
				}
				if len(pending) > 0 {
					if err := send(tableBatch{t, pending}); err != nil {
						return err
					}
				}
				res.Digests[t.Name] = d.digest()
				var gone []change
				for k, e := range idx {
					if e.gen != gen {
						gone = append(gone, change{'d', keyRow(t, k)})
						delete(idx, k)
					}
				}
				if len(gone) > 0 {
					deletes = append(deletes, tableBatch{t, gone})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i := len(deletes) - 1; i >= 0; i-- { // children first
			if err := send(deletes[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		c.idx = nil // the index no longer says what dst holds
		return nil, err
	}
	return res, nil
}

// keyRow decodes a primary key written by keyOf into a row prefix.
func keyRow(t *Table, k string) Row {
	b := []byte(k)
	r := make(Row, 0, t.KeyLen)
	for len(b) > 0 {
		v, n := decodeValue(b)
		r = append(r, v)
		b = b[n:]
	}
	return r
}

// verifyIndex reads every row of dst and checks that it holds exactly what
// the index says, returning dst's digests.
func (c *copier) verifyIndex(ctx context.Context, dstBackend string) (map[string]Digest, error) {
	got, digests, err := indexOf(ctx, c.dst, dstBackend)
	if err != nil {
		return nil, err
	}
	for _, t := range Tables {
		want := c.idx[t.Name]
		have := got[t.Name]
		if len(want) != len(have) {
			return nil, fmt.Errorf("verify %s: copy has %d rows, source %d: %w", t.Name, len(have), len(want), errVerify)
		}
		for k, e := range want {
			if h, ok := have[k]; !ok || h.h != e.h {
				return nil, fmt.Errorf("verify %s: a row differs from the source: %w", t.Name, errVerify)
			}
		}
	}
	return digests, nil
}

// indexOf reads a snapshot of every table of sh.
func indexOf(ctx context.Context, sh engine.Shard, backend string) (map[string]map[string]entry, map[string]Digest, error) {
	idx := make(map[string]map[string]entry, len(Tables))
	digests := make(map[string]Digest, len(Tables))
	err := Snapshot(ctx, sh, backend, func(q engine.Querier) error {
		for i := range Tables {
			t := &Tables[i]
			m := make(map[string]entry)
			d, err := hashTable(ctx, q, t, func(r Row, h rowHash) { m[t.keyOf(r)] = entry{h: h} })
			if err != nil {
				return err
			}
			idx[t.Name] = m
			digests[t.Name] = d
		}
		return nil
	})
	return idx, digests, err
}

// Digests returns the row count and checksum of every table of sh, read
// from one consistent snapshot (without keeping the rows' keys, as a sync's
// index does).
func Digests(ctx context.Context, sh engine.Shard, backend string) (map[string]Digest, error) {
	var d map[string]Digest
	err := Snapshot(ctx, sh, backend, func(q engine.Querier) error {
		var err error
		d, err = digestsOf(ctx, q)
		return err
	})
	return d, err
}

func equalDigests(a, b map[string]Digest) bool { return maps.Equal(a, b) }

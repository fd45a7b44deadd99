package transfer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// MoveOptions say where a tenant goes.
type MoveOptions struct {
	// Backend is the target backend (sqlite, postgres, mysql).
	Backend string
	// Location is the target location on that backend; for SQLite a data
	// directory (empty: the server's data directory).
	Location string
	// Progress, when set, is called as the move advances (from the
	// goroutine running Move).
	Progress func(Progress)
}

// MoveResult reports a finished move.
type MoveResult struct {
	Tenant   *engine.Tenant     `json:"tenant"`
	From     engine.Placement   `json:"from"`
	To       engine.Placement   `json:"to"`
	Tables   map[string]Digest  `json:"tables"`   // verified on the new copy
	Rounds   int                `json:"rounds"`   // the snapshot copy, the catch-up rounds and the fenced one
	Replayed int                `json:"replayed"` // statements written during the copy and replayed
	Fenced   time.Duration      `json:"fenced_ns"`
	Took     time.Duration      `json:"took_ns"`
	Warn     []string           `json:"warnings,omitempty"`
	Steps    map[string]float64 `json:"steps_ms,omitempty"` // time per phase
}

// mover is the optional ability of a pinned shard to capture its writes
// and fence them (shard.Shard has it).
type mover interface {
	Fence(ctx context.Context, wait time.Duration) error
	Unfence()
	Seal() ([]engine.WriteFunc, error)
	StartCapture(ctx context.Context, limit int, atPoint func() error) (*shard.Capture, error)
	StopCapture(c *shard.Capture)
}

// staleEvicter is the optional ability of a shard pool to close a tenant's
// shard only if it serves an older placement (shard.Cache has it).
type staleEvicter interface {
	EvictStale(ctx context.Context, tenantID string, epoch int64) error
}

// catchUpEnough is the number of statements below which another unfenced
// round of catching up is not worth it.
const catchUpEnough = 100

// DefaultCaptureLimit bounds the statements a move holds between two
// rounds of catching up; past it the move fails and the tenant stays.
const DefaultCaptureLimit = 1_000_000

func (s *Service) captureLimit() int {
	if s.CaptureLimit > 0 {
		return s.CaptureLimit
	}
	return DefaultCaptureLimit
}

// Move moves an active tenant to another backend or data directory while
// it is served. It copies a snapshot unfenced, then copies what changed
// during the copy (a few rounds, each shorter), verifies the copy by reading
// it whole, and only then fences the tenant's writes for the final round:
// a diff of the source against the copy's index that writes only what
// changed, read back to verify it. It then flips the placement (epoch+1),
// seals the old shard (writes that waited answer engine.ErrMoving) and
// deletes the old copy once the old shard is closed. A failure before the
// flip leaves the tenant where it was, served as before, and removes the
// partial copy.
func (s *Service) Move(ctx context.Context, slugOrID string, o MoveOptions) (res *MoveResult, err error) {
	start := time.Now()
	t, err := s.Engine.Get(ctx, slugOrID)
	if err != nil {
		return nil, err
	}
	if t.Status != engine.StatusActive {
		return nil, fmt.Errorf("only an active tenant can be moved; %s is %s: %w", t.Slug, t.Status, engine.ErrWrongStatus)
	}
	if err := engine.ValidateBackend(o.Backend); err != nil {
		return nil, err
	}
	st, err := s.storage(o.Backend)
	if err != nil {
		return nil, err
	}
	loc, err := s.normalizeLocation(o.Backend, o.Location)
	if err != nil {
		return nil, err
	}
	from := t.Placement()
	if from.Backend == o.Backend && from.Location == loc {
		return nil, engine.Invalidf("tenant %s is already on %s at %q", t.Slug, o.Backend, loc)
	}
	to := engine.Placement{TenantID: t.ID, Backend: o.Backend, Location: loc, Epoch: from.Epoch + 1}
	prog := &Progress{Tenant: t.Slug, Phase: "copy"}
	if err := s.begin(t.ID, prog); err != nil {
		return nil, err
	}
	defer s.end(t.ID)
	report := func(f func(p *Progress)) {
		s.setProgress(t.ID, f)
		if o.Progress != nil {
			p, _ := s.MoveProgress(t.ID)
			o.Progress(p)
		}
	}
	res = &MoveResult{From: from, To: to, Steps: map[string]float64{}}
	step := time.Now()
	lap := func(name string) {
		res.Steps[name] = float64(time.Since(step).Microseconds()) / 1000
		step = time.Now()
	}

	// The target: fresh storage (a failed earlier move may have left some).
	_ = st.Destroy(ctx, to)
	if err := st.Create(ctx, to); err != nil {
		return nil, fmt.Errorf("create the new copy: %w", err)
	}
	dst, err := s.Backends.Open(ctx, to)
	if err != nil {
		_ = st.Destroy(context.WithoutCancel(ctx), to)
		return nil, fmt.Errorf("open the new copy: %w", err)
	}
	dstOpen, flipped := true, false
	defer func() {
		if dstOpen {
			_ = dst.Close()
		}
		if !flipped {
			if derr := st.Destroy(context.WithoutCancel(ctx), to); derr != nil {
				err = errors.Join(err, fmt.Errorf("remove the partial copy: %w", derr))
			}
		}
	}()

	src, err := s.Engine.Tenant(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	released := false
	defer func() {
		if !released {
			src.Release()
		}
	}()
	sh, ok := src.ShardHandle.(mover)
	if !ok {
		return nil, fmt.Errorf("this shard pool cannot fence writes: %w", engine.ErrUnavailable)
	}

	// 1. The snapshot copy, unfenced.
	capture, err := s.copySnapshot(ctx, src, sh, from.Backend, dst, to.Backend,
		func(total int64) { report(func(p *Progress) { p.Total = total }) },
		func(table string, n int64) { report(func(p *Progress) { p.Table = table; p.Rows += n }) })
	if err != nil {
		return nil, err
	}
	defer sh.StopCapture(capture)
	res.Rounds = 1
	lap("copy")

	// 2. Catch up with what was written meanwhile, unfenced, while that
	// takes long enough to be worth another round.
	report(func(p *Progress) { p.Phase, p.Table, p.Rows = "catch-up", "", 0 })
	if err := s.catchUp(capture, func(stmts []shard.Stmt) error { return replay(ctx, dst, stmts) }, res,
		func(n int) { report(func(p *Progress) { p.Rows += int64(n) }) }); err != nil {
		return nil, err
	}
	// Close and reopen the copy: closing checkpoints its WAL (for SQLite,
	// the whole copy), which is cheap now and would hold up the new
	// shard's writer if done after the flip.
	dstOpen = false
	if err := dst.Close(); err != nil {
		return nil, fmt.Errorf("close the new copy: %w", err)
	}
	if dst, err = s.Backends.Open(ctx, to); err != nil {
		return nil, fmt.Errorf("reopen the new copy: %w", err)
	}
	dstOpen = true
	lap("catch_up")

	// 3. The fenced final step: drain the writer, replay the last
	// statements, pin the copy's state for verification, flip.
	report(func(p *Progress) { p.Phase = "fenced" })
	fenceStart := time.Now()
	if err := sh.Fence(ctx, s.FenceWait); err != nil {
		return nil, err
	}
	sealed := false
	defer func() {
		if !sealed {
			sh.Unfence()
		}
	}()
	stmts, err := capture.Take()
	if err == nil {
		err = replay(ctx, dst, stmts)
	}
	if err != nil {
		return nil, fmt.Errorf("final catch-up: %w", err)
	}
	res.Rounds++
	res.Replayed += len(stmts)
	// The copy is closed (for SQLite its WAL is checkpointed while that
	// is short and nobody else writes) and pinned for verification on a
	// connection of its own, which holds up no writer of the new shard.
	dstOpen = false
	if err := dst.Close(); err != nil {
		return nil, fmt.Errorf("close the new copy: %w", err)
	}
	check := openPinned(ctx, s.reader(to), to.Backend)
	checkOpen := true
	defer func() {
		if checkOpen {
			_ = check.close()
		}
	}()
	if err := check.begin(5 * time.Second); err != nil {
		return nil, fmt.Errorf("pin the copy for verification: %w", err)
	}
	// The flip must see the tenant as the move began: active, same epoch.
	cur, err := s.Engine.Get(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if cur.Status != engine.StatusActive || cur.Epoch != from.Epoch {
		return nil, fmt.Errorf("tenant changed during the move (status %s, epoch %d): %w", cur.Status, cur.Epoch, engine.ErrConflict)
	}
	ops, err := sh.Seal()
	if err != nil {
		return nil, err
	}
	sealed = true
	cur.Backend, cur.Location, cur.Epoch = to.Backend, to.Location, to.Epoch
	if err := s.Engine.Catalog.Update(ctx, cur, from.Epoch); err != nil {
		// The old shard is sealed: evicting it lets the next request
		// open it afresh; the records handed over go back to it.
		src.Release()
		released = true
		return nil, errors.Join(fmt.Errorf("flip placement: %w", err), s.unseal(ctx, t.ID, ops))
	}
	flipped = true
	res.Fenced = time.Since(fenceStart)
	lap("fenced")
	res.Tenant = cur
	// The move is done: what follows must not stop halfway because the
	// caller left.
	ctx = context.WithoutCancel(ctx)
	// Deferred records (audit events, last-seen) buffered while fenced go
	// to the new shard, as deferred records of its own.
	src.Release()
	released = true
	if len(ops) > 0 {
		if nt, err := s.Engine.Tenant(ctx, t.ID); err == nil {
			for _, op := range ops {
				if err := nt.Defer("", op); err != nil {
					res.Warn = append(res.Warn, fmt.Sprintf("a deferred record was dropped: %v", err))
				}
			}
			nt.Release()
		} else {
			res.Warn = append(res.Warn, fmt.Sprintf("%d deferred records were dropped: %v", len(ops), err))
		}
	}

	// 4. Verify: the old copy (sealed, so frozen) against the new copy as
	// it was at the flip, whole, row by row. The old copy is read through
	// a shard of its own: the cached one must close now, so that requests
	// waiting to open the new placement are not held up.
	report(func(p *Progress) { p.Phase = "verify" })
	var want, got map[string]Digest
	old, err := s.Backends.Open(ctx, from)
	if err == nil {
		want, err = Digests(ctx, old, from.Backend)
		if cerr := old.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = check.do(func(q engine.Querier) (err error) {
			got, err = digestsOf(ctx, q)
			return err
		})
	}
	checkOpen = false
	if cerr := check.close(); err == nil {
		err = cerr
	}
	if err == nil && !equalDigests(want, got) {
		err = fmt.Errorf("old %v, new %v: %w", want, got, errVerify)
	}
	if err != nil {
		return res, fmt.Errorf("tenant moved, but the new copy was not verified, so the old copy is kept at %+v: %w", from, err)
	}
	res.Tables = want
	lap("verify")

	// 4. The old copy goes once its shard is closed.
	report(func(p *Progress) { p.Phase = "cleanup" })
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if ev, ok := s.Engine.Shards.(staleEvicter); ok {
		err = ev.EvictStale(cctx, t.ID, to.Epoch)
	} else {
		err = s.Engine.Shards.Evict(cctx, t.ID)
	}
	if err == nil {
		err = s.Backends[from.Backend].Destroy(cctx, from)
	}
	if err != nil {
		// The move is done; only the old copy is left behind.
		res.Warn = append(res.Warn, fmt.Sprintf("the old copy was not removed: %v", err))
		err = nil
	}
	lap("cleanup")
	res.Took = time.Since(start)
	report(func(p *Progress) { p.Phase = "done" })
	return res, nil
}

// reader returns a way to read the database at p outside the shard cache:
// on a connection of its own where the backend can (a DirectReader: closing
// a SQLite shard would checkpoint its WAL, holding up the new shard's
// writer), elsewhere on a shard opened for the purpose.
func (s *Service) reader(p engine.Placement) readFunc {
	if dr, ok := s.Backends[p.Backend].(shard.DirectReader); ok {
		return func(ctx context.Context, fn engine.ReadFunc) error { return dr.ReadDirect(ctx, p, fn) }
	}
	return func(ctx context.Context, fn engine.ReadFunc) error {
		sh, err := s.Backends.Open(ctx, p)
		if err != nil {
			return err
		}
		defer sh.Close()
		return sh.Read(engine.LongRead(ctx), fn)
	}
}

// normalizeLocation turns a target location into the catalog's form (for
// SQLite an absolute directory, or "" for the server's data directory); a
// backend without locations takes the location as given.
func (s *Service) normalizeLocation(backend, loc string) (string, error) {
	if l, ok := s.Backends[backend].(shard.Locator); ok {
		return l.NormalizeLocation(loc)
	}
	return loc, nil
}

// copySnapshot pins a snapshot of src at the very point its writer starts
// capturing statements, and copies it whole into dst (an empty copy, no
// index kept), sequences included. The caller stops the capture it returns.
// total, when set, is told the snapshot's row count first; progress of the
// rows as they are read.
func (s *Service) copySnapshot(ctx context.Context, src engine.Shard, sh mover, srcBackend string, dst engine.Shard, dstBackend string,
	total func(int64), progress func(table string, n int64)) (*shard.Capture, error) {
	snap := openPinned(ctx, src.Read, srcBackend)
	capture, err := sh.StartCapture(ctx, s.captureLimit(), func() error { return snap.begin(5 * time.Second) })
	if err != nil {
		_ = snap.close()
		return nil, fmt.Errorf("start capture: %w", err)
	}
	err = func() error {
		if total != nil {
			var n int64
			err := snap.do(func(q engine.Querier) error {
				counts, err := countRows(q, Tables)
				for _, c := range counts {
					n += c
				}
				return err
			})
			if err != nil {
				return err
			}
			total(n)
		}
		c := &copier{src: src, srcBackend: srcBackend, dst: dst, snap: snap.snap, noIndex: true, progress: progress}
		if _, err := c.round(ctx); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		seqs, err := readSequences(snap, srcBackend)
		if err != nil {
			return err
		}
		if err := dst.Write(ctx, func(tx engine.Querier) error { return setSequences(tx, dstBackend, seqs) }); err != nil {
			return fmt.Errorf("copy sequences: %w", err)
		}
		return nil
	}()
	if cerr := snap.close(); err == nil {
		err = cerr
	}
	if err != nil {
		sh.StopCapture(capture)
		return nil, err
	}
	return capture, nil
}

// unseal gives a tenant whose flip failed back its shard: the sealed one is
// evicted, the next opens afresh, and the records handed over at Seal go
// back to it. The caller has released its handle.
func (s *Service) unseal(ctx context.Context, tenantID string, ops []engine.WriteFunc) error {
	ctx = context.WithoutCancel(ctx)
	if err := s.Engine.Shards.Evict(ctx, tenantID); err != nil {
		return err
	}
	if again, err := s.Engine.Tenant(ctx, tenantID); err == nil {
		for _, op := range ops {
			_ = again.Defer("", op)
		}
		again.Release()
	}
	return nil
}

// catchUp applies what the capture took since the last round, unfenced,
// round after round while a round brings enough to be worth another (at
// most CatchUpRounds), and counts them in res.
func (s *Service) catchUp(capture *shard.Capture, apply func([]shard.Stmt) error, res *MoveResult, progress func(n int)) error {
	rounds := s.CatchUpRounds
	if rounds <= 0 {
		rounds = 5
	}
	for i := 0; i < rounds; i++ {
		stmts, err := capture.Take()
		if err == nil {
			err = apply(stmts)
		}
		if err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		if progress != nil {
			progress(len(stmts))
		}
		res.Rounds++
		res.Replayed += len(stmts)
		if len(stmts) < catchUpEnough {
			return nil
		}
	}
	return nil
}

package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// RemoteNode is another node that receives a tenant's SQLite copy in a move
// between nodes (api/nodes speaks to it over HTTP). The steps are those of
// Move with the copy on the other side: a staged file, statements replayed
// onto it, then the copy put in place and pinned for verification.
type RemoteNode interface {
	Name() string
	// Stage sends the copy (a SQLite shard file, size bytes), staged on
	// the node for the tenant until Commit or Abort.
	Stage(ctx context.Context, tenantID string, file io.ReadSeeker, size int64) error
	// Replay runs statements on the staged copy, each changing as many
	// rows as it did on the source.
	Replay(ctx context.Context, tenantID string, stmts []shard.Stmt) error
	// Commit puts the staged copy where the node serves the tenant from
	// at epoch and pins its state for Digests.
	Commit(ctx context.Context, tenantID string, epoch int64) error
	// Digests are the committed copy's, as it was at Commit.
	Digests(ctx context.Context, tenantID string) (map[string]Digest, error)
	// Abort removes a staged (not committed) copy.
	Abort(ctx context.Context, tenantID string) error
}

// replayChunk bounds the statements of one Replay call.
const replayChunk = 2000

// MoveToNode moves an active SQLite tenant that this node owns, with its
// data, to node to, while it is served: a snapshot copied unfenced into a
// local file and sent whole; the writes made meanwhile replayed there in
// rounds; a fenced final round; then the copy put in place on the other
// node, owner and epoch flipped in the catalog, this node's shard sealed,
// and its copy removed only after both copies' checksums matched. A
// failure before the flip leaves the tenant here, served as before.
// Records deferred while fenced (audit rows, last-seen) cannot follow and
// are counted in the result's warnings.
func (s *Service) MoveToNode(ctx context.Context, slugOrID string, to RemoteNode) (res *MoveResult, err error) {
	start := time.Now()
	t, err := s.Engine.Get(ctx, slugOrID)
	if err != nil {
		return nil, err
	}
	self := s.Engine.SelfNode()
	switch {
	case t.Status != engine.StatusActive:
		return nil, fmt.Errorf("only an active tenant can be moved; %s is %s: %w", t.Slug, t.Status, engine.ErrWrongStatus)
	case t.Backend != engine.BackendSQLite:
		return nil, engine.Invalidf("tenant %s is on %s: give it to another node without copying", t.Slug, t.Backend)
	case self == "" || t.Node != self:
		return nil, engine.ErrNotOwner
	case to.Name() == self:
		return nil, engine.Invalidf("tenant %s is already on node %s", t.Slug, self)
	}
	fs, err := s.fileStore()
	if err != nil {
		return nil, err
	}
	from := t.Placement()
	next := *t
	next.Node, next.Epoch = to.Name(), t.Epoch+1
	prog := &Progress{Tenant: t.Slug, Phase: "copy"}
	if err := s.begin(t.ID, prog); err != nil {
		return nil, err
	}
	defer s.end(t.ID)
	res = &MoveResult{From: from, To: next.Placement(), Steps: map[string]float64{}}
	step := time.Now()
	lap := func(name string) {
		res.Steps[name] = float64(time.Since(step).Microseconds()) / 1000
		step = time.Now()
	}

	staged, flipped := false, false
	defer func() {
		if staged && !flipped {
			_ = to.Abort(context.WithoutCancel(ctx), t.ID)
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

	// 1. The snapshot, copied unfenced into a local file, sent whole.
	dir, err := os.MkdirTemp(s.tempDir(), "keyshard-node-move-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "copy.db")
	dst, err := fs.OpenFile(ctx, path, false)
	if err != nil {
		return nil, fmt.Errorf("open the local copy: %w", err)
	}
	capture, err := s.copySnapshot(ctx, src, sh, from.Backend, dst, engine.BackendSQLite, nil,
		func(table string, n int64) { s.setProgress(t.ID, func(p *Progress) { p.Table = table; p.Rows += n }) })
	if cerr := dst.Close(); err == nil && cerr != nil {
		sh.StopCapture(capture)
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	defer sh.StopCapture(capture)
	res.Rounds = 1
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil {
		staged = true
		err = to.Stage(ctx, t.ID, f, st.Size())
	}
	_ = f.Close()
	if err != nil {
		return nil, fmt.Errorf("send the copy to node %s: %w", to.Name(), err)
	}
	lap("copy")

	// 2. Catch up, unfenced, while worth it.
	s.setProgress(t.ID, func(p *Progress) { p.Phase, p.Table, p.Rows = "catch-up", "", 0 })
	send := func(stmts []shard.Stmt) error {
		for len(stmts) > 0 {
			n := min(len(stmts), replayChunk)
			if err := to.Replay(ctx, t.ID, stmts[:n]); err != nil {
				return err
			}
			stmts = stmts[n:]
		}
		return nil
	}
	if err := s.catchUp(capture, send, res, nil); err != nil {
		return nil, err
	}
	lap("catch_up")

	// 3. Fenced: the last statements, the copy put in place, the flip.
	s.setProgress(t.ID, func(p *Progress) { p.Phase = "fenced" })
	// From the fence on, the caller leaving (a client, a proxy's timeout)
	// must not cut the move between its steps: bounded, not cancelled.
	ctx, cancelFenced := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancelFenced()
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
		err = send(stmts)
	}
	if err != nil {
		return nil, fmt.Errorf("final catch-up: %w", err)
	}
	res.Rounds++
	res.Replayed += len(stmts)
	cur, err := s.Engine.Get(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if cur.Status != engine.StatusActive || cur.Epoch != from.Epoch || cur.Node != self {
		return nil, fmt.Errorf("tenant changed during the move (status %s, epoch %d, node %s): %w", cur.Status, cur.Epoch, cur.Node, engine.ErrConflict)
	}
	if err := to.Commit(ctx, t.ID, next.Epoch); err != nil {
		return nil, fmt.Errorf("put the copy in place on node %s: %w", to.Name(), err)
	}
	ops, err := sh.Seal()
	if err != nil {
		return nil, err
	}
	sealed = true
	var flipErr error
	if sn, ok := s.Engine.Catalog.(interface {
		SetNode(ctx context.Context, t *engine.Tenant, wantNode string, wantEpoch int64, node string, newEpoch int64) (*engine.Tenant, error)
	}); ok {
		var now *engine.Tenant
		if now, flipErr = sn.SetNode(ctx, cur, self, from.Epoch, next.Node, next.Epoch); flipErr == nil {
			cur = now
		}
	} else {
		cur.Node, cur.Epoch = next.Node, next.Epoch
		flipErr = s.Engine.Catalog.Update(ctx, cur, from.Epoch)
	}
	if rf, ok := s.Engine.Catalog.(refresher); ok && flipErr != nil && !errors.Is(flipErr, engine.ErrConflict) {
		// The answer was lost, not necessarily the flip: the catalog says.
		now, known := flipOutcome(rf, t.ID, 20)
		switch {
		case known && now.Node == next.Node && now.Epoch == next.Epoch:
			cur, flipErr = now, nil
		case !known:
			// Unknown: this node's shard stays sealed (its writes answer
			// tenant_moving) until the catalog answers; reopening it now
			// could make two copies take writes.
			src.Release()
			released = true
			go func() {
				if now, known := flipOutcome(rf, t.ID, 1000); known && (now.Node != next.Node || now.Epoch != next.Epoch) {
					_ = s.Engine.Shards.Evict(context.Background(), t.ID)
				}
			}()
			return nil, fmt.Errorf("flip owner: the catalog did not answer, the outcome is not known yet: %w: %w", flipErr, engine.ErrUnavailable)
		}
	}
	if err := flipErr; err != nil {
		// Not flipped: this node's copy is still the tenant's. Its shard is
		// sealed: evicting it lets the next request open it afresh, and the
		// records handed over go back to it.
		src.Release()
		released = true
		return nil, errors.Join(fmt.Errorf("flip owner: %w", err), s.unseal(ctx, t.ID, ops))
	}
	flipped = true
	res.Fenced = time.Since(fenceStart)
	res.Tenant = cur
	lap("fenced")
	ctx = context.WithoutCancel(ctx)
	src.Release()
	released = true
	if len(ops) > 0 {
		res.Warn = append(res.Warn, fmt.Sprintf("%d records deferred during the fence (audit, last-seen) were not carried to node %s", len(ops), to.Name()))
	}

	// 4. Verify, then remove this node's copy.
	s.setProgress(t.ID, func(p *Progress) { p.Phase = "verify" })
	var want, got map[string]Digest
	var wg sync.WaitGroup
	var gerr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		got, gerr = to.Digests(ctx, t.ID)
	}()
	old, err := s.Backends.Open(ctx, from)
	if err == nil {
		want, err = Digests(ctx, old, from.Backend)
		if cerr := old.Close(); err == nil {
			err = cerr
		}
	}
	wg.Wait()
	err = errors.Join(err, gerr)
	if err == nil && !equalDigests(want, got) {
		err = fmt.Errorf("old %v, new %v: %w", want, got, errVerify)
	}
	if err != nil {
		return res, fmt.Errorf("tenant moved to node %s, but its copy was not verified, so this node's copy is kept: %w", to.Name(), err)
	}
	res.Tables = want
	lap("verify")
	s.setProgress(t.ID, func(p *Progress) { p.Phase = "cleanup" })
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if ev, ok := s.Engine.Shards.(staleEvicter); ok {
		err = ev.EvictStale(cctx, t.ID, next.Epoch)
	} else {
		err = s.Engine.Shards.Evict(cctx, t.ID)
	}
	if err == nil {
		err = s.Backends[from.Backend].Destroy(cctx, from)
	}
	if err != nil {
		res.Warn = append(res.Warn, fmt.Sprintf("the old copy was not removed: %v", err))
	}
	lap("cleanup")
	res.Took = time.Since(start)
	s.setProgress(t.ID, func(p *Progress) { p.Phase = "done" })
	return res, nil
}

type refresher interface {
	Refresh(ctx context.Context, id string) (*engine.Tenant, error)
}

// flipOutcome reads the tenant's row until the catalog answers (at most
// tries times, half a second apart); known is false if it never did.
func flipOutcome(rf refresher, id string, tries int) (*engine.Tenant, bool) {
	for i := 0; i < tries; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		now, err := rf.Refresh(ctx, id)
		cancel()
		if err == nil {
			return now, true
		}
		if errors.Is(err, engine.ErrTenantNotFound) {
			return &engine.Tenant{ID: id}, true
		}
		time.Sleep(500 * time.Millisecond)
	}
	return nil, false
}

// Incoming is the receiving side of moves between nodes: copies staged in
// a directory of this node until they are put in place.
type Incoming struct {
	Service *Service
	// Dir holds staged copies (the data directory's "incoming"; on the
	// same file system as the shards, so that putting one in place is a
	// rename).
	Dir string
	// Place returns where this node's SQLite backend keeps the tenant's
	// file at placement p.
	Place func(p engine.Placement) (string, error)
	// Evict closes this node's shard of the tenant, if one is left open
	// from an earlier time it was here, before its file is replaced.
	Evict func(ctx context.Context, tenantID string) error

	mu     sync.Mutex
	staged map[string]*incoming
}

type incoming struct {
	mu    sync.Mutex // one step at a time
	shard *shard.Shard
	check *pinned
	path  string
}

func (in *Incoming) get(id string) (*incoming, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	x, ok := in.staged[id]
	if !ok {
		return nil, fmt.Errorf("no copy of tenant %s is staged here: %w", id, engine.ErrConflict)
	}
	return x, nil
}

// Stage receives a copy of tenant id, replacing one staged before.
func (in *Incoming) Stage(ctx context.Context, id string, r io.Reader) error {
	if !engine.ValidTenantID(id) {
		return engine.Invalidf("invalid tenant id")
	}
	if t, err := in.Service.Engine.Get(ctx, id); err == nil && t.Node == in.Service.Engine.SelfNode() {
		return fmt.Errorf("tenant %s is this node's already: %w", id, engine.ErrConflict)
	}
	_ = in.Abort(ctx, id)
	fs, err := in.Service.fileStore()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(in.Dir, 0o750); err != nil {
		return err
	}
	path := filepath.Join(in.Dir, id+".db")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var sh *shard.Shard
	if err == nil {
		sh, err = fs.OpenFile(ctx, path, true)
	}
	if err == nil {
		var ok string
		err = sh.Read(ctx, func(q engine.Querier) error { return q.QueryRow(`PRAGMA quick_check`).Scan(&ok) })
		if err == nil && ok != "ok" {
			err = damagedf("the copy received is damaged: %s", ok)
		}
	}
	if err != nil {
		if sh != nil {
			_ = sh.Close()
		}
		_ = removeFile(path)
		return fmt.Errorf("stage the copy: %w", err)
	}
	in.mu.Lock()
	if in.staged == nil {
		in.staged = map[string]*incoming{}
	}
	in.staged[id] = &incoming{shard: sh, path: path}
	in.mu.Unlock()
	return nil
}

// Replay runs the source's statements on the staged copy.
func (in *Incoming) Replay(ctx context.Context, id string, stmts []shard.Stmt) error {
	x, err := in.get(id)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.shard == nil {
		return fmt.Errorf("the copy of %s is committed already: %w", id, engine.ErrConflict)
	}
	return replay(ctx, x.shard, stmts)
}

// Commit puts the staged copy where this node serves the tenant at epoch,
// and pins it for Digests.
func (in *Incoming) Commit(ctx context.Context, id string, epoch int64) error {
	x, err := in.get(id)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.shard == nil {
		return nil // committed already (a retried call)
	}
	p := engine.Placement{TenantID: id, Backend: engine.BackendSQLite, Epoch: epoch}
	dest, err := in.Place(p)
	if err != nil {
		return err
	}
	if err := x.shard.Close(); err != nil { // checkpoints: the copy is one file
		return err
	}
	x.shard = nil
	if err := os.MkdirAll(filepath.Dir(dest), 0o750); err != nil {
		return err
	}
	// A file left at the destination is an older copy of this tenant (it
	// moved away from here before, and that copy may have been kept for a
	// failed verification): it is set aside, never silently deleted.
	if in.Evict != nil {
		if err := in.Evict(ctx, id); err != nil {
			return err
		}
	}
	aside := fmt.Sprintf("%s.replaced-%d", dest, time.Now().Unix())
	if _, err := os.Stat(dest); err == nil {
		if err := os.Rename(dest, aside); err != nil {
			return err
		}
	}
	// The WAL and index go with the file set aside, and so do ones left
	// without their file (a removal cut short): SQLite does not tie a WAL
	// to its database, and a closed shard's WAL may hold commits
	// (shard/sqlite keepsWAL), which the copy's first open would replay.
	for _, ext := range []string{"-wal", "-shm"} {
		if err := os.Rename(dest+ext, aside+ext); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(x.path, dest); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(dest)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	x.path = dest
	x.check = openPinned(context.WithoutCancel(ctx), in.Service.reader(p), engine.BackendSQLite)
	if err := x.check.begin(5 * time.Second); err != nil {
		_ = x.check.close()
		x.check = nil
		return fmt.Errorf("pin the copy for verification: %w", err)
	}
	// A mover that never asks for the digests (it died) must not hold a
	// read open on the live shard for good (its WAL could not restart).
	check := x.check
	time.AfterFunc(10*time.Minute, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.check == check {
			_ = x.check.close()
			x.check = nil
			in.mu.Lock()
			delete(in.staged, id)
			in.mu.Unlock()
		}
	})
	return nil
}

// Digests returns the committed copy's checksums as it was at Commit, and
// releases it.
func (in *Incoming) Digests(ctx context.Context, id string) (map[string]Digest, error) {
	x, err := in.get(id)
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.check == nil {
		return nil, fmt.Errorf("the copy of %s is not committed: %w", id, engine.ErrConflict)
	}
	var got map[string]Digest
	err = x.check.do(func(q engine.Querier) (err error) {
		got, err = digestsOf(ctx, q)
		return err
	})
	_ = x.check.close()
	x.check = nil
	in.mu.Lock()
	delete(in.staged, id)
	in.mu.Unlock()
	return got, err
}

// Abort removes a staged copy, or a committed one whose flip did not
// happen: the catalog, read afresh, does not give the tenant to this node.
// A committed copy the catalog gives this node is the tenant's: kept.
func (in *Incoming) Abort(ctx context.Context, id string) error {
	in.mu.Lock()
	x, ok := in.staged[id]
	in.mu.Unlock()
	if !ok {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.shard != nil {
		_ = x.shard.Close()
		x.shard = nil
		in.drop(id, x)
		return removeFile(x.path)
	}
	if x.check == nil {
		in.drop(id, x)
		return nil
	}
	rf, ok := in.Service.Engine.Catalog.(refresher)
	if !ok {
		return nil
	}
	t, err := rf.Refresh(ctx, id)
	if err == nil && t.Node == in.Service.Engine.SelfNode() {
		return nil // flipped after all: it is being served from here
	}
	if err != nil && !errors.Is(err, engine.ErrTenantNotFound) {
		return err
	}
	_ = x.check.close()
	x.check = nil
	in.drop(id, x)
	if in.Evict != nil {
		_ = in.Evict(ctx, id)
	}
	return removeFile(x.path)
}

// drop forgets a staged copy if it is still x.
func (in *Incoming) drop(id string, x *incoming) {
	in.mu.Lock()
	if in.staged[id] == x {
		delete(in.staged, id)
	}
	in.mu.Unlock()
}

func removeFile(path string) error {
	var errs []error
	// The WAL first: one left without its database would be replayed onto
	// a new file at the path.
	for _, p := range []string{path + "-wal", path + "-shm", path} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

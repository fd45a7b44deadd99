// Package shardtest is the conformance suite of shard backends: the same
// engine-level tests run unchanged on SQLite files, PostgreSQL schemas and
// MySQL/MariaDB databases. Each backend's tests call Run with a Factory.
package shardtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testskip"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqldb"
)

// Backend creates, opens and destroys tenants' shards on one backend.
type Backend interface {
	engine.Storage
	Open(ctx context.Context, p engine.Placement) (*shard.Shard, error)
}

// Factory returns a backend whose shards use opts. Tenants it is asked for
// are fresh ids; the suite destroys what it creates.
type Factory struct {
	Name    string // backend name in placements: sqlite, postgres, mysql
	Dialect string // migrations dialect
	New     func(t testing.TB, opts shard.Options) Backend
	// Tenants is the tenant count of the many-tenants test (default 50).
	Tenants int
}

// Run runs the suite.
func Run(t *testing.T, f Factory) {
	if f.Tenants == 0 {
		f.Tenants = 50
	}
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, f) })
	t.Run("ManyTenantsConcurrently", func(t *testing.T) { testManyTenants(t, f) })
	t.Run("FailingOperationFailsAlone", func(t *testing.T) { testFailingOp(t, f) })
	t.Run("ManyFailingOperationsInOneBatch", func(t *testing.T) { testManyFailing(t, f) })
	t.Run("Isolation", func(t *testing.T) { testIsolation(t, f) })
	t.Run("Types", func(t *testing.T) { testTypes(t, f) })
	t.Run("DeferredFlushedOnClose", func(t *testing.T) { testDeferred(t, f) })
	t.Run("ReadsDoNotWaitForWriter", func(t *testing.T) { testReadsDuringWrite(t, f) })
	t.Run("FencedByNewerOwner", func(t *testing.T) { testFenced(t, f) })
	t.Run("RaiseFenceEndsAPausedBatch", func(t *testing.T) { testRaiseFence(t, f) })
}

// testRaiseFence: an owner stopped in the middle of a batch (it read the
// token under its shared lock) does not hold a move up: raising the token
// ends its session (server backends), the batch commits nothing, and the
// owner's next write is fenced.
func testRaiseFence(t *testing.T, f Factory) {
	ctx := context.Background()
	b := f.New(t, shard.Options{Fenced: true})
	fencer, ok := b.(interface {
		RaiseFence(ctx context.Context, p engine.Placement, epoch int64) error
	})
	if !ok || f.Name == "sqlite" {
		t.Skip("SQLite: a paused writer holds the file's lock; raising waits for the busy timeout (its tenants move with their data, by their owner)")
	}
	p := create(t, b, f.Name)
	old := open(t, b, p)
	if err := old.Write(ctx, insertAudit("before")); err != nil {
		t.Fatal(err)
	}
	started, unblock := make(chan struct{}), make(chan struct{})
	paused := make(chan error, 1)
	go func() {
		paused <- old.Write(ctx, func(tx engine.Querier) error {
			if _, err := tx.Exec(`INSERT INTO audit_log (action, payload, created_at) VALUES ('paused', '{}', 1)`); err != nil {
				return err
			}
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	begin := time.Now()
	if err := fencer.RaiseFence(rctx, p, 2); err != nil {
		close(unblock)
		t.Fatalf("RaiseFence with a paused batch holding the token: %v", err)
	}
	t.Logf("raised in %v", time.Since(begin).Round(time.Millisecond))
	close(unblock)
	if err := <-paused; err == nil {
		t.Fatal("the paused batch committed after the token was raised")
	}
	if err := old.Write(ctx, insertAudit("after")); !errors.Is(err, engine.ErrFenced) {
		t.Fatalf("the old owner's next write: %v, want ErrFenced", err)
	}
	p2 := p
	p2.Epoch = 2
	got := auditCounts(t, open(t, b, p2))
	if got["before"] != 1 || got["paused"] != 0 || got["after"] != 0 {
		t.Fatalf("audit rows %v; want before 1, paused 0, after 0", got)
	}
}

// testFenced: two shards of one tenant, as two nodes would open it, the
// old owner at epoch 1 and the new at epoch 2 (Options.Fenced). Once the
// new one has written, the old one commits nothing more, while a batch of
// it already waiting in its queue is refused too.
func testFenced(t *testing.T, f Factory) {
	ctx := context.Background()
	fenced := make(chan struct{}, 1)
	b := f.New(t, shard.Options{Fenced: true, OnFenced: func(string, int64) {
		select {
		case fenced <- struct{}{}:
		default:
		}
	}})
	p := create(t, b, f.Name)
	old := open(t, b, p)
	if err := old.Write(ctx, insertAudit("old-before")); err != nil {
		t.Fatalf("the owner's write: %v", err)
	}
	p2 := p
	p2.Epoch = 2
	nu := open(t, b, p2)
	if err := nu.Write(ctx, insertAudit("new")); err != nil {
		t.Fatalf("the new owner's first write: %v", err)
	}
	for i := 0; i < 2; i++ {
		err := old.Write(ctx, insertAudit("old-after"))
		if !errors.Is(err, engine.ErrFenced) || !errors.Is(err, engine.ErrUnavailable) {
			t.Fatalf("the old owner's write %d after the new owner's: %v, want ErrFenced", i, err)
		}
	}
	select {
	case <-fenced:
	case <-time.After(5 * time.Second):
		t.Fatal("OnFenced was not called")
	}
	if err := nu.Write(ctx, insertAudit("new")); err != nil {
		t.Fatalf("the new owner's second write: %v", err)
	}
	got := auditCounts(t, nu)
	if got["old-before"] != 1 || got["new"] != 2 || got["old-after"] != 0 {
		t.Fatalf("audit rows %v; want old-before 1, new 2, old-after 0", got)
	}
	// A shard of an older epoch opened afresh is fenced at its first batch.
	again := open(t, b, p)
	if err := again.Write(ctx, insertAudit("old-after")); !errors.Is(err, engine.ErrFenced) {
		t.Fatalf("a stale owner's reopened shard wrote: %v, want ErrFenced", err)
	}
}

// create makes a tenant's shard and destroys it when the test ends.
func create(t testing.TB, b Backend, name string) engine.Placement {
	t.Helper()
	p := engine.Placement{TenantID: engine.NewTenantID(), Backend: name, Epoch: 1}
	if err := b.Create(context.Background(), p); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = b.Destroy(context.Background(), p) })
	return p
}

func open(t testing.TB, b Backend, p engine.Placement) *shard.Shard {
	t.Helper()
	s, err := b.Open(context.Background(), p)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// setSetting replaces one setting, portably (no upsert syntax).
func setSetting(key, value string) engine.WriteFunc {
	return func(tx engine.Querier) error {
		if _, err := tx.Exec(`DELETE FROM settings WHERE "key" = ?`, key); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES (?, ?)`, key, value)
		return err
	}
}

// insertSetting inserts one setting; a taken key fails with ErrConflict.
func insertSetting(key, value string) engine.WriteFunc {
	return func(tx engine.Querier) error {
		_, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES (?, ?)`, key, value)
		return err
	}
}

// setting reads one setting; ok is false when it is absent.
func setting(t testing.TB, s engine.Shard, key string) (v string, ok bool) {
	t.Helper()
	err := s.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow(`SELECT value FROM settings WHERE "key" = ?`, key).Scan(&v)
	})
	if errors.Is(err, engine.ErrNoRows) {
		return "", false
	}
	if err != nil {
		t.Fatalf("read setting %q: %v", key, err)
	}
	return v, true
}

func insertAudit(tag string) engine.WriteFunc {
	return func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO audit_log (action, payload, created_at) VALUES (?, '{}', ?)", tag, time.Now().UnixMicro())
		return err
	}
}

func auditCounts(t testing.TB, s engine.Shard) map[string]int {
	t.Helper()
	counts := make(map[string]int)
	err := s.Read(context.Background(), func(q engine.Querier) error {
		rows, err := q.Query("SELECT action, COUNT(*) FROM audit_log GROUP BY action")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a string
			var n int
			if err := rows.Scan(&a, &n); err != nil {
				return err
			}
			counts[a] = n
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatalf("count audit rows: %v", err)
	}
	return counts
}

func testLifecycle(t *testing.T, f Factory) {
	b := f.New(t, shard.Options{})
	ctx := context.Background()
	p := engine.Placement{TenantID: engine.NewTenantID(), Backend: f.Name, Epoch: 1}
	if s, err := b.Open(ctx, p); err == nil {
		_ = s.Close()
		t.Fatal("Open of a tenant never created succeeded; want an error (nothing is created on open)")
	}
	if err := b.Create(ctx, p); err != nil {
		t.Fatalf("Create: %v", err)
	}
	s, err := b.Open(ctx, p)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	var v int64
	if err := s.Read(ctx, func(q engine.Querier) error {
		return q.QueryRow("SELECT COUNT(*) FROM users").Scan(&v)
	}); err != nil || v != 0 {
		t.Fatalf("users in a new shard: %d, %v; want 0, nil", v, err)
	}
	if err := s.Write(ctx, setSetting("k", "v1")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Write(ctx, setSetting("k", "v2")); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("Write after Close = %v, want ErrClosed", err)
	}
	s = open(t, b, p) // reopening finds the schema current and the data kept
	if got, ok := setting(t, s, "k"); !ok || got != "v1" {
		t.Fatalf("after reopen setting k = %q, %v; want v1", got, ok)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Destroy(ctx, p); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if s, err := b.Open(ctx, p); err == nil {
		_ = s.Close()
		t.Fatal("Open after Destroy succeeded; a deleted tenant must not come back")
	}
	if err := b.Destroy(ctx, p); err != nil {
		t.Fatalf("second Destroy: %v, want nil (idempotent)", err)
	}
	if latest, err := migrations.Latest(f.Dialect); err != nil || latest < 1 {
		t.Fatalf("migrations.Latest(%s) = %d, %v", f.Dialect, latest, err)
	}
}

func testManyTenants(t *testing.T, f Factory) {
	const goroutines, inserts = 20, 10
	b := f.New(t, shard.Options{})
	n := f.Tenants
	shards := make([]*shard.Shard, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	// Created and opened concurrently too, at most creators at once: a
	// server backend's creation is DDL on its shared pool, and with every
	// tenant's at once, an open can queue behind more of it than its bound
	// (a minute) on a loaded machine, which failed this test under load.
	const creators = 32
	sem := make(chan struct{}, creators)
	for i := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p := engine.Placement{TenantID: engine.NewTenantID(), Backend: f.Name, Epoch: 1}
			if errs[i] = b.Create(context.Background(), p); errs[i] != nil {
				return
			}
			t.Cleanup(func() { _ = b.Destroy(context.Background(), p) })
			shards[i], errs[i] = b.Open(context.Background(), p)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("tenant %d: %v", i, err)
		}
		t.Cleanup(func() { _ = shards[i].Close() })
	}
	acked := make([][]string, n)
	var mu sync.Mutex
	var failures atomic.Int64
	for i, s := range shards {
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < inserts; k++ {
					tag := fmt.Sprintf("g%d-n%d", g, k)
					if err := s.Write(context.Background(), insertAudit(tag)); err != nil {
						if failures.Add(1) <= 5 {
							t.Errorf("tenant %d write %s: %v", i, tag, err)
						}
						continue
					}
					mu.Lock()
					acked[i] = append(acked[i], tag)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	var batches, writes, maxBatch int64
	for i, s := range shards {
		counts := auditCounts(t, s)
		for _, tag := range acked[i] {
			if counts[tag] != 1 {
				t.Errorf("tenant %d: acknowledged write %s present %d times, want 1", i, tag, counts[tag])
			}
		}
		if len(counts) != len(acked[i]) {
			t.Errorf("tenant %d: %d rows, %d acknowledged writes", i, len(counts), len(acked[i]))
		}
		st := s.Stats()
		batches += st.Batches
		writes += st.Writes
		maxBatch = max(maxBatch, st.MaxBatch)
	}
	if want := int64(n * goroutines * inserts); writes != want {
		t.Errorf("writes = %d, want %d", writes, want)
	}
	if maxBatch <= 1 || batches >= writes {
		t.Errorf("%d writes in %d batches, largest %d: no group commit happened", writes, batches, maxBatch)
	}
	t.Logf("%d tenants: %d writes in %d batches, largest %d", n, writes, batches, maxBatch)
}

// blockWriter holds the shard's writer inside an operation until release.
func blockWriter(t testing.TB, s *shard.Shard) (release func(), done <-chan error) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	d := make(chan error, 1)
	go func() {
		d <- s.Write(context.Background(), func(tx engine.Querier) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	select {
	case <-started:
	case err := <-d:
		t.Fatalf("blocking write returned before it ran: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("writer did not start the blocking write within 10s")
	}
	var once sync.Once
	release = func() { once.Do(func() { close(unblock) }) }
	t.Cleanup(release)
	return release, d
}

func testFailingOp(t *testing.T, f Factory) {
	const n = 8
	b := f.New(t, shard.Options{QueueSize: 4 * n, MaxBatch: 4 * n})
	s := open(t, b, create(t, b, f.Name))
	if err := s.Write(context.Background(), insertSetting("taken", "first")); err != nil {
		t.Fatal(err)
	}
	release, blocked := blockWriter(t, s)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == n/2 { // two inserts; the second conflicts, so the first goes too
				errs[i] = s.Write(context.Background(), func(tx engine.Querier) error {
					if err := insertSetting("partial", "x")(tx); err != nil {
						return err
					}
					return insertSetting("taken", "second")(tx)
				})
				return
			}
			errs[i] = s.Write(context.Background(), insertSetting(fmt.Sprintf("ok%d", i), "v"))
		}()
	}
	// Let all n queue behind the blocked writer so they share one batch.
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Queued < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	batchesBefore := s.Stats().Batches
	release()
	wg.Wait()
	if err := <-blocked; err != nil {
		t.Fatalf("blocking write: %v", err)
	}
	for i, err := range errs {
		if i == n/2 {
			if !errors.Is(err, engine.ErrConflict) {
				t.Errorf("conflicting op: %v, want ErrConflict", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("op %d: %v, want nil", i, err)
		}
	}
	if _, ok := setting(t, s, "partial"); ok {
		t.Error("the failing operation's first insert was committed; want it rolled back with the operation")
	}
	if v, _ := setting(t, s, "taken"); v != "first" {
		t.Errorf("taken = %q, want first", v)
	}
	for i := 0; i < n; i++ {
		if _, ok := setting(t, s, fmt.Sprintf("ok%d", i)); !ok && i != n/2 {
			t.Errorf("ok%d missing", i)
		}
	}
	if got := s.Stats().Batches - batchesBefore; got > 2 {
		t.Logf("the %d queued operations took %d batches", n, got)
	}
}

// TestIsolation is the isolation test alone, for backends to run again on a
// pool of one connection: every statement then runs on a connection that
// served the other tenant just before.
func TestIsolation(t *testing.T, f Factory) { testIsolation(t, f) }

// testManyFailing queues a batch where every third operation writes a row
// and then fails: more failures than the writer's tries without savepoints,
// so the batch ends on the savepoint path. Each failing operation's row is
// absent, every other operation's row is present exactly once, and every
// caller gets its own outcome.
func testManyFailing(t *testing.T, f Factory) {
	const n = 12
	b := f.New(t, shard.Options{QueueSize: 4 * n, MaxBatch: 4 * n})
	s := open(t, b, create(t, b, f.Name))
	release, blocked := blockWriter(t, s)
	errFail := errors.New("operation fails on purpose")
	errs := make([]error, n)
	runs := make([]atomic.Int64, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Write(context.Background(), func(tx engine.Querier) error {
				runs[i].Add(1)
				if err := insertAudit(fmt.Sprintf("op%d", i))(tx); err != nil {
					return err
				}
				if i%3 == 0 {
					return errFail
				}
				return nil
			})
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Queued < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if q := s.Stats().Queued; q < n {
		t.Fatalf("%d operations queued, want %d in one batch", q, n)
	}
	release()
	wg.Wait()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if mb := s.Stats().MaxBatch; mb < n {
		t.Fatalf("largest batch %d, want the %d operations in one", mb, n)
	}
	counts := auditCounts(t, s)
	for i := 0; i < n; i++ {
		tag := fmt.Sprintf("op%d", i)
		if i%3 == 0 {
			if !errors.Is(errs[i], errFail) || counts[tag] != 0 {
				t.Errorf("%s: error %v, %d rows; want its own error and no row", tag, errs[i], counts[tag])
			}
			continue
		}
		if errs[i] != nil || counts[tag] != 1 {
			t.Errorf("%s: error %v, %d rows; want nil and exactly one row", tag, errs[i], counts[tag])
		}
		if r := runs[i].Load(); r < 1 || r > n {
			t.Errorf("%s ran %d times", tag, r)
		}
	}
}

func testIsolation(t *testing.T, f Factory) {
	b := f.New(t, shard.Options{})
	a := open(t, b, create(t, b, f.Name))
	c := open(t, b, create(t, b, f.Name))
	for i := 0; i < 20; i++ { // interleaved, so pooled connections switch tenants
		if err := a.Write(context.Background(), setSetting("who", fmt.Sprintf("a%d", i))); err != nil {
			t.Fatal(err)
		}
		if err := c.Write(context.Background(), setSetting("who", fmt.Sprintf("c%d", i))); err != nil {
			t.Fatal(err)
		}
		if v, _ := setting(t, a, "who"); v != fmt.Sprintf("a%d", i) {
			t.Fatalf("tenant a reads %q, want a%d", v, i)
		}
		if v, _ := setting(t, c, "who"); v != fmt.Sprintf("c%d", i) {
			t.Fatalf("tenant c reads %q, want c%d", v, i)
		}
	}
	if err := a.Write(context.Background(), insertSetting("only-a", "x")); err != nil {
		t.Fatal(err)
	}
	if _, ok := setting(t, c, "only-a"); ok {
		t.Fatal("tenant c sees a row tenant a wrote")
	}
}

func testTypes(t *testing.T, f Factory) {
	b := f.New(t, shard.Options{})
	s := open(t, b, create(t, b, f.Name))
	blob := []byte{0, 1, 2, 0xff, '\'', '"', '\\'}
	quote := `it's "quoted" \ ; DROP TABLE users; --`
	err := s.Write(context.Background(), func(tx engine.Querier) error {
		if _, err := tx.Exec(`INSERT INTO signing_keys (kid, algorithm, public_key, private_key, active, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, quote, "EdDSA", blob, blob, true, int64(1)<<53); err != nil {
			return err
		}
		n, err := tx.Exec(`UPDATE signing_keys SET retired_at = ? WHERE kid = ?`, nil, quote)
		if err == nil && n != 1 {
			return fmt.Errorf("UPDATE changed %d rows, want 1", n)
		}
		return err
	})
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	var (
		kid      string
		pub      []byte
		active   bool
		created  int64
		retired  *int64
		retired2 *string
		anyv     any
	)
	err = s.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow(`SELECT kid, public_key, active, created_at, retired_at, retired_at, algorithm FROM signing_keys WHERE kid = ?`, quote).
			Scan(&kid, &pub, &active, &created, &retired, &retired2, &anyv)
	})
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if kid != quote || string(pub) != string(blob) || !active || created != int64(1)<<53 || retired != nil || retired2 != nil {
		t.Fatalf("read back kid=%q pub=%x active=%v created=%d retired=%v/%v", kid, pub, active, created, retired, retired2)
	}
	if s, ok := anyv.(string); ok && s != "EdDSA" {
		t.Fatalf("*any = %q", s)
	}
	err = s.Read(context.Background(), func(q engine.Querier) error {
		var x string
		return q.QueryRow(`SELECT kid FROM signing_keys WHERE kid = ?`, "absent").Scan(&x)
	})
	if !errors.Is(err, engine.ErrNoRows) {
		t.Fatalf("QueryRow of no row = %v, want ErrNoRows", err)
	}
}

func testDeferred(t *testing.T, f Factory) {
	b := f.New(t, shard.Options{FlushInterval: time.Hour})
	p := create(t, b, f.Name)
	s, err := b.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := s.Defer("", insertAudit(fmt.Sprintf("deferred%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	counts := auditCounts(t, open(t, b, p))
	for i := 0; i < 10; i++ {
		if counts[fmt.Sprintf("deferred%d", i)] != 1 {
			t.Errorf("deferred%d: %d rows after close, want 1", i, counts[fmt.Sprintf("deferred%d", i)])
		}
	}
}

func testReadsDuringWrite(t *testing.T, f Factory) {
	b := f.New(t, shard.Options{})
	s := open(t, b, create(t, b, f.Name))
	if err := s.Write(context.Background(), setSetting("k", "before")); err != nil {
		t.Fatal(err)
	}
	release, done := blockWriter(t, s)
	// The writer is inside a transaction: a read answers at once with the
	// committed state.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var v string
	if err := s.Read(ctx, func(q engine.Querier) error {
		return q.QueryRow(`SELECT value FROM settings WHERE "key" = ?`, "k").Scan(&v)
	}); err != nil || v != "before" {
		t.Fatalf("read while the writer is busy: %q, %v", v, err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// DSN returns the server DSN from the environment variable env. Without it
// the test is skipped with a message saying how to run it, except under CI
// (CI=true), where a missing server is a failure: CI never skips backends.
func DSN(t testing.TB, env string) string {
	t.Helper()
	dsn := os.Getenv(env)
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; CI runs every backend suite (.ci/run sets it)", env)
		}
		testskip.Announce()
		t.Skipf("%s not set: skipping the suite of this backend (e.g. %s=%s)", env, env, exampleDSN[env])
	}
	return dsn
}

var exampleDSN = map[string]string{
	"KEYSHARD_TEST_POSTGRES_DSN": "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
	"KEYSHARD_TEST_MYSQL_DSN":    "root@tcp(127.0.0.1:3306)/test",
}

// TestConnectionLoss kills the server connection in the middle of a batch
// (killSQL, run by one operation of the batch, ends its own session). Every
// operation of that batch must fail, none of its rows may be present, no
// caller may be told it succeeded, and the next write must succeed on a new
// connection.
func TestConnectionLoss(t *testing.T, f Factory, killSQL string) {
	const n = 10
	b := f.New(t, shard.Options{QueueSize: 4 * n, MaxBatch: 4 * n})
	s := open(t, b, create(t, b, f.Name))
	release, blocked := blockWriter(t, s)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == n/2 {
				errs[i] = s.Write(context.Background(), func(tx engine.Querier) error {
					_, err := tx.Exec(killSQL)
					return err
				})
				return
			}
			errs[i] = s.Write(context.Background(), insertAudit(fmt.Sprintf("lost%d", i)))
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Queued < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if q := s.Stats().Queued; q < n {
		t.Fatalf("%d operations queued, want %d in one batch", q, n)
	}
	release()
	wg.Wait()
	if err := <-blocked; err != nil {
		t.Fatalf("blocking write: %v", err)
	}
	counts := auditCounts(t, s)
	for i, err := range errs {
		tag := fmt.Sprintf("lost%d", i)
		if err == nil {
			t.Errorf("operation %d was acknowledged in a batch whose connection died", i)
		}
		if counts[tag] != 0 {
			t.Errorf("%s: %d rows of a failed batch are present", tag, counts[tag])
		}
	}
	t.Logf("caller errors: %v", errs[0])
	// The shard recovers on a fresh connection.
	for i := 0; i < 3; i++ {
		if err := s.Write(context.Background(), insertAudit("after")); err != nil {
			t.Fatalf("write after the connection loss: %v", err)
		}
	}
	if got := auditCounts(t, s)["after"]; got != 3 {
		t.Fatalf("%d rows written after the loss, want 3", got)
	}
}

// Server returns the Factory of a server backend (name, dialect) whose DSN is
// in the environment variable env (see DSN): open connects to it with the
// shards' options, and the server is closed when the test ends.
func Server(t testing.TB, name, dialect, env string, open func(ctx context.Context, dsn string, opts shard.Options) (*sqldb.Server, error)) Factory {
	dsn := DSN(t, env)
	return Factory{Name: name, Dialect: dialect, New: func(t testing.TB, opts shard.Options) Backend {
		srv, err := open(context.Background(), dsn, opts)
		if err != nil {
			t.Fatalf("open %s: %v", name, err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		return srv
	}}
}

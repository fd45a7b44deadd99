package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// With pipelined durability (the default for FULL) a write is answered
// only after a sync that began after its commit returned; meanwhile a read
// may see it (documented), and WaitDurable waits for it.
func TestPipelined_AnswersAfterSync(t *testing.T) {
	var hold atomic.Bool
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	sqlite.SetSyncHook(func() error {
		if hold.Load() {
			entered <- struct{}{}
			<-release
		}
		return nil
	})
	t.Cleanup(func() { sqlite.SetSyncHook(nil) })
	s := openAt(t, filepath.Join(t.TempDir(), "p.db"), sqlite.Options{}, shard.Options{})
	ctx := context.Background()
	if err := s.Write(ctx, setSetting("before", "1")); err != nil {
		t.Fatal(err)
	}

	hold.Store(true)
	done := make(chan error, 1)
	go func() { done <- s.Write(ctx, setSetting("k", "v")) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no sync began after the commit")
	}
	hold.Store(false)
	durable := make(chan error, 1)
	go func() { durable <- s.WaitDurable(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("write answered (%v) while its sync had not returned", err)
	case err := <-durable:
		t.Fatalf("WaitDurable returned (%v) while a sync had not returned", err)
	case <-time.After(200 * time.Millisecond):
	}
	if !settingKeys(t, s)["k"] {
		t.Error("a read does not see the commit whose sync is in flight (docs say it may)")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("write after its sync: %v", err)
	}
	if err := <-durable; err != nil {
		t.Fatalf("WaitDurable: %v", err)
	}
}

// A failed sync fails the writes it covered and every later one: what
// reached the disk is unknown until the shard is reopened.
func TestPipelined_FailedSyncStopsWrites(t *testing.T) {
	var fail atomic.Bool
	sqlite.SetSyncHook(func() error {
		if fail.Load() {
			return errors.New("EIO (injected)")
		}
		return nil
	})
	t.Cleanup(func() { sqlite.SetSyncHook(nil) })
	path := filepath.Join(t.TempDir(), "f.db")
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{}, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Write(ctx, setSetting("a", "1")); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	if err := s.Write(ctx, setSetting("b", "1")); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("write whose sync failed: %v, want ErrUnavailable", err)
	}
	fail.Store(false)
	if err := s.Write(ctx, setSetting("c", "1")); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("write after a failed sync: %v, want ErrUnavailable", err)
	}
	if err := s.WaitDurable(ctx); !errors.Is(err, engine.ErrUnavailable) {
		t.Fatalf("WaitDurable after a failed sync: %v, want ErrUnavailable", err)
	}
	if err := s.Close(); !errors.Is(err, engine.ErrUnavailable) {
		t.Errorf("Close after a failed sync: %v, want the sync's failure", err)
	}
	s2 := openAt(t, path, sqlite.Options{}, shard.Options{})
	if err := s2.Write(ctx, setSetting("d", "1")); err != nil {
		t.Fatalf("write after reopening: %v", err)
	}
	keys := settingKeys(t, s2)
	if !keys["a"] || keys["c"] {
		t.Errorf("after reopening: %v; want a, never c", keys)
	}
}

// A cold shard reads on its writer's connection while reads do not overlap
// and the writer is idle: one connection per cold tenant, not two. Reads
// that overlap open a reader, and reads see every acknowledged write.
func TestReadsOnIdleWriter(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "r.db"), sqlite.Options{}, shard.Options{})
	ctx := context.Background()
	for i := range 5 {
		if err := s.Write(ctx, setSetting("k", string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
		// The flusher answers the write once its sync returns, which can
		// be before the writer goroutine has marked itself idle after the
		// batch; a read in that moment rightly opens a reader (seen once
		// under CI's race run). Read once the writer has left the batch.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			if st := s.Stats(); !st.Writing && st.Queued == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the writer did not leave its batch within 10 s")
			}
		}
		var v string
		if err := s.Read(ctx, func(q engine.Querier) error {
			return q.QueryRow(`SELECT value FROM settings WHERE key = 'k'`).Scan(&v)
		}); err != nil || v != string(rune('a'+i)) {
			t.Fatalf("read after write %d: %q, %v", i, v, err)
		}
	}
	if n := s.Stats().Readers; n != 0 {
		t.Fatalf("sequential reads opened %d reader connections, want 0 (read on the idle writer)", n)
	}
	// Two reads at once: the second cannot wait for the first.
	inside := make(chan struct{})
	release := make(chan struct{})
	go func() {
		_ = s.Read(ctx, func(q engine.Querier) error {
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	if err := s.Read(ctx, func(q engine.Querier) error {
		var n int
		return q.QueryRow(`SELECT count(*) FROM settings`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	close(release)
	if n := s.Stats().Readers; n != 1 {
		t.Errorf("overlapping reads: %d reader connections, want 1", n)
	}
	// A caller that gives up while its read waits is answered at once.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Read(cctx, func(q engine.Querier) error { return nil }); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("read with a cancelled context: %v", err)
	}
}

// A read marked LongRead (exports, snapshots, a move's pinned read) never
// runs on the writer: it may hold its connection or wait for the shard's
// writes.
func TestLongReadNotOnWriter(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "l.db"), sqlite.Options{}, shard.Options{})
	ctx := context.Background()
	written := make(chan error, 1)
	if err := s.Read(engine.LongRead(ctx), func(q engine.Querier) error {
		// A write from inside the read must get through: on the
		// writer's goroutine it would wait for itself.
		go func() { written <- s.Write(ctx, setSetting("inside", "1")) }()
		select {
		case err := <-written:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("a write waited for a long read")
		}
	}); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Readers; n != 1 {
		t.Errorf("a long read on a cold shard: %d reader connections, want 1", n)
	}
}

// A read on the idle writer never waits for a sync, even while the writer
// holds back its next batch until the last one's sync starts.
func TestReadsOnWriterDoNotWaitForSync(t *testing.T) {
	var hold atomic.Bool
	release := make(chan struct{})
	sqlite.SetSyncHook(func() error {
		if hold.Load() {
			<-release
		}
		return nil
	})
	t.Cleanup(func() { sqlite.SetSyncHook(nil) })
	s := openAt(t, filepath.Join(t.TempDir(), "w.db"), sqlite.Options{}, shard.Options{})
	ctx := context.Background()
	hold.Store(true)
	defer close(release)
	for _, k := range []string{"a", "b"} { // a's sync stalls; b commits behind it
		go func() { _ = s.Write(ctx, setSetting(k, "1")) }()
	}
	// Both commit (counted before their callers are answered), the
	// writer then idles. Reading only then: a read polled while the
	// writer runs b's batch would rightly open a reader connection.
	if !waitFor(10*time.Second, func() bool { st := s.Stats(); return st.Writes == 2 && st.Queued == 0 }) {
		t.Fatal("the two writes did not commit while the sync stalled")
	}
	time.Sleep(200 * time.Millisecond) // the writer leaves b's batch
	if got := settingKeysOnWriter(t, s); len(got) != 2 {
		t.Fatalf("a read on the idle writer while a sync stalls saw %v (it must not wait for the sync)", got)
	}
	if n := s.Stats().Readers; n != 0 {
		t.Fatalf("%d reader connections, want 0: the read did not run on the idle writer", n)
	}
}

// settingKeysOnWriter reads the settings with a 2 s deadline: a read that
// waited for the stalled sync would miss it.
func settingKeysOnWriter(t *testing.T, s *shard.Shard) map[string]bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return settingKeysCtx(t, ctx, s)
}

// waitFor polls cond until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

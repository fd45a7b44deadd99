package shard_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

func TestShard_Fence(t *testing.T) {
	t.Run("DrainsQueueAndDeferred", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		ctx := context.Background()
		// A slow write holds the writer while others queue behind it.
		started := make(chan struct{})
		release := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.Write(ctx, func(tx engine.Querier) error {
				close(started)
				<-release
				return insertAudit("slow")(tx)
			})
		}()
		<-started
		const queued = 20
		errs := make(chan error, queued)
		for i := 0; i < queued; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- s.Write(ctx, insertAudit("queued")) }()
		}
		for deadline := time.Now().Add(5 * time.Second); s.QueueLen() < queued && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if err := s.Defer("", insertAudit("deferred")); err != nil {
			t.Fatal(err)
		}
		fenced := make(chan error, 1)
		go func() { fenced <- s.Fence(ctx, time.Second) }()
		close(release)
		if err := <-fenced; err != nil {
			t.Fatalf("Fence: %v", err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("queued write: %v", err)
			}
		}
		// Everything queued and buffered before the fence is on disk.
		got := auditCounts(t, s)
		if got["slow"] != 1 || got["queued"] != queued || got["deferred"] != 1 {
			t.Fatalf("after fence: %v", got)
		}
		if st := s.Stats(); st.DeferredPending != 0 {
			t.Fatalf("deferred pending after fence: %d", st.DeferredPending)
		}
		s.Unfence()
	})

	t.Run("WritesWaitThenProceedOnUnfence", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		ctx := context.Background()
		if err := s.Fence(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Write(ctx, insertAudit("waited")) }()
		if err := s.Defer("", insertAudit("deferred-during-fence")); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("write returned while fenced: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		// Nothing reached the database while fenced, deferred records included.
		if got := auditCounts(t, s); got["waited"] != 0 || got["deferred-during-fence"] != 0 {
			t.Fatalf("database changed while fenced: %v", got)
		}
		s.Unfence()
		if err := <-done; err != nil {
			t.Fatalf("write after unfence: %v", err)
		}
		if got := auditCounts(t, s); got["waited"] != 1 {
			t.Fatalf("after unfence: %v", got)
		}
	})

	t.Run("WaitIsBounded", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		ctx := context.Background()
		if err := s.Fence(ctx, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		defer s.Unfence()
		err := s.Write(ctx, insertAudit("late"))
		if !errors.Is(err, engine.ErrMoving) || !errors.Is(err, engine.ErrUnavailable) {
			t.Fatalf("write behind a long fence: %v, want ErrMoving (an ErrUnavailable)", err)
		}
	})

	t.Run("SealRefusesAndHandsOverDeferred", func(t *testing.T) {
		s, path := openShard(t, shard.Options{})
		ctx := context.Background()
		if err := s.Fence(ctx, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Write(ctx, insertAudit("waiting")) }()
		for i := 0; i < 3; i++ {
			if err := s.Defer("", insertAudit("handed-over")); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(20 * time.Millisecond) // let the write reach its wait
		ops, err := s.Seal()
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) != 3 {
			t.Fatalf("Seal handed over %d deferred records, want 3", len(ops))
		}
		if err := <-done; !errors.Is(err, engine.ErrMoving) {
			t.Fatalf("waiting write after seal: %v, want ErrMoving", err)
		}
		if err := s.Write(ctx, insertAudit("after")); !errors.Is(err, engine.ErrMoving) {
			t.Fatalf("write after seal: %v, want ErrMoving", err)
		}
		if err := s.Defer("", insertAudit("after")); !errors.Is(err, engine.ErrMoving) {
			t.Fatalf("defer after seal: %v, want ErrMoving", err)
		}
		if err := s.Fence(ctx, 0); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("fence a sealed shard: %v, want ErrConflict", err)
		}
		// Reads keep working on a sealed shard.
		if got := auditCounts(t, s); len(got) != 0 {
			t.Fatalf("sealed shard has rows: %v", got)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// Close wrote nothing: the handed-over records are the caller's.
		if got := auditCounts(t, reopen(t, path)); len(got) != 0 {
			t.Fatalf("sealed shard's file changed at close: %v", got)
		}
		// The handed-over operations run anywhere, e.g. on another copy.
		other, _ := openShard(t, shard.Options{})
		for _, op := range ops {
			if err := other.Write(ctx, op); err != nil {
				t.Fatal(err)
			}
		}
		if got := auditCounts(t, other); got["handed-over"] != 3 {
			t.Fatalf("handed-over records applied: %v", got)
		}
	})

	t.Run("ErrConflict", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		if _, err := s.Seal(); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("seal of an unfenced shard: %v", err)
		}
		if err := s.Fence(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
		if err := s.Fence(context.Background(), 0); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("second fence: %v", err)
		}
		s.Unfence()
		s.Unfence() // a no-op
		if err := s.Write(context.Background(), insertAudit("x")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ErrClosed", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		_ = s.Close()
		if err := s.Fence(context.Background(), 0); !errors.Is(err, engine.ErrClosed) {
			t.Fatalf("fence a closed shard: %v", err)
		}
	})
}

func TestShard_Capture(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		ctx := context.Background()
		if err := s.Write(ctx, insertAudit("before")); err != nil {
			t.Fatal(err)
		}
		var seen map[string]int
		c, err := s.StartCapture(ctx, 100, func() error {
			seen = auditCounts(t, s) // the state at the point
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen["before"] != 1 {
			t.Fatalf("state at the capture point: %v", seen)
		}
		if err := s.Write(ctx, insertAudit("after")); err != nil {
			t.Fatal(err)
		}
		// A failed operation is not captured; its batch-mates are.
		boom := errors.New("boom")
		if err := s.Write(ctx, func(tx engine.Querier) error {
			if err := insertAudit("rolled-back")(tx); err != nil {
				return err
			}
			return boom
		}); !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if err := s.Write(ctx, setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		got, err := c.Take()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Args[0] != "after" || got[0].Changed != 1 || got[1].Args[0] != "k" {
			t.Fatalf("captured %+v", got)
		}
		if more, _ := c.Take(); len(more) != 0 {
			t.Fatalf("second take: %+v", more)
		}
		s.StopCapture(c)
		if err := s.Write(ctx, insertAudit("untracked")); err != nil {
			t.Fatal(err)
		}
		if more, _ := c.Take(); len(more) != 0 {
			t.Fatalf("captured after stop: %+v", more)
		}
	})
	t.Run("ErrOverloaded", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		ctx := context.Background()
		c, err := s.StartCapture(ctx, 2, func() error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		defer s.StopCapture(c)
		for i := 0; i < 3; i++ {
			if err := s.Write(ctx, insertAudit("x")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Take(); !errors.Is(err, engine.ErrOverloaded) {
			t.Fatalf("take past the limit: %v", err)
		}
		if _, err := s.StartCapture(ctx, 2, func() error { return nil }); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("second capture: %v", err)
		}
	})
	t.Run("PointError", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		boom := errors.New("boom")
		if _, err := s.StartCapture(context.Background(), 2, func() error { return boom }); !errors.Is(err, boom) {
			t.Fatalf("point error: %v", err)
		}
	})
}

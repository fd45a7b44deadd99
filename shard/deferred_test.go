package shard_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// never is a flush interval long enough that only writes and Close flush.
const never = time.Hour

func TestShard_Defer(t *testing.T) {
	t.Run("RidesInNextBatch", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{FlushInterval: never})
		if err := s.Defer("", insertAudit("login_failed")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "1")); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.DeferredPending != 2 {
			t.Errorf("DeferredPending = %d, want 2", st.DeferredPending)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		if n := auditCounts(t, s)["login_failed"]; n != 1 {
			t.Errorf("deferred audit row present %d times after the next write, want 1", n)
		}
		if _, ok := setting(t, s, "last_seen:u1"); !ok {
			t.Error("deferred keyed record absent after the next write")
		}
		st := s.Stats()
		if st.Batches != 1 || st.MaxBatch != 3 || st.DeferredWritten != 2 || st.DeferredPending != 0 {
			t.Errorf("Batches, MaxBatch, DeferredWritten, DeferredPending = %d, %d, %d, %d; want 1, 3, 2, 0",
				st.Batches, st.MaxBatch, st.DeferredWritten, st.DeferredPending)
		}
	})

	t.Run("FlushedWithoutWrite", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{FlushInterval: 20 * time.Millisecond})
		if err := s.Defer("", insertAudit("login_failed")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "1")); err != nil {
			t.Fatal(err)
		}
		// Bounded poll: this checks that the flush happens, not how fast.
		if !waitFor(10*time.Second, func() bool { return s.Stats().DeferredWritten == 2 }) {
			t.Fatalf("deferred records not flushed after 10s: %+v", s.Stats())
		}
		if n := auditCounts(t, s)["login_failed"]; n != 1 {
			t.Errorf("flushed audit row present %d times, want 1", n)
		}
		if _, ok := setting(t, s, "last_seen:u1"); !ok {
			t.Error("flushed keyed record absent")
		}
	})

	t.Run("FlushedOnClose", func(t *testing.T) {
		s, path := openShard(t, shard.Options{FlushInterval: never})
		if err := s.Defer("", insertAudit("login_failed")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		r := reopen(t, path)
		if n := auditCounts(t, r)["login_failed"]; n != 1 {
			t.Errorf("audit row flushed on close present %d times, want 1", n)
		}
		if _, ok := setting(t, r, "last_seen:u1"); !ok {
			t.Error("keyed record not flushed on close")
		}
	})

	t.Run("KeyedRecordsCoalesce", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{FlushInterval: never})
		var ran1, ran2 atomic.Int64
		counted := func(n *atomic.Int64, op engine.WriteFunc) engine.WriteFunc {
			return func(tx engine.Querier) error { n.Add(1); return op(tx) }
		}
		if err := s.Defer("last_seen:u1", counted(&ran1, setSetting("last_seen:u1", "old"))); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("last_seen:u1", counted(&ran2, setSetting("last_seen:u1", "new"))); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.DeferredPending != 1 {
			t.Errorf("DeferredPending = %d, want 1", st.DeferredPending)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		if v, _ := setting(t, s, "last_seen:u1"); v != "new" {
			t.Errorf("last_seen:u1 = %q, want new", v)
		}
		if ran1.Load() != 0 || ran2.Load() != 1 {
			t.Errorf("replaced record ran %d times, latest %d times; want 0, 1", ran1.Load(), ran2.Load())
		}
		if st := s.Stats(); st.DeferredWritten != 1 {
			t.Errorf("DeferredWritten = %d, want 1", st.DeferredWritten)
		}
	})

	t.Run("KeyedRecordsDebounced", func(t *testing.T) {
		s, path := openShard(t, shard.Options{FlushInterval: 10 * time.Millisecond, DebounceInterval: never})
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k1", "v")); err != nil {
			t.Fatal(err)
		}
		if v, _ := setting(t, s, "last_seen:u1"); v != "1" {
			t.Fatalf("last_seen:u1 = %q after the first write, want 1", v)
		}

		// Written just now: the next value is held for the debounce
		// interval, while a key not written recently goes at once.
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "2")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("last_seen:u2", setSetting("last_seen:u2", "1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k2", "v")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // a few flush ticks: none may write it
		if v, _ := setting(t, s, "last_seen:u1"); v != "1" {
			t.Errorf("last_seen:u1 = %q within the debounce interval, want 1", v)
		}
		if _, ok := setting(t, s, "last_seen:u2"); !ok {
			t.Error("last_seen:u2, not debounced, was not written with the next write")
		}
		if st := s.Stats(); st.DeferredPending != 1 {
			t.Errorf("DeferredPending = %d, want 1", st.DeferredPending)
		}

		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if v, _ := setting(t, reopen(t, path), "last_seen:u1"); v != "2" {
			t.Errorf("last_seen:u1 = %q after Close, want 2: debounced records must flush on close", v)
		}
	})

	t.Run("DebouncedRightAfterAck", func(t *testing.T) {
		// A key is debounced from the moment the write carrying it is
		// acknowledged, not from some later point in the writer.
		s, _ := openShard(t, shard.Options{FlushInterval: never, DebounceInterval: never})
		for i := 0; i < 50; i++ {
			key := fmt.Sprintf("last_seen:u%d", i)
			if err := s.Defer(key, setSetting(key, "1")); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
				t.Fatal(err)
			}
			if err := s.Defer(key, setSetting(key, "2")); err != nil {
				t.Fatal(err)
			}
			if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
				t.Fatal(err)
			}
			if v, _ := setting(t, s, key); v != "1" {
				t.Fatalf("%s = %q within the debounce interval, want 1", key, v)
			}
		}
		if st := s.Stats(); st.DeferredPending != 50 || st.DeferredWritten != 50 {
			t.Errorf("DeferredPending, DeferredWritten = %d, %d, want 50, 50", st.DeferredPending, st.DeferredWritten)
		}
	})

	t.Run("ErrOverloaded", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{FlushInterval: never, DeferLimit: 2})
		if err := s.Defer("", insertAudit("a")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("", insertAudit("b")); !errors.Is(err, engine.ErrOverloaded) {
			t.Errorf("Defer into a full buffer: err = %v, want ErrOverloaded", err)
		}
		if err := s.Defer("last_seen:u2", setSetting("last_seen:u2", "1")); !errors.Is(err, engine.ErrOverloaded) {
			t.Errorf("Defer of a new key into a full buffer: err = %v, want ErrOverloaded", err)
		}
		// Replacing a pending key takes no room.
		if err := s.Defer("last_seen:u1", setSetting("last_seen:u1", "2")); err != nil {
			t.Errorf("Defer replacing a pending key: %v", err)
		}
		if st := s.Stats(); st.DeferredDropped != 2 || st.DeferredPending != 2 {
			t.Errorf("DeferredDropped, DeferredPending = %d, %d, want 2, 2", st.DeferredDropped, st.DeferredPending)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		if err := s.Defer("", insertAudit("c")); err != nil {
			t.Errorf("Defer after the buffer was flushed: %v", err)
		}
		counts := auditCounts(t, s)
		if counts["a"] != 1 || counts["b"] != 0 {
			t.Errorf("audit rows a, b = %d, %d, want 1, 0", counts["a"], counts["b"])
		}
	})
}

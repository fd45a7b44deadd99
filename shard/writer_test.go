package shard_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

func TestShard_Write(t *testing.T) {
	t.Run("ManyShardsConcurrently", func(t *testing.T) {
		checkNoLeaks(t)
		const (
			tenants    = 50
			goroutines = 20
			inserts    = 10
		)
		dir := t.TempDir()
		shards := make([]*shard.Shard, tenants)
		for i := range shards {
			// synchronous=FULL, the default: what group commit is for.
			s, err := sqlite.Open(context.Background(), filepath.Join(dir, fmt.Sprintf("t%02d.db", i)), sqlite.Options{}, shard.Options{})
			if err != nil {
				t.Fatalf("open shard %d: %v", i, err)
			}
			shards[i] = s
			t.Cleanup(func() { _ = s.Close() })
		}

		// acked[i] holds the tags of shard i whose Write returned nil.
		acked := make([][]string, tenants)
		var mu sync.Mutex // guards acked
		var failures atomic.Int64
		var wg sync.WaitGroup
		for i, s := range shards {
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < inserts; n++ {
						tag := fmt.Sprintf("g%d-n%d", g, n)
						if err := s.Write(context.Background(), insertAudit(tag)); err != nil {
							if failures.Add(1) <= 5 {
								t.Errorf("shard %d write %s: %v", i, tag, err)
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

		var batches, writes int64
		maxBatch := int64(0)
		for i, s := range shards {
			counts := auditCounts(t, s)
			for _, tag := range acked[i] {
				if counts[tag] != 1 {
					t.Errorf("shard %d: acknowledged write %s present %d times, want 1", i, tag, counts[tag])
				}
			}
			if len(counts) != len(acked[i]) {
				t.Errorf("shard %d: %d distinct rows, %d acknowledged writes", i, len(counts), len(acked[i]))
			}
			st := s.Stats()
			if st.Writes != int64(len(acked[i])) {
				t.Errorf("shard %d: Stats().Writes = %d, want %d", i, st.Writes, len(acked[i]))
			}
			batches += st.Batches
			writes += st.Writes
			maxBatch = max(maxBatch, st.MaxBatch)
		}
		if want := int64(tenants * goroutines * inserts); writes != want {
			t.Errorf("writes = %d, want %d", writes, want)
		}
		if maxBatch <= 1 {
			t.Errorf("largest batch = %d, want > 1: no group commit happened", maxBatch)
		}
		if batches >= writes {
			t.Errorf("%d batches for %d writes, want fewer batches than writes", batches, writes)
		}
		t.Logf("%d writes in %d batches, largest %d", writes, batches, maxBatch)
		for i, s := range shards {
			if err := s.Close(); err != nil {
				t.Errorf("close shard %d: %v", i, err)
			}
		}
	})

	t.Run("FailingOperationFailsAlone", func(t *testing.T) {
		const n = 8
		s, _ := openShard(t, shard.Options{QueueSize: 2 * n, MaxBatch: 4 * n})
		if err := s.Write(context.Background(), setSetting("taken", "first")); err != nil {
			t.Fatal(err)
		}
		release, wait := blockWriter(t, s)

		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i == n/2 {
					// Two inserts; the second violates the primary key, so
					// the first must be rolled back with it.
					errs[i] = s.Write(context.Background(), func(tx engine.Querier) error {
						if err := setSetting("partial", "x")(tx); err != nil {
							return err
						}
						_, err := tx.Exec("INSERT INTO settings (key, value) VALUES ('taken', 'second')")
						return err
					})
					return
				}
				errs[i] = s.Write(context.Background(), setSetting(fmt.Sprintf("k%d", i), "v"))
			}()
		}
		if !waitFor(10*time.Second, func() bool { return s.QueueLen() == n }) {
			t.Fatalf("%d of %d writes queued after 10s", s.QueueLen(), n)
		}
		release()
		if err := wait(); err != nil {
			t.Fatalf("blocking write: %v", err)
		}
		wg.Wait()

		for i, err := range errs {
			if i == n/2 {
				if !errors.Is(err, engine.ErrConflict) {
					t.Errorf("failing write: err = %v, want ErrConflict", err)
				}
				continue
			}
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
			if _, ok := setting(t, s, fmt.Sprintf("k%d", i)); !ok {
				t.Errorf("write %d acknowledged but absent", i)
			}
		}
		if _, ok := setting(t, s, "partial"); ok {
			t.Error("the failed operation's first insert was committed")
		}
		if v, _ := setting(t, s, "taken"); v != "first" {
			t.Errorf("taken = %q, want first", v)
		}
		st := s.Stats()
		if st.MaxBatch < n {
			t.Errorf("MaxBatch = %d, want >= %d: the writes were not in one batch", st.MaxBatch, n)
		}
		if st.Failed != 1 || st.Writes != n+1 { // n-1 + the first + the blocking one
			t.Errorf("Failed, Writes = %d, %d, want 1, %d", st.Failed, st.Writes, n+1)
		}
	})

	t.Run("ErrOverloaded", func(t *testing.T) {
		const size = 3
		s, _ := openShard(t, shard.Options{QueueSize: size})
		release, wait := blockWriter(t, s)

		results := make(chan error, size+2)
		for i := 0; i < size+2; i++ {
			go func() { results <- s.Write(context.Background(), setSetting(fmt.Sprintf("k%d", i), "v")) }()
		}
		// The writer is blocked, so exactly size writes fit in the queue and
		// the other two are refused without waiting.
		for i := 0; i < 2; i++ {
			select {
			case err := <-results:
				if !errors.Is(err, engine.ErrOverloaded) {
					t.Errorf("write beyond the queue: err = %v, want ErrOverloaded", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no write was refused with the queue full")
			}
		}
		if got := s.QueueLen(); got != size {
			t.Errorf("QueueLen = %d, want %d", got, size)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Write(ctx, setSetting("late", "v")); !errors.Is(err, engine.ErrOverloaded) {
			t.Errorf("write with the queue full: err = %v, want ErrOverloaded", err)
		}

		release()
		if err := wait(); err != nil {
			t.Fatalf("blocking write: %v", err)
		}
		for i := 0; i < size; i++ {
			if err := <-results; err != nil {
				t.Errorf("queued write: %v", err)
			}
		}
		if st := s.Stats(); st.Overloaded != 3 || st.Writes != size+1 {
			t.Errorf("Overloaded, Writes = %d, %d, want 3, %d", st.Overloaded, st.Writes, size+1)
		}
		if err := s.Write(context.Background(), setSetting("after", "v")); err != nil {
			t.Errorf("write after the queue drained: %v", err)
		}
	})

	t.Run("WriterPanic", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		release, wait := blockWriter(t, s)
		errs := make(chan error, 3)
		go func() { errs <- s.Write(context.Background(), setSetting("before", "v")) }()
		go func() {
			errs <- s.Write(context.Background(), func(tx engine.Querier) error {
				if err := setSetting("panicking", "v")(tx); err != nil {
					return err
				}
				panic("boom")
			})
		}()
		go func() { errs <- s.Write(context.Background(), setSetting("after", "v")) }()
		if !waitFor(10*time.Second, func() bool { return s.QueueLen() == 3 }) {
			t.Fatalf("%d of 3 writes queued after 10s", s.QueueLen())
		}
		release()
		if err := wait(); err != nil {
			t.Fatalf("blocking write: %v", err)
		}
		for i := 0; i < 3; i++ {
			if err := <-errs; err == nil || !errors.Is(err, engine.ErrUnavailable) {
				t.Errorf("write in the panicking batch: err = %v, want ErrUnavailable", err)
			}
		}
		if st := s.Stats(); st.Panics != 1 || st.Failed != 3 {
			t.Errorf("Panics, Failed = %d, %d, want 1, 3", st.Panics, st.Failed)
		}
		for _, k := range []string{"before", "panicking", "after"} {
			if _, ok := setting(t, s, k); ok {
				t.Errorf("%s of the failed batch was committed", k)
			}
		}
		// The writer threw its connection away; the next batch opens one.
		if err := s.Write(context.Background(), setSetting("later", "v")); err != nil {
			t.Fatalf("write after the panic: %v", err)
		}
		if _, ok := setting(t, s, "later"); !ok {
			t.Error("write after the panic acknowledged but absent")
		}
	})

	t.Run("ErrClosed", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("Write after Close: err = %v, want ErrClosed", err)
		}
		if err := s.Read(context.Background(), func(engine.Querier) error { return nil }); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("Read after Close: err = %v, want ErrClosed", err)
		}
		if err := s.Defer("", setSetting("k", "v")); !errors.Is(err, engine.ErrClosed) {
			t.Errorf("Defer after Close: err = %v, want ErrClosed", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	t.Run("CanceledBeforeRun", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		release, wait := blockWriter(t, s)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Write(ctx, setSetting("canceled", "v")) }()
		if !waitFor(10*time.Second, func() bool { return s.QueueLen() == 1 }) {
			t.Fatal("write not queued after 10s")
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		release()
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		// The writer skips a request whose caller left before it began.
		if err := s.Write(context.Background(), setSetting("next", "v")); err != nil {
			t.Fatal(err)
		}
		if _, ok := setting(t, s, "canceled"); ok {
			t.Error("a write canceled before its batch began was committed")
		}
	})
}

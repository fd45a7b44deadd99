package shard_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

func TestShard_Read(t *testing.T) {
	t.Run("NeverWaitsForWriter", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{})
		if err := s.Write(context.Background(), setSetting("committed", "yes")); err != nil {
			t.Fatal(err)
		}
		// The blocked write has begun the batch transaction and written an
		// uncommitted row: the writer holds the database's write lock.
		started := make(chan struct{})
		unblock := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.Write(context.Background(), func(tx engine.Querier) error {
				if err := setSetting("uncommitted", "yes")(tx); err != nil {
					return err
				}
				close(started)
				<-unblock
				return nil
			})
		}()
		t.Cleanup(func() {
			select {
			case <-unblock:
			default:
				close(unblock)
			}
		})
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("blocking write: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("blocking write not started after 10s")
		}

		// The test fails by deadlock (and the test binary's -timeout) if a
		// read waits for the writer; a context bounds it more kindly.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := 0; i < 3; i++ { // more reads than one connection
			if v, ok := settingCtx(ctx, t, s, "committed"); !ok || v != "yes" {
				t.Errorf("read %d during a write: committed = %q, %v; want yes, true", i, v, ok)
			}
			if _, ok := settingCtx(ctx, t, s, "uncommitted"); ok {
				t.Errorf("read %d saw an uncommitted row", i)
			}
		}
		select {
		case err := <-done:
			t.Fatalf("blocking write answered before release: %v", err)
		default:
		}

		close(unblock)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, ok := setting(t, s, "uncommitted"); !ok {
			t.Error("row committed after release not visible")
		}
		if st := s.Stats(); st.Readers < 1 || st.Readers > shard.DefaultReaders {
			t.Errorf("Readers = %d, want 1..%d", st.Readers, shard.DefaultReaders)
		}
	})

	t.Run("ConcurrentReads", func(t *testing.T) {
		s, _ := openShard(t, shard.Options{Readers: 2})
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			go func() {
				var err error
				for n := 0; n < 20 && err == nil; n++ {
					err = s.Read(context.Background(), func(q engine.Querier) error {
						var v string
						return q.QueryRow("SELECT value FROM settings WHERE key = ?", "k").Scan(&v)
					})
				}
				errs <- err
			}()
		}
		for i := 0; i < 8; i++ {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		if st := s.Stats(); st.Readers > 2 {
			t.Errorf("Readers = %d, want at most 2", st.Readers)
		}
	})
}

package engine_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
)

// openApp opens an engine on SQLite files in a fresh data directory and
// closes it at cleanup, failing if a shard was left pinned.
func openApp(tb testing.TB) (*app.App, string) {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "data")
	a, err := app.Open(context.Background(), app.Config{DataDir: dir})
	if err != nil {
		tb.Fatalf("app.Open: %v", err)
	}
	tb.Cleanup(func() {
		if st := a.Cache.Stats(); st.Pinned != 0 {
			tb.Errorf("%d shards still pinned at the end of the test", st.Pinned)
		}
		if err := a.Close(); err != nil {
			tb.Errorf("close app: %v", err)
		}
	})
	return a, dir
}

func createTenant(tb testing.TB, e *engine.Engine, slug string) *engine.Tenant {
	tb.Helper()
	t, err := e.CreateTenant(context.Background(), slug, slug, "")
	if err != nil {
		tb.Fatalf("CreateTenant(%q): %v", slug, err)
	}
	return t
}

func approveTenant(tb testing.TB, e *engine.Engine, slug string) *engine.Tenant {
	tb.Helper()
	createTenant(tb, e, slug)
	t, err := e.ApproveTenant(context.Background(), slug)
	if err != nil {
		tb.Fatalf("ApproveTenant(%q): %v", slug, err)
	}
	return t
}

// shardFiles returns the files under dataDir/shards whose name starts with
// the tenant id (the database and its -wal and -shm companions).
func shardFiles(tb testing.TB, dataDir, id string) []string {
	tb.Helper()
	var out []string
	root := filepath.Join(dataDir, "shards")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), id) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("walk shards: %v", err)
	}
	return out
}

func putSetting(tb testing.TB, s engine.Shard, key, value string) {
	tb.Helper()
	err := s.Write(context.Background(), func(tx engine.Querier) error {
		_, err := tx.Exec("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)
		return err
	})
	if err != nil {
		tb.Fatalf("write setting %q: %v", key, err)
	}
}

func getSetting(tb testing.TB, s engine.Shard, key string) string {
	tb.Helper()
	var v string
	err := s.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	})
	if err != nil {
		tb.Fatalf("read setting %q: %v", key, err)
	}
	return v
}

func TestEngine_Tenant(t *testing.T) {
	ctx := context.Background()
	a, _ := openApp(t)
	e := a.Engine

	t.Run("ErrTenantNotFound", func(t *testing.T) {
		for _, key := range []string{"nope", engine.NewTenantID(), "", "../x"} {
			if ts, err := e.Tenant(ctx, key); !errors.Is(err, engine.ErrTenantNotFound) {
				if ts != nil {
					ts.Release()
				}
				t.Errorf("Tenant(%q) err = %v, want ErrTenantNotFound", key, err)
			}
		}
	})
	t.Run("ErrTenantPending", func(t *testing.T) {
		tn := createTenant(t, e, "pending")
		for _, key := range []string{"pending", tn.ID} {
			if ts, err := e.Tenant(ctx, key); !errors.Is(err, engine.ErrTenantPending) {
				if ts != nil {
					ts.Release()
				}
				t.Errorf("Tenant(%q) err = %v, want ErrTenantPending", key, err)
			}
		}
	})
	t.Run("OK", func(t *testing.T) {
		tn := approveTenant(t, e, "active")
		for _, key := range []string{"active", tn.ID} {
			ts, err := e.Tenant(ctx, key)
			if err != nil {
				t.Fatalf("Tenant(%q): %v", key, err)
			}
			if ts.Tenant.ID != tn.ID || ts.Tenant.Status != engine.StatusActive {
				ts.Release()
				t.Fatalf("Tenant(%q) = %+v", key, ts.Tenant)
			}
			putSetting(t, ts, "k", key)
			if got := getSetting(t, ts, "k"); got != key {
				t.Errorf("read back %q, want %q", got, key)
			}
			ts.Release()
		}
	})
	t.Run("ErrTenantSuspended", func(t *testing.T) {
		tn := approveTenant(t, e, "suspended")
		ts, err := e.Tenant(ctx, "suspended")
		if err != nil {
			t.Fatal(err)
		}
		putSetting(t, ts, "kept", "yes")
		ts.Release()
		if _, err := e.SuspendTenant(ctx, "suspended"); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"suspended", tn.ID} {
			if ts, err := e.Tenant(ctx, key); !errors.Is(err, engine.ErrTenantSuspended) {
				if ts != nil {
					ts.Release()
				}
				t.Errorf("Tenant(%q) err = %v, want ErrTenantSuspended", key, err)
			}
		}
		// Resume: the data was kept.
		if _, err := e.ResumeTenant(ctx, tn.ID); err != nil {
			t.Fatal(err)
		}
		ts, err = e.Tenant(ctx, "suspended")
		if err != nil {
			t.Fatalf("Tenant after resume: %v", err)
		}
		defer ts.Release()
		if got := getSetting(t, ts, "kept"); got != "yes" {
			t.Fatalf("after suspend and resume: %q", got)
		}
	})
}

func TestEngine_Transitions(t *testing.T) {
	ctx := context.Background()
	a, dir := openApp(t)
	e := a.Engine
	tn := createTenant(t, e, "acme")
	if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
		t.Fatalf("a pending tenant has files: %v", files)
	}
	steps := []struct {
		name string
		do   func(context.Context, string) (*engine.Tenant, error)
		want error
	}{
		{"suspend pending", e.SuspendTenant, engine.ErrWrongStatus},
		{"resume pending", e.ResumeTenant, engine.ErrWrongStatus},
		{"approve", e.ApproveTenant, nil},
		{"approve active", e.ApproveTenant, engine.ErrWrongStatus},
		{"resume active", e.ResumeTenant, engine.ErrWrongStatus},
		{"suspend", e.SuspendTenant, nil},
		{"suspend suspended", e.SuspendTenant, engine.ErrWrongStatus},
		{"approve suspended", e.ApproveTenant, engine.ErrWrongStatus},
		{"resume", e.ResumeTenant, nil},
	}
	for _, st := range steps {
		_, err := st.do(ctx, "acme")
		if st.want == nil && err != nil || st.want != nil && !errors.Is(err, st.want) {
			t.Fatalf("%s: err = %v, want %v", st.name, err, st.want)
		}
	}
	for _, do := range []func(context.Context, string) (*engine.Tenant, error){e.ApproveTenant, e.SuspendTenant, e.ResumeTenant} {
		if _, err := do(ctx, "nope"); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Errorf("transition of an unknown tenant: %v", err)
		}
	}
	got, _ := e.Get(ctx, tn.ID)
	if got.Status != engine.StatusActive || got.ApprovedAt == nil {
		t.Fatalf("final state %+v", got)
	}
}

func TestEngine_SuspendTenant(t *testing.T) {
	t.Run("WaitsForHandle", func(t *testing.T) {
		ctx := context.Background()
		a, _ := openApp(t)
		e := a.Engine
		tn := approveTenant(t, e, "acme")
		held, err := e.Tenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		released := false
		defer func() {
			if !released {
				held.Release()
			}
		}()

		type result struct {
			t   *engine.Tenant
			err error
		}
		done := make(chan result, 1)
		go func() {
			st, err := e.SuspendTenant(ctx, "acme")
			done <- result{st, err}
		}()

		// The status flips first; then Suspend waits for the shard to close.
		for i := 0; ; i++ {
			got, err := e.Get(ctx, tn.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status == engine.StatusSuspended {
				break
			}
			if i == 500 {
				t.Fatal("status not suspended within 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if ts, err := e.Tenant(ctx, "acme"); !errors.Is(err, engine.ErrTenantSuspended) {
			if ts != nil {
				ts.Release()
			}
			t.Fatalf("new Tenant() while suspending: %v, want ErrTenantSuspended", err)
		}

		// The handle acquired before the suspension keeps working.
		putSetting(t, held, "in-flight", "committed")
		if got := getSetting(t, held, "in-flight"); got != "committed" {
			t.Fatalf("read on held handle: %q", got)
		}
		select {
		case r := <-done:
			t.Fatalf("SuspendTenant returned (%v) while a handle was held", r.err)
		default:
		}

		held.Release()
		released = true
		select {
		case r := <-done:
			if r.err != nil || r.t.Status != engine.StatusSuspended {
				t.Fatalf("SuspendTenant = %+v, %v", r.t, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("SuspendTenant still blocked 30s after the handle was released")
		}
		if st := a.Cache.Stats(); st.Open != 0 || st.Pinned != 0 {
			t.Fatalf("after suspend, cache %+v; want the shard closed", st)
		}

		// The write made through the held handle is on disk.
		if _, err := e.ResumeTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		ts, err := e.Tenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		defer ts.Release()
		if got := getSetting(t, ts, "in-flight"); got != "committed" {
			t.Fatalf("after resume: %q", got)
		}
	})
	t.Run("ContextEnds", func(t *testing.T) {
		a, _ := openApp(t)
		e := a.Engine
		approveTenant(t, e, "acme")
		held, err := e.Tenant(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		defer held.Release()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := e.SuspendTenant(ctx, "acme")
			done <- err
		}()
		for i := 0; ; i++ {
			got, _ := e.Get(context.Background(), "acme")
			if got.Status == engine.StatusSuspended {
				break
			}
			if i == 500 {
				t.Fatal("status not suspended within 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel() // the caller gives up waiting for the pinned shard
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("SuspendTenant after its context ended: %v, want context.Canceled", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("SuspendTenant ignored the end of its context")
		}
		// The change stands; only the wait was cut short.
		if ts, err := e.Tenant(context.Background(), "acme"); !errors.Is(err, engine.ErrTenantSuspended) {
			if ts != nil {
				ts.Release()
			}
			t.Fatalf("Tenant() after the cut-short suspend: %v", err)
		}
	})
}

func TestEngine_DeleteTenant(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		a, dir := openApp(t)
		e := a.Engine
		tn := approveTenant(t, e, "acme")
		ts, err := e.Tenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		putSetting(t, ts, "k", "v")
		ts.Release()
		if files := shardFiles(t, dir, tn.ID); len(files) == 0 {
			t.Fatal("no shard file after approve")
		}
		if err := e.DeleteTenant(ctx, "acme"); err != nil {
			t.Fatalf("DeleteTenant: %v", err)
		}
		if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
			t.Fatalf("files left after delete: %v", files)
		}
		for _, key := range []string{"acme", tn.ID} {
			if _, err := e.Get(ctx, key); !errors.Is(err, engine.ErrTenantNotFound) {
				t.Errorf("Get(%q) after delete: %v", key, err)
			}
			if ts, err := e.Tenant(ctx, key); !errors.Is(err, engine.ErrTenantNotFound) {
				if ts != nil {
					ts.Release()
				}
				t.Errorf("Tenant(%q) after delete: %v", key, err)
			}
		}
		if err := e.DeleteTenant(ctx, "acme"); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		// A stale placement must not bring the file back.
		if h, err := e.Shards.Acquire(ctx, tn.Placement()); err == nil {
			h.Release()
			t.Fatal("Acquire of a deleted tenant's placement succeeded")
		}
		if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
			t.Fatalf("Acquire of a stale placement recreated %v", files)
		}
		// The slug can be reused; the new tenant gets a new id and file.
		again := approveTenant(t, e, "acme")
		if again.ID == tn.ID {
			t.Fatal("a recreated tenant reused the old id")
		}
	})
	t.Run("Pending", func(t *testing.T) {
		a, dir := openApp(t)
		tn := createTenant(t, a.Engine, "acme")
		if err := a.Engine.DeleteTenant(ctx, tn.ID); err != nil {
			t.Fatal(err)
		}
		if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
			t.Fatalf("files after deleting a pending tenant: %v", files)
		}
	})
	t.Run("Suspended", func(t *testing.T) {
		a, dir := openApp(t)
		tn := approveTenant(t, a.Engine, "acme")
		if _, err := a.Engine.SuspendTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if err := a.Engine.DeleteTenant(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
			t.Fatalf("files after deleting a suspended tenant: %v", files)
		}
	})
	t.Run("ConcurrentTenant", func(t *testing.T) {
		a, dir := openApp(t)
		e := a.Engine
		const rounds, workers = 8, 4
		for round := 0; round < rounds; round++ {
			tn := approveTenant(t, e, "acme")
			var wg sync.WaitGroup
			errc := make(chan error, workers)
			start := make(chan struct{})
			for w := 0; w < workers; w++ {
				key := "acme"
				if w%2 == 1 {
					key = tn.ID
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					// Use the tenant until it is gone; bounded so that a
					// bug cannot hang the test.
					for i := 0; i < 100000; i++ {
						ts, err := e.Tenant(ctx, key)
						switch {
						case err == nil:
							var one int
							rerr := ts.Read(ctx, func(q engine.Querier) error { return q.QueryRow("SELECT 1").Scan(&one) })
							ts.Release()
							if rerr != nil && !errors.Is(rerr, engine.ErrUnavailable) && !errors.Is(rerr, engine.ErrClosed) {
								errc <- rerr
								return
							}
						case errors.Is(err, engine.ErrTenantNotFound):
							return
						case errors.Is(err, engine.ErrUnavailable):
							// The catalog said active, the file was gone.
						default:
							errc <- err
							return
						}
					}
					errc <- errors.New("tenant still resolvable after 100000 tries")
				}()
			}
			close(start)
			if err := e.DeleteTenant(ctx, "acme"); err != nil {
				t.Fatalf("round %d: DeleteTenant: %v", round, err)
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatalf("round %d: concurrent Tenant(): %v", round, err)
			}
			// Let any shard a racing Tenant() opened finish closing.
			if err := e.Shards.Evict(ctx, tn.ID); err != nil {
				t.Fatal(err)
			}
			if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
				t.Fatalf("round %d: files after delete with concurrent users: %v", round, files)
			}
			for _, key := range []string{"acme", tn.ID} {
				if ts, err := e.Tenant(ctx, key); !errors.Is(err, engine.ErrTenantNotFound) {
					if ts != nil {
						ts.Release()
					}
					t.Fatalf("round %d: Tenant(%q) after delete: %v", round, key, err)
				}
			}
			if files := shardFiles(t, dir, tn.ID); len(files) != 0 {
				t.Fatalf("round %d: Tenant() after delete recreated %v", round, files)
			}
		}
		if st := a.Cache.Stats(); st.Open != 0 {
			t.Fatalf("shards still open after every tenant was deleted: %+v", st)
		}
		if _, err := os.Stat(filepath.Join(dir, "catalog.db")); err != nil {
			t.Fatal(err)
		}
	})
}

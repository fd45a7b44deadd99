package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/engine"
)

// mustOpen opens the catalog in dir and closes it at cleanup. With
// KEYSHARD_TEST_CATALOG=postgres|mysql the catalog is a table on that server
// (DSN from KEYSHARD_TEST_POSTGRES_DSN / KEYSHARD_TEST_MYSQL_DSN), one table
// per dir, dropped at cleanup: the same tests then cover server catalogs.
func mustOpen(tb testing.TB, dir string) *catalog.Catalog {
	tb.Helper()
	r, err := openCatalog(tb, dir)
	if err != nil {
		tb.Fatalf("open catalog: %v", err)
	}
	tb.Cleanup(func() {
		if server := os.Getenv("KEYSHARD_TEST_CATALOG"); server != "" && server != "sqlite" {
			_ = r.DropServerTable(context.Background())
		}
		if err := r.Close(); err != nil {
			tb.Errorf("close catalog: %v", err)
		}
	})
	return r
}

// openCatalog opens the catalog of dir on the catalog backend under test.
func openCatalog(tb testing.TB, dir string) (*catalog.Catalog, error) {
	var dsn string
	switch b := os.Getenv("KEYSHARD_TEST_CATALOG"); b {
	case "", "sqlite":
		return catalog.OpenSQLite(context.Background(), dir)
	case "postgres":
		dsn = os.Getenv("KEYSHARD_TEST_POSTGRES_DSN")
	case "mysql":
		dsn = "mysql://" + os.Getenv("KEYSHARD_TEST_MYSQL_DSN")
	default:
		tb.Fatalf("KEYSHARD_TEST_CATALOG=%s: want sqlite, postgres or mysql", b)
	}
	if dsn == "" || dsn == "mysql://" {
		tb.Fatal("KEYSHARD_TEST_CATALOG needs the server's KEYSHARD_TEST_*_DSN")
	}
	h := fnv.New64a()
	h.Write([]byte(dir))
	return catalog.OpenServer(context.Background(), dsn, fmt.Sprintf("kt_%x", h.Sum64()))
}

// watch runs r.Watch until cleanup and waits for it to return.
func watch(tb testing.TB, r *catalog.Catalog, interval time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.Watch(ctx, interval)
	}()
	tb.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func newTenant(slug string) *engine.Tenant {
	return &engine.Tenant{ID: engine.NewTenantID(), Slug: slug, Name: slug, Status: engine.StatusPending, Backend: engine.BackendSQLite, Epoch: 1}
}

func mustCreate(tb testing.TB, r *catalog.Catalog, slug string) *engine.Tenant {
	tb.Helper()
	t := newTenant(slug)
	if err := r.Create(context.Background(), t); err != nil {
		tb.Fatalf("create %q: %v", slug, err)
	}
	return t
}

// eventually polls cond every 10ms for at most 5s.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("%s: not within 5s", what)
}

func slugs(ts []*engine.Tenant) []string {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.Slug)
	}
	return out
}

func TestCatalog_Create(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		r := mustOpen(t, t.TempDir())
		want := mustCreate(t, r, "acme")
		if want.CreatedAt.IsZero() || want.UpdatedAt.IsZero() {
			t.Errorf("Create did not set times: %+v", want)
		}
		for _, key := range []string{"acme", want.ID} {
			got, err := r.Resolve(ctx, key)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", key, err)
			}
			if got.ID != want.ID || got.Slug != "acme" || got.Status != engine.StatusPending || got.Backend != engine.BackendSQLite || got.Epoch != 1 {
				t.Errorf("Resolve(%q) = %+v, want %+v", key, got, want)
			}
		}
	})
	t.Run("ErrConflict", func(t *testing.T) {
		r := mustOpen(t, t.TempDir())
		first := mustCreate(t, r, "acme")
		err := r.Create(ctx, newTenant("acme"))
		if !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("duplicate slug: err = %v, want ErrConflict", err)
		}
		dup := newTenant("other")
		dup.ID = first.ID
		if err := r.Create(ctx, dup); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("duplicate id: err = %v, want ErrConflict", err)
		}
		got, err := r.Resolve(ctx, "acme")
		if err != nil || got.ID != first.ID {
			t.Fatalf("Resolve after failed creates = %+v, %v; want the first tenant", got, err)
		}
		if _, err := r.Resolve(ctx, "other"); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("failed create is resolvable: %v", err)
		}
	})
}

func TestCatalog_Resolve(t *testing.T) {
	ctx := context.Background()
	r := mustOpen(t, t.TempDir())
	mustCreate(t, r, "acme")
	t.Run("ErrTenantNotFound", func(t *testing.T) {
		for _, key := range []string{"", "nope", "ACME", engine.NewTenantID(), "acme "} {
			if _, err := r.Resolve(ctx, key); !errors.Is(err, engine.ErrTenantNotFound) {
				t.Errorf("Resolve(%q) err = %v, want ErrTenantNotFound", key, err)
			}
		}
	})
	t.Run("ReturnsCopy", func(t *testing.T) {
		got, err := r.Resolve(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		got.Status = engine.StatusSuspended
		again, _ := r.Resolve(ctx, "acme")
		if again.Status != engine.StatusPending {
			t.Fatalf("changing a resolved tenant changed the cache: %s", again.Status)
		}
	})
}

func TestCatalog_Update(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		dir := t.TempDir()
		r := mustOpen(t, dir)
		tn := mustCreate(t, r, "acme")
		tn.Status = engine.StatusActive
		now := time.Now().UTC()
		tn.ApprovedAt = &now
		if err := r.Update(ctx, tn, 1); err != nil {
			t.Fatalf("Update: %v", err)
		}
		got, _ := r.Resolve(ctx, tn.ID)
		if got.Status != engine.StatusActive || got.ApprovedAt == nil {
			t.Fatalf("after Update: %+v", got)
		}
		// A placement change bumps the epoch; the new epoch is what the
		// next compare-and-set must name.
		tn.Epoch, tn.Location = 2, filepath.Join(dir, "elsewhere")
		if err := r.Update(ctx, tn, 1); err != nil {
			t.Fatalf("Update epoch 1→2: %v", err)
		}
		got, _ = r.Resolve(ctx, "acme")
		if got.Epoch != 2 || got.Location != tn.Location {
			t.Fatalf("after move: %+v", got)
		}
	})
	t.Run("ErrConflict", func(t *testing.T) {
		r := mustOpen(t, t.TempDir())
		tn := mustCreate(t, r, "acme")
		stale := *tn
		stale.Status = engine.StatusSuspended
		for _, want := range []int64{0, 2, 7} {
			if err := r.Update(ctx, &stale, want); !errors.Is(err, engine.ErrConflict) {
				t.Fatalf("Update with epoch %d: err = %v, want ErrConflict", want, err)
			}
		}
		got, _ := r.Resolve(ctx, "acme")
		if got.Status != engine.StatusPending {
			t.Fatalf("a refused Update changed the cache: %s", got.Status)
		}
		// A second writer wins with the right epoch; the first, still
		// naming epoch 1 after the move to 2, loses.
		moved := *tn
		moved.Epoch = 2
		if err := r.Update(ctx, &moved, 1); err != nil {
			t.Fatal(err)
		}
		if err := r.Update(ctx, &stale, 1); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("stale epoch after a move: err = %v, want ErrConflict", err)
		}
	})
	t.Run("ErrConflictOtherIncarnation", func(t *testing.T) {
		// Deleted and made again under the same id (a restore): the new
		// row is at epoch 1 too, and an update meant for the old one,
		// which has the old created_at, must not land on it.
		r := mustOpen(t, t.TempDir())
		old := mustCreate(t, r, "acme")
		if err := r.Delete(ctx, old.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // created_at is kept to the microsecond
		again := &engine.Tenant{ID: old.ID, Slug: "acme", Name: "acme", Status: engine.StatusPending, Backend: engine.BackendSQLite, Epoch: 1}
		if err := r.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
		stale := *old
		stale.Status = engine.StatusActive
		if err := r.Update(ctx, &stale, 1); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("update of the deleted incarnation: err = %v, want ErrConflict", err)
		}
		if got, _ := r.Resolve(ctx, old.ID); got.Status != engine.StatusPending {
			t.Fatalf("the new incarnation changed: %+v", got)
		}
		if err := r.Update(ctx, again, 1); err != nil {
			t.Fatalf("update of the current incarnation: %v", err)
		}
	})
	t.Run("ErrConflictUnknown", func(t *testing.T) {
		r := mustOpen(t, t.TempDir())
		if err := r.Update(ctx, newTenant("ghost"), 1); !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("Update of an absent tenant: err = %v, want ErrConflict", err)
		}
		if _, err := r.Resolve(ctx, "ghost"); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("refused Update made the tenant resolvable: %v", err)
		}
	})
}

func TestCatalog_Delete(t *testing.T) {
	ctx := context.Background()
	t.Run("OK", func(t *testing.T) {
		r := mustOpen(t, t.TempDir())
		tn := mustCreate(t, r, "acme")
		keep := mustCreate(t, r, "keep")
		if err := r.Delete(ctx, tn.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		for _, key := range []string{"acme", tn.ID} {
			if _, err := r.Resolve(ctx, key); !errors.Is(err, engine.ErrTenantNotFound) {
				t.Errorf("Resolve(%q) after Delete: %v", key, err)
			}
		}
		if got, err := r.Resolve(ctx, keep.ID); err != nil || got.Slug != "keep" {
			t.Fatalf("other tenant after Delete: %+v, %v", got, err)
		}
		// The slug is free again.
		mustCreate(t, r, "acme")
	})
	t.Run("ErrTenantNotFound", func(t *testing.T) {
		r := mustOpen(t, t.TempDir())
		if err := r.Delete(ctx, engine.NewTenantID()); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("err = %v, want ErrTenantNotFound", err)
		}
		tn := mustCreate(t, r, "acme")
		if err := r.Delete(ctx, "acme"); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("Delete by slug: err = %v, want ErrTenantNotFound (Delete takes an id)", err)
		}
		if err := r.Delete(ctx, tn.ID); err != nil {
			t.Fatal(err)
		}
		if err := r.Delete(ctx, tn.ID); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("second Delete: err = %v, want ErrTenantNotFound", err)
		}
	})
}

func TestCatalog_List(t *testing.T) {
	ctx := context.Background()
	r := mustOpen(t, t.TempDir())
	t.Run("Empty", func(t *testing.T) {
		ts, err := r.List(ctx)
		if err != nil || len(ts) != 0 {
			t.Fatalf("List = %v, %v; want empty", slugs(ts), err)
		}
	})
	t.Run("OrderedBySlug", func(t *testing.T) {
		for _, s := range []string{"zeta", "acme", "m-1", "b"} {
			mustCreate(t, r, s)
		}
		ts, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := slugs(ts)
		want := []string{"acme", "b", "m-1", "zeta"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("List = %v, want %v", got, want)
		}
	})
}

func TestCatalog_Reload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := openCatalog(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, r, "acme")
	b := mustCreate(t, r, "beta")
	b.Status = engine.StatusActive
	if err := r.Update(ctx, b, 1); err != nil {
		t.Fatal(err)
	}
	c := mustCreate(t, r, "gone")
	if err := r.Delete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := mustOpen(t, dir)
	for _, want := range []*engine.Tenant{a, b} {
		for _, key := range []string{want.Slug, want.ID} {
			got, err := r2.Resolve(ctx, key)
			if err != nil {
				t.Fatalf("Resolve(%q) after reopen: %v", key, err)
			}
			if got.ID != want.ID || got.Status != want.Status || got.Epoch != want.Epoch ||
				!got.CreatedAt.Equal(want.CreatedAt.Truncate(time.Microsecond)) {
				t.Errorf("after reopen %+v, want %+v", got, want)
			}
		}
	}
	if _, err := r2.Resolve(ctx, "gone"); !errors.Is(err, engine.ErrTenantNotFound) {
		t.Errorf("deleted tenant after reopen: %v", err)
	}
	if err := r2.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	ts, _ := r2.List(ctx)
	if got := strings.Join(slugs(ts), ","); got != "acme,beta" {
		t.Fatalf("List after reopen = %s", got)
	}
}

// A Reload running concurrently with this process's own writes must never
// bring back an older state: a write is visible to Resolve once it returned.
func TestCatalog_ReloadConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	r := mustOpen(t, t.TempDir())
	tn := mustCreate(t, r, "acme")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := r.Reload(ctx); err != nil {
				t.Errorf("Reload: %v", err)
				return
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	status := []engine.Status{engine.StatusActive, engine.StatusSuspended}
	for i := 0; i < 300; i++ {
		tn.Status = status[i%2]
		if err := r.Update(ctx, tn, tn.Epoch); err != nil {
			t.Fatalf("Update %d: %v", i, err)
		}
		got, err := r.Resolve(ctx, tn.ID)
		if err != nil {
			t.Fatalf("Resolve %d: %v", i, err)
		}
		if got.Status != tn.Status {
			t.Fatalf("write %d: Resolve after Update = %s, want %s (a concurrent Reload restored an older state)", i, got.Status, tn.Status)
		}
	}
	// Deletes and creates too.
	for i := 0; i < 100; i++ {
		x := mustCreate(t, r, "x")
		if _, err := r.Resolve(ctx, "x"); err != nil {
			t.Fatalf("create %d: Resolve after Create: %v", i, err)
		}
		if err := r.Delete(ctx, x.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Resolve(ctx, x.ID); !errors.Is(err, engine.ErrTenantNotFound) {
			t.Fatalf("delete %d: Resolve after Delete = %v, want ErrTenantNotFound", i, err)
		}
	}
}

func TestCatalog_Watch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	server := mustOpen(t, dir)
	watch(t, server, 50*time.Millisecond)
	cli := mustOpen(t, dir)  // another process, such as `keyshard tenant`
	slow := mustOpen(t, dir) // another node, its clock behind (SeesUpdateFromSlowClock)

	t.Run("SeesCreate", func(t *testing.T) {
		tn := mustCreate(t, cli, "acme")
		eventually(t, "server resolves a tenant the CLI created", func() bool {
			got, err := server.Resolve(ctx, "acme")
			return err == nil && got.ID == tn.ID
		})
	})
	t.Run("SeesUpdate", func(t *testing.T) {
		tn, err := cli.Resolve(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		tn.Status = engine.StatusActive
		if err := cli.Update(ctx, tn, tn.Epoch); err != nil {
			t.Fatal(err)
		}
		eventually(t, "server sees the CLI's approval", func() bool {
			got, err := server.Resolve(ctx, tn.ID)
			return err == nil && got.Status == engine.StatusActive
		})
	})
	t.Run("SeesUpdateFromSlowClock", func(t *testing.T) {
		// A node whose clock is an hour behind stamps an updated_at below
		// the catalog's newest: the server must still see its change.
		newest := mustCreate(t, cli, "newest") // holds max(updated_at) above the slow node's
		eventually(t, "server resolves the newest tenant", func() bool {
			_, err := server.Resolve(ctx, newest.ID)
			return err == nil
		})
		slow.SetClock(func() time.Time { return time.Now().Add(-time.Hour) })
		if err := slow.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		tn, err := slow.Resolve(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		tn.Status = engine.StatusSuspended
		if err := slow.Update(ctx, tn, tn.Epoch); err != nil {
			t.Fatal(err)
		}
		eventually(t, "server sees a change stamped by a slow clock", func() bool {
			got, err := server.Resolve(ctx, tn.ID)
			return err == nil && got.Status == engine.StatusSuspended
		})
	})
	t.Run("SeesDelete", func(t *testing.T) {
		tn, err := cli.Resolve(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if err := cli.Delete(ctx, tn.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "server forgets a tenant the CLI deleted", func() bool {
			_, err := server.Resolve(ctx, tn.ID)
			return errors.Is(err, engine.ErrTenantNotFound)
		})
	})
	t.Run("StopsOnCancel", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			server.Watch(wctx, time.Hour)
		}()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Watch did not return after its context ended")
		}
	})
}

// The catalog's path is a file name, never interpreted: characters that
// mean something in a SQLite URI ('?', '#', '%') stay part of it.
func TestOpenSQLite_DataDirName(t *testing.T) {
	if b := os.Getenv("KEYSHARD_TEST_CATALOG"); b != "" && b != "sqlite" {
		t.Skip("a SQLite catalog's file name; KEYSHARD_TEST_CATALOG is " + b)
	}
	ctx := context.Background()
	for _, name := range []string{"plain", "with space", "hash#frag", "q?mode=memory", "pct%2fslash", "pct%41", "semi;colon"} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, name)
			r, err := catalog.OpenSQLite(ctx, dir)
			if err != nil {
				t.Fatalf("OpenSQLite(%q): %v", dir, err)
			}
			mustCreate(t, r, "acme")
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "catalog.db")); err != nil {
				t.Fatalf("catalog.db not inside the data dir: %v", err)
			}
			var outside []string
			_ = filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
				if err == nil && p != parent && p != dir && !strings.HasPrefix(p, dir+string(filepath.Separator)) {
					outside = append(outside, p)
				}
				return nil
			})
			sort.Strings(outside)
			if len(outside) > 0 {
				t.Fatalf("files created outside the data dir: %q", outside)
			}
			r2 := mustOpen(t, dir)
			if _, err := r2.Resolve(ctx, "acme"); err != nil {
				t.Fatalf("reopen: %v", err)
			}
		})
	}
}

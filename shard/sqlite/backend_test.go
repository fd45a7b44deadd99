package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/sqlite"
)

func newBackend(tb testing.TB) *sqlite.Backend {
	tb.Helper()
	return &sqlite.Backend{DataDir: tb.TempDir(), Options: sqlite.Options{Synchronous: "NORMAL"}}
}

func TestBackend_Open(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		b := newBackend(t)
		p := placementOf(engine.NewTenantID())
		if err := b.Create(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		s, err := b.Open(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if v := queryInt(t, s, "PRAGMA user_version"); v != latest(t) {
			t.Errorf("user_version = %d, want %d", v, latest(t))
		}
		if err := s.Write(context.Background(), setSetting("k", "v")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ErrMissing", func(t *testing.T) {
		b := newBackend(t)
		p := placementOf(engine.NewTenantID())
		s, err := b.Open(context.Background(), p)
		if err == nil {
			_ = s.Close()
			t.Fatal("Open of a shard never created succeeded")
		}
		path, _ := b.Path(p)
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open created %s: %v", path, err)
		}
		if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Open created the folder of %s: %v", path, err)
		}
	})

	t.Run("Location", func(t *testing.T) {
		b := newBackend(t)
		p := placementOf(engine.NewTenantID())
		p.Location = t.TempDir() // a tenant moved to another disk
		if err := b.Create(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		want, _ := sqlite.Path(p.Location, p.TenantID)
		if got, err := b.Path(p); err != nil || got != want {
			t.Errorf("Path = %q, %v; want %q", got, err, want)
		}
		if _, err := os.Stat(want); err != nil {
			t.Errorf("shard not created under its location: %v", err)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		b := newBackend(t)
		for _, id := range []string{"", "../x", "ABC"} {
			if err := b.Create(context.Background(), placementOf(id)); !errors.Is(err, engine.ErrInvalid) {
				t.Errorf("Create(%q): err = %v, want ErrInvalid", id, err)
			}
		}
	})
}

func TestBackend_Destroy(t *testing.T) {
	b := newBackend(t)
	p := placementOf(engine.NewTenantID())
	if err := b.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if err := b.Destroy(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	path, _ := b.Path(p)
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s remains: %v", f, err)
		}
	}
	if s, err := b.Open(context.Background(), p); err == nil {
		_ = s.Close()
		t.Error("Open of a destroyed shard succeeded: a deleted tenant was recreated")
	}
}

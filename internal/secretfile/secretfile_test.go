package secretfile_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyshard/keyshard/internal/secretfile"
)

func TestCreate(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "secret")
		created, err := secretfile.Create(path, []byte("s3cret\n"))
		if err != nil || !created {
			t.Fatalf("Create = %v, %v; want true, nil", created, err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", st.Mode().Perm())
		}
		if b, _ := os.ReadFile(path); string(b) != "s3cret\n" {
			t.Errorf("content %q", b)
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(left) != 0 {
			t.Errorf("temporary files left: %v", left)
		}
	})
	t.Run("ExistingKept", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(path, []byte("first"), 0o600); err != nil {
			t.Fatal(err)
		}
		created, err := secretfile.Create(path, []byte("second"))
		if err != nil || created {
			t.Fatalf("Create over an existing file = %v, %v; want false, nil", created, err)
		}
		if b, _ := os.ReadFile(path); string(b) != "first" {
			t.Errorf("existing secret replaced: %q", b)
		}
	})
	t.Run("ConcurrentOneWins", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "secret")
		var wg sync.WaitGroup
		var mu sync.Mutex
		winners := 0
		for i := range 16 {
			wg.Go(func() {
				created, err := secretfile.Create(path, []byte{byte('a' + i)})
				if err != nil {
					t.Error(err)
				}
				if created {
					mu.Lock()
					winners++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if winners != 1 {
			t.Fatalf("%d creators won, want 1", winners)
		}
		if b, _ := os.ReadFile(path); len(b) != 1 {
			t.Fatalf("content %q: want one creator's whole secret", b)
		}
	})
}

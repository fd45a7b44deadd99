package sqlite_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/sqlite"
)

func TestPath(t *testing.T) {
	valid := engine.NewTenantID()

	t.Run("OK", func(t *testing.T) {
		dataDir := t.TempDir()
		p, err := sqlite.Path(dataDir, valid)
		if err != nil {
			t.Fatal(err)
		}
		want := filepath.Join(dataDir, "shards", valid[:2], valid[2:4], valid+".db")
		if p != want {
			t.Errorf("Path = %q, want %q", p, want)
		}
		for i := 0; i < 100; i++ {
			id := engine.NewTenantID()
			p, err := sqlite.Path(dataDir, id)
			if err != nil {
				t.Fatalf("Path(%q): %v", id, err)
			}
			assertUnder(t, dataDir, p)
		}
	})

	t.Run("ErrInvalid", func(t *testing.T) {
		for _, tt := range []struct{ name, id string }{
			{"Empty", ""},
			{"DotDot", "../../../../../../etc/pass"},
			{"DotDotOnly", ".."},
			{"DotDotPadded", "aa/../../" + valid[:17]},
			{"Slash", valid[:13] + "/" + valid[14:]},
			{"Backslash", valid[:13] + `\` + valid[14:]},
			{"Absolute", "/" + valid[1:]},
			{"UpperCase", strings.ToUpper(valid)},
			{"OneUpper", "A" + valid[1:]},
			{"Digits01", "0" + valid[1:]},
			{"TooShort", valid[:engine.IDLength-1]},
			{"TooLong", valid + "a"},
			{"VeryLong", strings.Repeat("a", 4096)},
			{"Unicode", "é" + valid[2:]},
			{"UnicodeLookalike", "ａ" + valid[3:]}, // full-width a, 3 bytes
			{"NUL", "\x00" + valid[1:]},
			{"Dot", "." + valid[1:]},
			{"Space", " " + valid[1:]},
		} {
			t.Run(tt.name, func(t *testing.T) {
				p, err := sqlite.Path("/data", tt.id)
				if !errors.Is(err, engine.ErrInvalid) {
					t.Errorf("Path(%q) = %q, %v; want ErrInvalid", tt.id, p, err)
				}
				if p != "" {
					t.Errorf("Path(%q) returned a path with its error: %q", tt.id, p)
				}
			})
		}
	})
}

// FuzzPath checks that whatever the id, Path either refuses it or returns a
// file under the data directory. Its seeds run with go test.
func FuzzPath(f *testing.F) {
	for _, s := range []string{"", "..", "../x", "a/b", engine.NewTenantID(), strings.Repeat(".", 26), strings.Repeat("a", 26)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		dataDir := "/srv/keyshard"
		p, err := sqlite.Path(dataDir, id)
		if err != nil {
			if !errors.Is(err, engine.ErrInvalid) {
				t.Fatalf("Path(%q): err = %v, want ErrInvalid", id, err)
			}
			return
		}
		if !engine.ValidTenantID(id) {
			t.Fatalf("Path accepted invalid id %q", id)
		}
		assertUnder(t, dataDir, p)
	})
}

func assertUnder(tb testing.TB, dir, p string) {
	tb.Helper()
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		tb.Errorf("path %q is not under %q (rel %q, %v)", p, dir, rel, err)
	}
	if filepath.Clean(p) != p {
		tb.Errorf("path %q is not clean", p)
	}
}

// Package layers holds the test that keeps the packages in the layers
// docs/architecture.md draws: what may import what.
package layers_test

import (
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/keyshard/keyshard/"

// imports returns every package of the module (by path relative to the
// module root) with its non-test imports.
func imports(tb testing.TB) map[string][]string {
	tb.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
			return filepath.SkipDir
		}
		p, err := build.Default.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, path)
		out[filepath.ToSlash(rel)] = p.Imports
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if len(out) < 10 {
		tb.Fatalf("found only %d packages: is the test run from internal/layers?", len(out))
	}
	return out
}

// under reports whether pkg is dir or inside it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

func TestLayers(t *testing.T) {
	pkgs := imports(t)
	// The packages below the HTTP edge: the domain, the flows, storage.
	below := []string{"engine", "shard", "catalog", "cluster", "migrations", "auth", "event", "transfer", "internal/secretfile"}
	// What sits above them: the edge and what wires or drives it.
	above := []string{"api", "app", "bench", "cmd"}
	backends := []string{"shard/sqlite", "shard/postgres", "shard/mysql", "shard/sqldb"}
	storage := []string{"engine", "shard", "catalog", "migrations", "transfer"}
	for pkg, imps := range pkgs {
		for _, imp := range imps {
			local, ours := strings.CutPrefix(imp, module)
			for _, b := range below {
				if !under(pkg, b) {
					continue
				}
				if imp == "net/http" {
					t.Errorf("%s imports net/http: below api only the HTTP edge speaks HTTP", pkg)
				}
				for _, a := range above {
					if ours && under(local, a) {
						t.Errorf("%s imports %s: nothing below api imports up into it", pkg, local)
					}
				}
			}
			// webhook, mail and upstream send outbound (HTTP, SMTP,
			// OAuth) beside the flows: they import nothing above api, and
			// nothing below api imports them.
			for _, out := range []string{"webhook", "mail", "upstream"} {
				if under(pkg, out) && ours {
					for _, a := range above {
						if under(local, a) {
							t.Errorf("%s imports %s: it sits beside the flows, below the edge", pkg, local)
						}
					}
				}
				if ours && under(local, out) {
					for _, b := range below {
						if under(pkg, b) {
							t.Errorf("%s imports %s: the flows record events; the outbox job delivers them", pkg, out)
						}
					}
				}
			}
			if pkg == "transfer" && ours {
				for _, b := range backends {
					if under(local, b) {
						t.Errorf("transfer imports the backend package %s: it reaches storage through shard.Storage and its abilities", local)
					}
				}
			}
			if under(pkg, "bench") && ours {
				for _, s := range storage {
					if under(local, s) {
						t.Errorf("bench imports the storage package %s: it drives a server (app) or an URL", local)
					}
				}
			}
			for _, b := range backends {
				for _, other := range backends {
					if b != other && under(pkg, b) && ours && local == other && other != "shard/sqldb" {
						t.Errorf("the backend %s imports the backend %s", pkg, other)
					}
				}
			}
		}
	}
}

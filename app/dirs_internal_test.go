package app

import (
	"context"
	"slices"
	"testing"
)

// The scan for kept WALs reads the data directory and the locations of the
// SQLite tenants this node serves (or that no node serves, when alone), not
// those of another node's tenants: their files are that node's to sweep.
func TestSQLiteDirs_SkipsOtherNodes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	place := map[string][2]string{ // slug → location, node
		"mine":   {t.TempDir(), "self"},
		"alone":  {t.TempDir(), ""},
		"theirs": {t.TempDir(), "other"},
		"here":   {"", "other"},
	}
	for slug, p := range place {
		if _, err := a.Engine.CreateTenant(ctx, slug, slug, ""); err != nil {
			t.Fatal(err)
		}
		tn, err := a.Engine.Get(ctx, slug)
		if err != nil {
			t.Fatal(err)
		}
		tn.Location, tn.Node = p[0], p[1]
		if err := a.Catalog.Update(ctx, tn, tn.Epoch); err != nil {
			t.Fatal(err)
		}
	}
	got := a.sqliteDirs(ctx, "self")
	want := []string{dir, place["mine"][0], place["alone"][0]}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("directories scanned %q, want %q (not the other node's tenant's)", got, want)
	}
}

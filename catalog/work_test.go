package catalog_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestCatalog_WorkMarks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := mustOpen(t, dir)
	a, b, c := mustCreate(t, r, "a"), mustCreate(t, r, "b"), mustCreate(t, r, "c")
	t0 := time.Unix(1_700_000_000, 0)
	due := func(now time.Time, limit int) string {
		t.Helper()
		ids, err := r.DueWork(ctx, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]string{a.ID: "a", b.ID: "b", c.ID: "c"}
		out := ""
		for _, id := range ids {
			out += names[id]
		}
		return out
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Run("OK", func(t *testing.T) {
		must(r.MarkWork(ctx, b.ID, t0.Add(2*time.Second)))
		must(r.MarkWork(ctx, a.ID, t0.Add(5*time.Second)))
		if got := due(t0, 10); got != "" {
			t.Fatalf("due before any mark's time: %q", got)
		}
		if got := due(t0.Add(10*time.Second), 10); got != "ba" {
			t.Fatalf("due, earliest first: %q, want ba", got)
		}
		if got := due(t0.Add(10*time.Second), 1); got != "b" {
			t.Fatalf("due with limit 1: %q", got)
		}
	})
	t.Run("MarkOnlyMovesEarlier", func(t *testing.T) {
		must(r.MarkWork(ctx, a.ID, t0.Add(time.Hour))) // later: no change
		if got := due(t0.Add(6*time.Second), 10); got != "ba" {
			t.Fatalf("a later MarkWork moved the mark: due %q", got)
		}
		must(r.MarkWork(ctx, a.ID, t0.Add(time.Second))) // earlier: moves
		if got := due(t0.Add(time.Second), 10); got != "a" {
			t.Fatalf("an earlier MarkWork did not move the mark: due %q", got)
		}
	})
	t.Run("SetMovesEitherWay", func(t *testing.T) {
		must(r.SetWork(ctx, a.ID, t0.Add(time.Hour)))
		if got := due(t0.Add(time.Minute), 10); got != "b" {
			t.Fatalf("after SetWork an hour on: due %q, want b", got)
		}
		// The in-memory copy follows: an earlier MarkWork still writes.
		must(r.MarkWork(ctx, a.ID, t0))
		if got := due(t0, 10); got != "a" {
			t.Fatalf("MarkWork after SetWork: due %q, want a", got)
		}
	})
	t.Run("Persists", func(t *testing.T) {
		// A second catalog on the same store (another process, or this one
		// restarted) sees the marks, and its in-memory copy is loaded.
		r2, err := openCatalog(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		ids, err := r2.DueWork(ctx, t0.Add(time.Hour), 10)
		if err != nil || fmt.Sprint(len(ids)) != "2" {
			t.Fatalf("marks seen by a second catalog: %v %v", ids, err)
		}
		must(r2.MarkWork(ctx, c.ID, t0))
		if got := due(t0, 10); got != "ac" && got != "ca" {
			t.Fatalf("a mark made by another catalog: due %q", got)
		}
	})
	t.Run("ClearAndDelete", func(t *testing.T) {
		must(r.ClearWork(ctx, a.ID))
		must(r.ClearWork(ctx, a.ID)) // twice is fine
		if err := r.Delete(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		if got := due(t0.Add(time.Hour), 10); got != "c" {
			t.Fatalf("after clearing a and deleting b: due %q, want c", got)
		}
		// A cleared mark is written again by the next MarkWork.
		must(r.MarkWork(ctx, a.ID, t0))
		if got := due(t0, 10); got != "ac" && got != "ca" {
			t.Fatalf("MarkWork after ClearWork: due %q", got)
		}
	})
}

package auth

import (
	"bytes"
	"testing"
)

// A Rendered keeps one rendering up to maxRendered bytes; a nil one keeps
// nothing.
func TestRendered(t *testing.T) {
	var r Rendered
	if r.Load() != nil {
		t.Fatal("a new Rendered is not empty")
	}
	r.Store(bytes.Repeat([]byte("x"), maxRendered+1))
	if r.Load() != nil {
		t.Fatal("a rendering over maxRendered was kept")
	}
	b := bytes.Repeat([]byte("y"), maxRendered)
	r.Store(b)
	if !bytes.Equal(r.Load(), b) {
		t.Fatal("a rendering of maxRendered bytes was not kept")
	}
	var none *Rendered
	none.Store(b)
	if none.Load() != nil {
		t.Fatal("a nil Rendered kept something")
	}
}

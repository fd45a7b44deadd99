package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyshard/keyshard/auth/hash"
)

// TestPacer: a client refused for saturated hashing that comes back
// before its Retry-After is held (here until its context ends); other
// clients, other errors and a client whose Retry-After passed are not.
func TestPacer(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := newPacer(func() time.Time { return now })
	ctx := context.Background()
	p.refused("10.0.0.1", &hash.OverloadedError{RetryAfter: time.Hour})
	p.refused("10.0.0.2", errors.New("not a hashing refusal"))

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := p.wait(short, "10.0.0.1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a client back before its Retry-After: %v, want held until its context ended", err)
	}
	for _, ip := range []string{"10.0.0.2", "10.0.0.3", ""} {
		if err := p.wait(short, ip); err != nil {
			t.Fatalf("%q was held: %v", ip, err)
		}
	}
	now = now.Add(2 * time.Hour)
	if err := p.wait(short, "10.0.0.1"); err != nil {
		t.Fatalf("after its Retry-After: %v", err)
	}
}

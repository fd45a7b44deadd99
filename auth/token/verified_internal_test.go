package token

import (
	"strings"
	"testing"
)

// Only tokens up to verifiedMaxToken are kept; a hit needs the same tenant
// and an unexpired token.
func TestVerified_Bounds(t *testing.T) {
	var v verified
	small, large := strings.Repeat("a", verifiedMaxToken), strings.Repeat("b", verifiedMaxToken+1)
	c := &Claims{Subject: "u", ExpiresAt: 100}
	v.put("t1", "k", small, c)
	v.put("t1", "k", large, c)
	if got, kid, ok := v.get("t1", small, 50); !ok || kid != "k" || got.Subject != "u" {
		t.Fatalf("a token of %d bytes was not kept", len(small))
	}
	if _, _, ok := v.get("t1", large, 50); ok {
		t.Fatalf("a token of %d bytes was kept", len(large))
	}
	if _, _, ok := v.get("t2", small, 50); ok {
		t.Fatal("hit for another tenant")
	}
	if _, _, ok := v.get("t1", small, 100); ok {
		t.Fatal("hit at its expiry")
	}
	if _, _, ok := v.get("t1", small, 50); ok {
		t.Fatal("an expired token was kept after it was found expired")
	}
}

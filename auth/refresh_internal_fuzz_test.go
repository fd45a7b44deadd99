package auth

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzRefreshToken: a presented refresh token is accepted for lookup only
// when it is 32 base62 characters; derived tokens are always well formed
// and differ from their parent.
func FuzzRefreshToken(f *testing.F) {
	for _, s := range []string{newRefreshToken(), "", strings.Repeat("a", 32), strings.Repeat("a", 31) + "-",
		strings.Repeat("é", 16), "' OR 1=1 --" + strings.Repeat("x", 21), strings.Repeat("A", 33), "\x00" + strings.Repeat("a", 31)} {
		f.Add(s)
	}
	s := New(nil, nil, bytes.Repeat([]byte{3}, 32), Config{})
	f.Fuzz(func(t *testing.T, tok string) {
		ok := validRefreshToken(tok)
		want := len(tok) == refreshTokenLen
		for i := 0; i < len(tok) && want; i++ {
			c := tok[i]
			want = c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		}
		if ok != want {
			t.Fatalf("validRefreshToken(%q) = %v, want %v", tok, ok, want)
		}
		if !ok {
			return
		}
		child := s.derive("tenant", tok)
		if !validRefreshToken(child) || child == tok {
			t.Fatalf("derive(%q) = %q", tok, child)
		}
		if h := hashToken(tok); len(h) != 64 || h == hashToken(child) {
			t.Fatalf("hashToken(%q) = %q", tok, h)
		}
	})
}

package auth

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzRefreshToken: a presented refresh token is accepted for lookup only
// when it is 14 lowercase hex digits and 32 base62 characters, or (issued
// before the time prefix) the 32 alone; derived tokens are always well
// formed and differ from their parent; keys keep the prefix in clear.
func FuzzRefreshToken(f *testing.F) {
	for _, s := range []string{newRefreshToken(time.Now()), randomBase62(32), "0000000000000A" + randomBase62(32), "", strings.Repeat("a", 32), strings.Repeat("a", 31) + "-",
		strings.Repeat("é", 16), "' OR 1=1 --" + strings.Repeat("x", 21), strings.Repeat("A", 33), "\x00" + strings.Repeat("a", 31)} {
		f.Add(s)
	}
	s := New(nil, nil, bytes.Repeat([]byte{3}, 32), Config{})
	f.Fuzz(func(t *testing.T, tok string) {
		ok := validRefreshToken(tok)
		want := len(tok) == 46 || len(tok) == 32
		for i := 0; i < len(tok) && want; i++ {
			c := tok[i]
			if len(tok) == 46 && i < 14 {
				want = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
			} else {
				want = c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
			}
		}
		if ok != want {
			t.Fatalf("validRefreshToken(%q) = %v, want %v", tok, ok, want)
		}
		if !ok {
			return
		}
		secret := s.derive("tenant", tok)
		child := refreshPrefix(time.Now()) + secret
		if !validRefreshToken(secret) || !validRefreshToken(child) || child == tok || secret == tok[len(tok)-32:] {
			t.Fatalf("derive(%q) = %q", tok, secret)
		}
		// The derivation reads the secret only, so that the active token
		// can be recomputed from an ancestor without its prefix.
		if len(tok) == 46 && s.derive("tenant", tok[14:]) != secret {
			t.Fatalf("derive(%q) depends on the prefix", tok)
		}
		k := refreshKey(tok)
		switch {
		case len(tok) == 32 && k != hashToken(tok),
			len(tok) == 46 && k != tok[:14]+hashToken(tok),
			k == refreshKey(child):
			t.Fatalf("refreshKey(%q) = %q", tok, k)
		}
	})
}

// Prefixes sort as their times do (the point of them: the index of keys
// grows at its end), and have a fixed width.
func TestRefreshPrefix_Ordered(t *testing.T) {
	times := []time.Time{time.Unix(0, 0), time.Unix(1, 0), time.Now(), time.Now().Add(time.Microsecond),
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(4000, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := 1; i < len(times); i++ {
		a, b := refreshPrefix(times[i-1]), refreshPrefix(times[i])
		if len(a) != refreshPrefixLen || len(b) != refreshPrefixLen || a >= b {
			t.Fatalf("refreshPrefix(%v) = %q, refreshPrefix(%v) = %q", times[i-1], a, times[i], b)
		}
	}
}

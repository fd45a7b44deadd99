package engine_test

import (
	"strings"
	"testing"

	"github.com/keyshard/keyshard/engine"
)

// FuzzValidateSlug: an accepted slug is a short DNS label of a-z, 0-9 and
// inner hyphens, never a path or an id; and validation never panics.
func FuzzValidateSlug(f *testing.F) {
	for _, s := range []string{"acme", "a", "a-b", "", "-a", "a-", "../etc", "..", ".", "a/b", "a%2fb", "a\x00b",
		"ACME", "acme ", "ünï", strings.Repeat("a", 63), strings.Repeat("a", 64), engine.NewTenantID(), "abcdefghijklmnopqrstuvwxyz", "a--b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if engine.ValidateSlug(s) != nil {
			return
		}
		if s == "" || len(s) > engine.MaxSlugLength || s[0] == '-' || s[len(s)-1] == '-' {
			t.Fatalf("accepted %q: empty, too long or hyphen at an end", s)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				t.Fatalf("accepted %q with %q", s, c)
			}
		}
		if engine.ValidTenantID(s) {
			t.Fatalf("accepted %q, which has the form of a tenant id", s)
		}
	})
}

// FuzzValidTenantID: an accepted id is 26 characters of base32 (a-z, 2-7):
// it can be part of a file path.
func FuzzValidTenantID(f *testing.F) {
	for _, s := range []string{engine.NewTenantID(), "", "../../../../etc/passwd", strings.Repeat("a", 26), strings.Repeat("a", 25) + "/", strings.Repeat("A", 26)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !engine.ValidTenantID(s) {
			return
		}
		if len(s) != 26 {
			t.Fatalf("accepted %q of length %d", s, len(s))
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
				t.Fatalf("accepted %q with %q", s, c)
			}
		}
	})
}

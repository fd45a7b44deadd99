package auth

import (
	"strings"
	"testing"
)

func TestValidateEmail(t *testing.T) {
	for _, c := range []struct {
		email string
		ok    bool
	}{
		{"ann@example.com", true},
		{"a.b+tag@sub.example.co", true},
		{"o'neil!#$%&*/=?^_`{|}~-@x-y.example", true},
		{"", false},
		{"no-at-sign", false},
		{"a@b", false}, // no dot: refused, though GoTrue takes it
		{"x y@example.com", false},
		{"@example.com", false},
		{"c@@b.com", false},
		{"q@a..com", false},
		{"q@.a.com", false},
		{"q@a.com.", false},
		{"q@-a.com", false},
		{"q@a-.com", false},
		{"nul\x00@example.com", false},
		{"bel\x07@example.com", false},
		{"bidi\u202e@example.com", false},
		{"zero\u200bwidth@example.com", false},
		{"bad\xff\xfe@example.com", false},
		{"café@example.com", false}, // only ASCII, as GoTrue
		{"a@" + strings.Repeat("b", 63) + ".com", true},
		{"a@" + strings.Repeat("b", 64) + ".com", false},
		{strings.Repeat("a", 250) + "@b.com", false}, // 256 bytes
	} {
		err := validateEmail(c.email)
		if (err == nil) != c.ok {
			t.Errorf("validateEmail(%q) = %v, want ok %v", c.email, err, c.ok)
		}
	}
	if err := validateEmail(strings.Repeat("a", 250) + "@b.com"); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a 256-byte address: %v, want GoTrue's 'too long'", err)
	}
}

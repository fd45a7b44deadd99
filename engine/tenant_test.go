package engine_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/engine"
)

func TestValidateSlug(t *testing.T) {
	tests := []struct {
		slug string
		ok   bool
	}{
		{"a", true},
		{"7", true},
		{"acme", true},
		{"a-b-1", true},
		{"a--b", true},
		{"0123456789", true},
		{strings.Repeat("a", 63), true},
		{"a" + strings.Repeat("-", 61) + "z", true},

		{strings.Repeat("a", 25), true},
		{strings.Repeat("a", 27), true},

		{"", false},
		{strings.Repeat("a", 26), false}, // shaped like a tenant id: would shadow one
		{engine.NewTenantID(), false},
		{strings.Repeat("a", 64), false},
		{strings.Repeat("a", 1000), false},
		{"-", false},
		{"-acme", false},
		{"acme-", false},
		{"Acme", false},
		{"ACME", false},
		{".", false},
		{"..", false},
		{"../evil", false},
		{"a/b", false},
		{"/", false},
		{`a\b`, false},
		{"%2f", false},
		{"%2e%2e", false},
		{"a.b", false},
		{"a_b", false},
		{"a b", false},
		{" acme", false},
		{"acme\n", false},
		{"a\x00", false},
		{"café", false},
		{"ｅｖｉｌ", false},       // full-width letters
		{"acme\u200b", false}, // zero-width space
		{"\u0430cme", false},  // Cyrillic а
		{"a;drop table tenants", false},
		{"x' OR '1'='1", false},
		{"acme?x=1", false},
		{"acme#x", false},
	}
	for _, tt := range tests {
		err := engine.ValidateSlug(tt.slug)
		switch {
		case tt.ok && err != nil:
			t.Errorf("ValidateSlug(%q) = %v, want nil", tt.slug, err)
		case !tt.ok && err == nil:
			t.Errorf("ValidateSlug(%q) = nil, want an error", tt.slug)
		case !tt.ok && !errors.Is(err, engine.ErrInvalid):
			t.Errorf("ValidateSlug(%q) = %v, want an error wrapping ErrInvalid", tt.slug, err)
		case !tt.ok && err.Error() == "":
			t.Errorf("ValidateSlug(%q): empty message", tt.slug)
		}
	}
}

func TestValidTenantID(t *testing.T) {
	t.Run("NewTenantID", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 1000; i++ {
			id := engine.NewTenantID()
			if !engine.ValidTenantID(id) {
				t.Fatalf("NewTenantID() = %q is not valid", id)
			}
			if seen[id] {
				t.Fatalf("NewTenantID() repeated %q", id)
			}
			seen[id] = true
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		id := engine.NewTenantID()
		for _, s := range []string{
			"",
			id[:engine.IDLength-1],
			id + "a",
			strings.ToUpper(id),
			"../" + id[3:],
			id[:engine.IDLength-1] + "/",
			id[:engine.IDLength-1] + "1", // base32 has no 0, 1, 8, 9
			id[:engine.IDLength-1] + "8",
			id[:engine.IDLength-2] + "é",
		} {
			if engine.ValidTenantID(s) {
				t.Errorf("ValidTenantID(%q) = true", s)
			}
		}
	})
}

package token_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/keyshard/keyshard/auth/token"
)

// FuzzVerify feeds arbitrary strings, and mutations of a valid token, to
// Verify: it never panics, refuses with ErrInvalidToken, and accepts only
// a token carrying exactly the claims that were signed.
func FuzzVerify(f *testing.F) {
	ctx := context.Background()
	ts, _ := openTenant(f)
	keys, err := token.NewKeys(token.KeysConfig{MasterKey: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	ks, err := keys.Get(ctx, ts.Tenant.ID, ts)
	if err != nil {
		f.Fatal(err)
	}
	const iss = "http://localhost/t/acme"
	want := &token.Claims{Issuer: iss, Subject: "u1", Audience: "authenticated", ExpiresAt: 1 << 40, IssuedAt: 1,
		AppMetadata: json.RawMessage(`{"provider":"email","providers":["email"]}`), UserMetadata: json.RawMessage(`{}`),
		Role: "authenticated", SessionID: "s1", AMR: []token.AMR{{Method: "password", Timestamp: 1}}}
	valid, err := ks.Sign(want)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, valid, func(s string) bool { return s == iss }); err != nil {
		f.Fatalf("the seed token does not verify: %v", err)
	}
	parts := strings.Split(valid, ".")
	for _, s := range []string{valid, "", ".", "..", "a.b.c", parts[0] + "." + parts[1] + ".",
		`eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.` + parts[1] + ".",             // alg none
		`eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.` + parts[1] + "." + parts[2], // alg HS256
		valid + "x", strings.Repeat("A", 4096)} {
		f.Add(s, uint16(0), byte(0))
	}
	f.Add(valid, uint16(len(valid)-1), byte('A'))
	f.Add(valid, uint16(10), byte('0'))
	f.Fuzz(func(t *testing.T, raw string, at uint16, b byte) {
		if b != 0 && len(raw) > 0 { // mutate one byte
			i := int(at) % len(raw)
			raw = raw[:i] + string(b) + raw[i+1:]
		}
		got, err := keys.Verify(ctx, ts.Tenant.ID, ts, raw, func(s string) bool { return s == iss })
		if err != nil {
			if !errors.Is(err, token.ErrInvalidToken) {
				t.Fatalf("Verify(%q): %v, want ErrInvalidToken", raw, err)
			}
			return
		}
		// Base64 lets a few encodings decode alike; what verifies must be
		// what was signed.
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Verify(%q) accepted claims %+v, signed %+v", raw, got, want)
		}
	})
}

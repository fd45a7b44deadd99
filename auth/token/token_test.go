package token_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
)

func TestLoadMasterKey(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	t.Run("Env", func(t *testing.T) {
		for _, s := range []string{hex.EncodeToString(raw), base64.StdEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw)} {
			k, path, created, err := token.LoadMasterKey(t.TempDir(), s)
			if err != nil || !bytes.Equal(k, raw) || path != "" || created {
				t.Fatalf("%q: %x %q %v %v", s, k, path, created, err)
			}
		}
		if _, _, _, err := token.LoadMasterKey(t.TempDir(), "abcd"); err == nil {
			t.Fatal("short key accepted")
		}
	})
	t.Run("Generated", func(t *testing.T) {
		dir := t.TempDir()
		k1, path, created, err := token.LoadMasterKey(dir, "")
		if err != nil || !created || len(k1) != 32 {
			t.Fatalf("%v %v", created, err)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(path) != dir {
			t.Fatalf("%s: %v %v", path, fi.Mode(), err)
		}
		k2, _, created, err := token.LoadMasterKey(dir, "")
		if err != nil || created || !bytes.Equal(k1, k2) {
			t.Fatalf("second load: %v %v", created, err)
		}
	})
}

func openTenant(tb testing.TB) (*engine.TenantShard, *app.App) {
	tb.Helper()
	a, err := app.Open(context.Background(), app.Config{DataDir: tb.TempDir(), Synchronous: "NORMAL"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = a.Close() })
	ctx := context.Background()
	if _, err := a.Engine.CreateTenant(ctx, "acme", "acme", ""); err != nil {
		tb.Fatal(err)
	}
	if _, err := a.Engine.ApproveTenant(ctx, "acme"); err != nil {
		tb.Fatal(err)
	}
	ts, err := a.Engine.Tenant(ctx, "acme")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ts.Release)
	return ts, a
}

func TestKeys_SignVerify(t *testing.T) {
	ctx := context.Background()
	ts, _ := openTenant(t)
	master := bytes.Repeat([]byte{1}, 32)
	var skew atomic.Int64
	keys, err := token.NewKeys(token.KeysConfig{MasterKey: master, Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keys.Get(ctx, ts.Tenant.ID, ts)
	if err != nil {
		t.Fatal(err)
	}
	c := &token.Claims{Issuer: "http://x/t/acme", Subject: "u1", Audience: "authenticated", SessionID: "s1",
		IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(time.Hour).Unix()}
	tok, err := ks.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("OK", func(t *testing.T) {
		got, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, func(iss string) bool { return iss == c.Issuer })
		if err != nil || got.Subject != "u1" || got.SessionID != "s1" {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("CacheHitsTheWholeTokenOnly", func(t *testing.T) {
		// tok is cached by now: a token that differs from it in one
		// signature character, or by a character more, is verified afresh
		// and fails.
		b := []byte(tok)
		i := len(b) - 10
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		for _, bad := range []string{string(b), tok + "A", tok[:len(tok)-1]} {
			if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, bad, nil); !errors.Is(err, token.ErrInvalidToken) {
				t.Fatalf("altered token: err %v", err)
			}
		}
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); err != nil {
			t.Fatalf("the token itself: %v", err)
		}
	})
	t.Run("ErrIssuer", func(t *testing.T) {
		_, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, func(string) bool { return false })
		if !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("ErrExpired", func(t *testing.T) {
		old := *c
		old.ExpiresAt = time.Now().Add(-time.Minute).Unix()
		tok, _ := ks.Sign(&old)
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); !errors.Is(err, token.ErrInvalidToken) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("PrivateKeyEncrypted", func(t *testing.T) {
		// Another master key cannot read the stored key.
		other, _ := token.NewKeys(token.KeysConfig{MasterKey: bytes.Repeat([]byte{2}, 32)})
		if _, err := other.Get(ctx, ts.Tenant.ID, ts); err == nil {
			t.Fatal("key decrypted with the wrong master key")
		}
		var priv []byte
		if err := ts.Read(ctx, func(q engine.Querier) error {
			return q.QueryRow(`SELECT private_key FROM signing_keys WHERE active = 1`).Scan(&priv)
		}); err != nil {
			t.Fatal(err)
		}
		if len(priv) < 32+12 {
			t.Fatalf("stored private key is %d bytes", len(priv))
		}
	})
	t.Run("RotateByOtherProcess", func(t *testing.T) {
		// Another Keys (as the CLI would) rotates; ours learns the new kid
		// from a token that names it (at most one reload per 5 s).
		skew.Store(int64(6 * time.Second))
		cli, _ := token.NewKeys(token.KeysConfig{MasterKey: master})
		kid, _, err := cli.Rotate(ctx, ts.Tenant.ID, ts, token.RotateOptions{})
		if err != nil || kid == ks.Kid() {
			t.Fatalf("rotate: %q %v", kid, err)
		}
		nks, _ := cli.Get(ctx, ts.Tenant.ID, ts)
		tok2, _ := nks.Sign(c)
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok2, nil); err != nil {
			t.Fatalf("token of the new key: %v", err)
		}
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); err != nil {
			t.Fatalf("token of the retired key: %v", err)
		}
		if n := len(nks.JWKS().Keys); n != 2 {
			t.Fatalf("JWKS keys %d", n)
		}
	})
	t.Run("VerifiedCache", func(t *testing.T) {
		// A token verified once is remembered, but never past its expiry,
		// never for another tenant, and the issuer is checked on every use.
		short := *c
		short.ExpiresAt = time.Now().Add(30 * time.Second).Unix()
		tok, _ := ks.Sign(&short)
		for i := 0; i < 2; i++ {
			if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); err != nil {
				t.Fatalf("verify %d: %v", i, err)
			}
		}
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, func(string) bool { return false }); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("cached token with a wrong issuer: %v", err)
		}
		if _, err := keys.Verify(ctx, "bbbbbbbbbbbbbbbbbbbbbbbbbb", ts, tok, nil); err == nil {
			t.Fatalf("cached token of another tenant id: %v", err)
		}
		skew.Store(int64(time.Minute)) // the clock only moves forward in this test
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("cached token after its expiry: %v", err)
		}
	})
	t.Run("VerifiedCacheKeyWithdrawn", func(t *testing.T) {
		// A remembered token stops verifying when its key is no longer the
		// tenant's (keys replaced, e.g. a tenant restored without secrets).
		cur, err := keys.Get(ctx, ts.Tenant.ID, ts)
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := cur.Sign(c)
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); err != nil {
			t.Fatalf("verify: %v", err)
		}
		if err := ts.Write(ctx, func(tx engine.Querier) error {
			_, err := tx.Exec(`DELETE FROM signing_keys`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		keys.Forget(ts.Tenant.ID) // as a reload after the refresh interval would
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, tok, nil); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("remembered token after its key was withdrawn: %v", err)
		}
	})
}

func TestKeys_Algorithms(t *testing.T) {
	ctx := context.Background()
	master := bytes.Repeat([]byte{1}, 32)
	var skew atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	c := &token.Claims{Issuer: "http://x/t/acme", Subject: "u1", Audience: "authenticated", SessionID: "s1",
		IssuedAt: time.Now().Unix(), ExpiresAt: time.Now().Add(2 * time.Hour).Unix()}
	t.Run("LegacyEdDSAKeepsSigning", func(t *testing.T) {
		// A tenant whose key was made before ES256 was the default keeps
		// it, and its tokens, until it rotates.
		ts, _ := openTenant(t)
		legacy, err := token.NewKeys(token.KeysConfig{MasterKey: master, Algorithm: token.EdDSA, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		ks, err := legacy.Get(ctx, ts.Tenant.ID, ts)
		if err != nil || ks.Algorithm() != token.EdDSA {
			t.Fatalf("legacy key: %v %v", ks, err)
		}
		old, _ := ks.Sign(c)
		keys, _ := token.NewKeys(token.KeysConfig{MasterKey: master, Now: clock}) // ES256 by default
		cur, err := keys.Get(ctx, ts.Tenant.ID, ts)
		if err != nil || cur.Algorithm() != token.EdDSA || cur.Kid() != ks.Kid() {
			t.Fatalf("an ES256 server on an EdDSA tenant: %s %s %v", cur.Algorithm(), cur.Kid(), err)
		}
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, old, nil); err != nil {
			t.Fatalf("the legacy token: %v", err)
		}
		// Rotation: the next key (ES256) is published, the EdDSA one signs
		// until it is due, then the new one, and the old token verifies.
		kid, signsAt, err := keys.Rotate(ctx, ts.Tenant.ID, ts, token.RotateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if now, _ := keys.Get(ctx, ts.Tenant.ID, ts); now.Kid() != ks.Kid() || len(now.JWKS().Keys) != 2 {
			t.Fatalf("right after rotation: signs with %s, JWKS %d keys; want the old key and both published", now.Kid(), len(now.JWKS().Keys))
		}
		skew.Store(int64(time.Until(signsAt) + time.Second))
		keys.Forget(ts.Tenant.ID)
		now, err := keys.Get(ctx, ts.Tenant.ID, ts)
		if err != nil || now.Kid() != kid || now.Algorithm() != token.ES256 {
			t.Fatalf("once due: %s %s %v, want %s ES256", now.Kid(), now.Algorithm(), err, kid)
		}
		tok, _ := now.Sign(c)
		for _, raw := range []string{old, tok} {
			if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, raw, nil); err != nil {
				t.Fatalf("verify after the switch: %v", err)
			}
		}
		// A token lifetime (1 h) and a minute after the switch, the old key
		// is retired though no later rotation marked it.
		skew.Store(int64(time.Until(signsAt) + time.Hour + 2*time.Minute))
		keys.Forget(ts.Tenant.ID)
		later, _ := keys.Get(ctx, ts.Tenant.ID, ts)
		if len(later.JWKS().Keys) != 1 || later.Kid() != kid {
			t.Fatalf("long after the switch: JWKS %d keys, signer %s", len(later.JWKS().Keys), later.Kid())
		}
		skew.Store(0)
	})
	t.Run("Immediately", func(t *testing.T) {
		ts, _ := openTenant(t)
		keys, _ := token.NewKeys(token.KeysConfig{MasterKey: master})
		first, _ := keys.Get(ctx, ts.Tenant.ID, ts)
		if first.Algorithm() != token.ES256 {
			t.Fatalf("a new tenant's key is %s, want ES256", first.Algorithm())
		}
		kid, _, err := keys.Rotate(ctx, ts.Tenant.ID, ts, token.RotateOptions{Algorithm: token.RS256, Immediately: true})
		if err != nil {
			t.Fatal(err)
		}
		ks, _ := keys.Get(ctx, ts.Tenant.ID, ts)
		if ks.Kid() != kid || ks.Algorithm() != token.RS256 {
			t.Fatalf("after an immediate rotation: %s %s", ks.Kid(), ks.Algorithm())
		}
		// The withdrawn key (leaked) verifies nothing any more.
		old, _ := first.Sign(c)
		keys.Forget(ts.Tenant.ID)
		if _, err := keys.Verify(ctx, ts.Tenant.ID, ts, old, nil); !errors.Is(err, token.ErrInvalidToken) {
			t.Fatalf("a token of the key withdrawn at once: %v", err)
		}
		if n := len(ks.JWKS().Keys); n != 1 {
			t.Fatalf("JWKS after an immediate rotation: %d keys, want the new one only", n)
		}
		if _, _, err := keys.Rotate(ctx, ts.Tenant.ID, ts, token.RotateOptions{Algorithm: "none"}); !errors.Is(err, engine.ErrInvalid) {
			t.Fatalf("rotation to an unknown algorithm: %v", err)
		}
	})
}

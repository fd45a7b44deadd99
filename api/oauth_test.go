package api_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// TestOAuth_CodeFlow is the authorization code grant with PKCE as an RP
// runs it with golang.org/x/oauth2 and go-oidc: discovery, the browser's
// login and consent (the forms posted as a browser would), the exchange,
// the ID token verified, userinfo, refresh rotation and reuse detection,
// introspection and revocation.
func TestOAuth_CodeFlow(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	s := newOAuthSetup(t, e, "acme", nil)
	ctx := context.Background()
	b := newBrowser(t)

	verifier := oauth2.GenerateVerifier()
	cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(verifier), oidc.Nonce("n0nce-1"))
	if got := cb.Query().Get("state"); got != "st4te-"+t.Name() {
		t.Fatalf("state came back as %q", got)
	}
	code := cb.Query().Get("code")
	tok, err := s.cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := s.provider.Verifier(&oidc.Config{ClientID: s.cfg.ClientID}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("verify id token: %v", err)
	}
	if idt.Nonce != "n0nce-1" || idt.Issuer != s.base {
		t.Fatalf("id token nonce %q issuer %q", idt.Nonce, idt.Issuer)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("at_hash: %v", err)
	}
	var claims struct {
		Email    string   `json:"email"`
		AuthTime int64    `json:"auth_time"`
		AMR      []string `json:"amr"`
	}
	if err := idt.Claims(&claims); err != nil || claims.Email != s.email || claims.AuthTime == 0 || len(claims.AMR) == 0 {
		t.Fatalf("id token claims %+v %v", claims, err)
	}
	ui, err := s.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil || ui.Email != s.email || ui.Subject != idt.Subject {
		t.Fatalf("userinfo %+v %v", ui, err)
	}
	if r := s.introspect(tok.AccessToken); r.Body["active"] != true || r.Body["client_id"] != s.cfg.ClientID || r.Body["sub"] != idt.Subject {
		t.Fatalf("introspect: %s", r.Raw)
	}

	// A client's tokens are not GoTrue sessions: they neither read nor
	// change the user through /user, nor refresh into an unscoped session.
	if r := e.call("GET", s.base+"/user", tok.AccessToken, nil); r.Status != 403 {
		t.Fatalf("an OAuth access token at GoTrue's /user: %d %s", r.Status, r.Raw)
	}
	if r := e.refresh(s.base, tok.RefreshToken); r.Status != 400 || r.Body["error_code"] != "refresh_token_not_found" {
		t.Fatalf("an OAuth refresh token at GoTrue's /token: %d %s", r.Status, r.Raw)
	}

	// Refresh rotates; the old token within the grace interval still
	// answers, after it revokes the grant.
	if tok.RefreshToken == "" {
		t.Fatal("offline_access gave no refresh token")
	}
	tok2, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil || tok2.RefreshToken == "" || tok2.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v (%+v)", err, tok2)
	}
	// As GoTrue: the active token's parent still answers (a client that
	// lost the response), an older one outside the grace interval is a
	// reuse that ends the grant.
	e.advance(time.Minute)
	tok3, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok2.RefreshToken}).Token()
	if err != nil {
		t.Fatal(err)
	}
	e.advance(time.Minute)
	_, err = s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if oauthErrorCode(err) != "invalid_grant" {
		t.Fatalf("reused refresh token: %v", err)
	}
	if _, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok3.RefreshToken}).Token(); oauthErrorCode(err) != "invalid_grant" {
		t.Fatalf("the family survived a reuse: %v", err)
	}
	if r := s.introspect(tok3.AccessToken); r.Body["active"] != false {
		t.Fatalf("access token of a revoked grant is active: %s", r.Raw)
	}

	t.Run("SecondVisitSkipsLoginAndConsent", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		pg := b.until(e.URL, b.do("GET", s.cfg.AuthCodeURL("again", oauth2.S256ChallengeOption(v)), nil))
		if !strings.HasPrefix(pg.Location, testRedirect) {
			t.Fatalf("a signed-in browser that consented was asked again: %d %s", pg.Status, pg.Body)
		}
	})

	t.Run("CodeUsedTwice", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v))
		code := cb.Query().Get("code")
		first, err := s.cfg.Exchange(ctx, code, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.cfg.Exchange(ctx, code, oauth2.VerifierOption(v))
		if oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("second use: %v", err)
		}
		if r := s.introspect(first.AccessToken); r.Body["active"] != false {
			t.Fatalf("the first exchange's token survived the reuse: %s", r.Raw)
		}
		if _, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: first.RefreshToken}).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("the first exchange's refresh token survived the reuse: %v", err)
		}
	})

	t.Run("VerifierMismatch", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v))
		_, err := s.cfg.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier()))
		if oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("wrong verifier: %v", err)
		}
	})

	t.Run("CodeExpires", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v))
		e.advance(11 * time.Minute)
		_, err := s.cfg.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(v))
		if oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("an 11-minute-old code: %v", err)
		}
	})

	t.Run("PlainPKCERefused", func(t *testing.T) {
		pg := b.do("GET", s.cfg.AuthCodeURL("p", oauth2.SetAuthURLParam("code_challenge", "abcabcabcabcabcabcabcabcabcabcabcabcabcabca"),
			oauth2.SetAuthURLParam("code_challenge_method", "plain")), nil)
		u, _ := url.Parse(pg.Location)
		if !strings.HasPrefix(pg.Location, testRedirect) || u.Query().Get("error") != "invalid_request" || u.Query().Get("state") != "p" {
			t.Fatalf("plain PKCE: %d %s", pg.Status, pg.Location)
		}
	})

	t.Run("UnregisteredRedirectIsAPage", func(t *testing.T) {
		bad := s.cfg
		bad.RedirectURL = "https://evil.example/cb"
		pg := b.do("GET", bad.AuthCodeURL("x"), nil)
		if pg.Location != "" || pg.Status != 400 || !strings.Contains(pg.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(pg.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("unregistered redirect: %d %q %s", pg.Status, pg.Location, pg.Header)
		}
	})

	t.Run("OtherTenant", func(t *testing.T) {
		other := newOAuthSetup(t, e, "globex", nil)
		// acme's access token at globex's userinfo and introspection.
		v := oauth2.GenerateVerifier()
		cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v))
		tok, err := s.cfg.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil {
			t.Fatal("acme's token opened globex's userinfo")
		}
		if r := other.introspect(tok.AccessToken); r.Body["active"] != false {
			t.Fatalf("acme's token is active at globex: %s", r.Raw)
		}
		// acme's client and code at globex's token endpoint.
		cross := other.cfg
		cross.ClientID, cross.ClientSecret = s.cfg.ClientID, s.cfg.ClientSecret
		v2 := oauth2.GenerateVerifier()
		cb2, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v2))
		if _, err := cross.Exchange(ctx, cb2.Query().Get("code"), oauth2.VerifierOption(v2)); err == nil {
			t.Fatal("acme's client and code were accepted by globex")
		}
		if _, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
			t.Fatalf("acme's own refresh failed after the cross-tenant attempts: %v", err)
		}
		if _, err := cross.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err == nil {
			t.Fatal("acme's refresh token worked at globex")
		}
	})
}

package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// TestOAuth_ClientCredentials: a confidential client gets a JWT access
// token signed with the tenant's key, about itself; a wrong secret is 401
// invalid_client with a Basic challenge; user scopes are refused.
func TestOAuth_ClientCredentials(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	s := newOAuthSetup(t, e, "acme", nil)
	ctx := context.Background()
	cc := clientcredentials.Config{ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, TokenURL: s.cfg.Endpoint.TokenURL}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	ks := oidc.NewRemoteKeySet(ctx, s.base+"/.well-known/jwks.json")
	payload, err := ks.VerifySignature(ctx, tok.AccessToken)
	if err != nil {
		t.Fatalf("the access token does not verify with the tenant's JWKS: %v", err)
	}
	if !strings.Contains(string(payload), `"sub":"`+s.cfg.ClientID+`"`) || !strings.Contains(string(payload), `"iss":"`+s.base+`"`) {
		t.Fatalf("claims: %s", payload)
	}
	if r := s.introspect(tok.AccessToken); r.Body["active"] != true || r.Body["client_id"] != s.cfg.ClientID {
		t.Fatalf("introspect: %s", r.Raw)
	}
	// A client's token has no user: userinfo refuses it, as RFC 6750 says.
	if _, err := s.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Fatal("userinfo answered a client credentials token")
	}
	ui := e.call("GET", s.base+"/oauth/userinfo", tok.AccessToken, nil)
	if ui.Status != 401 || ui.Body["error"] != "invalid_token" || !strings.Contains(ui.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("userinfo refusal: %d %s %v", ui.Status, ui.Raw, ui.Header)
	}
	if ui := e.call("GET", s.base+"/oauth/userinfo", "", nil); ui.Status != 401 || !strings.HasPrefix(ui.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("userinfo without a token: %d %s %v", ui.Status, ui.Raw, ui.Header)
	}
	// RFC 7009: revoked, it is inactive.
	if r := s.form("/oauth/revoke", url.Values{"token": {tok.AccessToken}}, s.cfg.ClientID, s.cfg.ClientSecret); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	if r := s.introspect(tok.AccessToken); r.Body["active"] != false {
		t.Fatalf("revoked token still active: %s", r.Raw)
	}
	r := s.form("/oauth/token", url.Values{"grant_type": {"client_credentials"}}, s.cfg.ClientID, "wrong")
	if r.Status != 401 || r.Body["error"] != "invalid_client" || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("wrong secret: %d %s %v", r.Status, r.Raw, r.Header)
	}
	r = s.form("/oauth/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"openid"}}, s.cfg.ClientID, s.cfg.ClientSecret)
	if r.Status != 400 || r.Body["error"] != "invalid_scope" {
		t.Fatalf("user scope for a client: %d %s", r.Status, r.Raw)
	}
	// client_secret_post works too.
	r = s.form("/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {s.cfg.ClientID}, "client_secret": {s.cfg.ClientSecret}}, "", "")
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("client_secret_post: %d %s", r.Status, r.Raw)
	}
	// Rotation: the old secret stops, the new one works.
	rot := e.call("POST", s.base+"/admin/oauth/clients/"+s.cfg.ClientID+"/regenerate_secret", s.key, nil)
	if rot.Status != 200 || rot.str("client_secret") == "" || rot.str("client_secret") == s.cfg.ClientSecret {
		t.Fatalf("rotate: %d %s", rot.Status, rot.Raw)
	}
	if _, err := cc.Token(ctx); oauthErrorCode(err) != "invalid_client" {
		t.Fatalf("old secret after rotation: %v", err)
	}
	cc.ClientSecret = rot.str("client_secret")
	if _, err := cc.Token(ctx); err != nil {
		t.Fatalf("new secret: %v", err)
	}
}

// TestOAuth_DeviceFlow is RFC 8628: one client polls (x/oauth2's
// DeviceAccessToken) while a browser enters the code and approves; the
// polling answers on the way are checked by hand.
func TestOAuth_DeviceFlow(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	s := newOAuthSetup(t, e, "acme", nil)
	ctx := context.Background()
	s.cfg.Endpoint.DeviceAuthURL = s.base + "/oauth/device_authorization"
	poll := func(code string) authResp {
		return s.form("/oauth/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {code}},
			s.cfg.ClientID, s.cfg.ClientSecret)
	}

	da, err := s.cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("device authorization: %v", err)
	}
	if !strings.HasPrefix(da.VerificationURI, s.base+"/oauth/device") || len(da.UserCode) != 9 || da.Interval != 5 {
		t.Fatalf("device response %+v", da)
	}
	if r := poll(da.DeviceCode); r.Body["error"] != "authorization_pending" {
		t.Fatalf("first poll: %s", r.Raw)
	}
	if r := poll(da.DeviceCode); r.Body["error"] != "slow_down" {
		t.Fatalf("an immediate second poll: %s", r.Raw)
	}

	// The browser: sign in, enter the code (lower case, no dash: typed
	// as a user would), allow.
	b := newBrowser(t)
	approve := func(userCode, decision string) {
		pg := b.until(e.URL, b.do("GET", da.VerificationURI, nil))
		if strings.Contains(pg.Body, `name="password"`) {
			pg = b.until(e.URL, b.submit(s.base, pg, map[string]string{"email": s.email, "password": s.password}))
		}
		pg = b.submit(s.base, pg, map[string]string{"user_code": strings.ToLower(strings.ReplaceAll(userCode, "-", ""))})
		if !strings.Contains(pg.Body, "Notes") || !strings.Contains(pg.Body, `value="allow"`) {
			t.Fatalf("confirm page: %d %s", pg.Status, pg.Body)
		}
		pg = b.submit(s.base, pg, map[string]string{"decision": decision})
		if pg.Status != 200 || !strings.Contains(pg.Body, `role="status"`) {
			t.Fatalf("decision page: %d %s", pg.Status, pg.Body)
		}
	}
	var wg sync.WaitGroup
	var tok *oauth2.Token
	var pollErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		tok, pollErr = s.cfg.DeviceAccessToken(pctx, da)
	}()
	approve(da.UserCode, "allow")
	wg.Wait()
	if pollErr != nil {
		t.Fatalf("polling client: %v", pollErr)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := s.provider.Verifier(&oidc.Config{ClientID: s.cfg.ClientID}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("device id token: %v", err)
	}
	var claims struct{ Email string }
	_ = idt.Claims(&claims)
	if claims.Email != s.email || tok.RefreshToken == "" {
		t.Fatalf("device tokens: %+v %q", claims, tok.RefreshToken)
	}
	e.advance(10 * time.Second)
	if r := poll(da.DeviceCode); r.Status != 400 || r.str("access_token") != "" {
		t.Fatalf("a used device code answered again: %s", r.Raw)
	}

	t.Run("Denied", func(t *testing.T) {
		d2, err := s.cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		da = d2
		approve(d2.UserCode, "deny")
		if r := poll(d2.DeviceCode); r.Body["error"] != "access_denied" {
			t.Fatalf("denied: %s", r.Raw)
		}
	})
	t.Run("Expired", func(t *testing.T) {
		d3, err := s.cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e.advance(11 * time.Minute)
		if r := poll(d3.DeviceCode); r.Body["error"] != "expired_token" {
			t.Fatalf("expired: %s", r.Raw)
		}
	})
	t.Run("GuessingIsLimited", func(t *testing.T) {
		pg := b.until(e.URL, b.do("GET", s.base+"/oauth/device", nil))
		last := pageResp{}
		for i := 0; i < 11; i++ {
			last = b.submit(s.base, pg, map[string]string{"user_code": fmt.Sprintf("BCDF-%c%cGH", "BCDFGHJKLMN"[i], "BCDFGHJKLMN"[i])})
		}
		if last.Status != 429 || !strings.Contains(last.Body, "try again in") || !strings.Contains(last.Body, `aria-describedby="user_code-error"`) {
			t.Fatalf("the 11th wrong code: %d %s", last.Status, last.Body)
		}
	})
}

// TestOAuth_Registration is RFC 7591: the service key is the initial
// access token; open registration, when a tenant turns it on, makes
// clients that cannot skip consent.
func TestOAuth_Registration(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	key := e.serviceKey("acme")
	var disc map[string]any
	if r := e.call("GET", base+"/.well-known/openid-configuration", "", nil); r.Status != 200 {
		t.Fatalf("discovery: %d", r.Status)
	} else {
		disc = r.Body
	}
	reg, _ := disc["registration_endpoint"].(string)
	if reg != base+"/oauth/register" || disc["issuer"] != base || disc["jwks_uri"] != base+"/.well-known/jwks.json" {
		t.Fatalf("discovery: %v", disc)
	}
	if r := e.call("GET", base+"/.well-known/oauth-authorization-server", "", nil); r.Status != 200 || r.Body["issuer"] != base {
		t.Fatalf("RFC 8414 metadata: %d %s", r.Status, r.Raw)
	}
	body := map[string]any{"client_name": "CLI", "redirect_uris": []string{"http://127.0.0.1/cb"}, "token_endpoint_auth_method": "none", "skip_consent": true}
	if r := e.call("POST", reg, "", body); r.Status != 401 || r.Body["error"] != "invalid_token" {
		t.Fatalf("registration without a token: %d %s", r.Status, r.Raw)
	}
	r := e.call("POST", reg, key, map[string]any{"client_name": "Web", "redirect_uris": []string{"https://app.example/cb"}})
	if r.Status != 201 || r.str("client_secret") == "" || r.Body["client_secret_expires_at"] != float64(0) || r.Body["token_endpoint_auth_method"] != "client_secret_basic" {
		t.Fatalf("registration with the service key: %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", reg, key, map[string]any{"client_name": "Bad", "redirect_uris": []string{"https://app.example/cb#frag"}}); r.Status != 400 || r.Body["error"] != "invalid_redirect_uri" {
		t.Fatalf("a fragment in a redirect URI: %d %s", r.Status, r.Raw)
	}
	if r := e.call("PATCH", base+"/admin/config/auth", key, map[string]any{"oauth_server_allow_dynamic_registration": true}); r.Status != 200 {
		t.Fatalf("open registration: %d %s", r.Status, r.Raw)
	}
	r = e.call("POST", reg, "", body)
	if r.Status != 201 || r.str("client_secret") != "" || r.Body["client_type"] != "public" || r.Body["skip_consent"] != false || r.Body["registration_type"] != "dynamic" {
		t.Fatalf("open registration: %d %s", r.Status, r.Raw)
	}
	// The admin API lists both; GET, PUT, DELETE by id.
	list := e.call("GET", base+"/admin/oauth/clients", key, nil)
	clients, _ := list.Body["clients"].([]any)
	if list.Status != 200 || len(clients) != 2 {
		t.Fatalf("list: %d %s", list.Status, list.Raw)
	}
	id := r.str("client_id")
	if u := e.call("PUT", base+"/admin/oauth/clients/"+id, key, map[string]any{"client_name": "CLI 2"}); u.Status != 200 || u.Body["client_name"] != "CLI 2" {
		t.Fatalf("update: %d %s", u.Status, u.Raw)
	}
	if d := e.call("DELETE", base+"/admin/oauth/clients/"+id, key, nil); d.Status != 204 {
		t.Fatalf("delete: %d %s", d.Status, d.Raw)
	}
	if g := e.call("GET", base+"/admin/oauth/clients/"+id, key, nil); g.Status != 404 {
		t.Fatalf("get deleted: %d %s", g.Status, g.Raw)
	}
	if g := e.call("GET", base+"/admin/oauth/clients", "", nil); g.Status != 401 && g.Status != 403 {
		t.Fatalf("list without a key: %d %s", g.Status, g.Raw)
	}
	if g := e.call("GET", base+"/admin/oauth/clients", "admin-secret", nil); g.Status != 200 {
		t.Fatalf("the platform admin lists clients: %d %s", g.Status, g.Raw)
	}
}

// TestOAuth_BrowserCases: public clients need PKCE; consent denied goes
// back as access_denied; prompt=none without a session is login_required;
// a form without its CSRF token is refused; RP-initiated logout ends the
// browser session and the client's grant.
func TestOAuth_BrowserCases(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	s := newOAuthSetup(t, e, "acme", nil)
	ctx := context.Background()
	pubID, _ := e.oauthClient(s.base, s.key, map[string]any{"client_name": "SPA", "client_type": "public", "redirect_uris": []string{testRedirect}})
	pub := s.cfg
	pub.ClientID, pub.ClientSecret = pubID, ""

	b := newBrowser(t)
	pg := b.do("GET", pub.AuthCodeURL("s1"), nil)
	if u, _ := url.Parse(pg.Location); u == nil || u.Query().Get("error") != "invalid_request" {
		t.Fatalf("public client without PKCE: %d %s", pg.Status, pg.Location)
	}
	pg = b.do("GET", s.cfg.AuthCodeURL("s2", oauth2.SetAuthURLParam("prompt", "none")), nil)
	if u, _ := url.Parse(pg.Location); u == nil || u.Query().Get("error") != "login_required" {
		pg = b.until(e.URL, pg)
		if u, _ := url.Parse(pg.Location); u == nil || u.Query().Get("error") != "login_required" {
			t.Fatalf("prompt=none without a session: %d %s", pg.Status, pg.Location)
		}
	}
	// A login form posted without its token (a cross-site post).
	pg = b.until(e.URL, b.do("GET", s.cfg.AuthCodeURL("s3"), nil))
	forged := b.submit(s.base, pg, map[string]string{"email": s.email, "password": s.password, "csrf": "forged"})
	if forged.Status != 403 || !strings.Contains(forged.Body, "did not come from this site") {
		t.Fatalf("forged form: %d %s", forged.Status, forged.Body)
	}
	// A wrong password: the form again, the error tied to it.
	bad := b.submit(s.base, pg, map[string]string{"email": s.email, "password": "wrong password!"})
	if bad.Status != 400 || !strings.Contains(bad.Body, `aria-describedby="form-error"`) || !strings.Contains(bad.Body, "not right") {
		t.Fatalf("wrong password page: %d %s", bad.Status, bad.Body)
	}
	// Consent denied.
	pg = b.until(e.URL, b.submit(s.base, pg, map[string]string{"email": s.email, "password": s.password}))
	pg = b.submit(s.base, pg, map[string]string{"decision": "deny"})
	if u, _ := url.Parse(pg.Location); u == nil || u.Query().Get("error") != "access_denied" || u.Query().Get("state") != "s3" {
		t.Fatalf("denied consent: %d %s", pg.Status, pg.Location)
	}
	// Public client with PKCE, then logout.
	v := oauth2.GenerateVerifier()
	ps := *s
	ps.cfg = pub
	cb, _ := ps.authorize(t, b, oauth2.S256ChallengeOption(v))
	tok, err := pub.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatalf("public exchange: %v", err)
	}
	if e.call("PUT", s.base+"/admin/oauth/clients/"+pubID, s.key, map[string]any{"post_logout_redirect_uris": []string{"http://127.0.0.1:1/bye"}}).Status != 200 {
		t.Fatal("set post-logout redirect")
	}
	idHint, _ := tok.Extra("id_token").(string)
	logout := s.base + "/oauth/end_session?" + url.Values{"id_token_hint": {idHint}, "post_logout_redirect_uri": {"http://127.0.0.1:1/bye"}, "state": {"bye"}}.Encode()
	pg = b.do("GET", logout, nil)
	if pg.Status != 200 || !strings.Contains(pg.Body, "Sign out") {
		t.Fatalf("logout page: %d %s", pg.Status, pg.Body)
	}
	pg = b.submit(s.base, pg, nil)
	if !strings.HasPrefix(pg.Location, "http://127.0.0.1:1/bye") || !strings.Contains(pg.Location, "state=bye") {
		t.Fatalf("logout redirect: %d %s %s", pg.Status, pg.Location, pg.Body)
	}
	if _, err := pub.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); oauthErrorCode(err) != "invalid_grant" {
		t.Fatalf("the client's grant survived logout: %v", err)
	}
	// Signed out: the next authorization asks for the password again.
	pg = b.until(e.URL, b.do("GET", s.cfg.AuthCodeURL("s4"), nil))
	if !strings.Contains(pg.Body, `name="password"`) {
		t.Fatalf("after logout the browser is still signed in: %d %s", pg.Status, pg.Location)
	}
}

// TestOAuth_Transfer: a tenant's clients and grants go with it when it
// moves between disks and backends; a copy keeps the clients but no live
// credential (their secrets must be rotated, grants are gone).
func TestOAuth_Transfer(t *testing.T) {
	e := newTransferEnv(t)
	s := newOAuthSetup(t, e, "acme", nil)
	ctx := context.Background()
	b := newBrowser(t)
	v := oauth2.GenerateVerifier()
	cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v))
	tok, err := s.cfg.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	cc := clientcredentials.Config{ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, TokenURL: s.cfg.Endpoint.TokenURL}
	hops := []map[string]any{{"backend": "sqlite", "location": t.TempDir()}}
	for _, be := range e.serverBackends() {
		hops = append(hops, map[string]any{"backend": be, "location": ""})
	}
	hops = append(hops, map[string]any{"backend": "sqlite", "location": ""})
	rt := tok.RefreshToken
	for i, h := range hops {
		if r := e.call("POST", e.URL+"/admin/tenants/acme/move", transferAdmin, h); r.Status != 200 {
			t.Fatalf("move %d: %d %s", i, r.Status, r.Raw)
		}
		if _, err := cc.Token(ctx); err != nil {
			t.Fatalf("client credentials after move %d (%v): %v", i, h, err)
		}
		next, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
		if err != nil {
			t.Fatalf("refresh after move %d (%v): %v", i, h, err)
		}
		rt = next.RefreshToken
	}
	ex := e.call("GET", e.URL+"/admin/tenants/acme/export?format=sqlite&include_secrets=true", transferAdmin, nil)
	if ex.Status != 200 {
		t.Fatalf("export: %d", ex.Status)
	}
	if imp := e.call("POST", e.URL+"/admin/tenants/import?slug=acme-copy&approve=true", transferAdmin, ex.Raw); imp.Status != 201 && imp.Status != 200 {
		t.Fatalf("import: %d %s", imp.Status, imp.Raw)
	}
	copyBase := e.URL + "/t/acme-copy"
	cp := cc
	cp.TokenURL = copyBase + "/oauth/token"
	if _, err := cp.Token(ctx); oauthErrorCode(err) != "invalid_client" {
		t.Fatalf("the source's client secret opened the copy: %v", err)
	}
	cpCfg := s.cfg
	cpCfg.Endpoint.TokenURL = cp.TokenURL
	if _, err := cpCfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token(); err == nil {
		t.Fatal("the source's refresh token opened the copy")
	}
	key := e.serviceKey("acme-copy")
	rot := e.call("POST", copyBase+"/admin/oauth/clients/"+s.cfg.ClientID+"/regenerate_secret", key, nil)
	if rot.Status != 200 {
		t.Fatalf("rotate in the copy: %d %s", rot.Status, rot.Raw)
	}
	cp.ClientSecret = rot.str("client_secret")
	if _, err := cp.Token(ctx); err != nil {
		t.Fatalf("the copy's client after rotation: %v", err)
	}
}

// TestOAuth_Hardening holds what a security review of the provider found,
// each as a case that failed before its fix.
func TestOAuth_Hardening(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	s := newOAuthSetup(t, e, "acme", nil)
	ctx := context.Background()
	b := newBrowser(t)
	code := func() (string, string) {
		v := oauth2.GenerateVerifier()
		cb, _ := s.authorize(t, b, oauth2.S256ChallengeOption(v))
		return cb.Query().Get("code"), v
	}

	t.Run("NoCallbackByRequestID", func(t *testing.T) {
		// The code is in the answer to the browser that signed in; no URL
		// hands it to whoever knows the request id.
		pg := newBrowser(t).do("GET", s.base+"/oauth/authorize/callback?id=00000000-0000-4000-8000-000000000000", nil)
		if pg.Status != 404 {
			t.Fatalf("callback route: %d %s", pg.Status, pg.Body)
		}
	})

	t.Run("AccessTokenIsNoGoTrueSession", func(t *testing.T) {
		c, v := code()
		tok, err := s.cfg.Exchange(ctx, c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(tok.AccessToken, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims map[string]any
		_ = json.Unmarshal(payload, &claims)
		if _, ok := claims["role"]; ok {
			t.Fatalf("an OAuth access token carries role: %s", payload)
		}
		if _, ok := claims["session_id"]; ok {
			t.Fatalf("an OAuth access token carries session_id: %s", payload)
		}
	})

	t.Run("ParentOutsideGraceIsReuse", func(t *testing.T) {
		c, v := code()
		tok, err := s.cfg.Exchange(ctx, c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		next, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		if err != nil {
			t.Fatal(err)
		}
		e.advance(time.Hour)
		if _, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("the active token's parent an hour later: %v", err)
		}
		if _, err := s.cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: next.RefreshToken}).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("the grant survived the reuse: %v", err)
		}
	})

	t.Run("NarrowedRefreshNarrowsUserinfo", func(t *testing.T) {
		c, v := code()
		tok, err := s.cfg.Exchange(ctx, c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		r := s.form("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "scope": {"openid"}},
			s.cfg.ClientID, s.cfg.ClientSecret)
		if r.Status != 200 {
			t.Fatalf("narrowed refresh: %d %s", r.Status, r.Raw)
		}
		ui := e.call("GET", s.base+"/oauth/userinfo", r.str("access_token"), nil)
		if ui.Status != 200 || ui.Body["email"] != nil {
			t.Fatalf("userinfo of a token narrowed to openid: %d %s", ui.Status, ui.Raw)
		}
		if in := s.introspect(r.str("access_token")); in.Body["scope"] != "openid" {
			t.Fatalf("introspection of a narrowed token: %s", in.Raw)
		}
	})

	t.Run("UsedCodeWithoutTheClientRevokesNothing", func(t *testing.T) {
		c, v := code()
		tok, err := s.cfg.Exchange(ctx, c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		// Someone who found the used code, without the secret or verifier.
		r := s.form("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {c}, "redirect_uri": {testRedirect}, "client_id": {s.cfg.ClientID}}, "", "")
		if r.Status/100 != 4 {
			t.Fatalf("replay without credentials: %d %s", r.Status, r.Raw)
		}
		if in := s.introspect(tok.AccessToken); in.Body["active"] != true {
			t.Fatalf("a replay without the client's secret revoked the grant: %s", in.Raw)
		}
	})

	t.Run("DynamicClientIntrospectsOnlyItsOwn", func(t *testing.T) {
		c, v := code()
		tok, err := s.cfg.Exchange(ctx, c, oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		reg := e.call("POST", s.base+"/oauth/register", s.key, map[string]any{"client_name": "Other", "grant_types": []string{"client_credentials"}})
		if reg.Status != 201 {
			t.Fatalf("register: %d %s", reg.Status, reg.Raw)
		}
		in := s.form("/oauth/introspect", url.Values{"token": {tok.AccessToken}}, reg.str("client_id"), reg.str("client_secret"))
		if in.Body["active"] != false {
			t.Fatalf("a dynamic client introspected another client's token: %s", in.Raw)
		}
	})

	t.Run("SecretPostEverywhere", func(t *testing.T) {
		id, secret := e.oauthClient(s.base, s.key, map[string]any{"client_name": "Post", "token_endpoint_auth_method": "client_secret_post",
			"redirect_uris": []string{testRedirect}, "grant_types": []string{"client_credentials", GrantDevice}})
		tr := s.form("/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}, "", "")
		if tr.Status != 200 {
			t.Fatalf("client_credentials with post: %d %s", tr.Status, tr.Raw)
		}
		in := s.form("/oauth/introspect", url.Values{"token": {tr.str("access_token")}, "client_id": {id}, "client_secret": {secret}}, "", "")
		if in.Status != 200 || in.Body["active"] != true {
			t.Fatalf("introspection with post: %d %s", in.Status, in.Raw)
		}
		da := s.form("/oauth/device_authorization", url.Values{"client_id": {id}, "client_secret": {secret}}, "", "")
		if da.Status != 200 {
			t.Fatalf("device authorization with post: %d %s", da.Status, da.Raw)
		}
		poll := s.form("/oauth/token", url.Values{"grant_type": {GrantDevice}, "device_code": {da.str("device_code")}, "client_id": {id}, "client_secret": {secret}}, "", "")
		if poll.Body["error"] != "authorization_pending" {
			t.Fatalf("device poll with post: %d %s", poll.Status, poll.Raw)
		}
		// Without the secret the device code opens nothing.
		poll = s.form("/oauth/token", url.Values{"grant_type": {GrantDevice}, "device_code": {da.str("device_code")}, "client_id": {id}}, "", "")
		if poll.Body["error"] != "invalid_client" {
			t.Fatalf("device poll without the secret: %d %s", poll.Status, poll.Raw)
		}
	})

	t.Run("ApprovedDeviceCodeExpires", func(t *testing.T) {
		da := s.form("/oauth/device_authorization", url.Values{"scope": {"openid"}}, s.cfg.ClientID, s.cfg.ClientSecret)
		pg := b.until(e.URL, b.do("GET", da.str("verification_uri_complete"), nil))
		if !strings.Contains(pg.Body, da.str("user_code")) {
			t.Fatalf("verification_uri_complete does not fill the code in: %s", pg.Body)
		}
		pg = b.submit(s.base, pg, map[string]string{"user_code": da.str("user_code")})
		pg = b.submit(s.base, pg, map[string]string{"decision": "allow"})
		if pg.Status != 200 {
			t.Fatalf("approve: %d %s", pg.Status, pg.Body[strings.Index(pg.Body, "<h1>"):])
		}
		e.advance(11 * time.Minute)
		poll := s.form("/oauth/token", url.Values{"grant_type": {GrantDevice}, "device_code": {da.str("device_code")}}, s.cfg.ClientID, s.cfg.ClientSecret)
		if poll.Body["error"] != "expired_token" {
			t.Fatalf("an approved device code 11 minutes later: %d %s", poll.Status, poll.Raw)
		}
	})

	t.Run("TokenEndpointTakesPOSTOnly", func(t *testing.T) {
		q := url.Values{"grant_type": {"client_credentials"}, "client_id": {s.cfg.ClientID}, "client_secret": {s.cfg.ClientSecret}}
		r := e.call("GET", s.base+"/oauth/token?"+q.Encode(), "", nil)
		if r.Status != 405 {
			t.Fatalf("GET /oauth/token: %d %s", r.Status, r.Raw)
		}
		// Credentials in the query of a POST are not read either.
		r = s.form("/oauth/token?"+q.Encode(), url.Values{"grant_type": {"client_credentials"}}, "", "")
		if r.Status == 200 {
			t.Fatalf("credentials in the query string were used: %s", r.Raw)
		}
	})
}

const GrantDevice = "urn:ietf:params:oauth:grant-type:device_code"

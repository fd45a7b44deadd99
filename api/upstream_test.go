package api_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
)

// fakeIdP is an OpenID provider on loopback whose ID tokens the test
// writes: discovery, JWKS, and a token endpoint that answers the next
// token set. It lets a test forge what a real provider never sends (a
// wrong audience, issuer or nonce, an expired token).
type fakeIdP struct {
	srv  *httptest.Server
	key  *rsa.PrivateKey
	mu   sync.Mutex
	next map[string]any // claims of the ID token the token endpoint returns next
	down bool
}

func newFakeIdP(t *testing.T) *fakeIdP {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIdP{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.down
		f.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": f.srv.URL, "authorization_endpoint": f.srv.URL + "/authorize",
			"token_endpoint": f.srv.URL + "/token", "jwks_uri": f.srv.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		claims := f.next
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": f.sign(t, claims)})
	})
	mux.HandleFunc("/userinfo", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer at" {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		f.mu.Lock()
		claims := f.next
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(claims)
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// sign makes an ID token with claims over defaults (issuer, audience
// "client-1", 1 h).
func (f *fakeIdP) sign(t *testing.T, claims map[string]any) string {
	now := time.Now()
	c := map[string]any{"iss": f.srv.URL, "aud": "client-1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: f.key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// upstreamEnv is a server (outbound to loopback allowed) with tenant
// "app" whose provider "corp" is the fake provider.
type upstreamEnv struct {
	*authEnv
	idp  *fakeIdP
	base string
	key  string
}

func newUpstreamEnv(t *testing.T) *upstreamEnv {
	e := newAuthEnv(t, authEnvOptions{events: app.EventsConfig{Webhooks: app.WebhooksConfig{AllowPrivate: true}}})
	u := &upstreamEnv{authEnv: e, idp: newFakeIdP(t), base: e.tenant("app")}
	u.key = e.serviceKey("app")
	if r := e.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"site_url": "http://localhost:3000",
		"uri_allow_list": "http://localhost:3000/**"}); r.Status != 200 {
		t.Fatalf("config: %d %s", r.Status, r.Raw)
	}
	r := e.call("POST", u.base+"/admin/custom-providers", u.key, map[string]any{"id": "corp", "issuer": u.idp.srv.URL,
		"client_id": "client-1", "client_secret": "s3cret", "scopes": []string{"openid", "email"}})
	if r.Status != 201 || r.Body["client_secret_set"] != true || r.Body["client_secret"] != nil {
		t.Fatalf("create provider: %d %s", r.Status, r.Raw)
	}
	return u
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// login runs /authorize → (the fake provider, skipped: its callback is
// called with the state) → /callback, and returns the callback's
// redirect. claims is what the provider's ID token will say; the nonce
// is taken from the authorization URL unless claims sets one.
func (u *upstreamEnv) login(t *testing.T, b *browser, claims map[string]any, pkce string) pageResp {
	t.Helper()
	q := url.Values{"provider": {"corp"}, "redirect_to": {"http://localhost:3000/welcome"}}
	if pkce != "" {
		q.Set("code_challenge", s256(pkce))
		q.Set("code_challenge_method", "s256")
	}
	r := b.do("GET", u.base+"/authorize?"+q.Encode(), nil)
	if r.Status != http.StatusFound || !strings.HasPrefix(r.Location, u.idp.srv.URL+"/authorize?") {
		t.Fatalf("authorize: %d %s %s", r.Status, r.Location, r.Body)
	}
	au, _ := url.Parse(r.Location)
	aq := au.Query()
	if aq.Get("code_challenge_method") != "S256" || aq.Get("nonce") == "" || aq.Get("client_id") != "client-1" ||
		aq.Get("redirect_uri") != u.base+"/callback" {
		t.Fatalf("the provider's authorization URL: %s", r.Location)
	}
	c := map[string]any{"nonce": aq.Get("nonce")}
	for k, v := range claims {
		c[k] = v
	}
	u.idp.mu.Lock()
	u.idp.next = c
	u.idp.mu.Unlock()
	return b.do("GET", u.base+"/callback?"+url.Values{"state": {aq.Get("state")}, "code": {"c0de"}}.Encode(), nil)
}

func fragment(t *testing.T, loc string) url.Values {
	t.Helper()
	_, frag, ok := strings.Cut(loc, "#")
	if !ok {
		t.Fatalf("no fragment in %s", loc)
	}
	v, err := url.ParseQuery(frag)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestUpstream_LoginCreatesUserAndIdentity(t *testing.T) {
	u := newUpstreamEnv(t)
	b := newBrowser(t)
	r := u.login(t, b, map[string]any{"sub": "u-1", "email": "Zoe@Corp.test", "email_verified": true, "name": "Zoe"}, "")
	if r.Status != http.StatusFound || !strings.HasPrefix(r.Location, "http://localhost:3000/welcome#") {
		t.Fatalf("callback: %d %s %s", r.Status, r.Location, r.Body)
	}
	f := fragment(t, r.Location)
	if f.Get("access_token") == "" || f.Get("refresh_token") == "" || f.Get("token_type") != "bearer" {
		t.Fatalf("fragment: %v", f)
	}
	me := u.call("GET", u.base+"/user", f.Get("access_token"), nil)
	ids, _ := me.Body["identities"].([]any)
	if me.Status != 200 || me.str("email") != "zoe@corp.test" || me.str("email_confirmed_at") == "" || len(ids) != 1 {
		t.Fatalf("user: %d %s", me.Status, me.Raw)
	}
	id := ids[0].(map[string]any)
	if id["provider"] != "corp" || id["id"] != "u-1" {
		t.Fatalf("identity: %v", id)
	}
	if app, _ := me.Body["app_metadata"].(map[string]any); app["provider"] != "corp" {
		t.Fatalf("app_metadata: %v", me.Body["app_metadata"])
	}
	// The second login finds the same user.
	r = u.login(t, newBrowser(t), map[string]any{"sub": "u-1", "email": "zoe@corp.test", "email_verified": true}, "")
	again := u.call("GET", u.base+"/user", fragment(t, r.Location).Get("access_token"), nil)
	if again.str("id") != me.str("id") {
		t.Fatalf("second login: another user %s", again.Raw)
	}
	// settings lists the provider.
	st := u.call("GET", u.base+"/settings", "", nil)
	if ext, _ := st.Body["external"].(map[string]any); ext["corp"] != true {
		t.Fatalf("settings.external: %s", st.Raw)
	}
}

func TestUpstream_PKCE(t *testing.T) {
	u := newUpstreamEnv(t)
	verifier := strings.Repeat("v", 50)
	r := u.login(t, newBrowser(t), map[string]any{"sub": "u-2", "email": "pk@corp.test", "email_verified": true}, verifier)
	loc, _ := url.Parse(r.Location)
	code := loc.Query().Get("code")
	if r.Status != http.StatusFound || code == "" || loc.Fragment != "" {
		t.Fatalf("callback: %d %s", r.Status, r.Location)
	}
	if x := u.call("POST", u.base+"/token?grant_type=pkce", "", map[string]any{"auth_code": code, "code_verifier": "wrong" + verifier}); x.Status != 400 || x.str("error_code") != "bad_code_verifier" {
		t.Fatalf("wrong verifier: %d %s", x.Status, x.Raw)
	}
	// The wrong verifier spent the code.
	if x := u.call("POST", u.base+"/token?grant_type=pkce", "", map[string]any{"auth_code": code, "code_verifier": verifier}); x.Status != 404 {
		t.Fatalf("code after a wrong verifier: %d %s", x.Status, x.Raw)
	}
	r = u.login(t, newBrowser(t), map[string]any{"sub": "u-2", "email": "pk@corp.test", "email_verified": true}, verifier)
	loc, _ = url.Parse(r.Location)
	x := u.call("POST", u.base+"/token?grant_type=pkce", "", map[string]any{"auth_code": loc.Query().Get("code"), "code_verifier": verifier})
	if x.Status != 200 || x.str("access_token") == "" {
		t.Fatalf("exchange: %d %s", x.Status, x.Raw)
	}
}

func TestUpstream_RefusedCallbacks(t *testing.T) {
	u := newUpstreamEnv(t)
	good := map[string]any{"sub": "u-3", "email": "neg@corp.test", "email_verified": true}
	cases := []struct {
		name   string
		claims map[string]any
		code   string
	}{
		{"wrong audience", map[string]any{"aud": "someone-else"}, "bad_id_token"},
		{"wrong issuer", map[string]any{"iss": "https://evil.test"}, "bad_id_token"},
		{"expired", map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()}, "bad_id_token"},
		{"wrong nonce", map[string]any{"nonce": "not-this-login"}, "bad_oauth_callback"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			claims := map[string]any{}
			for k, v := range good {
				claims[k] = v
			}
			for k, v := range c.claims {
				claims[k] = v
			}
			r := u.login(t, newBrowser(t), claims, "")
			f := fragment(t, r.Location)
			if r.Status != http.StatusFound || f.Get("error") != "access_denied" || f.Get("error_code") != c.code || f.Get("access_token") != "" {
				t.Fatalf("%d %s", r.Status, r.Location)
			}
		})
	}
	t.Run("forged state", func(t *testing.T) {
		r := newBrowser(t).do("GET", u.base+"/callback?state=abc.def&code=x", nil)
		if f := fragment(t, r.Location); r.Status != 302 || f.Get("error_code") != "bad_oauth_state" || !strings.HasPrefix(r.Location, "http://localhost:3000#") {
			t.Fatalf("%d %s", r.Status, r.Location)
		}
	})
	t.Run("replayed state, and another tenant's", func(t *testing.T) {
		other := u.tenant("other")
		b := newBrowser(t)
		r := b.do("GET", u.base+"/authorize?provider=corp&redirect_to=http://localhost:3000/welcome", nil)
		aq, _ := url.Parse(r.Location)
		state := aq.Query().Get("state")
		claims := map[string]any{"nonce": aq.Query().Get("nonce")}
		for k, v := range good {
			claims[k] = v
		}
		u.idp.mu.Lock()
		u.idp.next = claims
		u.idp.mu.Unlock()
		cb := "/callback?" + url.Values{"state": {state}, "code": {"c0de"}}.Encode()
		if x := b.do("GET", other+cb, nil); x.Status != 400 || !strings.Contains(x.Body, "OAuth state is invalid") {
			t.Fatalf("another tenant's callback: %d %s %s", x.Status, x.Location, x.Body)
		}
		if x := b.do("GET", u.base+cb, nil); fragment(t, x.Location).Get("access_token") == "" {
			t.Fatalf("first use: %d %s", x.Status, x.Location)
		}
		if x := b.do("GET", u.base+cb, nil); fragment(t, x.Location).Get("error_code") != "bad_oauth_state" {
			t.Fatalf("replay: %d %s", x.Status, x.Location)
		}
	})
	t.Run("provider error", func(t *testing.T) {
		b := newBrowser(t)
		r := b.do("GET", u.base+"/authorize?provider=corp&redirect_to=http://localhost:3000/welcome", nil)
		aq, _ := url.Parse(r.Location)
		x := b.do("GET", u.base+"/callback?"+url.Values{"state": {aq.Query().Get("state")}, "error": {"access_denied"}}.Encode(), nil)
		if f := fragment(t, x.Location); f.Get("error") != "access_denied" || !strings.HasPrefix(x.Location, "http://localhost:3000/welcome#") {
			t.Fatalf("%d %s", x.Status, x.Location)
		}
	})
	t.Run("provider down", func(t *testing.T) {
		down := u.call("POST", u.base+"/admin/custom-providers", u.key, map[string]any{"id": "down", "issuer": "http://127.0.0.1:1/nowhere",
			"client_id": "c", "client_secret": "s"})
		if down.Status != 201 {
			t.Fatalf("create: %d %s", down.Status, down.Raw)
		}
		r := newBrowser(t).do("GET", u.base+"/authorize?provider=down&redirect_to=http://localhost:3000/welcome", nil)
		if f := fragment(t, r.Location); r.Status != 302 || f.Get("error") != "server_error" || f.Get("error_code") != "upstream_unavailable" {
			t.Fatalf("%d %s %s", r.Status, r.Location, r.Body)
		}
	})
	t.Run("unknown provider", func(t *testing.T) {
		r := u.call("GET", u.base+"/authorize?provider=nope", "", nil)
		if r.Status != 400 || r.str("error_code") != "validation_failed" {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
	})
}

func TestUpstream_Linking(t *testing.T) {
	u := newUpstreamEnv(t)
	if r := u.signup(u.base, "ann@corp.test", "correct horse 1"); r.Status != 200 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	// Linking by email is off: an existing address is refused, verified or not.
	r := u.login(t, newBrowser(t), map[string]any{"sub": "ann-1", "email": "ann@corp.test", "email_verified": true}, "")
	if f := fragment(t, r.Location); f.Get("error_code") != "email_exists" {
		t.Fatalf("link while off: %s", r.Location)
	}
	if x := u.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"external_email_linking_enabled": true}); x.Status != 200 {
		t.Fatalf("config: %d %s", x.Status, x.Raw)
	}
	// On, but ann's address was confirmed only because the tenant
	// auto-confirms (anyone could have signed up as ann): nothing links,
	// even after auto-confirm is turned off.
	r = u.login(t, newBrowser(t), map[string]any{"sub": "ann-1", "email": "ann@corp.test", "email_verified": true}, "")
	if f := fragment(t, r.Location); f.Get("error_code") != "email_exists" {
		t.Fatalf("linked to an auto-confirmed address: %s", r.Location)
	}
	if x := u.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"mailer_autoconfirm": false}); x.Status != 200 {
		t.Fatalf("config: %d %s", x.Status, x.Raw)
	}
	r = u.login(t, newBrowser(t), map[string]any{"sub": "ann-1", "email": "ann@corp.test", "email_verified": true}, "")
	if f := fragment(t, r.Location); f.Get("error_code") != "email_exists" {
		t.Fatalf("linked to an address auto-confirmed before: %s", r.Location)
	}
	// The administrator confirms it (a proven address): then it links.
	var annID string
	for _, raw := range u.call("GET", u.base+"/admin/users", u.key, nil).Body["users"].([]any) {
		if m := raw.(map[string]any); m["email"] == "ann@corp.test" {
			annID = m["id"].(string)
		}
	}
	u.write("app", func(tx engine.Querier) error {
		_, err := tx.Exec(`UPDATE users SET email_confirmed_at = NULL WHERE id = ?`, annID)
		return err
	})
	if x := u.call("PUT", u.base+"/admin/users/"+annID, u.key, map[string]any{"email_confirm": true}); x.Status != 200 {
		t.Fatalf("admin confirm: %d %s", x.Status, x.Raw)
	}
	// An unverified address never links, nor becomes anyone's address:
	// the identity signs in as a new user without one.
	r = u.login(t, newBrowser(t), map[string]any{"sub": "mallory-1", "email": "ann@corp.test", "email_verified": false}, "")
	other := u.call("GET", u.base+"/user", fragment(t, r.Location).Get("access_token"), nil)
	if other.Status != 200 || other.str("email") != "" {
		t.Fatalf("an unverified address: %d %s", other.Status, other.Raw)
	}
	r = u.login(t, newBrowser(t), map[string]any{"sub": "ann-1", "email": "ann@corp.test", "email_verified": true}, "")
	tok := fragment(t, r.Location).Get("access_token")
	me := u.call("GET", u.base+"/user", tok, nil)
	ids, _ := me.Body["identities"].([]any)
	if me.str("email") != "ann@corp.test" || len(ids) != 2 {
		t.Fatalf("linked user: %s", me.Raw)
	}
	// Unlink the provider; the email identity, the last one, stays.
	var corpID, emailID string
	for _, raw := range ids {
		id := raw.(map[string]any)
		if id["provider"] == "corp" {
			corpID = id["identity_id"].(string)
		} else {
			emailID = id["identity_id"].(string)
		}
	}
	if x := u.call("DELETE", u.base+"/user/identities/"+corpID, tok, nil); x.Status != 200 {
		t.Fatalf("unlink: %d %s", x.Status, x.Raw)
	}
	if x := u.call("DELETE", u.base+"/user/identities/"+emailID, tok, nil); x.Status != 422 || x.str("error_code") != "single_identity_not_deletable" {
		t.Fatalf("unlink the last: %d %s", x.Status, x.Raw)
	}
	// Manual linking (off by default, as Supabase), then on.
	login := u.login(t, newBrowser(t), nil, "") // no subject: refused
	if fragment(t, login.Location).Get("error") == "" {
		t.Fatalf("a token without subject signed in: %s", login.Location)
	}
	if x := u.call("GET", u.base+"/user/identities/authorize?provider=corp&skip_http_redirect=true", tok, nil); x.Status != 404 {
		t.Fatalf("manual linking while off: %d %s", x.Status, x.Raw)
	}
	if x := u.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"security_manual_linking_enabled": true}); x.Status != 200 {
		t.Fatalf("config: %d %s", x.Status, x.Raw)
	}
	x := u.call("GET", u.base+"/user/identities/authorize?provider=corp&skip_http_redirect=true&redirect_to=http://localhost:3000/linked", tok, nil)
	link, _ := url.Parse(x.str("url"))
	if x.Status != 200 || !strings.HasPrefix(x.str("url"), u.idp.srv.URL) {
		t.Fatalf("link url: %d %s", x.Status, x.Raw)
	}
	u.idp.mu.Lock()
	u.idp.next = map[string]any{"sub": "ann-other", "email": "ann.other@corp.test", "email_verified": false, "nonce": link.Query().Get("nonce")}
	u.idp.mu.Unlock()
	cb := newBrowser(t).do("GET", u.base+"/callback?"+url.Values{"state": {link.Query().Get("state")}, "code": {"c"}}.Encode(), nil)
	if cb.Status != 302 || cb.Location != "http://localhost:3000/linked" {
		t.Fatalf("link callback: %d %s", cb.Status, cb.Location)
	}
	me = u.call("GET", u.base+"/user", tok, nil)
	if ids, _ := me.Body["identities"].([]any); len(ids) != 2 || me.str("email") != "ann@corp.test" {
		t.Fatalf("after manual link: %s", me.Raw)
	}
}

func TestUpstream_IDTokenGrant(t *testing.T) {
	u := newUpstreamEnv(t)
	nonce := "n0nce-raw"
	hashed := sha256.Sum256([]byte(nonce))
	hexNonce := ""
	for _, c := range hashed {
		hexNonce += string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])
	}
	tok := u.idp.sign(t, map[string]any{"sub": "native-1", "email": "native@corp.test", "email_verified": true, "nonce": hexNonce})
	r := u.call("POST", u.base+"/token?grant_type=id_token", "", map[string]any{"provider": "corp", "id_token": tok, "nonce": nonce})
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("id_token grant: %d %s", r.Status, r.Raw)
	}
	for name, c := range map[string]struct {
		claims map[string]any
		nonce  string
	}{
		"wrong audience": {map[string]any{"sub": "x", "aud": "other"}, ""},
		"expired":        {map[string]any{"sub": "x", "exp": time.Now().Add(-time.Minute).Unix()}, ""},
		"nonce missing":  {map[string]any{"sub": "x", "nonce": hexNonce}, ""},
		"nonce wrong":    {map[string]any{"sub": "x", "nonce": hexNonce}, "other"},
	} {
		r := u.call("POST", u.base+"/token?grant_type=id_token", "", map[string]any{"provider": "corp", "id_token": u.idp.sign(t, c.claims), "nonce": c.nonce})
		if r.Status != 400 || r.str("error_code") != "bad_id_token" {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	if r := u.call("POST", u.base+"/token?grant_type=id_token", "", map[string]any{"provider": "nope", "id_token": tok}); r.Status != 400 {
		t.Fatalf("unknown provider: %d %s", r.Status, r.Raw)
	}
}

func TestUpstream_ProviderAdmin(t *testing.T) {
	u := newUpstreamEnv(t)
	list := u.call("GET", u.base+"/admin/custom-providers", u.key, nil)
	if list.Status != 200 || !strings.Contains(string(list.Raw), `"id":"corp"`) || strings.Contains(string(list.Raw), "s3cret") {
		t.Fatalf("list: %d %s", list.Status, list.Raw)
	}
	for name, body := range map[string]map[string]any{
		"bad id":          {"id": "Bad Id", "issuer": "https://idp.test", "client_id": "c"},
		"no client_id":    {"id": "x1", "issuer": "https://idp.test"},
		"bad issuer":      {"id": "x2", "issuer": "ftp://idp.test", "client_id": "c"},
		"oauth2 no urls":  {"id": "x3", "type": "oauth2", "client_id": "c"},
		"unknown mapping": {"id": "x4", "issuer": "https://idp.test", "client_id": "c", "mapping": map[string]string{"role": "groups"}},
		"taken":           {"id": "corp", "issuer": "https://idp.test", "client_id": "c"},
	} {
		if r := u.call("POST", u.base+"/admin/custom-providers", u.key, body); r.Status/100 != 4 {
			t.Errorf("%s: %d %s", name, r.Status, r.Raw)
		}
	}
	if r := u.call("PATCH", u.base+"/admin/custom-providers/corp", u.key, map[string]any{"enabled": false}); r.Status != 200 || r.Body["enabled"] != false || r.Body["client_secret_set"] != true {
		t.Fatalf("disable: %d %s", r.Status, r.Raw)
	}
	if r := u.call("GET", u.base+"/authorize?provider=corp", "", nil); r.Status != 400 {
		t.Fatalf("a disabled provider: %d %s", r.Status, r.Raw)
	}
	// A login begun before the provider was disabled does not finish.
	if r := u.call("PATCH", u.base+"/admin/custom-providers/corp", u.key, map[string]any{"enabled": true}); r.Status != 200 {
		t.Fatalf("enable: %d %s", r.Status, r.Raw)
	}
	b := newBrowser(t)
	a := b.do("GET", u.base+"/authorize?provider=corp&redirect_to=http://localhost:3000/welcome", nil)
	aq, _ := url.Parse(a.Location)
	if r := u.call("PATCH", u.base+"/admin/custom-providers/corp", u.key, map[string]any{"enabled": false}); r.Status != 200 {
		t.Fatalf("disable: %d %s", r.Status, r.Raw)
	}
	u.idp.mu.Lock()
	u.idp.next = map[string]any{"sub": "late", "nonce": aq.Query().Get("nonce")}
	u.idp.mu.Unlock()
	cb := b.do("GET", u.base+"/callback?"+url.Values{"state": {aq.Query().Get("state")}, "code": {"c"}}.Encode(), nil)
	if f := fragment(t, cb.Location); f.Get("error_code") != "provider_disabled" || f.Get("access_token") != "" {
		t.Fatalf("callback of a disabled provider: %s", cb.Location)
	}
	if r := u.call("POST", u.base+"/admin/custom-providers", "", map[string]any{"id": "y", "issuer": "https://idp.test", "client_id": "c"}); r.Status != 401 {
		t.Fatalf("without the key: %d %s", r.Status, r.Raw)
	}
	if r := u.call("DELETE", u.base+"/admin/custom-providers/corp", u.key, nil); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	if r := u.call("GET", u.base+"/admin/custom-providers/corp", u.key, nil); r.Status != 404 {
		t.Fatalf("after delete: %d %s", r.Status, r.Raw)
	}
}

// TestUpstream_KeyshardTenantAsProvider: tenant "app" logs its users in
// through tenant "idp" of the same server, a real OpenID provider: its
// hosted login and consent pages, its code flow, its ID tokens.
func TestUpstream_KeyshardTenantAsProvider(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{events: app.EventsConfig{Webhooks: app.WebhooksConfig{AllowPrivate: true}}})
	appBase := e.URL + "/t/app"
	idp := newOAuthSetup(t, e, "idp", map[string]any{"client_name": "App", "redirect_uris": []string{appBase + "/callback"},
		"grant_types": []string{"authorization_code", "refresh_token"}})
	e.tenant("app")
	key := e.serviceKey("app")
	if r := e.call("PATCH", appBase+"/admin/config/auth", key, map[string]any{"site_url": "http://localhost:3000",
		"uri_allow_list": "http://localhost:3000/**"}); r.Status != 200 {
		t.Fatalf("config: %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", appBase+"/admin/custom-providers", key, map[string]any{"id": "idp", "issuer": idp.base,
		"client_id": idp.cfg.ClientID, "client_secret": idp.cfg.ClientSecret, "scopes": []string{"openid", "email", "profile"}}); r.Status != 201 {
		t.Fatalf("provider: %d %s", r.Status, r.Raw)
	}
	verifier := strings.Repeat("k", 64)
	b := newBrowser(t)
	q := url.Values{"provider": {"idp"}, "redirect_to": {"http://localhost:3000/welcome"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"s256"}}
	pg := b.until(e.URL, b.do("GET", appBase+"/authorize?"+q.Encode(), nil))
	if strings.Contains(pg.Body, `name="password"`) {
		pg = b.until(e.URL, b.submit(idp.base, pg, map[string]string{"email": idp.email, "password": idp.password}))
	}
	if strings.Contains(pg.Body, `value="allow"`) {
		pg = b.until(e.URL, b.submit(idp.base, pg, map[string]string{"decision": "allow"}))
	}
	loc, err := url.Parse(pg.Location)
	if err != nil || !strings.HasPrefix(pg.Location, "http://localhost:3000/welcome?code=") {
		t.Fatalf("the round trip did not come back with a code: %d %s %s", pg.Status, pg.Location, pg.Body)
	}
	s := e.call("POST", appBase+"/token?grant_type=pkce", "", map[string]any{"auth_code": loc.Query().Get("code"), "code_verifier": verifier})
	if s.Status != 200 {
		t.Fatalf("exchange: %d %s", s.Status, s.Raw)
	}
	me := e.call("GET", appBase+"/user", s.str("access_token"), nil)
	ids, _ := me.Body["identities"].([]any)
	if me.str("email") != idp.email || len(ids) != 1 || ids[0].(map[string]any)["provider"] != "idp" {
		t.Fatalf("user: %s", me.Raw)
	}
	// The app's token is worthless at the provider tenant, and the other way.
	if r := e.call("GET", idp.base+"/user", s.str("access_token"), nil); r.Status != 403 {
		t.Fatalf("app token at idp: %d %s", r.Status, r.Raw)
	}
}

// TestUpstream_PresetFromConfig: a preset turned on in the auth config by
// Supabase's names becomes a provider; its secret reads back masked.
func TestUpstream_PresetFromConfig(t *testing.T) {
	u := newUpstreamEnv(t)
	r := u.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"external_github_enabled": true,
		"external_github_client_id": "gh-client", "external_github_secret": "gh-secret"})
	if r.Status != 200 || r.Body["external_github_enabled"] != true || r.Body["external_github_secret"] != "********" || strings.Contains(string(r.Raw), "gh-secret") {
		t.Fatalf("config: %d %s", r.Status, r.Raw)
	}
	// Sending the mask back keeps the secret; an ill-typed field changes nothing.
	if r := u.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"external_github_secret": "********", "external_github_client_id": "gh-2"}); r.Status != 200 {
		t.Fatalf("mask back: %d %s", r.Status, r.Raw)
	}
	if r := u.call("PATCH", u.base+"/admin/config/auth", u.key, map[string]any{"external_github_enabled": "yes", "site_url": "http://other.test"}); r.Status != 400 {
		t.Fatalf("ill-typed: %d %s", r.Status, r.Raw)
	}
	p := u.call("GET", u.base+"/admin/custom-providers/github", u.key, nil)
	if p.Status != 200 || p.str("type") != "github" || p.str("client_id") != "gh-2" || p.Body["client_secret_set"] != true {
		t.Fatalf("provider: %d %s", p.Status, p.Raw)
	}
	if st := u.call("GET", u.base+"/settings", "", nil); !strings.Contains(string(st.Raw), `"github":true`) {
		t.Fatalf("settings: %s", st.Raw)
	}
	a := newBrowser(t).do("GET", u.base+"/authorize?provider=github&redirect_to=http://localhost:3000/welcome", nil)
	au, _ := url.Parse(a.Location)
	if a.Status != 302 || !strings.HasPrefix(a.Location, "https://github.com/login/oauth/authorize?") || au.Query().Get("client_id") != "gh-2" ||
		au.Query().Get("redirect_uri") != u.base+"/callback" || au.Query().Get("code_challenge") == "" {
		t.Fatalf("authorize: %d %s", a.Status, a.Location)
	}
	if c := u.call("GET", u.base+"/admin/config/auth", u.key, nil); c.Body["site_url"] != "http://localhost:3000" {
		t.Fatalf("the refused patch changed site_url: %s", c.Raw)
	}
}

// TestUpstream_OAuth2WithMapping: a plain OAuth 2.0 provider (no ID
// token): who signed in comes from its userinfo, through the mapping.
func TestUpstream_OAuth2WithMapping(t *testing.T) {
	u := newUpstreamEnv(t)
	f := u.idp.srv.URL
	if r := u.call("POST", u.base+"/admin/custom-providers", u.key, map[string]any{"id": "forge", "type": "oauth2", "client_id": "c2",
		"client_secret": "s2", "authorization_url": f + "/authorize", "token_url": f + "/token", "userinfo_url": f + "/userinfo",
		"scopes": []string{"read:user"}, "mapping": map[string]string{"sub": "id", "email": "mail", "name": "display"}}); r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	b := newBrowser(t)
	r := b.do("GET", u.base+"/authorize?provider=forge&redirect_to=http://localhost:3000/welcome", nil)
	au, _ := url.Parse(r.Location)
	if r.Status != 302 || au.Query().Get("nonce") != "" || au.Query().Get("scope") != "read:user" {
		t.Fatalf("authorize: %d %s", r.Status, r.Location)
	}
	u.idp.mu.Lock()
	u.idp.next = map[string]any{"id": 4242, "mail": "Forge@Corp.test", "display": "Forge User"}
	u.idp.mu.Unlock()
	cb := b.do("GET", u.base+"/callback?"+url.Values{"state": {au.Query().Get("state")}, "code": {"c"}}.Encode(), nil)
	tok := fragment(t, cb.Location).Get("access_token")
	me := u.call("GET", u.base+"/user", tok, nil)
	ids, _ := me.Body["identities"].([]any)
	// The provider did not verify the address: it stays in the identity.
	if me.Status != 200 || me.str("email") != "" || me.str("email_confirmed_at") != "" || len(ids) != 1 ||
		ids[0].(map[string]any)["email"] != "forge@corp.test" {
		t.Fatalf("user: %d %s", me.Status, me.Raw)
	}
	if id := ids[0].(map[string]any); id["id"] != "4242" || id["provider"] != "forge" {
		t.Fatalf("identity: %v", id)
	}
	if meta, _ := me.Body["user_metadata"].(map[string]any); meta["name"] != "Forge User" {
		t.Fatalf("metadata: %v", me.Body["user_metadata"])
	}
}

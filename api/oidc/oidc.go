// Package oidc makes every tenant an OAuth 2.0 authorization server and
// OpenID Connect provider, with issuer {public URL}/t/{slug}: discovery,
// the authorization code grant with PKCE, refresh tokens, client
// credentials, the device authorization grant, userinfo, revocation,
// introspection, RP-initiated logout and RFC 7591 registration; and the
// hosted pages a user sees: login, consent, device verification, logout.
//
// The protocol is zitadel/oidc's op package (OpenID certified), which
// parses and validates the requests and builds the responses and tokens;
// storage adapts it to the auth flows, which keep everything in the
// tenant's shard. One op.Provider serves every tenant: the tenant, its
// issuer and its keys come with each request's context.
package oidc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/api/gotrue"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// Options configure the provider.
type Options struct {
	// Secret is the server master key; the provider's code encryption key
	// and CSRF key are derived from it.
	Secret []byte
	// GuessLimit is how many wrong user codes an address may enter on a
	// tenant's device page per minute; 0: 10.
	GuessLimit int
}

// Provider serves the OAuth/OIDC routes of every tenant.
type Provider struct {
	srv     *api.Server
	gotrue  *gotrue.API
	auth    *auth.Service
	op      *op.Provider
	csrfKey []byte
	guesses *guessLimiter
}

// Paths under a tenant's issuer.
const (
	pathAuthorize   = "oauth/authorize"
	pathToken       = "oauth/token"
	pathIntrospect  = "oauth/introspect"
	pathUserinfo    = "oauth/userinfo"
	pathRevoke      = "oauth/revoke"
	pathEndSession  = "oauth/end_session"
	pathDevice      = "oauth/device_authorization"
	pathJWKS        = ".well-known/jwks.json"
	pathRegister    = "oauth/register"
	pathDevicePage  = "oauth/device"
	discoveryOIDC   = "/.well-known/openid-configuration"
	discoveryOAuth2 = "/.well-known/oauth-authorization-server"
)

func derive(secret []byte, label string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// Register adds the provider's routes to srv.
func Register(srv *api.Server, svc *auth.Service, gt *gotrue.API, o Options) (*Provider, error) {
	p := &Provider{srv: srv, gotrue: gt, auth: svc, csrfKey: derive(o.Secret, "keyshard oauth csrf v1")}
	limit := o.GuessLimit
	if limit <= 0 {
		limit = 10
	}
	p.guesses = newGuessLimiter(limit, time.Minute)
	var cryptoKey [32]byte
	copy(cryptoKey[:], derive(o.Secret, "keyshard oauth code encryption v1"))
	cfg := &op.Config{
		CryptoKey:             cryptoKey,
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
		SupportedScopes:       auth.KnownScopes,
		SupportedClaims: []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "c_hash", "amr", "azp",
			"email", "email_verified", "name", "given_name", "family_name", "nickname", "picture", "updated_at"},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     auth.DeviceCodeTTL,
			PollInterval: auth.DevicePollSeconds * time.Second,
			UserFormPath: "/" + pathDevicePage,
			UserCode:     op.UserCodeBase20,
		},
	}
	issuer := func(bool) (op.IssuerFromRequest, error) {
		return func(r *http.Request) string { return reqOf(r.Context()).t.Issuer }, nil
	}
	var err error
	p.op, err = op.NewProvider(cfg, storage{p}, issuer,
		op.WithAllowInsecure(),  // the issuer is the server's public URL, http on loopback in tests
		op.WithCORSOptions(nil), // the tenant's CORS policy applies, set by api.Server.Tenant
		op.WithCustomAuthEndpoint(op.NewEndpoint(pathAuthorize)),
		op.WithCustomTokenEndpoint(op.NewEndpoint(pathToken)),
		op.WithCustomIntrospectionEndpoint(op.NewEndpoint(pathIntrospect)),
		op.WithCustomUserinfoEndpoint(op.NewEndpoint(pathUserinfo)),
		op.WithCustomRevocationEndpoint(op.NewEndpoint(pathRevoke)),
		op.WithCustomEndSessionEndpoint(op.NewEndpoint(pathEndSession)),
		op.WithCustomKeysEndpoint(op.NewEndpoint(pathJWKS)),
		op.WithCustomDeviceAuthorizationEndpoint(op.NewEndpoint(pathDevice)),
		op.WithAccessTokenKeySet(keySet{p}),
		op.WithIDTokenHintKeySet(keySet{p}),
	)
	if err != nil {
		return nil, err
	}
	srv.Handle(http.MethodGet, "/t/:tenant"+discoveryOIDC, p.tenant(p.handleDiscovery))
	srv.Handle(http.MethodGet, "/t/:tenant"+discoveryOAuth2, p.tenant(p.handleDiscovery))
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		srv.Handle(m, "/t/:tenant/oauth/*path", p.tenant(p.serve))
	}
	return p, nil
}

// request is what one request of a tenant's provider carries in its
// context; storage fills the fields below the line as it goes.
type request struct {
	t      auth.Tenant
	ts     *engine.TenantShard
	client auth.Client
	base   string // /t/{slug}
	st     auth.Settings

	browser    *auth.BrowserSession         // the signed-in browser, when the handler looked
	deviceCode string                       // the device code a poll found approved
	clients    map[string]*auth.OAuthClient // read this request (storage.client)
	sessionID  string                       // the grant session a token is issued for
	loggedOut  bool
}

type requestKey struct{}

func reqOf(ctx context.Context) *request {
	rt, _ := ctx.Value(requestKey{}).(*request)
	if rt == nil {
		panic("oidc: a provider call without its tenant")
	}
	return rt
}

// tenant resolves and pins the route's tenant, refuses when the tenant
// does not serve OAuth, and hands h a request whose context carries it.
func (p *Provider) tenant(h func(w http.ResponseWriter, r *http.Request, ps httprouter.Params)) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		ts, err := p.srv.Tenant(w, r, ps)
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		defer ts.Release()
		t := p.gotrue.AuthTenant(r, ts)
		st, err := p.auth.CachedSettings(r.Context(), t)
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		if !st.OAuthServerEnabled {
			p.writeError(w, r, engine.NewError(engine.KindNotFound, "oauth_server_disabled", "This tenant does not serve OAuth"))
			return
		}
		rt := &request{t: t, ts: ts, client: api.ClientOf(r), base: "/t/" + ts.Tenant.Slug, st: st}
		ctx := context.WithValue(r.Context(), requestKey{}, rt)
		ctx = op.ContextWithIssuer(ctx, t.Issuer)
		h(w, r.WithContext(ctx), ps)
	}
}

// writeError answers err in RFC 6749's shape, {"error","error_description"},
// with the status of the one mapping.
func (p *Provider) writeError(w http.ResponseWriter, r *http.Request, err error) {
	pr := p.srv.Problem(w, r, err)
	code := pr.Code
	switch {
	case pr.Status == http.StatusServiceUnavailable || pr.Status == http.StatusTooManyRequests:
		code = "temporarily_unavailable"
	case pr.Status >= 500:
		code = "server_error"
	}
	w.Header().Set("Cache-Control", "no-store")
	api.WriteJSON(w, pr.Status, map[string]string{"error": code, "error_description": pr.Message})
}

func (p *Provider) handleDiscovery(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	rt := reqOf(r.Context())
	cfg := op.CreateDiscoveryConfig(r.Context(), p.op, storage{p})
	cfg.RegistrationEndpoint = rt.t.Issuer + "/" + pathRegister
	cfg.CodeChallengeMethodsSupported = []oidc.CodeChallengeMethod{oidc.CodeChallengeMethodS256}
	cfg.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeClientCredentials, oidc.GrantTypeDeviceCode}
	cfg.ResponseModesSupported = []string{"query"}
	cfg.TokenEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost, oidc.AuthMethodNone}
	cfg.RevocationEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost, oidc.AuthMethodNone}
	cfg.IntrospectionEndpointAuthMethodsSupported = []oidc.AuthMethod{oidc.AuthMethodBasic, oidc.AuthMethodPost}
	cfg.RequestURIParameterSupported = false
	cfg.ServiceDocumentation = ""
	w.Header().Set("Cache-Control", "public, max-age=300")
	api.WriteJSON(w, http.StatusOK, cfg)
}

// serve dispatches /t/{slug}/oauth/…: the hosted pages and registration
// are ours, the protocol endpoints op's.
func (p *Provider) serve(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	path := strings.TrimPrefix(ps.ByName("path"), "/")
	switch path {
	case "login":
		p.handleLogin(w, r)
		return
	case "consent":
		p.handleConsent(w, r)
		return
	case "device":
		p.handleDevicePage(w, r)
		return
	case "logged_out":
		p.handleLoggedOut(w, r)
		return
	case "register":
		p.handleRegister(w, r)
		return
	case "end_session":
		if !p.endSessionConfirmed(w, r) {
			return
		}
	case "authorize/callback":
		// op's callback would hand the code to whoever calls it with the
		// request id; the hosted pages answer with the code themselves.
		p.writeError(w, r, engine.NewError(engine.KindNotFound, "not_found", "no such route"))
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/oauth/" + path
	r2.URL.RawPath = ""
	w.Header().Set("Cache-Control", "no-store")
	switch path {
	case "token", "introspect", "revoke", "device_authorization":
		if !p.clientRequest(w, r2) {
			return
		}
	}
	switch path {
	case "device_authorization":
		rt := reqOf(r.Context())
		dp := deviceProvider{Provider: p.op, cfg: p.op.DeviceAuthorization()}
		dp.cfg.UserFormURL = rt.t.Issuer + "/" + pathDevicePage
		if err := op.DeviceAuthorization(w, r2, dp); err != nil {
			op.RequestError(w, r2, err, nil)
		}
		return
	case "authorize", "authorize/callback":
		// op answers an error it must not redirect (an unknown client, a
		// redirect URI not registered) in plain text: it becomes a page.
		ep := &errorPage{ResponseWriter: w, p: p, r: r}
		p.op.ServeHTTP(ep, r2)
		ep.finish()
		return
	case "token", "introspect", "revoke":
		p.op.ServeHTTP(&challenge{ResponseWriter: w}, r2)
		return
	case "userinfo":
		bc := &bearerChallenge{ResponseWriter: w, token: api.Bearer(r) != "" || r.Method == http.MethodPost}
		p.op.ServeHTTP(bc, r2)
		bc.finish()
		return
	}
	p.op.ServeHTTP(w, r2)
}

// deviceProvider gives op the tenant's device page as verification URI.
type deviceProvider struct {
	*op.Provider
	cfg op.DeviceAuthorizationConfig
}

func (d deviceProvider) DeviceAuthorization() op.DeviceAuthorizationConfig { return d.cfg }

// challenge adds WWW-Authenticate to a 401 of client authentication
// (RFC 6749 §5.2).
type challenge struct{ http.ResponseWriter }

func (c *challenge) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		c.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
	}
	c.ResponseWriter.WriteHeader(code)
}

// bearerChallenge answers userinfo's refusals as RFC 6750 §3 says: a
// WWW-Authenticate: Bearer challenge (with error="invalid_token" when a
// token was presented) and the error as JSON, where op writes plain text.
type bearerChallenge struct {
	http.ResponseWriter
	token     bool
	intercept bool
	status    int
	body      strings.Builder
}

func (b *bearerChallenge) WriteHeader(code int) {
	if code == http.StatusUnauthorized || code == http.StatusForbidden {
		b.intercept, b.status = true, code
		return
	}
	b.ResponseWriter.WriteHeader(code)
}

func (b *bearerChallenge) Write(p []byte) (int, error) {
	if b.intercept {
		return b.body.Write(p)
	}
	return b.ResponseWriter.Write(p)
}

func (b *bearerChallenge) finish() {
	if !b.intercept {
		return
	}
	h := b.ResponseWriter.Header()
	h.Del("X-Content-Type-Options")
	desc := strings.TrimSpace(b.body.String())
	if !b.token {
		h.Set("WWW-Authenticate", `Bearer realm="oauth"`)
		api.WriteJSON(b.ResponseWriter, http.StatusUnauthorized, map[string]string{"error": "invalid_request", "error_description": "a bearer access token is required"})
		return
	}
	h.Set("WWW-Authenticate", `Bearer realm="oauth", error="invalid_token", error_description="`+strings.ReplaceAll(desc, `"`, "'")+`"`)
	api.WriteJSON(b.ResponseWriter, http.StatusUnauthorized, map[string]string{"error": "invalid_token", "error_description": desc})
}

// clientRequest prepares a request a client sends with its credentials
// (token, introspection, revocation, device authorization): POST only,
// nothing from the query string (RFC 6749 §3.2: credentials and codes do
// not belong in URLs), and client_secret_post moved into the Basic header,
// which is where op authenticates clients at every endpoint.
//
// The device authorization endpoint takes a confidential client's bare
// client_id, as op does and as golang.org/x/oauth2's DeviceAuth sends it:
// a device code of a confidential client is redeemed only with its secret
// (the poll authenticates), so starting one without it yields nothing.
func (p *Provider) clientRequest(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		api.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "invalid_request", "error_description": "this endpoint takes POST"})
		return false
	}
	r.URL.RawQuery = ""
	if err := r.ParseForm(); err != nil {
		api.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the form could not be read"})
		return false
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		if secret != "" {
			r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
			r.PostForm.Del("client_secret")
			r.Form.Del("client_secret")
		}
	}
	// At the token endpoint a confidential client authenticates before op
	// looks at anything: op reads a device code's state (a poll, which
	// moves its interval) before it checks the client.
	if strings.HasSuffix(r.URL.Path, "/token") && secret == "" && id != "" {
		if c, err := (storage{p}).client(r.Context(), id); err == nil && c.Type == auth.ClientConfidential {
			w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
			api.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "client authentication failed"})
			return false
		}
	}
	return true
}

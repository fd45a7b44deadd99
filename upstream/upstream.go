// Package upstream is the client side of logins through a tenant's
// upstream identity providers: OpenID Connect discovery, the
// authorization URL with PKCE and nonce, the code exchange, ID token
// verification (signature through the provider's JWKS, issuer, audience,
// expiry, nonce) and userinfo, with golang.org/x/oauth2 and
// github.com/coreos/go-oidc/v3. It sits beside the flows, like webhook:
// outbound HTTP, every connection checked against private addresses
// unless allowed.
package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/oauth2"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/netguard"
)

// logins counts logins through upstream providers by protocol and
// outcome: no tenant label (thousands of tenants).
var logins = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_upstream_logins_total",
	Help: "Logins through upstream identity providers, by protocol (oidc, oauth2, id_token) and outcome (ok, error).",
}, []string{"protocol", "outcome"})

// Client talks to upstream providers. Safe for concurrent use.
type Client struct {
	http *http.Client
	mu   sync.Mutex
	// discovered caches OpenID providers by issuer (their metadata and
	// key sets) for discoveryTTL.
	discovered map[string]discovered
}

type discovered struct {
	p  *oidc.Provider
	at time.Time
}

const discoveryTTL = time.Hour

// New returns a client; allowPrivate lets it reach loopback, private and
// link-local addresses (serve --outbound-allow-private).
func New(allowPrivate bool) *Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !allowPrivate {
		d.Control = netguard.Control
	}
	tr := &http.Transport{Proxy: nil, DialContext: d.DialContext, TLSHandshakeTimeout: 5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second, MaxIdleConnsPerHost: 4, IdleConnTimeout: 60 * time.Second}
	return &Client{http: &http.Client{Transport: tr, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		discovered: map[string]discovered{}}
}

func (c *Client) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(context.WithValue(ctx, oauth2.HTTPClient, c.http), c.http)
}

// unavailable is a provider that could not be reached or answered
// nonsense: 502 upstream_unavailable.
func unavailable(what string, err error) error {
	return &engine.Error{Kind: engine.KindUnavailable, Code: "upstream_unavailable",
		Message: "The identity provider could not be reached: " + what, Err: err}
}

func refused(msg string, err error) error {
	return &engine.Error{Kind: engine.KindInvalid, Code: auth.CodeBadOAuthCallback, Message: msg, Err: err}
}

func (c *Client) provider(ctx context.Context, issuer string) (*oidc.Provider, error) {
	c.mu.Lock()
	d, ok := c.discovered[issuer]
	c.mu.Unlock()
	if ok && time.Since(d.at) < discoveryTTL {
		return d.p, nil
	}
	p, err := oidc.NewProvider(c.ctx(ctx), issuer)
	if err != nil {
		return nil, unavailable("discovery of "+issuer+" failed", err)
	}
	c.mu.Lock()
	if len(c.discovered) > 10_000 {
		c.discovered = map[string]discovered{}
	}
	c.discovered[issuer] = discovered{p: p, at: time.Now()}
	c.mu.Unlock()
	return p, nil
}

// config is p's OAuth 2.0 client configuration (and its OpenID provider).
func (c *Client) config(ctx context.Context, p *auth.IdentityProvider, redirectURI string, scopes []string) (*oauth2.Config, *oidc.Provider, error) {
	cfg := &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret, RedirectURL: redirectURI, Scopes: p.Scopes}
	if len(scopes) > 0 {
		cfg.Scopes = append(append([]string(nil), p.Scopes...), scopes...)
	}
	if p.Protocol() == auth.KindOAuth2 {
		cfg.Endpoint = oauth2.Endpoint{AuthURL: p.AuthorizationURL, TokenURL: p.TokenURL}
		return cfg, nil, nil
	}
	op, err := c.provider(ctx, p.Issuer)
	if err != nil {
		return nil, nil, err
	}
	cfg.Endpoint = op.Endpoint()
	return cfg, op, nil
}

// AuthCodeURL is where to send the browser to log in at p: with state,
// PKCE (S256) and, for OpenID Connect, the nonce.
func (c *Client) AuthCodeURL(ctx context.Context, p *auth.IdentityProvider, redirectURI string, start *auth.UpstreamStart, scopes []string) (string, error) {
	cfg, op, err := c.config(ctx, p, redirectURI, scopes)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(start.CodeVerifier)}
	if op != nil {
		opts = append(opts, oidc.Nonce(start.Nonce))
	}
	return cfg.AuthCodeURL(start.State, opts...), nil
}

// Exchange trades the callback's code for tokens and returns who signed
// in: from the verified ID token (OpenID Connect, with the state's
// nonce) or the userinfo endpoint (OAuth 2.0).
func (c *Client) Exchange(ctx context.Context, p *auth.IdentityProvider, redirectURI, code string, st *auth.UpstreamState) (auth.UpstreamIdentity, error) {
	id, err := c.exchange(ctx, p, redirectURI, code, st)
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	logins.WithLabelValues(p.Protocol(), outcome).Inc()
	return id, err
}

func (c *Client) exchange(ctx context.Context, p *auth.IdentityProvider, redirectURI, code string, st *auth.UpstreamState) (auth.UpstreamIdentity, error) {
	if code == "" {
		return auth.UpstreamIdentity{}, refused("The provider's callback has no code", nil)
	}
	cfg, op, err := c.config(ctx, p, redirectURI, nil)
	if err != nil {
		return auth.UpstreamIdentity{}, err
	}
	tok, err := cfg.Exchange(c.ctx(ctx), code, oauth2.VerifierOption(st.CodeVerifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return auth.UpstreamIdentity{}, refused("The provider refused the code: "+re.ErrorCode, err)
		}
		return auth.UpstreamIdentity{}, unavailable("the code exchange failed", err)
	}
	if op == nil {
		claims, err := c.userinfo(ctx, p.UserinfoURL, tok)
		if err != nil {
			return auth.UpstreamIdentity{}, err
		}
		return identity(p, claims), nil
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return auth.UpstreamIdentity{}, refused("The provider returned no ID token", nil)
	}
	claims, nonce, err := c.verify(ctx, op, p, raw)
	if err != nil {
		return auth.UpstreamIdentity{}, err
	}
	if nonce != st.Nonce {
		return auth.UpstreamIdentity{}, refused("The ID token's nonce is not this login's", nil)
	}
	if _, ok := claims[p.Claim("email")]; !ok && op.UserInfoEndpoint() != "" {
		// Some providers keep the address out of the ID token.
		if ui, err := op.UserInfo(c.ctx(ctx), oauth2.StaticTokenSource(tok)); err == nil {
			var extra map[string]any
			if ui.Claims(&extra) == nil && fmt.Sprint(extra["sub"]) == fmt.Sprint(claims["sub"]) {
				for k, v := range extra {
					if _, ok := claims[k]; !ok {
						claims[k] = v
					}
				}
			}
		}
	}
	return identity(p, claims), nil
}

// verify checks an ID token of p: signature (the provider's JWKS),
// issuer, audience (p's client id), expiry.
func (c *Client) verify(ctx context.Context, op *oidc.Provider, p *auth.IdentityProvider, raw string) (map[string]any, string, error) {
	idt, err := op.Verifier(&oidc.Config{ClientID: p.ClientID}).Verify(c.ctx(ctx), raw)
	if err != nil {
		return nil, "", &engine.Error{Kind: engine.KindInvalid, Code: auth.CodeBadIDToken, Message: "The ID token is not valid: " + err.Error(), Err: err}
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, "", refused("The ID token's claims do not decode", err)
	}
	return claims, idt.Nonce, nil
}

// VerifyIDToken checks a native app's ID token of p (grant_type=id_token)
// and the nonce rule, and returns who it names.
func (c *Client) VerifyIDToken(ctx context.Context, p *auth.IdentityProvider, raw, nonce string) (auth.UpstreamIdentity, error) {
	if p.Protocol() != auth.KindOIDC {
		return auth.UpstreamIdentity{}, &engine.Error{Kind: engine.KindInvalid, Code: auth.CodeValidationFailed,
			Message: "Provider " + p.ID + " does not issue ID tokens"}
	}
	op, err := c.provider(ctx, p.Issuer)
	if err == nil {
		var claims map[string]any
		var tokNonce string
		if claims, tokNonce, err = c.verify(ctx, op, p, raw); err == nil {
			if err = auth.IDTokenNonce(tokNonce, nonce); err == nil {
				logins.WithLabelValues("id_token", "ok").Inc()
				return identity(p, claims), nil
			}
		}
	}
	logins.WithLabelValues("id_token", "error").Inc()
	return auth.UpstreamIdentity{}, err
}

// userinfo reads an OAuth 2.0 provider's userinfo endpoint.
func (c *Client) userinfo(ctx context.Context, endpoint string, tok *oauth2.Token) (map[string]any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, unavailable("bad userinfo URL", err)
	}
	req.Header.Set("Accept", "application/json")
	tok.SetAuthHeader(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, unavailable("userinfo failed", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, unavailable("userinfo answered "+strconv.Itoa(resp.StatusCode), err)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, unavailable("userinfo is not a JSON object", err)
	}
	return claims, nil
}

// identityKeys are the claims kept in an identity's data.
var identityKeys = []string{"iss", "sub", "name", "given_name", "family_name", "nickname", "preferred_username", "picture",
	"email", "email_verified", "locale", "login", "avatar_url", "full_name", "hd", "tid"}

// identity maps a provider's claims to an upstream identity through p's
// mapping.
func identity(p *auth.IdentityProvider, claims map[string]any) auth.UpstreamIdentity {
	str := func(field string) string {
		switch v := claims[p.Claim(field)].(type) {
		case string:
			return v
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		case json.Number:
			return v.String()
		}
		return ""
	}
	id := auth.UpstreamIdentity{Provider: p.ID, Subject: str("sub"), Email: str("email"), Data: map[string]any{}}
	switch v := claims[p.Claim("email_verified")].(type) {
	case bool:
		id.EmailVerified = v
	case string:
		id.EmailVerified = v == "true"
	}
	for _, k := range identityKeys {
		if v, ok := claims[k]; ok {
			id.Data[k] = v
		}
	}
	for _, f := range []string{"name", "picture", "preferred_username"} {
		if v := str(f); v != "" {
			id.Data[f] = v
		}
	}
	if n, ok := id.Data["name"]; ok {
		id.Data["full_name"] = n
	}
	if pic, ok := id.Data["picture"]; ok {
		id.Data["avatar_url"] = pic
	}
	return id
}

package oidc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
)

// storage adapts the auth flows to zitadel/oidc's op.Storage. Every call
// runs for the tenant its context carries (set by Provider.serve); nothing
// here holds state between requests.
type storage struct{ p *Provider }

var (
	_ op.Storage                        = storage{}
	_ op.ClientCredentialsStorage       = storage{}
	_ op.DeviceAuthorizationStorage     = storage{}
	_ op.CanGetPrivateClaimsFromRequest = storage{}
	_ op.CanTerminateSessionFromRequest = storage{}
)

// Access token ids (jti) say what the token belongs to:
// "g.<session>.<scopes>.<r>" a user's grant, with the scopes this token
// carries as a mask of auth.KnownScopes (a refresh may narrow them);
// "c.<client>.<r>" a client credentials grant. Refresh tokens are revoked
// by "r.<session>".
const (
	jtiGrant  = "g."
	jtiClient = "c."
	refreshID = "r."
)

// grantJTI is the id of an access token of a user's grant.
func grantJTI(sess string, scopes []string) string {
	mask := 0
	for i, k := range auth.KnownScopes {
		if slices.Contains(scopes, k) {
			mask |= 1 << i
		}
	}
	return jtiGrant + sess + "." + strconv.Itoa(mask) + "." + randomID()
}

// tokenScopes are the scopes of a grant's access token: its mask, within
// what the grant holds.
func tokenScopes(jti string, granted []string) []string {
	rest, _ := strings.CutPrefix(jti, jtiGrant)
	parts := strings.SplitN(rest, ".", 3)
	mask := 0
	if len(parts) == 3 {
		mask, _ = strconv.Atoi(parts[1])
	}
	var out []string
	for i, k := range auth.KnownScopes {
		if mask&(1<<i) != 0 && slices.Contains(granted, k) {
			out = append(out, k)
		}
	}
	return out
}

// client returns a client of the request's tenant, read once per request:
// op asks for the same client several times in one exchange (by id, then
// to check its secret).
func (s storage) client(ctx context.Context, id string) (*auth.OAuthClient, error) {
	rt := reqOf(ctx)
	if c, ok := rt.clients[id]; ok {
		return c, nil
	}
	c, err := s.p.auth.OAuthClient(ctx, rt.t, id)
	if err != nil {
		return nil, err
	}
	if rt.clients == nil {
		rt.clients = map[string]*auth.OAuthClient{}
	}
	rt.clients[id] = c
	return c, nil
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// oauthErr turns an error of the flows into the protocol's: an
// *engine.Error whose code is an RFC 6749 error keeps it; the others take
// the status of the one mapping (api.ProblemOf), as server_error or
// temporarily_unavailable.
func oauthErr(err error) error {
	if err == nil {
		return nil
	}
	var oe *oidc.Error
	if errors.As(err, &oe) {
		return err
	}
	p := api.ProblemOf(err)
	switch p.Code {
	case "invalid_grant":
		return oidc.ErrInvalidGrant().WithDescription("%s", p.Message)
	case "oauth_client_not_found":
		return oidc.ErrInvalidClient().WithDescription("unknown client")
	}
	switch {
	case p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable:
		return op.NewStatusError((&oidc.Error{ErrorType: "temporarily_unavailable"}).WithDescription("%s", p.Message).WithParent(err), p.Status)
	case p.Status < 500:
		return oidc.ErrInvalidRequest().WithDescription("%s", p.Message).WithParent(err)
	}
	return oidc.ErrServerError().WithParent(err)
}

// CreateAuthRequest stores an authorization request that op validated
// against the client; here the client's scope list and PKCE are enforced:
// S256 only, required for a public client.
func (s storage) CreateAuthRequest(ctx context.Context, ar *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	rt := reqOf(ctx)
	c, err := s.client(ctx, ar.ClientID)
	if err != nil {
		return nil, oauthErr(err)
	}
	if !c.Allows(auth.GrantAuthorizationCode) {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("the client may not use the authorization code grant")
	}
	if ar.CodeChallenge != "" && ar.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	if ar.CodeChallenge == "" && c.Type == auth.ClientPublic {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE (code_challenge with S256) is required for a public client")
	}
	scopes := slices.DeleteFunc(slices.Clone(ar.Scopes), func(sc string) bool { return !c.ScopeAllowed(sc) })
	if len(scopes) == 0 {
		return nil, oidc.ErrInvalidScope().WithDescription("none of the requested scopes is allowed for this client")
	}
	r := &auth.OAuthRequest{ClientID: c.ID, RedirectURI: ar.RedirectURI, ResponseType: string(ar.ResponseType),
		ResponseMode: string(ar.ResponseMode), Scopes: scopes, State: ar.State, Nonce: ar.Nonce,
		CodeChallenge: ar.CodeChallenge, CodeChallengeMethod: string(ar.CodeChallengeMethod),
		Prompt: ar.Prompt, MaxAge: ar.MaxAge, LoginHint: ar.LoginHint}
	if err := s.p.auth.CreateOAuthRequest(ctx, rt.t, r); err != nil {
		return nil, oauthErr(err)
	}
	return authRequest{OAuthRequest: r}, nil
}

func (s storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	r, err := s.p.auth.OAuthRequest(ctx, reqOf(ctx).t, id)
	if err != nil {
		return nil, oauthErr(err)
	}
	return authRequest{OAuthRequest: r}, nil
}

// AuthRequestByCode answers a used code too, marked replayed: op checks
// the client and PKCE before it asks for tokens, and only then is the
// replay refused and the grant of the first exchange revoked (openGrant).
func (s storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	r, used, err := s.p.auth.OAuthRequestByCode(ctx, reqOf(ctx).t, code)
	if err != nil {
		return nil, oauthErr(err)
	}
	return authRequest{OAuthRequest: r, replayed: used}, nil
}

func (s storage) SaveAuthCode(ctx context.Context, id, code string) error {
	return oauthErr(s.p.auth.SaveOAuthCode(ctx, reqOf(ctx).t, id, code))
}

// DeleteAuthRequest does nothing: the exchange marked the request used in
// the write that opened its grant, and a used code must stay known so that
// presenting it again revokes that grant.
func (s storage) DeleteAuthRequest(context.Context, string) error { return nil }

// accessTTL is the tenant's access token lifetime.
func (s storage) accessTTL(ctx context.Context, t auth.Tenant) time.Duration {
	return s.p.auth.AccessTokenTTL(ctx, t)
}

func (s storage) CreateAccessToken(ctx context.Context, tr op.TokenRequest) (string, time.Time, error) {
	rt := reqOf(ctx)
	exp := s.p.auth.Now().Add(s.accessTTL(ctx, rt.t))
	switch r := tr.(type) {
	case clientRequest:
		return jtiClient + r.clientID + "." + randomID(), exp, nil
	case authRequest, *op.DeviceAuthorizationState:
		sess, _, err := s.openGrant(ctx, tr, false)
		if err != nil {
			return "", time.Time{}, err
		}
		return grantJTI(sess, tr.GetScopes()), exp, nil
	}
	return "", time.Time{}, oidc.ErrUnsupportedGrantType()
}

// openGrant exchanges a code's request or an approved device code for a
// grant.
func (s storage) openGrant(ctx context.Context, tr op.TokenRequest, refresh bool) (string, string, error) {
	rt := reqOf(ctx)
	g := auth.GrantRequest{Refresh: refresh}
	switch r := tr.(type) {
	case authRequest:
		if r.replayed {
			return "", "", oauthErr(s.p.auth.RevokeCodeGrant(ctx, rt.t, rt.client, r.ID))
		}
		g.ClientID, g.UserID, g.Scopes, g.AuthTime, g.AMR, g.RequestID = r.ClientID, r.UserID, r.Scopes, r.AuthTime, r.AMR, r.ID
	case *op.DeviceAuthorizationState:
		if rt.deviceCode == "" {
			return "", "", oidc.ErrInvalidGrant()
		}
		g.ClientID, g.UserID, g.Scopes, g.AuthTime, g.AMR, g.DeviceCode = r.ClientID, r.Subject, r.Scopes, r.AuthTime, r.AMR, rt.deviceCode
	}
	sess, rtok, err := s.p.auth.IssueOAuthGrant(ctx, rt.t, rt.client, g)
	if err != nil {
		return "", "", oauthErr(err)
	}
	rt.sessionID = sess
	return sess, rtok, nil
}

func (s storage) CreateAccessAndRefreshTokens(ctx context.Context, tr op.TokenRequest, current string) (string, string, time.Time, error) {
	rt := reqOf(ctx)
	exp := s.p.auth.Now().Add(s.accessTTL(ctx, rt.t))
	switch r := tr.(type) {
	case *refreshRequest:
		next, err := s.p.auth.RotateOAuthRefresh(ctx, rt.t, rt.client, r.g.ClientID, current)
		if err != nil {
			return "", "", time.Time{}, oauthErr(err)
		}
		rt.sessionID = r.g.SessionID
		return grantJTI(r.g.SessionID, r.GetScopes()), next, exp, nil
	case authRequest, *op.DeviceAuthorizationState:
		sess, refresh, err := s.openGrant(ctx, tr, true)
		if err != nil {
			return "", "", time.Time{}, err
		}
		return grantJTI(sess, tr.GetScopes()), refresh, exp, nil
	}
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType()
}

func (s storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	g, err := s.p.auth.OAuthGrantByRefresh(ctx, reqOf(ctx).t, token)
	if err != nil {
		return nil, oidc.ErrInvalidGrant().WithDescription("invalid refresh token")
	}
	return &refreshRequest{g: g, scopes: g.Scopes}, nil
}

// TerminateSession ends a user's grants to a client; the browser session
// is ended by TerminateSessionFromRequest.
func (s storage) TerminateSession(ctx context.Context, userID, clientID string) error {
	return oauthErr(s.p.auth.EndOAuthGrants(ctx, reqOf(ctx).t, userID, clientID))
}

// TerminateSessionFromRequest is RP-initiated logout, confirmed on the
// logout page: the browser's session ends, with the user's grants to the
// client named by the request (by id_token_hint or client_id).
func (s storage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	rt := reqOf(ctx)
	if rt.browser != nil {
		if err := s.p.auth.EndBrowserSession(ctx, rt.t, rt.client, rt.browser); err != nil {
			return "", oauthErr(err)
		}
		if req.UserID == "" {
			req.UserID = rt.browser.User.ID
		}
	}
	if req.UserID != "" && req.ClientID != "" {
		if err := s.p.auth.EndOAuthGrants(ctx, rt.t, req.UserID, req.ClientID); err != nil {
			return "", oauthErr(err)
		}
	}
	rt.loggedOut = true
	if req.RedirectURI != "" {
		return req.RedirectURI, nil
	}
	return rt.base + "/oauth/logged_out", nil
}

func (s storage) RevokeToken(ctx context.Context, tokenOrID, _ string, clientID string) *oidc.Error {
	rt := reqOf(ctx)
	switch {
	case strings.HasPrefix(tokenOrID, refreshID):
		if err := s.p.auth.RevokeOAuthGrant(ctx, rt.t, rt.client, clientID, strings.TrimPrefix(tokenOrID, refreshID)); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	case strings.HasPrefix(tokenOrID, jtiGrant), strings.HasPrefix(tokenOrID, jtiClient):
		owner := ""
		if sess, ok := grantSession(tokenOrID); ok {
			g, err := s.p.auth.OAuthGrantActive(ctx, rt.t, sess)
			if err != nil {
				return oidc.ErrServerError().WithParent(err)
			}
			if g != nil {
				owner = g.ClientID
			}
		} else if c, ok := tokenClient(tokenOrID); ok {
			owner = c
		}
		if owner != clientID { // another client's token, or one already dead: nothing to do
			return nil
		}
		if err := s.p.auth.RevokeOAuthAccessToken(ctx, rt.t, tokenOrID, time.Now().Add(s.p.auth.MaxAccessTokenTTL())); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	}
	// RFC 7009 §2.2: an invalid token is not an error.
	return nil
}

// grantSession returns the session of a grant access token's jti.
func grantSession(jti string) (string, bool) {
	rest, ok := strings.CutPrefix(jti, jtiGrant)
	if !ok {
		return "", false
	}
	sess, _, ok := strings.Cut(rest, ".")
	return sess, ok && auth.ValidUUID(sess)
}

// tokenClient returns the client of a client credentials token's jti.
func tokenClient(jti string) (string, bool) {
	rest, ok := strings.CutPrefix(jti, jtiClient)
	if !ok {
		return "", false
	}
	c, _, ok := strings.Cut(rest, ".")
	return c, ok
}

func (s storage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	g, err := s.p.auth.OAuthGrantByRefresh(ctx, reqOf(ctx).t, token)
	if err != nil || g.ClientID != clientID {
		return "", "", op.ErrInvalidRefreshToken
	}
	return g.UserID, refreshID + g.SessionID, nil
}

func (s storage) keys(ctx context.Context) (kid, alg string, key any, err error) {
	rt := reqOf(ctx)
	ks, err := s.p.auth.Keys().Get(ctx, rt.t.ID, rt.t.Shard)
	if err != nil {
		return "", "", nil, err
	}
	kid, alg, key = ks.SigningKey()
	return kid, alg, key, nil
}

func (s storage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	kid, alg, key, err := s.keys(ctx)
	if err != nil {
		return nil, err
	}
	return signingKey{kid: kid, alg: jose.SignatureAlgorithm(alg), key: key}, nil
}

func (s storage) SignatureAlgorithms(ctx context.Context) ([]jose.SignatureAlgorithm, error) {
	_, alg, _, err := s.keys(ctx)
	if err != nil {
		return nil, err
	}
	return []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)}, nil
}

// KeySet is not served by op (the tenant's JWKS route serves the same keys
// as its GoTrue tokens) nor used to verify (keySet does, HS256 included).
func (s storage) KeySet(context.Context) ([]op.Key, error) { return nil, nil }

func (s storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	rt := reqOf(ctx)
	c, err := s.client(ctx, id)
	if err != nil {
		return nil, oauthErr(err)
	}
	return client{c: c, base: rt.base}, nil
}

func (s storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	c, err := s.client(ctx, id)
	if err != nil {
		return oidc.ErrInvalidClient().WithDescription("client authentication failed")
	}
	if !c.CheckSecret(secret) {
		return oidc.ErrInvalidClient().WithDescription("client authentication failed")
	}
	return nil
}

func (s storage) SetUserinfoFromScopes(ctx context.Context, info *oidc.UserInfo, userID, _ string, scopes []string) error {
	u, err := s.p.auth.UserByID(ctx, reqOf(ctx).t, userID)
	if err != nil {
		return oauthErr(err)
	}
	setUserinfo(info, u, scopes)
	return nil
}

// setUserinfo fills the standard claims of the scopes granted.
func setUserinfo(info *oidc.UserInfo, u *auth.User, scopes []string) {
	info.Subject = u.ID
	for _, sc := range scopes {
		switch sc {
		case auth.ScopeEmail:
			info.Email = u.Email
			info.EmailVerified = oidc.Bool(u.EmailConfirmedAt != nil)
		case auth.ScopeProfile:
			md, _ := auth.MetadataMap(u.UserMetadata)
			str := func(keys ...string) string {
				for _, k := range keys {
					if v, ok := md[k].(string); ok && v != "" {
						return v
					}
				}
				return ""
			}
			info.Name = str("full_name", "name")
			info.GivenName = str("given_name")
			info.FamilyName = str("family_name")
			info.Nickname = str("nickname", "user_name")
			info.Picture = str("avatar_url", "picture")
			info.UpdatedAt = oidc.FromTime(u.UpdatedAt)
		}
	}
}

// liveGrant checks an access token's id: not revoked, and for a user's
// token its grant still alive for that user.
func (s storage) liveGrant(ctx context.Context, tokenID, subject string) (*auth.OAuthGrant, string, error) {
	rt := reqOf(ctx)
	revoked, err := s.p.auth.OAuthTokenRevoked(ctx, rt.t, tokenID)
	if err != nil {
		return nil, "", err
	}
	if revoked {
		return nil, "", errors.New("token revoked")
	}
	if c, ok := tokenClient(tokenID); ok {
		if c != subject {
			return nil, "", errors.New("token subject mismatch")
		}
		if _, err := s.client(ctx, c); err != nil {
			return nil, "", errors.New("client gone")
		}
		return nil, c, nil
	}
	sess, ok := grantSession(tokenID)
	if !ok {
		return nil, "", errors.New("not an OAuth access token")
	}
	g, err := s.p.auth.OAuthGrantActive(ctx, rt.t, sess)
	if err != nil {
		return nil, "", err
	}
	if g == nil || g.UserID != subject {
		return nil, "", errors.New("grant ended")
	}
	return g, g.ClientID, nil
}

func (s storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	g, _, err := s.liveGrant(ctx, tokenID, subject)
	if err != nil {
		return err
	}
	if g == nil {
		return errors.New("a client's own token has no user")
	}
	scopes := tokenScopes(tokenID, g.Scopes)
	if !slices.Contains(scopes, auth.ScopeOpenID) {
		return errors.New("the token was not granted openid")
	}
	return s.SetUserinfoFromScopes(ctx, info, g.UserID, g.ClientID, scopes)
}

// SetIntrospectionFromToken answers a token's client, or a client an
// administrator registered (a resource server); a dynamically registered
// client learns only about its own tokens.
func (s storage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, caller string) error {
	g, owner, err := s.liveGrant(ctx, tokenID, subject)
	if err != nil {
		return err
	}
	if caller != owner {
		c, err := s.client(ctx, caller)
		if err != nil || c.RegistrationType != "manual" {
			return errors.New("a dynamically registered client introspects only its own tokens")
		}
	}
	resp.ClientID, resp.Subject, resp.TokenType = owner, subject, oidc.BearerToken
	resp.Audience = []string{owner}
	resp.Issuer = reqOf(ctx).t.Issuer
	resp.JWTID = tokenID
	if g == nil {
		return nil
	}
	resp.Scope = tokenScopes(tokenID, g.Scopes)
	u, err := s.p.auth.UserByID(ctx, reqOf(ctx).t, g.UserID)
	if err != nil {
		return err
	}
	resp.Username = u.Email
	return nil
}

func (s storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// GetPrivateClaimsFromRequest adds to an access token its scope. It
// carries neither GoTrue's role nor a session_id: a client's token must
// not pass for the user's own session at GoTrue's routes or at a resource
// server that trusts role (GoTrue's verification requires session_id).
func (s storage) GetPrivateClaimsFromRequest(_ context.Context, tr op.TokenRequest, _ []string) (map[string]any, error) {
	return map[string]any{"scope": strings.Join(tr.GetScopes(), " ")}, nil
}

func (s storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, oidc.ErrInvalidClient().WithDescription("private_key_jwt is not supported")
}

func (s storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, oidc.ErrUnsupportedGrantType()
}

func (s storage) Health(context.Context) error { return nil }

// ClientCredentials authenticates a confidential client for the
// client_credentials grant: one SHA-256 and a constant-time compare.
func (s storage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	rt := reqOf(ctx)
	c, err := s.client(ctx, id)
	if err != nil || !c.CheckSecret(secret) {
		return nil, oidc.ErrInvalidClient().WithDescription("client authentication failed")
	}
	return client{c: c, base: rt.base}, nil
}

// ClientCredentialsTokenRequest: a client acts for itself; the user scopes
// (openid, email, profile, offline_access) mean nothing here and are
// refused, as are scopes the client is not allowed.
func (s storage) ClientCredentialsTokenRequest(ctx context.Context, id string, scopes []string) (op.TokenRequest, error) {
	for _, sc := range scopes {
		return nil, oidc.ErrInvalidScope().WithDescription("scope %q cannot be granted to a client acting for itself", sc)
	}
	return clientRequest{clientID: id, scopes: scopes}, nil
}

// StoreDeviceAuthorization stores a device authorization; it expires by
// the service's clock, which every later check uses (op's expires is by
// its own).
func (s storage) StoreDeviceAuthorization(ctx context.Context, clientID, deviceCode, userCode string, _ time.Time, scopes []string) error {
	expires := s.p.auth.Now().Add(auth.DeviceCodeTTL)
	rt := reqOf(ctx)
	c, err := s.client(ctx, clientID)
	if err != nil {
		return oauthErr(err)
	}
	scopes = slices.DeleteFunc(slices.Clone(scopes), func(sc string) bool { return !c.ScopeAllowed(sc) })
	return oauthErr(s.p.auth.CreateDeviceCode(ctx, rt.t, clientID, deviceCode, userCode, expires, scopes))
}

// GetDeviceAuthorizatonState answers a device's poll. op turns an error
// that is a context.DeadlineExceeded into slow_down, any other into
// access_denied.
func (s storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	rt := reqOf(ctx)
	d, err := s.p.auth.PollDeviceCode(ctx, rt.t, clientID, deviceCode)
	if err != nil {
		return nil, err
	}
	if d.SlowDown {
		return nil, fmt.Errorf("polled faster than the interval: %w", context.DeadlineExceeded)
	}
	st := &op.DeviceAuthorizationState{ClientID: d.ClientID, Scopes: d.Scopes, Expires: d.Expires,
		Subject: d.UserID, AMR: d.AMR, AuthTime: d.AuthTime}
	if !d.Expires.After(s.p.auth.Now()) && d.State != "denied" {
		// op compares with its own clock; the service's says expired, and
		// an approval that came too late does not count.
		st.Expires, st.Done = time.Time{}, false
		return st, nil
	}
	switch d.State {
	case "approved":
		st.Done = true
		rt.deviceCode = deviceCode
	case "denied":
		st.Denied = true
	case "used":
		return nil, errors.New("device code already used")
	}
	return st, nil
}

// authRequest is an auth.OAuthRequest as op sees it; replayed: its code
// was exchanged before.
type authRequest struct {
	*auth.OAuthRequest
	replayed bool
}

func (r authRequest) GetID() string          { return r.ID }
func (r authRequest) GetACR() string         { return "" }
func (r authRequest) GetAMR() []string       { return r.AMR }
func (r authRequest) GetAudience() []string  { return []string{r.ClientID} }
func (r authRequest) GetAuthTime() time.Time { return r.AuthTime }
func (r authRequest) GetClientID() string    { return r.ClientID }
func (r authRequest) GetNonce() string       { return r.Nonce }
func (r authRequest) GetRedirectURI() string { return r.RedirectURI }
func (r authRequest) GetScopes() []string    { return r.Scopes }
func (r authRequest) GetState() string       { return r.State }
func (r authRequest) GetSubject() string     { return r.UserID }
func (r authRequest) Done() bool             { return r.OAuthRequest.Done }
func (r authRequest) GetResponseType() oidc.ResponseType {
	return oidc.ResponseType(r.ResponseType)
}
func (r authRequest) GetResponseMode() oidc.ResponseMode {
	return oidc.ResponseMode(r.ResponseMode)
}
func (r authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if r.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: r.CodeChallenge, Method: oidc.CodeChallengeMethod(r.CodeChallengeMethod)}
}

// refreshRequest is a grant as a refresh token presents it.
type refreshRequest struct {
	g      *auth.OAuthGrant
	scopes []string
}

func (r *refreshRequest) GetAMR() []string                 { return r.g.AMR }
func (r *refreshRequest) GetAudience() []string            { return []string{r.g.ClientID} }
func (r *refreshRequest) GetAuthTime() time.Time           { return r.g.AuthTime }
func (r *refreshRequest) GetClientID() string              { return r.g.ClientID }
func (r *refreshRequest) GetScopes() []string              { return r.scopes }
func (r *refreshRequest) GetSubject() string               { return r.g.UserID }
func (r *refreshRequest) SetCurrentScopes(scopes []string) { r.scopes = scopes }

// clientRequest is a client credentials grant.
type clientRequest struct {
	clientID string
	scopes   []string
}

func (r clientRequest) GetSubject() string    { return r.clientID }
func (r clientRequest) GetAudience() []string { return []string{r.clientID} }
func (r clientRequest) GetScopes() []string   { return r.scopes }

// client is an auth.OAuthClient as op sees it.
type client struct {
	c    *auth.OAuthClient
	base string // the tenant's path, /t/{slug}
}

func (c client) GetID() string                    { return c.c.ID }
func (c client) RedirectURIs() []string           { return c.c.RedirectURIs }
func (c client) PostLogoutRedirectURIs() []string { return c.c.PostLogoutRedirectURIs }
func (c client) ApplicationType() op.ApplicationType {
	if c.c.Type == auth.ClientPublic {
		return op.ApplicationTypeNative // loopback redirects on any port, private-use schemes (RFC 8252)
	}
	return op.ApplicationTypeWeb
}
func (c client) AuthMethod() oidc.AuthMethod {
	switch c.c.AuthMethod {
	case auth.AuthSecretPost:
		return oidc.AuthMethodPost
	case auth.AuthNone:
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}
func (c client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c client) GrantTypes() []oidc.GrantType {
	out := make([]oidc.GrantType, len(c.c.GrantTypes))
	for i, g := range c.c.GrantTypes {
		out[i] = oidc.GrantType(g)
	}
	return out
}
func (c client) LoginURL(id string) string            { return c.base + "/oauth/login?id=" + id }
func (c client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c client) IDTokenLifetime() time.Duration       { return time.Hour }
func (c client) DevMode() bool                        { return false }
func (c client) IsScopeAllowed(scope string) bool     { return c.c.ScopeAllowed(scope) }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c client) ClockSkew() time.Duration             { return 0 }
func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// signingKey is the tenant's signing key as op signs with it.
type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key any
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.kid }

// keySet verifies the tokens op is shown (access tokens at userinfo,
// introspection and revocation; id_token_hint) with the tenant's keys.
type keySet struct{ p *Provider }

func (k keySet) VerifySignature(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, error) {
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want one signature")
	}
	h := jws.Signatures[0].Header
	rt := reqOf(ctx)
	ks, err := k.p.auth.Keys().ForKid(ctx, rt.t.ID, rt.t.Shard, h.KeyID)
	if err != nil {
		return nil, err
	}
	alg, key, ok := ks.VerifyKey(h.KeyID)
	if !ok || h.Algorithm != alg {
		return nil, errors.New("unknown key or algorithm")
	}
	return jws.Verify(key)
}

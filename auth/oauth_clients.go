package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// OAuth client types and token endpoint authentication methods (RFC 7591).
const (
	ClientConfidential = "confidential"
	ClientPublic       = "public"

	AuthSecretBasic = "client_secret_basic"
	AuthSecretPost  = "client_secret_post"
	AuthNone        = "none"
)

// OAuth grant types a client may be allowed.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
	GrantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// OAuth scopes the provider knows.
const (
	ScopeOpenID        = "openid"
	ScopeEmail         = "email"
	ScopeProfile       = "profile"
	ScopeOfflineAccess = "offline_access"
)

var (
	knownGrants = []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials, GrantDeviceCode}
	// KnownScopes are the scopes a client may be allowed.
	KnownScopes = []string{ScopeOpenID, ScopeEmail, ScopeProfile, ScopeOfflineAccess}
)

// OAuthClient is a tenant's registered OAuth client.
type OAuthClient struct {
	ID                     string
	Name                   string
	Type                   string // ClientConfidential or ClientPublic
	AuthMethod             string // AuthSecretBasic, AuthSecretPost or AuthNone
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	GrantTypes             []string
	Scopes                 []string
	SkipConsent            bool
	LogoURI                string
	ClientURI              string
	RegistrationType       string // manual or dynamic
	CreatedAt              time.Time
	UpdatedAt              time.Time

	secretHash string
}

// Allows reports whether the client may use grant.
func (c *OAuthClient) Allows(grant string) bool { return slices.Contains(c.GrantTypes, grant) }

// ScopeAllowed reports whether the client may ask for scope.
func (c *OAuthClient) ScopeAllowed(scope string) bool { return slices.Contains(c.Scopes, scope) }

// CheckSecret compares a presented secret with the stored hash in
// constant time. A secret has 256 random bits, so one SHA-256 is enough.
func (c *OAuthClient) CheckSecret(secret string) bool {
	if c.Type != ClientConfidential || c.secretHash == "" || secret == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(hashToken(secret)), []byte(c.secretHash)) == 1
}

// OAuthClientRequest creates or changes a client; a nil field is left as it
// is (or takes its default on create).
type OAuthClientRequest struct {
	Name                   *string
	Type                   *string
	AuthMethod             *string
	RedirectURIs           *[]string
	PostLogoutRedirectURIs *[]string
	GrantTypes             *[]string
	Scopes                 *[]string
	SkipConsent            *bool
	LogoURI                *string
	ClientURI              *string
}

const (
	maxClientName   = 200
	maxRedirectURIs = 20
	maxURILen       = 2048
)

func errClientNotFound() *engine.Error {
	return newError(engine.KindNotFound, "oauth_client_not_found", "OAuth client not found")
}

// apply validates req onto c.
func (req OAuthClientRequest) apply(c *OAuthClient) error {
	if req.Name != nil {
		c.Name = strings.TrimSpace(*req.Name)
	}
	if c.Name == "" || len(c.Name) > maxClientName {
		return validationf("client_name is required (at most %d characters)", maxClientName)
	}
	if req.Type != nil {
		c.Type = *req.Type
	}
	if c.Type != ClientConfidential && c.Type != ClientPublic {
		return validationf("client_type must be confidential or public")
	}
	if req.AuthMethod != nil {
		c.AuthMethod = *req.AuthMethod
	}
	switch {
	case c.AuthMethod == "" && c.Type == ClientPublic, c.Type == ClientPublic && req.Type != nil && req.AuthMethod == nil:
		c.AuthMethod = AuthNone
	case c.AuthMethod == "" || c.AuthMethod == AuthNone && req.Type != nil && req.AuthMethod == nil:
		c.AuthMethod = AuthSecretBasic
	}
	switch c.AuthMethod {
	case AuthSecretBasic, AuthSecretPost:
		if c.Type != ClientConfidential {
			return validationf("a public client authenticates with none")
		}
	case AuthNone:
		if c.Type != ClientPublic {
			return validationf("a confidential client authenticates with client_secret_basic or client_secret_post")
		}
	default:
		return validationf("token_endpoint_auth_method must be client_secret_basic, client_secret_post or none")
	}
	if req.GrantTypes != nil {
		c.GrantTypes = dedupe(*req.GrantTypes)
	}
	if len(c.GrantTypes) == 0 {
		c.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
	}
	for _, g := range c.GrantTypes {
		if !slices.Contains(knownGrants, g) {
			return validationf("unsupported grant type %q", g)
		}
		if g == GrantClientCredentials && c.Type == ClientPublic {
			return validationf("a public client cannot use client_credentials")
		}
	}
	if req.Scopes != nil {
		c.Scopes = dedupe(*req.Scopes)
	}
	if len(c.Scopes) == 0 {
		c.Scopes = slices.Clone(KnownScopes)
	}
	for _, s := range c.Scopes {
		if !slices.Contains(KnownScopes, s) {
			return validationf("unsupported scope %q", s)
		}
	}
	if req.RedirectURIs != nil {
		c.RedirectURIs = dedupe(*req.RedirectURIs)
	}
	if req.PostLogoutRedirectURIs != nil {
		c.PostLogoutRedirectURIs = dedupe(*req.PostLogoutRedirectURIs)
	}
	if len(c.RedirectURIs) == 0 && (c.Allows(GrantAuthorizationCode)) {
		return validationf("redirect_uris is required for the authorization_code grant")
	}
	for _, list := range [][]string{c.RedirectURIs, c.PostLogoutRedirectURIs} {
		if len(list) > maxRedirectURIs {
			return validationf("at most %d redirect URIs", maxRedirectURIs)
		}
		for _, u := range list {
			if err := checkRedirectURI(u, c.Type); err != nil {
				return err
			}
		}
	}
	if req.SkipConsent != nil {
		c.SkipConsent = *req.SkipConsent
	}
	if req.LogoURI != nil {
		c.LogoURI = *req.LogoURI
	}
	if req.ClientURI != nil {
		c.ClientURI = *req.ClientURI
	}
	for _, u := range []string{c.LogoURI, c.ClientURI} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || p.Scheme != "https" && p.Scheme != "http" || p.Host == "" || len(u) > maxURILen {
			return validationf("logo_uri and client_uri must be http(s) URLs")
		}
	}
	return nil
}

// checkRedirectURI accepts an absolute URI without a fragment: https; http
// only on a loopback host (RFC 8252 §7.3); a private-use scheme only for a
// public (native) client.
func checkRedirectURI(raw, clientType string) error {
	u, err := url.Parse(raw)
	if err != nil || len(raw) > maxURILen || u.Scheme == "" || u.Fragment != "" || strings.Contains(raw, "#") {
		return validationf("redirect URI %q must be an absolute URI without a fragment", raw)
	}
	switch u.Scheme {
	case "https":
		if u.Host == "" {
			return validationf("redirect URI %q has no host", raw)
		}
	case "http":
		h := u.Hostname()
		if h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return validationf("redirect URI %q: http only for a loopback host", raw)
		}
	case "javascript", "data", "file", "vbscript":
		return validationf("redirect URI %q: scheme not allowed", raw)
	default:
		if clientType != ClientPublic || !strings.Contains(u.Scheme, ".") && u.Opaque == "" && u.Host == "" && u.Path == "" {
			return validationf("redirect URI %q: a private-use scheme only for a public client", raw)
		}
	}
	return nil
}

func dedupe(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// newClientSecret returns 256 random bits, base64url without padding.
func newClientSecret() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

const clientColumns = `id, name, client_type, token_endpoint_auth_method, secret_hash, redirect_uris, post_logout_redirect_uris,
	grant_types, scopes, skip_consent, COALESCE(logo_uri, ''), COALESCE(client_uri, ''), registration_type, created_at, updated_at`

func scanClient(row engine.Row) (*OAuthClient, error) {
	var c OAuthClient
	var redirects, logouts, grants, scopes string
	var created, updated int64
	if err := row.Scan(&c.ID, &c.Name, &c.Type, &c.AuthMethod, &c.secretHash, &redirects, &logouts, &grants, &scopes,
		&c.SkipConsent, &c.LogoURI, &c.ClientURI, &c.RegistrationType, &created, &updated); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		raw string
		dst *[]string
	}{{redirects, &c.RedirectURIs}, {logouts, &c.PostLogoutRedirectURIs}, {grants, &c.GrantTypes}, {scopes, &c.Scopes}} {
		if err := json.Unmarshal([]byte(f.raw), f.dst); err != nil {
			return nil, err
		}
	}
	c.CreatedAt, c.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	return &c, nil
}

func clientByID(q engine.Querier, id string) (*OAuthClient, error) {
	c, err := scanClient(q.QueryRow(`SELECT `+clientColumns+` FROM oauth_clients WHERE id = ?`, id))
	if errors.Is(err, engine.ErrNoRows) {
		return nil, errClientNotFound()
	}
	return c, err
}

// validClientID: client ids are UUIDs; anything else is not looked up.
func validClientID(id string) bool { return len(id) == 36 && ValidUUID(id) }

// ValidUUID reports whether s is a UUID in its canonical lower-case form.
func ValidUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// OAuthClient returns the tenant's client id.
func (s *Service) OAuthClient(ctx context.Context, t Tenant, id string) (*OAuthClient, error) {
	if !validClientID(id) {
		return nil, errClientNotFound()
	}
	var c *OAuthClient
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		c, err = clientByID(q, id)
		return err
	})
	return c, err
}

// OAuthClients lists the tenant's clients, oldest first.
func (s *Service) OAuthClients(ctx context.Context, t Tenant) ([]*OAuthClient, error) {
	var out []*OAuthClient
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT ` + clientColumns + ` FROM oauth_clients ORDER BY created_at, id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			c, err := scanClient(rows)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	return out, err
}

// CreateOAuthClient registers a client; a confidential client's secret is
// returned once and only its hash kept. dynamic marks an RFC 7591
// registration.
func (s *Service) CreateOAuthClient(ctx context.Context, t Tenant, cl Client, req OAuthClientRequest, dynamic bool) (*OAuthClient, string, error) {
	c := &OAuthClient{ID: newUUID(), Type: ClientConfidential, RegistrationType: "manual"}
	if dynamic {
		c.RegistrationType = "dynamic"
	}
	if err := req.apply(c); err != nil {
		return nil, "", err
	}
	secret := ""
	if c.Type == ClientConfidential {
		secret = newClientSecret()
		c.secretHash = hashToken(secret)
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	c.CreatedAt, c.UpdatedAt = now, now
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		ts := now.UnixMicro()
		if _, err := tx.Exec(`INSERT INTO oauth_clients (id, name, client_type, token_endpoint_auth_method, secret_hash, redirect_uris,
			post_logout_redirect_uris, grant_types, scopes, skip_consent, logo_uri, client_uri, registration_type, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.Name, c.Type, c.AuthMethod, c.secretHash, mustJSON(c.RedirectURIs), mustJSON(c.PostLogoutRedirectURIs),
			mustJSON(c.GrantTypes), mustJSON(c.Scopes), c.SkipConsent, nullString(c.LogoURI), nullString(c.ClientURI),
			c.RegistrationType, ts, ts); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.OAuthClientCreated, Actor: cl.AdminActor(),
			IP: cl.IP, Data: map[string]any{"client_id": c.ID, "client_name": c.Name, "registration_type": c.RegistrationType}, At: now})
	})
	if err != nil {
		return nil, "", writeError(err, engine.KindUnavailable)
	}
	return c, secret, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// UpdateOAuthClient changes a client. Its type cannot change.
func (s *Service) UpdateOAuthClient(ctx context.Context, t Tenant, cl Client, id string, req OAuthClientRequest) (*OAuthClient, error) {
	if !validClientID(id) {
		return nil, errClientNotFound()
	}
	var c *OAuthClient
	now := s.now().UTC().Truncate(time.Microsecond)
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var err error
		if c, err = clientByID(tx, id); err != nil {
			return err
		}
		if req.Type != nil && *req.Type != c.Type {
			return validationf("client_type cannot change; register a new client")
		}
		if err := req.apply(c); err != nil {
			return err
		}
		c.UpdatedAt = now
		ts := now.UnixMicro()
		if _, err := tx.Exec(`UPDATE oauth_clients SET name = ?, token_endpoint_auth_method = ?, redirect_uris = ?,
			post_logout_redirect_uris = ?, grant_types = ?, scopes = ?, skip_consent = ?, logo_uri = ?, client_uri = ?, updated_at = ?
			WHERE id = ?`, c.Name, c.AuthMethod, mustJSON(c.RedirectURIs), mustJSON(c.PostLogoutRedirectURIs), mustJSON(c.GrantTypes),
			mustJSON(c.Scopes), c.SkipConsent, nullString(c.LogoURI), nullString(c.ClientURI), ts, id); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.OAuthClientUpdated, Actor: cl.AdminActor(),
			IP: cl.IP, Data: map[string]any{"client_id": c.ID}, At: now})
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	return c, nil
}

// RotateOAuthClientSecret replaces a confidential client's secret; the old
// one stops working at once. The new one is returned once.
func (s *Service) RotateOAuthClientSecret(ctx context.Context, t Tenant, cl Client, id string) (*OAuthClient, string, error) {
	if !validClientID(id) {
		return nil, "", errClientNotFound()
	}
	secret := newClientSecret()
	var c *OAuthClient
	now := s.now().UTC().Truncate(time.Microsecond)
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var err error
		if c, err = clientByID(tx, id); err != nil {
			return err
		}
		if c.Type != ClientConfidential {
			return validationf("a public client has no secret")
		}
		c.secretHash, c.UpdatedAt = hashToken(secret), now
		if _, err := tx.Exec(`UPDATE oauth_clients SET secret_hash = ?, updated_at = ? WHERE id = ?`, c.secretHash, now.UnixMicro(), id); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.OAuthClientSecretRotated, Actor: cl.AdminActor(),
			IP: cl.IP, Data: map[string]any{"client_id": c.ID}, At: now})
	})
	if err != nil {
		return nil, "", writeError(err, engine.KindUnavailable)
	}
	return c, secret, nil
}

// DeleteOAuthClient removes a client with everything it holds: its grants
// (sessions and refresh tokens), consents, pending codes and device codes.
func (s *Service) DeleteOAuthClient(ctx context.Context, t Tenant, cl Client, id string) error {
	if !validClientID(id) {
		return errClientNotFound()
	}
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		n, err := tx.Exec(`DELETE FROM oauth_clients WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return errClientNotFound()
		}
		if err := endClientSessions(tx, `client_id = ?`, id); err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM oauth_consents WHERE client_id = ?`, `DELETE FROM oauth_auth_requests WHERE client_id = ?`,
			`DELETE FROM oauth_device_codes WHERE client_id = ?`} {
			if _, err := tx.Exec(q, id); err != nil {
				return err
			}
		}
		return s.record(tx, t, &event.Event{Type: event.OAuthClientDeleted, Actor: cl.AdminActor(),
			IP: cl.IP, Data: map[string]any{"client_id": id}, At: now})
	})
	return writeError(err, engine.KindUnavailable)
}

// endClientSessions ends the grant sessions whose oauth_grants row matches
// where. The ids are read first: endSessions deletes the grant rows the
// condition would read.
func endClientSessions(tx engine.Querier, where string, args ...any) error {
	rows, err := tx.Query(`SELECT session_id FROM oauth_grants WHERE `+where, args...)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := endSessions(tx, `id = ?`, id); err != nil {
			return err
		}
	}
	return nil
}

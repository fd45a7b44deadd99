package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// Upstream identity providers: a tenant's users may log in through its
// own OpenID Connect or OAuth 2.0 provider (a company Keycloak, Okta,
// Entra) or a preset (Google, GitHub, Microsoft, GitLab, Apple). This file
// keeps them and the logins in flight; the client side of the protocols
// (discovery, code exchange, ID token verification) is package upstream,
// beside the flows.

// Provider kinds: a generic OpenID Connect or OAuth 2.0 provider, or a
// preset whose endpoints are known.
const (
	KindOIDC   = "oidc"
	KindOAuth2 = "oauth2"
)

// Preset is a provider whose endpoints Keyshard knows.
type Preset struct {
	Kind string // KindOIDC or KindOAuth2
	// Issuer for an OIDC preset ({tenant} is replaced by the provider's
	// tenant for azure; empty: "common").
	Issuer string
	// AuthorizationURL, TokenURL, UserinfoURL for an OAuth 2.0 preset.
	AuthorizationURL, TokenURL, UserinfoURL string
	Scopes                                  []string
	Mapping                                 map[string]string
}

// Presets are the providers a tenant turns on by name.
var Presets = map[string]Preset{
	"google": {Kind: KindOIDC, Issuer: "https://accounts.google.com", Scopes: []string{"openid", "email", "profile"}},
	"apple":  {Kind: KindOIDC, Issuer: "https://appleid.apple.com", Scopes: []string{"openid", "email", "name"}},
	"azure":  {Kind: KindOIDC, Issuer: "https://login.microsoftonline.com/common/v2.0", Scopes: []string{"openid", "email", "profile"}},
	"gitlab": {Kind: KindOIDC, Issuer: "https://gitlab.com", Scopes: []string{"openid", "email", "profile"}},
	"github": {Kind: KindOAuth2, AuthorizationURL: "https://github.com/login/oauth/authorize",
		TokenURL: "https://github.com/login/oauth/access_token", UserinfoURL: "https://api.github.com/user",
		Scopes:  []string{"read:user", "user:email"},
		Mapping: map[string]string{"sub": "id", "email": "email", "name": "name", "picture": "avatar_url", "preferred_username": "login"}},
}

// IdentityProvider is one of a tenant's upstream providers.
type IdentityProvider struct {
	ID               string
	Kind             string // oidc, oauth2, or a preset's name
	Issuer           string
	ClientID         string
	ClientSecret     string // decrypted; only GetProvider fills it
	HasSecret        bool
	Scopes           []string
	AuthorizationURL string
	TokenURL         string
	UserinfoURL      string
	// Mapping names, for our fields (sub, email, email_verified, name,
	// picture, preferred_username), the provider's claim that holds it.
	Mapping   map[string]string
	Enabled   bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Protocol is KindOIDC or KindOAuth2: the provider's or its preset's.
func (p *IdentityProvider) Protocol() string {
	if pr, ok := Presets[p.Kind]; ok {
		return pr.Kind
	}
	return p.Kind
}

// Claim returns the provider's claim name for our field.
func (p *IdentityProvider) Claim(field string) string {
	if c := p.Mapping[field]; c != "" {
		return c
	}
	if pr, ok := Presets[p.Kind]; ok && pr.Mapping[field] != "" {
		return pr.Mapping[field]
	}
	return field
}

// ProviderRequest creates or changes a provider; nil fields are left as
// they are (a change) or take the preset's (a creation).
type ProviderRequest struct {
	ID               *string            `json:"id"`
	Kind             *string            `json:"type"`
	Issuer           *string            `json:"issuer"`
	ClientID         *string            `json:"client_id"`
	ClientSecret     *string            `json:"client_secret"`
	Scopes           *[]string          `json:"scopes"`
	AuthorizationURL *string            `json:"authorization_url"`
	TokenURL         *string            `json:"token_url"`
	UserinfoURL      *string            `json:"userinfo_url"`
	Mapping          *map[string]string `json:"mapping"`
	Enabled          *bool              `json:"enabled"`
}

var providerIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)

// mappable are the fields a mapping may name.
var mappable = []string{"sub", "email", "email_verified", "name", "picture", "preferred_username"}

// apply sets req's fields on p and checks the result.
func (req ProviderRequest) apply(p *IdentityProvider) error {
	set := func(dst *string, src *string) {
		if src != nil {
			*dst = strings.TrimSpace(*src)
		}
	}
	set(&p.Kind, req.Kind)
	set(&p.Issuer, req.Issuer)
	set(&p.ClientID, req.ClientID)
	set(&p.AuthorizationURL, req.AuthorizationURL)
	set(&p.TokenURL, req.TokenURL)
	set(&p.UserinfoURL, req.UserinfoURL)
	if req.ClientSecret != nil {
		p.ClientSecret, p.HasSecret = *req.ClientSecret, *req.ClientSecret != ""
	}
	if req.Scopes != nil {
		p.Scopes = slices.Clone(*req.Scopes)
	}
	if req.Mapping != nil {
		p.Mapping = map[string]string{}
		for k, v := range *req.Mapping {
			if !slices.Contains(mappable, k) {
				return validationf("mapping: unknown field %q (one of %s)", k, strings.Join(mappable, ", "))
			}
			p.Mapping[k] = v
		}
	}
	if req.Enabled != nil {
		p.Enabled = *req.Enabled
	}
	if p.Kind == "" {
		p.Kind = KindOIDC
	}
	pr, preset := Presets[p.Kind]
	if p.Kind != KindOIDC && p.Kind != KindOAuth2 && !preset {
		return validationf("type must be oidc, oauth2 or a preset (google, github, azure, gitlab, apple)")
	}
	if preset {
		if p.Issuer == "" {
			p.Issuer = pr.Issuer
		}
		if p.AuthorizationURL == "" {
			p.AuthorizationURL, p.TokenURL, p.UserinfoURL = pr.AuthorizationURL, pr.TokenURL, pr.UserinfoURL
		}
		if p.Scopes == nil {
			p.Scopes = slices.Clone(pr.Scopes)
		}
	}
	if p.ClientID == "" || len(p.ClientID) > 512 {
		return validationf("client_id is required")
	}
	for _, s := range p.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"") || len(s) > 200 {
			return validationf("scopes: %q is not a scope", s)
		}
	}
	urls := map[string]string{}
	if p.Protocol() == KindOIDC {
		urls["issuer"] = p.Issuer
		if p.Scopes == nil {
			p.Scopes = []string{"openid", "email", "profile"}
		}
		if !slices.Contains(p.Scopes, "openid") {
			p.Scopes = append([]string{"openid"}, p.Scopes...)
		}
	} else {
		urls["authorization_url"], urls["token_url"], urls["userinfo_url"] = p.AuthorizationURL, p.TokenURL, p.UserinfoURL
	}
	for name, u := range urls {
		if err := checkProviderURL(u); err != nil {
			return validationf("%s %v", name, err)
		}
	}
	return nil
}

// checkProviderURL accepts an absolute http(s) URL without credentials or
// fragment. Where it may connect is checked when it does (upstream).
func checkProviderURL(raw string) error {
	u, err := url.Parse(raw)
	if raw == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" || len(raw) > 2048 {
		return fmt.Errorf("must be an absolute http or https URL")
	}
	return nil
}

const providerColumns = `id, kind, issuer, client_id, client_secret, scopes, authorization_url, token_url, userinfo_url, mapping, enabled, created_at, updated_at`

func scanProvider(row engine.Row) (*IdentityProvider, []byte, error) {
	var p IdentityProvider
	var secret []byte
	var scopes, mapping string
	var created, updated int64
	if err := row.Scan(&p.ID, &p.Kind, &p.Issuer, &p.ClientID, &secret, &scopes, &p.AuthorizationURL, &p.TokenURL, &p.UserinfoURL,
		&mapping, &p.Enabled, &created, &updated); err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal([]byte(scopes), &p.Scopes); err != nil {
		return nil, nil, fmt.Errorf("provider %s scopes: %w", p.ID, err)
	}
	if err := json.Unmarshal([]byte(mapping), &p.Mapping); err != nil {
		return nil, nil, fmt.Errorf("provider %s mapping: %w", p.ID, err)
	}
	p.HasSecret = len(secret) > 0
	p.CreatedAt, p.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	return &p, secret, nil
}

func errProviderNotFound() *engine.Error {
	return newError(engine.KindNotFound, CodeProviderNotFound, "Provider not found")
}

// ListProviders returns the tenant's upstream providers (without secrets).
func (s *Service) ListProviders(ctx context.Context, t Tenant) ([]*IdentityProvider, error) {
	var out []*IdentityProvider
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT ` + providerColumns + ` FROM identity_providers ORDER BY id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			p, _, err := scanProvider(rows)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	return out, err
}

// GetProvider returns one provider with its client secret decrypted.
func (s *Service) GetProvider(ctx context.Context, t Tenant, id string) (*IdentityProvider, error) {
	var p *IdentityProvider
	var sealed []byte
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		p, sealed, err = scanProvider(q.QueryRow(`SELECT `+providerColumns+` FROM identity_providers WHERE id = ?`, id))
		return err
	})
	if errors.Is(err, engine.ErrNoRows) {
		return nil, errProviderNotFound()
	}
	if err != nil {
		return nil, err
	}
	if len(sealed) > 0 {
		plain, err := s.keys.OpenSecret(t.ID, "idp:"+p.ID, sealed)
		if err != nil {
			return nil, err
		}
		p.ClientSecret = string(plain)
	}
	return p, nil
}

// SaveProvider creates (id not taken) or changes (update) a provider.
func (s *Service) SaveProvider(ctx context.Context, t Tenant, c Client, id string, req ProviderRequest, update bool) (*IdentityProvider, error) {
	var cur *IdentityProvider
	if update {
		var err error
		if cur, err = s.GetProvider(ctx, t, id); err != nil {
			return nil, err
		}
	}
	p, sealed, err := s.prepareProvider(t, cur, id, req)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		return s.writeProvider(tx, t, c, p, sealed, update, now)
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	p.ClientSecret = ""
	return p, nil
}

// prepareProvider applies req to cur (nil: a new provider id) and seals
// its secret.
func (s *Service) prepareProvider(t Tenant, cur *IdentityProvider, id string, req ProviderRequest) (*IdentityProvider, []byte, error) {
	var p *IdentityProvider
	if cur != nil {
		if req.ID != nil && *req.ID != cur.ID {
			return nil, nil, validationf("id cannot change")
		}
		if req.Kind != nil && *req.Kind != cur.Kind {
			return nil, nil, validationf("type cannot change")
		}
		p = cur
	} else {
		if req.ID != nil {
			id = *req.ID
		}
		if !providerIDRe.MatchString(id) {
			return nil, nil, validationf("id must be 1 to 40 of [a-z0-9_-], starting with a letter or digit")
		}
		if id == "email" || id == "phone" || id == "anonymous" {
			return nil, nil, validationf("id %q is reserved", id)
		}
		p = &IdentityProvider{ID: id, Enabled: true}
		if req.Kind == nil {
			if _, ok := Presets[id]; ok {
				k := id
				req.Kind = &k
			}
		}
	}
	if err := req.apply(p); err != nil {
		return nil, nil, err
	}
	var sealed []byte
	if p.ClientSecret != "" {
		sealed = s.keys.SealSecret(t.ID, "idp:"+p.ID, []byte(p.ClientSecret))
	}
	if p.Mapping == nil {
		p.Mapping = map[string]string{}
	}
	return p, sealed, nil
}

// writeProvider stores p in tx with its event.
func (s *Service) writeProvider(tx engine.Querier, t Tenant, c Client, p *IdentityProvider, sealed []byte, update bool, now time.Time) error {
	ts := now.UnixMicro()
	typ := event.ProviderCreated
	if update {
		typ = event.ProviderUpdated
		if _, err := tx.Exec(`UPDATE identity_providers SET issuer = ?, client_id = ?, client_secret = ?, scopes = ?, authorization_url = ?,
			token_url = ?, userinfo_url = ?, mapping = ?, enabled = ?, updated_at = ? WHERE id = ?`,
			p.Issuer, p.ClientID, sealed, mustJSON(p.Scopes), p.AuthorizationURL, p.TokenURL, p.UserinfoURL, mustJSON(p.Mapping),
			p.Enabled, ts, p.ID); err != nil {
			return err
		}
	} else {
		p.CreatedAt = now
		if _, err := tx.Exec(`INSERT INTO identity_providers (`+providerColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			p.ID, p.Kind, p.Issuer, p.ClientID, sealed, mustJSON(p.Scopes), p.AuthorizationURL, p.TokenURL, p.UserinfoURL,
			mustJSON(p.Mapping), p.Enabled, ts, ts); err != nil {
			if errors.Is(err, engine.ErrConflict) {
				return newError(engine.KindConflict, "provider_exists", "A provider with this id exists")
			}
			return err
		}
	}
	p.UpdatedAt = now
	return s.record(tx, t, &event.Event{Type: typ, Actor: c.AdminActor(), IP: c.IP,
		Data: map[string]any{"provider": p.ID, "type": p.Kind}, At: now})
}

// Presets in the auth config, by Supabase's names:
// external_<preset>_enabled, _client_id, _secret, and _url (the tenant
// URL of azure and gitlab). They are the provider rows of the presets'
// ids; the secret reads back masked.

// presetField splits an external_<preset>_<field> name.
func presetField(name string) (preset, field string, ok bool) {
	rest, found := strings.CutPrefix(name, "external_")
	if !found {
		return "", "", false
	}
	for p := range Presets {
		if f, ok := strings.CutPrefix(rest, p+"_"); ok && (f == "enabled" || f == "client_id" || f == "secret" || f == "url") {
			return p, f, true
		}
	}
	return "", "", false
}

// presetRequests turns the preset fields of a config patch into provider
// requests, and removes them from the patch.
func presetRequests(patch map[string]json.RawMessage) (map[string]*ProviderRequest, error) {
	out := map[string]*ProviderRequest{}
	for name, raw := range patch {
		preset, field, ok := presetField(name)
		if !ok {
			continue
		}
		delete(patch, name)
		req := out[preset]
		if req == nil {
			req = &ProviderRequest{}
			out[preset] = req
		}
		var err error
		switch field {
		case "enabled":
			var b bool
			err = decodeSetting(raw, &b)
			req.Enabled = &b
		case "client_id":
			var v string
			err = decodeSetting(raw, &v)
			req.ClientID = &v
		case "secret":
			var v string
			if err = decodeSetting(raw, &v); err == nil && v != secretMask {
				req.ClientSecret = &v
			}
		case "url":
			var v string
			if err = decodeSetting(raw, &v); err == nil && v != "" {
				issuer := strings.TrimRight(v, "/")
				if preset == "azure" {
					issuer += "/v2.0"
				}
				req.Issuer = &issuer
			}
		}
		if err != nil {
			return nil, validationf("Auth config field %q %v", name, err)
		}
	}
	return out, nil
}

// PresetSettings are the presets' fields of the auth config.
func (s *Service) PresetSettings(ctx context.Context, t Tenant) (map[string]any, error) {
	ps, err := s.ListProviders(ctx, t)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	for name := range Presets {
		out["external_"+name+"_enabled"], out["external_"+name+"_client_id"], out["external_"+name+"_secret"] = false, "", ""
		if name == "azure" || name == "gitlab" {
			out["external_"+name+"_url"] = ""
		}
	}
	for _, p := range ps {
		if _, ok := Presets[p.ID]; !ok || p.Kind != p.ID {
			continue
		}
		out["external_"+p.ID+"_enabled"], out["external_"+p.ID+"_client_id"] = p.Enabled, p.ClientID
		if p.HasSecret {
			out["external_"+p.ID+"_secret"] = secretMask
		}
		if p.ID == "azure" || p.ID == "gitlab" {
			u := strings.TrimSuffix(p.Issuer, "/v2.0")
			if u == strings.TrimSuffix(Presets[p.ID].Issuer, "/v2.0") {
				u = ""
			}
			out["external_"+p.ID+"_url"] = u
		}
	}
	return out, nil
}

// DeleteProvider removes a provider; its users keep their identities
// (they can no longer log in through it).
func (s *Service) DeleteProvider(ctx context.Context, t Tenant, c Client, id string) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		n, err := tx.Exec(`DELETE FROM identity_providers WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return errProviderNotFound()
		}
		if _, err := tx.Exec(`DELETE FROM upstream_states WHERE provider_id = ?`, id); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.ProviderDeleted, Actor: c.AdminActor(), IP: c.IP,
			Data: map[string]any{"provider": id}, At: now})
	})
	return writeError(err, engine.KindUnavailable)
}

// Login states: the state parameter of a login through a provider is
// <random>.<HMAC(tenant, random)>: checked before any read, bound to the
// tenant; its row (by SHA-256 of the random part) makes it single use and
// holds what the callback needs; it expires after stateTTL.

const stateTTL = 10 * time.Minute

// UpstreamStart is a login through a provider about to begin.
type UpstreamStart struct {
	State, CodeVerifier, Nonce string
	RedirectTo                 string // allowed, else the site URL
}

// StartUpstream records a login through provider p: where to go after,
// the client's PKCE challenge (auth-js flowType pkce), the user to link
// to (linkUserID, a signed-in user's linkIdentity). It returns the state,
// PKCE verifier and nonce to send to the provider.
func (s *Service) StartUpstream(ctx context.Context, t Tenant, p *IdentityProvider, redirectTo, challenge, method, linkUserID string) (*UpstreamStart, error) {
	if !p.Enabled {
		return nil, newError(engine.KindInvalid, CodeProviderDisabled, "Unsupported provider: provider is not enabled")
	}
	pc, err := parseChallenge(challenge, method)
	if err != nil {
		return nil, err
	}
	st, err := s.CachedSettings(ctx, t)
	if err != nil {
		return nil, err
	}
	random := randomToken(32)
	out := &UpstreamStart{State: random + "." + s.stateMAC(t.ID, random), CodeVerifier: randomToken(48), Nonce: randomToken(24),
		RedirectTo: st.redirectFor(redirectTo)}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		flowID, err := newFlowState(tx, st, pc, "oauth", now)
		if err != nil {
			return err
		}
		var flow, link any
		if flowID != "" {
			flow = flowID
		}
		if linkUserID != "" {
			link = linkUserID
		}
		// Expired states of the tenant go with each new one.
		if _, err := tx.Exec(`DELETE FROM upstream_states WHERE expires_at <= ?`, now.UnixMicro()); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO upstream_states (id_hash, provider_id, redirect_to, code_verifier, nonce, flow_state_id, link_user_id, expires_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, hashToken(random), p.ID, out.RedirectTo, out.CodeVerifier, out.Nonce, flow, link,
			now.Add(stateTTL).UnixMicro(), now.UnixMicro())
		return err
	})
	if err != nil {
		return nil, writeError(err, engine.KindRateLimited)
	}
	return out, nil
}

func (s *Service) stateMAC(tenantID, random string) string {
	m := hmac.New(sha256.New, s.stateKey)
	m.Write([]byte(tenantID))
	m.Write([]byte{0})
	m.Write([]byte(random))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// UpstreamState is a login state taken by its callback.
type UpstreamState struct {
	ProviderID, RedirectTo, CodeVerifier, Nonce string
	FlowStateID, LinkUserID                     string
}

func errBadState() *engine.Error {
	return newError(engine.KindInvalid, CodeBadOAuthState, "OAuth state is invalid, used or expired")
}

// TakeState checks a callback's state and spends it: a forged state, one
// of another tenant, a used or an expired one is 400 bad_oauth_state.
func (s *Service) TakeState(ctx context.Context, t Tenant, state string) (*UpstreamState, error) {
	random, mac, ok := strings.Cut(state, ".")
	if !ok || random == "" || !hmac.Equal([]byte(mac), []byte(s.stateMAC(t.ID, random))) {
		return nil, errBadState()
	}
	now := s.now().UTC()
	var out *UpstreamState
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		out = nil
		var st UpstreamState
		var flow, link *string
		var exp int64
		err := tx.QueryRow(`SELECT provider_id, redirect_to, code_verifier, nonce, flow_state_id, link_user_id, expires_at FROM upstream_states WHERE id_hash = ?`,
			hashToken(random)).Scan(&st.ProviderID, &st.RedirectTo, &st.CodeVerifier, &st.Nonce, &flow, &link, &exp)
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM upstream_states WHERE id_hash = ?`, hashToken(random)); err != nil {
			return err
		}
		if exp <= now.UnixMicro() {
			return nil
		}
		if flow != nil {
			st.FlowStateID = *flow
		}
		if link != nil {
			st.LinkUserID = *link
		}
		out = &st
		return nil
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	if out == nil {
		return nil, errBadState()
	}
	return out, nil
}

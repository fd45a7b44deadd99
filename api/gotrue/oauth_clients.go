package gotrue

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// registerOAuthClientRoutes: a tenant's OAuth clients, managed with its
// service key or the platform admin token, at GoTrue's OAuth server paths.
func (a *API) registerOAuthClientRoutes() {
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/oauth/clients", a.withTenant(a.configAdmin(a.handleListOAuthClients)))
	a.srv.Handle(http.MethodPost, "/t/:tenant/admin/oauth/clients", a.withTenant(a.configAdmin(a.handleCreateOAuthClient)))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/oauth/clients/:id", a.withTenant(a.configAdmin(a.handleGetOAuthClient)))
	a.srv.Handle(http.MethodPut, "/t/:tenant/admin/oauth/clients/:id", a.withTenant(a.configAdmin(a.handleUpdateOAuthClient)))
	a.srv.Handle(http.MethodDelete, "/t/:tenant/admin/oauth/clients/:id", a.withTenant(a.configAdmin(a.handleDeleteOAuthClient)))
	a.srv.Handle(http.MethodPost, "/t/:tenant/admin/oauth/clients/:id/regenerate_secret", a.withTenant(a.configAdmin(a.handleRotateOAuthClient)))
}

// OAuthClientBody is a client as the admin API and RFC 7591 registration
// take it: RFC 7591's metadata names, scope as one space-separated string.
type OAuthClientBody struct {
	ClientName              *string   `json:"client_name"`
	ClientType              *string   `json:"client_type"`
	TokenEndpointAuthMethod *string   `json:"token_endpoint_auth_method"`
	RedirectURIs            *[]string `json:"redirect_uris"`
	PostLogoutRedirectURIs  *[]string `json:"post_logout_redirect_uris"`
	GrantTypes              *[]string `json:"grant_types"`
	ResponseTypes           *[]string `json:"response_types"`
	Scope                   *string   `json:"scope"`
	SkipConsent             *bool     `json:"skip_consent"`
	LogoURI                 *string   `json:"logo_uri"`
	ClientURI               *string   `json:"client_uri"`
}

// Request converts the body for the flows.
func (b OAuthClientBody) Request() (auth.OAuthClientRequest, error) {
	req := auth.OAuthClientRequest{Name: b.ClientName, Type: b.ClientType, AuthMethod: b.TokenEndpointAuthMethod,
		RedirectURIs: b.RedirectURIs, PostLogoutRedirectURIs: b.PostLogoutRedirectURIs, GrantTypes: b.GrantTypes,
		SkipConsent: b.SkipConsent, LogoURI: b.LogoURI, ClientURI: b.ClientURI}
	if b.ResponseTypes != nil {
		for _, rt := range *b.ResponseTypes {
			if rt != "code" {
				return req, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "response_types: only code is supported")
			}
		}
	}
	if b.Scope != nil {
		scopes := strings.Fields(*b.Scope)
		req.Scopes = &scopes
	}
	// A client that says it authenticates with none is public.
	if req.Type == nil && req.AuthMethod != nil && *req.AuthMethod == auth.AuthNone {
		public := auth.ClientPublic
		req.Type = &public
	}
	return req, nil
}

// OAuthClientJSON is a client in the admin API's shape; the secret only
// when it was just made.
func OAuthClientJSON(c *auth.OAuthClient, secret string) map[string]any {
	out := map[string]any{
		"client_id": c.ID, "client_name": c.Name, "client_type": c.Type, "token_endpoint_auth_method": c.AuthMethod,
		"registration_type": c.RegistrationType, "redirect_uris": nonNil(c.RedirectURIs),
		"post_logout_redirect_uris": nonNil(c.PostLogoutRedirectURIs), "grant_types": nonNil(c.GrantTypes),
		"response_types": []string{"code"}, "scope": strings.Join(c.Scopes, " "), "skip_consent": c.SkipConsent,
		"logo_uri": c.LogoURI, "client_uri": c.ClientURI,
		"created_at": c.CreatedAt.Format(time.RFC3339Nano), "updated_at": c.UpdatedAt.Format(time.RFC3339Nano),
	}
	if secret != "" {
		out["client_secret"] = secret
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func decodeClientBody(r *http.Request) (auth.OAuthClientRequest, error) {
	var b OAuthClientBody
	if err := api.DecodeJSON(r, &b); err != nil {
		return auth.OAuthClientRequest{}, err
	}
	return b.Request()
}

// handleListOAuthClients answers a page of the clients, oldest first,
// paginated as GoTrue's user list (X-Total-Count, Link), which auth-js's
// admin.oauth.listClients reads.
func (a *API) handleListOAuthClients(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	p, err := page(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	cs, err := a.auth.OAuthClients(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	limit, offset := p.Bounds()
	out := make([]map[string]any, 0, limit)
	for i := offset; i < len(cs) && i < offset+limit; i++ {
		out = append(out, OAuthClientJSON(cs[i], ""))
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(cs)))
	w.Header().Set("Link", linkHeader(r.URL.Path, p, len(cs)))
	api.WriteJSON(w, http.StatusOK, map[string]any{"clients": out, "aud": "authenticated"})
}

func (a *API) handleCreateOAuthClient(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	req, err := decodeClientBody(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	c, secret, err := a.auth.CreateOAuthClient(r.Context(), t, clientOf(r), req, false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	noStore(w)
	api.WriteJSON(w, http.StatusCreated, OAuthClientJSON(c, secret))
}

func clientID(r *http.Request) string {
	ps, _ := r.Context().Value(httprouter.ParamsKey).(httprouter.Params)
	return ps.ByName("id")
}

func (a *API) handleGetOAuthClient(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	c, err := a.auth.OAuthClient(r.Context(), t, clientID(r))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, OAuthClientJSON(c, ""))
}

func (a *API) handleUpdateOAuthClient(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	req, err := decodeClientBody(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	c, err := a.auth.UpdateOAuthClient(r.Context(), t, clientOf(r), clientID(r), req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, OAuthClientJSON(c, ""))
}

func (a *API) handleDeleteOAuthClient(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	if err := a.auth.DeleteOAuthClient(r.Context(), t, clientOf(r), clientID(r)); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) handleRotateOAuthClient(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) {
	c, secret, err := a.auth.RotateOAuthClientSecret(r.Context(), t, clientOf(r), clientID(r))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	noStore(w)
	api.WriteJSON(w, http.StatusOK, OAuthClientJSON(c, secret))
}

// AuthTenant describes the pinned tenant to the auth flows, as the GoTrue
// routes do (its issuer is the tenant's base URL).
func (a *API) AuthTenant(r *http.Request, ts *engine.TenantShard) auth.Tenant {
	return a.authTenant(r, ts)
}

// AdminActor checks who may use the tenant's admin API: the platform
// admin token, the tenant's service key, or the access token of a user who
// is an owner or an admin of the tenant (checked against the user's row
// now, so a role taken away counts at once); a member's token is 403
// not_admin. It says who acts, and the acting user's role.
func (a *API) AdminActor(r *http.Request, t auth.Tenant) (event.Actor, string, error) {
	return a.adminActor(r, t, true)
}

// adminActor is AdminActor; platform says whether the platform admin
// token is accepted (not on the routes of a tenant's users: the platform
// operator does not read a tenant's users).
func (a *API) adminActor(r *http.Request, t auth.Tenant, platform bool) (event.Actor, string, error) {
	tok := api.Bearer(r)
	got := sha256.Sum256([]byte(tok))
	if platform && a.adminToken != "" && tok != "" && subtle.ConstantTimeCompare(got[:], a.adminTokenSum[:]) == 1 {
		return event.Actor{Kind: event.ActorPlatform}, "", nil
	}
	if strings.Count(tok, ".") == 2 { // a JWT: a user's access token
		p, err := a.auth.Authenticate(r.Context(), t, tok, true)
		if err != nil {
			return event.Actor{}, "", err
		}
		role := auth.OrgRole(p.User)
		if !auth.IsOrgAdmin(role) {
			return event.Actor{}, "", engine.NewError(engine.KindForbidden, auth.CodeNotAdmin, "User not allowed")
		}
		return event.User(p.User.ID, p.User.Email), role, nil
	}
	if err := a.auth.CheckServiceKey(r.Context(), t, tok); err != nil {
		return event.Actor{}, "", err
	}
	return event.Actor{Kind: event.ActorServiceKey}, "", nil
}

// adminKey carries the admin API's caller in a request's context.
type adminKey struct{}

type adminCaller struct {
	actor event.Actor
	role  string
}

// clientOf describes a request of the admin API to the flows: where it
// came from and who acts.
func clientOf(r *http.Request) auth.Client {
	c := api.ClientOf(r)
	if ac, ok := r.Context().Value(adminKey{}).(adminCaller); ok && ac.actor.Kind == event.ActorUser {
		c.Actor, c.ActorRole = ac.actor, ac.role
	}
	return c
}

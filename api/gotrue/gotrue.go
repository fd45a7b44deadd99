// Package gotrue serves each tenant's Supabase Auth (GoTrue) compatible API
// under /t/{tenant}: its routes, its JSON shapes (user, session, audit) and
// its two error shapes, built from the domain values and coded errors the
// auth flows return. @supabase/auth-js works against it unchanged.
package gotrue

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/url"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/upstream"
	"github.com/keyshard/keyshard/webhook"
)

// APIVersionHeader is sent by auth-js; when a request carries it, errors
// use GoTrue's newer shape {"code":"<error_code>","message":…}.
const APIVersionHeader = "X-Supabase-Api-Version"

// API is the GoTrue-compatible tenant API.
type API struct {
	srv        *api.Server
	auth       *auth.Service
	publicURL  string
	listenURL  string
	adminToken string
	// adminTokenSum is the platform admin token's SHA-256, compared in
	// constant time.
	adminTokenSum [32]byte
	webhooks      *webhook.Service
	upstream      *upstream.Client
	allowPrivate  bool
}

// Options configure the API.
type Options struct {
	// PublicURL is the server's external base URL; a tenant's token issuer
	// is PublicURL/t/{slug}. Empty: taken from the request.
	PublicURL string
	// ListenURL is the server's own URL when PublicURL is empty: the base
	// of mailed links and upstream callbacks (not the request's Host,
	// which a client chooses). Empty too: the request's host (tests).
	ListenURL string
	// AdminToken, the platform admin token, may also change a tenant's
	// auth config.
	AdminToken string
	// Webhooks serves the tenants' webhook endpoints (nil: no routes).
	Webhooks *webhook.Service
	// Upstream logs users in through tenants' identity providers (nil: no
	// routes); AllowPrivate lets providers be on private addresses.
	Upstream     *upstream.Client
	AllowPrivate bool
}

// Register adds the GoTrue routes of every tenant to srv.
func Register(srv *api.Server, svc *auth.Service, o Options) *API {
	a := &API{srv: srv, auth: svc, publicURL: o.PublicURL, listenURL: strings.TrimRight(o.ListenURL, "/"), adminToken: o.AdminToken, adminTokenSum: sha256.Sum256([]byte(o.AdminToken)), webhooks: o.Webhooks,
		upstream: o.Upstream, allowPrivate: o.AllowPrivate}
	srv.Handle(http.MethodPost, "/t/:tenant/signup", a.withTenant(a.handleSignup))
	srv.Handle(http.MethodPost, "/t/:tenant/token", a.withTenant(a.handleToken))
	srv.Handle(http.MethodGet, "/t/:tenant/user", a.withTenant(a.handleGetUser))
	srv.Handle(http.MethodPut, "/t/:tenant/user", a.withTenant(a.handleUpdateUser))
	srv.Handle(http.MethodPost, "/t/:tenant/logout", a.withTenant(a.handleLogout))
	srv.Handle(http.MethodGet, "/t/:tenant/settings", a.withTenant(a.handleGetSettings))
	srv.Handle(http.MethodGet, "/t/:tenant/.well-known/jwks.json", a.withTenant(a.handleJWKS))
	a.registerAdminRoutes()
	a.registerConfigRoutes()
	a.registerOAuthClientRoutes()
	a.registerWebhookRoutes()
	a.registerMailRoutes()
	a.registerExternalRoutes()
	return a
}

// tenantHandler is a handler of a tenant's route; the tenant's shard is
// pinned for the duration of the call.
type tenantHandler func(w http.ResponseWriter, r *http.Request, t auth.Tenant)

// withTenant resolves and pins the route's tenant, marks the response with
// GoTrue's API version, and answers errors in GoTrue's shape.
func (a *API) withTenant(h tenantHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		w.Header().Set(APIVersionHeader, "2024-01-01")
		ts, err := a.srv.Tenant(w, r, ps)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		defer ts.Release()
		r = r.WithContext(context.WithValue(r.Context(), httprouter.ParamsKey, ps))
		h(w, r, a.authTenant(r, ts))
	}
}

// authTenant describes the pinned tenant to the auth flows. Its issuer is
// the tenant's base URL: the public URL when set, else taken from the
// request. Without a public URL any host is accepted in a presented
// token's iss (the signature already binds it to the tenant's keys), but
// the path must name this tenant.
func (a *API) authTenant(r *http.Request, ts *engine.TenantShard) auth.Tenant {
	path := "/t/" + ts.Tenant.Slug
	t := auth.Tenant{ID: ts.Tenant.ID, Shard: ts}
	if a.publicURL != "" {
		t.Issuer = strings.TrimRight(a.publicURL, "/") + path
		return t
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	t.Issuer = scheme + "://" + r.Host + path
	if a.listenURL != "" {
		t.LinkBase = a.listenURL + path
	}
	t.IssuerOK = func(iss string) bool {
		u, err := url.Parse(iss)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Path == path
	}
	return t
}

// writeError answers err in GoTrue's error shape: with the request's
// X-Supabase-Api-Version header {"code":"<error_code>","message":…}, else
// {"code":<status>,"error_code":…,"msg":…}; the x-sb-error-code header
// either way, and weak_password's reasons.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	p := a.srv.Problem(w, r, err)
	w.Header().Set("X-Sb-Error-Code", p.Code)
	body := map[string]any{}
	if r.Header.Get(APIVersionHeader) != "" {
		body["code"], body["message"] = p.Code, p.Message
	} else {
		body["code"], body["error_code"], body["msg"] = p.Status, p.Code, p.Message
	}
	if p.Code == auth.CodeWeakPassword {
		reasons := p.Reasons
		if reasons == nil {
			reasons = []string{}
		}
		body["weak_password"] = map[string]any{"reasons": reasons}
	}
	api.WriteJSON(w, p.Status, body)
}

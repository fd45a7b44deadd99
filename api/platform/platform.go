// Package platform serves the platform admin API under /admin: tenants and
// their lifecycle, service keys, export, import and move. Every route needs
// the platform admin token; errors have the platform's shape
// {"code","message"}.
package platform

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/cluster"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/transfer"
)

// API is the platform admin API.
type API struct {
	srv        *api.Server
	adminToken string
	// auth issues service keys and makes signing keys; nil: no auth API.
	auth *auth.Service
	// transfer exports, imports and moves tenants; nil leaves those
	// routes out.
	transfer *transfer.Service
	// node is this server as one of several nodes; nil when alone.
	node *cluster.Node
	// remote reaches another node, to move a tenant there with its data.
	remote func(ctx context.Context, name string) (transfer.RemoteNode, error)
}

// Config is what the platform API serves with.
type Config struct {
	AdminToken string            // the platform admin bearer token; empty refuses every request
	Auth       *auth.Service     // may be nil
	Transfer   *transfer.Service // may be nil
	Node       *cluster.Node     // several nodes: GET /admin/nodes, moves to a node; may be nil
	// Remote reaches another node for a move with the tenant's data (a
	// SQLite tenant on this node's disk).
	Remote func(ctx context.Context, name string) (transfer.RemoteNode, error)
}

// Register adds the platform admin routes to srv.
func Register(srv *api.Server, cfg Config) *API {
	a := &API{srv: srv, adminToken: cfg.AdminToken, auth: cfg.Auth, transfer: cfg.Transfer, node: cfg.Node, remote: cfg.Remote}
	srv.Handle(http.MethodPost, "/admin/tenants", a.admin(a.handleCreateTenant))
	srv.Handle(http.MethodGet, "/admin/tenants", a.admin(a.handleListTenants))
	srv.Handle(http.MethodGet, "/admin/tenants/:tenant", a.admin(a.handleGetTenant))
	srv.Handle(http.MethodDelete, "/admin/tenants/:tenant", a.admin(a.handleDeleteTenant))
	srv.Handle(http.MethodPost, "/admin/tenants/:tenant/approve", a.admin(a.handleApproveTenant))
	srv.Handle(http.MethodPost, "/admin/tenants/:tenant/suspend", a.admin(a.lifecycleStep(a.srv.Engine.SuspendTenant, "tenant suspended")))
	srv.Handle(http.MethodPost, "/admin/tenants/:tenant/resume", a.admin(a.lifecycleStep(a.srv.Engine.ResumeTenant, "tenant resumed")))
	if a.auth != nil {
		srv.Handle(http.MethodPost, "/admin/tenants/:tenant/service-key", a.admin(a.handleIssueServiceKey))
		srv.Handle(http.MethodPost, "/admin/tenants/:tenant/signing-keys", a.admin(a.handleRotateKey))
		srv.Handle(http.MethodPost, "/admin/tenants/:tenant/owner", a.admin(a.handleNameOwner))
	}
	a.registerTransferRoutes()
	if a.node != nil {
		srv.Handle(http.MethodGet, "/admin/nodes", a.admin(a.handleListNodes))
		srv.Handle(http.MethodPost, "/admin/nodes/:node/drain", a.admin(a.handleDrainNode))
	}
	return a
}

var errUnauthorized = engine.NewError(engine.KindUnauthenticated, "unauthorized", "a valid platform admin token is required")

// admin wraps h with the platform token check: constant-time, comparing
// digests so that not even the token's length leaks.
func (a *API) admin(h httprouter.Handle) httprouter.Handle {
	want := sha256.Sum256([]byte(a.adminToken))
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || a.adminToken == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyshard-admin"`)
			a.srv.WriteError(w, r, errUnauthorized)
			return
		}
		h(w, r, ps)
	}
}

type createTenantRequest struct {
	Slug    string `json:"slug"`
	Name    string `json:"name"`
	Backend string `json:"backend"`
	// Node owns the tenant (several nodes); default this node.
	Node string `json:"node"`
}

func (a *API) handleCreateTenant(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	var req createTenantRequest
	if err := api.DecodeJSON(r, &req); err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	if req.Name == "" {
		req.Name = req.Slug
	}
	if req.Node != "" && a.node != nil {
		if _, ok := a.node.Peer(r.Context(), req.Node); !ok {
			a.srv.WriteError(w, r, engine.Invalidf("no node named %q", req.Node))
			return
		}
	}
	t, err := a.srv.Engine.CreateTenantOn(r.Context(), req.Slug, req.Name, req.Backend, req.Node)
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "tenant created", t.Slug, "tenant_id", t.ID, "backend", t.Backend)
	api.WriteJSON(w, http.StatusCreated, t)
}

func (a *API) handleListTenants(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	ts, err := a.srv.Engine.List(r.Context())
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	if ts == nil {
		ts = []*engine.Tenant{}
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"tenants": ts})
}

func (a *API) handleGetTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	t, err := a.srv.Engine.Get(r.Context(), ps.ByName("tenant"))
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, t)
}

func (a *API) handleDeleteTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if a.transfer != nil {
		// An import or a move still writing the tenant's database would
		// race the drop (and, for an import, a new import of the same id).
		if t, err := a.srv.Engine.Get(r.Context(), ps.ByName("tenant")); err == nil {
			if _, busy := a.transfer.MoveProgress(t.ID); busy {
				a.srv.WriteError(w, r, fmt.Errorf("an import or a move of this tenant is running; delete it once that has ended: %w", engine.ErrConflict))
				return
			}
		}
	}
	if err := a.srv.Engine.DeleteTenant(r.Context(), ps.ByName("tenant")); err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "tenant deleted", ps.ByName("tenant"))
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) handleApproveTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	// The tenant's first signing key is made now rather than by its first
	// request: in the new database from the start where the backend can
	// (SQLite), else written after; if that fails, the first use makes it.
	var seed func(string) func(engine.Querier) error
	if a.auth != nil {
		seed = a.auth.Keys().Seed
	}
	t, seeded, err := a.srv.Engine.ApproveTenantSeeded(r.Context(), ps.ByName("tenant"), seed)
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	if !seeded {
		if err := a.ensureSigningKey(r.Context(), t.ID); err != nil {
			a.srv.Logger.Warn("signing key not created at approval; it will be at first use", "tenant_id", t.ID, "err", err)
		}
	}
	a.logAction(r, "tenant approved", t.Slug, "tenant_id", t.ID)
	api.WriteJSON(w, http.StatusOK, t)
}

// ensureSigningKey creates the tenant's first signing key unless it has one.
func (a *API) ensureSigningKey(ctx context.Context, tenantID string) error {
	if a.auth == nil {
		return nil
	}
	ts, err := a.srv.Engine.Tenant(ctx, tenantID)
	if err != nil {
		return err
	}
	defer ts.Release()
	return a.auth.Keys().EnsureKey(ctx, tenantID, ts)
}

// lifecycleStep serves a tenant lifecycle step that answers the tenant:
// suspend, resume.
func (a *API) lifecycleStep(step func(context.Context, string) (*engine.Tenant, error), done string) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		t, err := step(r.Context(), ps.ByName("tenant"))
		if err != nil {
			a.srv.WriteError(w, r, err)
			return
		}
		a.logAction(r, done, t.Slug, "tenant_id", t.ID)
		api.WriteJSON(w, http.StatusOK, t)
	}
}

type rotateRequest struct {
	Algorithm   string `json:"algorithm"`
	Immediately bool   `json:"immediately"`
}

// handleRotateKey publishes a new signing key for the tenant (see
// token.Keys.Rotate): {"algorithm": "ES256"|"RS256"|"EdDSA"|"HS256",
// "immediately": false}.
func (a *API) handleRotateKey(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	var req rotateRequest
	if r.ContentLength != 0 {
		if err := api.DecodeJSON(r, &req); err != nil {
			a.srv.WriteError(w, r, err)
			return
		}
	}
	ts, err := a.srv.Engine.Tenant(r.Context(), ps.ByName("tenant"))
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	defer ts.Release()
	kid, signsAt, err := a.auth.Keys().Rotate(r.Context(), ts.Tenant.ID, ts, token.RotateOptions{Algorithm: req.Algorithm, Immediately: req.Immediately})
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "signing key rotated", ts.Tenant.Slug, "tenant_id", ts.Tenant.ID, "kid", kid, "signs_at", signsAt.UTC())
	alg := req.Algorithm
	if alg == "" {
		alg = a.auth.Keys().DefaultAlgorithm()
	}
	out := map[string]any{"kid": kid, "algorithm": alg, "signs_at": signsAt.UTC(), "tenant": ts.Tenant.Slug}
	if alg == token.HS256 {
		// The tenant's backends verify with the secret: shown once, here.
		secret, err := a.auth.Keys().Secret(r.Context(), ts.Tenant.ID, ts, kid)
		if err != nil {
			a.srv.WriteError(w, r, err)
			return
		}
		out["secret"] = base64.RawURLEncoding.EncodeToString(secret)
		w.Header().Set("Cache-Control", "no-store")
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// logAction logs one line for an admin action: what, on which tenant, from
// which client, with the request id; never a secret.
func (a *API) logAction(r *http.Request, action, tenant string, attrs ...any) {
	attrs = append([]any{"tenant", tenant, "client", api.ClientOf(r).IP}, attrs...)
	a.srv.Logger.Info(action, attrs...)
}

// handleIssueServiceKey makes a new service key for the tenant's admin API
// (replacing the previous one) and shows it once.
func (a *API) handleIssueServiceKey(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	ts, err := a.srv.Engine.Tenant(r.Context(), ps.ByName("tenant"))
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	defer ts.Release()
	key, err := a.auth.IssueServiceKey(r.Context(), auth.Tenant{ID: ts.Tenant.ID, Shard: ts})
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "service key issued", ts.Tenant.Slug, "tenant_id", ts.Tenant.ID) // never the key
	w.Header().Set("Cache-Control", "no-store")
	api.WriteJSON(w, http.StatusOK, map[string]string{"service_key": key})
}

// handleNameOwner makes a user of the tenant, named by email, its owner
// (app_metadata.org_role): the platform admin names a tenant's first
// owner, who then manages the tenant with its own access token.
func (a *API) handleNameOwner(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	var body struct {
		Email string `json:"email"`
	}
	if err := api.DecodeJSON(r, &body); err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	ts, err := a.srv.Engine.Tenant(r.Context(), ps.ByName("tenant"))
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	defer ts.Release()
	c := api.ClientOf(r)
	c.Actor = event.Actor{Kind: event.ActorPlatform}
	u, err := a.auth.SetOrgRole(r.Context(), auth.Tenant{ID: ts.Tenant.ID, Shard: ts}, c, body.Email, auth.RoleOwner)
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "tenant owner named", ts.Tenant.Slug, "tenant_id", ts.Tenant.ID, "user_id", u.ID)
	api.WriteJSON(w, http.StatusOK, map[string]string{"user_id": u.ID, "email": u.Email, "org_role": auth.RoleOwner})
}

func (a *API) handleListNodes(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	nodes, err := a.node.Nodes(r.Context())
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	if nodes == nil {
		nodes = []catalog.Node{}
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"self": a.node.Self(), "nodes": nodes})
}

func (a *API) handleDrainNode(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	var withData func(ctx context.Context, t *engine.Tenant, to string) error
	if a.remote != nil && a.transfer != nil {
		withData = func(ctx context.Context, t *engine.Tenant, to string) error {
			rn, err := a.remote(ctx, to)
			if err != nil {
				return err
			}
			_, err = a.transfer.MoveToNode(ctx, t.ID, rn)
			return err
		}
	}
	res, err := a.node.Drain(r.Context(), ps.ByName("node"), withData)
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "node drained", "", "node", ps.ByName("node"), "tenants", len(res))
	api.WriteJSON(w, http.StatusOK, map[string]any{"node": ps.ByName("node"), "tenants": res})
}

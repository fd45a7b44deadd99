package gotrue

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
)

// registerAdminRoutes registers a tenant's administration API (GoTrue's
// /admin), used with the tenant's service key.
func (a *API) registerAdminRoutes() {
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/users", a.withTenant(a.serviceKey(a.handleAdminListUsers)))
	a.srv.Handle(http.MethodPost, "/t/:tenant/admin/users", a.withTenant(a.serviceKey(a.handleAdminCreateUser)))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/users/:id", a.withTenant(a.serviceKey(a.handleAdminGetUser)))
	a.srv.Handle(http.MethodPut, "/t/:tenant/admin/users/:id", a.withTenant(a.serviceKey(a.handleAdminUpdateUser)))
	a.srv.Handle(http.MethodDelete, "/t/:tenant/admin/users/:id", a.withTenant(a.serviceKey(a.handleAdminDeleteUser)))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/audit", a.withTenant(a.serviceKey(a.handleAdminAudit)))
}

// serviceKey wraps h with the tenant service key check.
func (a *API) serviceKey(h tenantHandler) tenantHandler {
	return func(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
		if err := a.auth.CheckServiceKey(r.Context(), t, api.Bearer(r)); err != nil {
			a.writeError(w, r, err)
			return
		}
		h(w, r, t)
	}
}

func page(r *http.Request) auth.Page {
	q := r.URL.Query()
	p, _ := strconv.Atoi(q.Get("page"))
	n, _ := strconv.Atoi(q.Get("per_page"))
	return auth.Page{Page: p, PerPage: n}
}

func (a *API) handleAdminListUsers(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	users, total, err := a.auth.ListUsers(r.Context(), t, page(r))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	api.WriteJSON(w, http.StatusOK, map[string]any{"users": usersView(users), "aud": "authenticated"})
}

// adminUserBody is the body of POST /admin/users and PUT /admin/users/{id}.
type adminUserBody struct {
	Email        *string        `json:"email"`
	Password     *string        `json:"password"`
	EmailConfirm bool           `json:"email_confirm"`
	UserMetadata map[string]any `json:"user_metadata"`
	AppMetadata  map[string]any `json:"app_metadata"`
}

func (b adminUserBody) request() auth.AdminUserRequest {
	return auth.AdminUserRequest{Email: b.Email, Password: b.Password, EmailConfirm: b.EmailConfirm,
		UserMetadata: b.UserMetadata, AppMetadata: b.AppMetadata}
}

func (a *API) handleAdminCreateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b adminUserBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.auth.CreateUser(r.Context(), t, api.ClientOf(r), b.request())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

// userID returns the :id route parameter; an id that cannot be a user's
// answers 404 like an unknown one.
func userID(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}

func (a *API) handleAdminGetUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	u, err := a.auth.GetUser(r.Context(), t, userID(r))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

func (a *API) handleAdminUpdateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b adminUserBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.auth.AdminUpdateUser(r.Context(), t, api.ClientOf(r), userID(r), b.request())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

func (a *API) handleAdminDeleteUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if err := a.auth.DeleteUser(r.Context(), t, api.ClientOf(r), userID(r)); err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{})
}

func (a *API) handleAdminAudit(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	evs, err := a.auth.ListAudit(r.Context(), t, page(r))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, auditView(evs))
}

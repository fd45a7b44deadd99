package gotrue

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// registerAdminRoutes registers a tenant's administration API (GoTrue's
// /admin), used with the tenant's service key.
func (a *API) registerAdminRoutes() {
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/users", a.withTenant(a.admin(a.handleAdminListUsers)))
	a.srv.Handle(http.MethodPost, "/t/:tenant/admin/users", a.withTenant(a.admin(a.handleAdminCreateUser)))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/users/:id", a.withTenant(a.admin(a.handleAdminGetUser)))
	a.srv.Handle(http.MethodPut, "/t/:tenant/admin/users/:id", a.withTenant(a.admin(a.handleAdminUpdateUser)))
	a.srv.Handle(http.MethodDelete, "/t/:tenant/admin/users/:id", a.withTenant(a.admin(a.handleAdminDeleteUser)))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/audit", a.withTenant(a.admin(a.handleAdminAudit)))
}

// admin wraps h with the admin API's check (AdminActor), without the
// platform admin token: a tenant's users are its own.
func (a *API) admin(h tenantHandler) tenantHandler {
	return a.adminCheck(false, func(w http.ResponseWriter, r *http.Request, t auth.Tenant, _ event.Actor) { h(w, r, t) })
}

// page parses GoTrue's pagination parameters: unsigned integers, or 400
// validation_failed as GoTrue answers (admin_list_users_bad_page.json).
func page(r *http.Request) (auth.Page, error) {
	q := r.URL.Query()
	var p auth.Page
	for _, f := range []struct {
		name string
		v    *int
	}{{"page", &p.Page}, {"per_page", &p.PerPage}} {
		s := q.Get(f.name)
		if s == "" {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 31)
		if err != nil {
			return p, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "Bad Pagination Parameters: "+err.Error())
		}
		*f.v = int(n)
	}
	return p, nil
}

// linkHeader is GoTrue's Link header of a page of n items in all:
// relative targets, rel="next" while there is one, and rel="last".
func linkHeader(path string, p auth.Page, n int) string {
	per := p.PerPage
	if per <= 0 || per > auth.MaxPerPage {
		per = auth.DefaultPerPage
	}
	cur := max(p.Page, 1)
	last := max((n+per-1)/per, 1)
	link := func(pg int, rel string) string {
		return "<" + path + "?page=" + strconv.Itoa(pg) + "&per_page=" + strconv.Itoa(per) + `>; rel="` + rel + `"`
	}
	if cur < last {
		return link(cur+1, "next") + ", " + link(last, "last")
	}
	return link(last, "last")
}

func (a *API) handleAdminListUsers(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := page(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	users, total, err := a.auth.ListUsers(r.Context(), t, p, r.URL.Query().Get("filter"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	w.Header().Set("Link", linkHeader(r.URL.Path, p, total))
	api.WriteJSON(w, http.StatusOK, map[string]any{"users": usersView(users), "aud": "authenticated"})
}

// adminUserBody is the body of POST /admin/users and PUT /admin/users/{id}.
type adminUserBody struct {
	Email        *string        `json:"email"`
	Password     *string        `json:"password"`
	EmailConfirm bool           `json:"email_confirm"`
	UserMetadata map[string]any `json:"user_metadata"`
	AppMetadata  map[string]any `json:"app_metadata"`
	BanDuration  *string        `json:"ban_duration"`
}

func (b adminUserBody) request() auth.AdminUserRequest {
	return auth.AdminUserRequest{Email: b.Email, Password: b.Password, EmailConfirm: b.EmailConfirm,
		UserMetadata: b.UserMetadata, AppMetadata: b.AppMetadata, BanDuration: b.BanDuration}
}

func (a *API) handleAdminCreateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b adminUserBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.auth.CreateUser(r.Context(), t, clientOf(r), b.request())
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
	u, err := a.auth.AdminUpdateUser(r.Context(), t, clientOf(r), userID(r), b.request())
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

// deleteUserBody is the optional body of DELETE /admin/users/{id}.
type deleteUserBody struct {
	ShouldSoftDelete bool `json:"should_soft_delete"`
}

func (a *API) handleAdminDeleteUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b deleteUserBody
	if r.ContentLength != 0 {
		if err := api.DecodeJSON(r, &b); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	if err := a.auth.DeleteUser(r.Context(), t, clientOf(r), userID(r), b.ShouldSoftDelete); err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{})
}

func (a *API) handleAdminAudit(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := page(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	evs, err := a.auth.ListAudit(r.Context(), t, p)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, auditView(evs))
}

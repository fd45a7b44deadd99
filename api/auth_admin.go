package api

import (
	"net/http"
	"strconv"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/auth"
)

// registerTenantAdminRoutes registers a tenant's administration API, used
// with the tenant's service key, and the platform route that issues that key.
func (s *Server) registerTenantAdminRoutes() {
	s.handle(http.MethodPost, "/admin/tenants/:tenant/service-key", s.admin(s.withTenant(s.handleIssueServiceKey)))
	s.handle(http.MethodGet, "/t/:tenant/admin/users", s.withTenant(s.serviceKey(s.handleAdminListUsers)))
	s.handle(http.MethodPost, "/t/:tenant/admin/users", s.withTenant(s.serviceKey(s.handleAdminCreateUser)))
	s.handle(http.MethodGet, "/t/:tenant/admin/users/:id", s.withTenant(s.serviceKey(s.handleAdminGetUser)))
	s.handle(http.MethodPut, "/t/:tenant/admin/users/:id", s.withTenant(s.serviceKey(s.handleAdminUpdateUser)))
	s.handle(http.MethodDelete, "/t/:tenant/admin/users/:id", s.withTenant(s.serviceKey(s.handleAdminDeleteUser)))
	s.handle(http.MethodGet, "/t/:tenant/admin/audit", s.withTenant(s.serviceKey(s.handleAdminAudit)))
}

// serviceKey wraps h with the tenant service key check.
func (s *Server) serviceKey(h tenantHandler) tenantHandler {
	return func(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
		if err := s.Auth.CheckServiceKey(r.Context(), t, bearer(r)); err != nil {
			s.writeAuthError(w, r, err)
			return
		}
		h(w, r, t)
	}
}

func (s *Server) handleIssueServiceKey(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	key, err := s.Auth.IssueServiceKey(r.Context(), t)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"service_key": key})
}

func page(r *http.Request) auth.Page {
	q := r.URL.Query()
	p, _ := strconv.Atoi(q.Get("page"))
	n, _ := strconv.Atoi(q.Get("per_page"))
	return auth.Page{Page: p, PerPage: n}
}

func (s *Server) handleAdminListUsers(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	users, total, err := s.Auth.ListUsers(r.Context(), t, page(r))
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, map[string]any{"users": nonNil(users), "aud": "authenticated"})
}

func (s *Server) handleAdminCreateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var req auth.AdminUserRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	u, err := s.Auth.CreateUser(r.Context(), t, client(r), req)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// userID returns the :id route parameter; an id that cannot be a user's
// answers 404 like an unknown one.
func userID(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}

func (s *Server) handleAdminGetUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	u, err := s.Auth.GetUser(r.Context(), t, userID(r))
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *Server) handleAdminUpdateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var req auth.AdminUserRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	u, err := s.Auth.AdminUpdateUser(r.Context(), t, client(r), userID(r), req)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *Server) handleAdminDeleteUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if err := s.Auth.DeleteUser(r.Context(), t, client(r), userID(r)); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (s *Server) handleAdminAudit(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	evs, err := s.Auth.ListAudit(r.Context(), t, page(r))
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

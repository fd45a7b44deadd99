package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"
)

func (s *Server) registerAdminRoutes() {
	s.handle(http.MethodPost, "/admin/tenants", s.admin(s.handleCreateTenant))
	s.handle(http.MethodGet, "/admin/tenants", s.admin(s.handleListTenants))
	s.handle(http.MethodGet, "/admin/tenants/:tenant", s.admin(s.handleGetTenant))
	s.handle(http.MethodDelete, "/admin/tenants/:tenant", s.admin(s.handleDeleteTenant))
	s.handle(http.MethodPost, "/admin/tenants/:tenant/approve", s.admin(s.handleApproveTenant))
	s.handle(http.MethodPost, "/admin/tenants/:tenant/suspend", s.admin(s.handleSuspendTenant))
	s.handle(http.MethodPost, "/admin/tenants/:tenant/resume", s.admin(s.handleResumeTenant))
}

// admin wraps h with the platform token check: constant-time, comparing
// digests so that not even the token's length leaks.
func (s *Server) admin(h httprouter.Handle) httprouter.Handle {
	want := sha256.Sum256([]byte(s.AdminToken))
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || s.AdminToken == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="keyshard-admin"`)
			writeErrorCode(w, http.StatusUnauthorized, "unauthorized", "a valid platform admin token is required")
			return
		}
		h(w, r, ps)
	}
}

type createTenantRequest struct {
	Slug    string `json:"slug"`
	Name    string `json:"name"`
	Backend string `json:"backend"`
}

func (s *Server) handleCreateTenant(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	var req createTenantRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Name == "" {
		req.Name = req.Slug
	}
	t, err := s.Engine.CreateTenant(r.Context(), req.Slug, req.Name, req.Backend)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (s *Server) handleListTenants(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	ts, err := s.Engine.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": nonNil(ts)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) handleGetTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	t, err := s.Engine.Get(r.Context(), ps.ByName("tenant"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) handleDeleteTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if err := s.Engine.DeleteTenant(r.Context(), ps.ByName("tenant")); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleApproveTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	t, err := s.Engine.ApproveTenant(r.Context(), ps.ByName("tenant"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if s.Auth != nil {
		// The tenant's first signing key is made now rather than by its
		// first request; if that fails, the first use makes it.
		if err := s.ensureSigningKey(r.Context(), t.ID); err != nil {
			s.Logger.Warn("signing key not created at approval; it will be at first use", "tenant_id", t.ID, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) ensureSigningKey(ctx context.Context, tenantID string) error {
	ts, err := s.Engine.Tenant(ctx, tenantID)
	if err != nil {
		return err
	}
	defer ts.Release()
	return s.Auth.Keys().EnsureKey(ctx, tenantID, ts)
}

func (s *Server) handleSuspendTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	t, err := s.Engine.SuspendTenant(r.Context(), ps.ByName("tenant"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) handleResumeTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	t, err := s.Engine.ResumeTenant(r.Context(), ps.ByName("tenant"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

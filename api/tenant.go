package api

import (
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/engine"
)

func (s *Server) registerTenantRoutes() {
	s.handle(http.MethodGet, "/t/:tenant/health", s.handleTenantHealth)
	s.registerAuthRoutes()
}

// handleTenantHealth answers 200 when the tenant is active and its shard
// opens and answers a query that reads a table (SELECT 1 alone would not
// notice damaged pages).
func (s *Server) handleTenantHealth(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	ts, err := s.tenant(r, ps)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer ts.Release()
	var one int
	if err := ts.Read(r.Context(), func(q engine.Querier) error { return q.QueryRow("SELECT count(*) FROM settings").Scan(&one) }); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "tenant": ts.Tenant.Slug})
}

// tenant resolves the route's tenant by slug and pins its shard. Only a
// syntactically valid slug reaches the engine.
func (s *Server) tenant(r *http.Request, ps httprouter.Params) (*engine.TenantShard, error) {
	slug := ps.ByName("tenant")
	if engine.ValidateSlug(slug) != nil {
		return nil, engine.ErrTenantNotFound
	}
	return s.Engine.Tenant(r.Context(), slug)
}

package api

import (
	"net"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// handleTenantHealth answers 200 when the tenant is active and its shard
// opens and answers a query that reads a table (SELECT 1 alone would not
// notice damaged pages).
func (s *Server) handleTenantHealth(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	ts, err := s.Tenant(w, r, ps)
	if err != nil {
		s.WriteError(w, r, err)
		return
	}
	defer ts.Release()
	var one int
	if err := ts.Read(r.Context(), func(q engine.Querier) error { return q.QueryRow("SELECT count(*) FROM settings").Scan(&one) }); err != nil {
		s.WriteError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "tenant": ts.Tenant.Slug})
}

// Tenant resolves the route's :tenant by slug and pins its shard; the
// caller must Release it. Only a syntactically valid slug reaches the
// engine. The response gets the CORS headers the tenant's origin policy
// gives a request from a browser (when the tenant cannot be resolved, any
// origin may read the error).
func (s *Server) Tenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) (*engine.TenantShard, error) {
	slug := ps.ByName("tenant")
	if engine.ValidateSlug(slug) != nil {
		s.cors(w, r, nil)
		return nil, engine.ErrTenantNotFound
	}
	ts, err := s.Engine.Tenant(r.Context(), slug)
	s.cors(w, r, ts)
	return ts, err
}

// ClientOf describes where a request came from, for sessions and audit.
func ClientOf(r *http.Request) auth.Client {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ua := r.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	return auth.Client{IP: host, UserAgent: ua}
}

// Bearer returns the token of an Authorization: Bearer header, or "".
func Bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

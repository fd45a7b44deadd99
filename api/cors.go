package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/keyshard/keyshard/engine"
)

// OriginPolicy says whether a browser page of origin may call the tenant's
// routes, and with credentials (cookies, HTTP authentication).
type OriginPolicy func(ctx context.Context, ts *engine.TenantShard, origin string) (allowed, credentials bool, err error)

// corsAllowHeaders are the request headers a tenant's routes take from a
// browser: every header @supabase/auth-js sends (GoTrue alone refuses
// apikey, which Supabase's gateway hides).
const corsAllowHeaders = "apikey, authorization, content-type, x-client-info, x-supabase-api-version, x-request-id"

// corsExposeHeaders are the response headers a page may read: GoTrue's
// three, and the error code and Retry-After that say what to do next.
const corsExposeHeaders = "X-Total-Count, Link, X-Supabase-Api-Version, X-Sb-Error-Code, Retry-After, X-Request-Id"

// cors sets the CORS headers of a response of ts's route to a request with
// an Origin header, as the server's OriginPolicy says (any origin, without
// credentials, when there is none or it fails).
func (s *Server) cors(w http.ResponseWriter, r *http.Request, ts *engine.TenantShard) {
	// Always: a shared cache must not serve an answer without CORS
	// headers to a browser (the JWKS is cacheable).
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	allowed, credentials := true, false
	if ts != nil && s.Origins != nil {
		var err error
		if allowed, credentials, err = s.Origins(r.Context(), ts, origin); err != nil {
			allowed, credentials = true, false
		}
	}
	if !allowed {
		return
	}
	if credentials {
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	} else {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
}

// handleOptions answers OPTIONS on a path that has routes (the router has
// set Allow). On a tenant's path, a browser's preflight gets the methods
// and headers the routes take, for the origins the tenant allows; any
// other OPTIONS, 204 with Allow.
func (s *Server) handleOptions(w http.ResponseWriter, r *http.Request) {
	slug, ok := tenantOfPath(r.URL.Path)
	if !ok || r.Header.Get("Origin") == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h := w.Header()
	h.Set("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
	var ts *engine.TenantShard
	if engine.ValidateSlug(slug) == nil {
		if t, err := s.Engine.Tenant(r.Context(), slug); err == nil {
			ts = t
			defer ts.Release()
		}
	}
	s.cors(w, r, ts)
	if h.Get("Access-Control-Allow-Origin") != "" {
		h.Del("Access-Control-Expose-Headers") // for responses, not preflights
		h.Set("Access-Control-Allow-Methods", h.Get("Allow"))
		h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
		h.Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
}

// tenantOfPath returns the slug of a /t/{slug}/… path.
func tenantOfPath(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/t/")
	if !ok {
		return "", false
	}
	slug, _, _ := strings.Cut(rest, "/")
	return slug, slug != ""
}

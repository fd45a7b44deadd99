package api

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// registerAuthRoutes registers the GoTrue-compatible end-user API under
// /t/:tenant. Without an auth service only /health is served.
func (s *Server) registerAuthRoutes() {
	if s.Auth == nil {
		return
	}
	s.handle(http.MethodPost, "/t/:tenant/signup", s.withTenant(s.handleSignup))
	s.handle(http.MethodPost, "/t/:tenant/token", s.withTenant(s.handleToken))
	s.handle(http.MethodGet, "/t/:tenant/user", s.withTenant(s.handleGetUser))
	s.handle(http.MethodPut, "/t/:tenant/user", s.withTenant(s.handleUpdateUser))
	s.handle(http.MethodPost, "/t/:tenant/logout", s.withTenant(s.handleLogout))
	s.handle(http.MethodGet, "/t/:tenant/settings", s.withTenant(s.handleGetSettings))
	s.handle(http.MethodGet, "/t/:tenant/.well-known/jwks.json", s.withTenant(s.handleJWKS))
	s.registerTenantAdminRoutes()
}

// tenantHandler is a handler of a tenant's auth route; the tenant's shard is
// pinned for the duration of the call.
type tenantHandler func(w http.ResponseWriter, r *http.Request, t auth.Tenant)

// withTenant resolves and pins the route's tenant, marks the response with
// GoTrue's API version, and answers errors in GoTrue's shape.
func (s *Server) withTenant(h tenantHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		w.Header().Set(APIVersionHeader, "2024-01-01")
		ts, err := s.tenant(r, ps)
		if err != nil {
			s.writeAuthError(w, r, err)
			return
		}
		defer ts.Release()
		r = r.WithContext(context.WithValue(r.Context(), httprouter.ParamsKey, ps))
		h(w, r, s.authTenant(r, ts))
	}
}

// authTenant describes the pinned tenant to the auth flows. Its issuer is
// the tenant's base URL: --public-url when set, else taken from the
// request. Without a public URL any host is accepted in a presented
// token's iss (the signature already binds it to the tenant's keys), but
// the path must name this tenant.
func (s *Server) authTenant(r *http.Request, ts *engine.TenantShard) auth.Tenant {
	path := "/t/" + ts.Tenant.Slug
	t := auth.Tenant{ID: ts.Tenant.ID, Shard: ts}
	if s.PublicURL != "" {
		t.Issuer = strings.TrimRight(s.PublicURL, "/") + path
		return t
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	t.Issuer = scheme + "://" + r.Host + path
	t.IssuerOK = func(iss string) bool {
		u, err := url.Parse(iss)
		return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Path == path
	}
	return t
}

func client(r *http.Request) auth.Client {
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

// bearer returns the token of an Authorization: Bearer header, or "".
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var req auth.SignupRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	sess, u, err := s.Auth.Signup(r.Context(), t, client(r), req)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	if sess != nil {
		writeJSON(w, http.StatusOK, sess)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

type tokenRequest struct {
	auth.PasswordRequest
	RefreshToken string `json:"refresh_token"`
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	grant := r.URL.Query().Get("grant_type")
	if grant != "password" && grant != "refresh_token" {
		s.writeAuthError(w, r, &auth.Error{Status: http.StatusBadRequest, Code: auth.CodeUnsupportedGrant,
			Message: "unsupported_grant_type"})
		return
	}
	var req tokenRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	var sess *auth.Session
	var err error
	if grant == "password" {
		sess, err = s.Auth.Login(r.Context(), t, client(r), req.PasswordRequest)
	} else {
		sess, err = s.Auth.Refresh(r.Context(), t, client(r), req.RefreshToken)
	}
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sess)
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := s.Auth.Authenticate(r.Context(), t, bearer(r), true)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	s.Auth.TouchLastSeen(t, p.User.ID)
	writeJSON(w, http.StatusOK, p.User.View())
}

func (s *Server) handleUpdateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := s.Auth.Authenticate(r.Context(), t, bearer(r), true)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	var req auth.UpdateUserRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	u, err := s.Auth.UpdateUser(r.Context(), t, client(r), p, req)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := s.Auth.Authenticate(r.Context(), t, bearer(r), false)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	if err := s.Auth.Logout(r.Context(), t, client(r), p, r.URL.Query().Get("scope")); err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleGetSettings(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	st, err := s.Auth.Settings(r.Context(), t)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	external := map[string]bool{"email": true, "phone": false, "anonymous_users": false}
	for _, p := range []string{"apple", "azure", "bitbucket", "discord", "facebook", "figma", "fly", "github",
		"gitlab", "google", "keycloak", "kakao", "linkedin", "linkedin_oidc", "notion", "spotify", "slack",
		"slack_oidc", "workos", "twitch", "twitter", "zoom"} {
		external[p] = false
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"external":            external,
		"disable_signup":      st.DisableSignup,
		"mailer_autoconfirm":  st.MailerAutoconfirm,
		"phone_autoconfirm":   false,
		"sms_provider":        "",
		"saml_enabled":        false,
		"password_min_length": st.PasswordMinLength,
	})
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	ks, err := s.Auth.Keys().Get(r.Context(), t.ID, t.Shard)
	if err != nil {
		s.writeAuthError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=600")
	writeJSON(w, http.StatusOK, ks.JWKS())
}

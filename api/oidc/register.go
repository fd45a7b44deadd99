package oidc

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/api/gotrue"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// handleRegister is RFC 7591 dynamic client registration. The tenant's
// service key (or the platform admin token) is the initial access token;
// with oauth_server_allow_dynamic_registration anyone may register, but
// such a client always asks for consent.
func (p *Provider) handleRegister(w http.ResponseWriter, r *http.Request) {
	rt := reqOf(r.Context())
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		p.regError(w, r, http.StatusMethodNotAllowed, "invalid_request", "registration takes POST")
		return
	}
	admin := false
	if api.Bearer(r) != "" || !rt.st.OAuthDynamicRegistration {
		if _, _, err := p.gotrue.AdminActor(r, rt.t); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			p.regError(w, r, http.StatusUnauthorized, "invalid_token",
				"registration needs the tenant's service key as initial access token")
			return
		}
		admin = true
	}
	var body gotrue.OAuthClientBody
	if err := api.DecodeJSON(r, &body); err != nil {
		p.writeError(w, r, err)
		return
	}
	if !admin {
		body.SkipConsent = nil
	}
	if body.TokenEndpointAuthMethod == nil && body.ClientType == nil {
		basic := auth.AuthSecretBasic // RFC 7591 §2's default
		body.TokenEndpointAuthMethod = &basic
	}
	req, err := body.Request()
	if err == nil {
		var c *auth.OAuthClient
		var secret string
		c, secret, err = p.auth.CreateOAuthClient(r.Context(), rt.t, rt.client, req, true)
		if err == nil {
			out := gotrue.OAuthClientJSON(c, secret)
			out["client_id_issued_at"] = c.CreatedAt.Unix()
			if secret != "" {
				out["client_secret_expires_at"] = 0
			}
			api.WriteJSON(w, http.StatusCreated, out)
			return
		}
	}
	var ae *engine.Error
	if errors.As(err, &ae) && ae.Kind == engine.KindInvalid {
		code := "invalid_client_metadata"
		if strings.Contains(strings.ToLower(ae.Message), "redirect") {
			code = "invalid_redirect_uri"
		}
		p.regError(w, r, http.StatusBadRequest, code, ae.Message)
		return
	}
	p.writeError(w, r, err)
}

func (p *Provider) regError(w http.ResponseWriter, _ *http.Request, status int, code, msg string) {
	api.WriteJSON(w, status, map[string]string{"error": code, "error_description": msg})
}

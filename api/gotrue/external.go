package gotrue

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/netguard"
)

// registerExternalRoutes adds logins through upstream providers (GoTrue's
// /authorize and /callback, grant_type=id_token in handleToken), identity
// linking, and the providers' administration.
func (a *API) registerExternalRoutes() {
	if a.upstream == nil {
		return
	}
	a.srv.Handle(http.MethodGet, "/t/:tenant/authorize", a.withTenant(a.handleAuthorize))
	a.srv.Handle(http.MethodGet, "/t/:tenant/callback", a.withTenant(a.handleCallback))
	a.srv.Handle(http.MethodPost, "/t/:tenant/callback", a.withTenant(a.handleCallback))
	a.srv.Handle(http.MethodGet, "/t/:tenant/user/identities/authorize", a.withTenant(a.handleLinkIdentity))
	a.srv.Handle(http.MethodDelete, "/t/:tenant/user/identities/:id", a.withTenant(a.handleUnlinkIdentity))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/custom-providers", a.withTenant(a.admin(a.handleListProviders)))
	a.srv.Handle(http.MethodPost, "/t/:tenant/admin/custom-providers", a.withTenant(a.admin(a.handleCreateProvider)))
	a.srv.Handle(http.MethodGet, "/t/:tenant/admin/custom-providers/:id", a.withTenant(a.admin(a.handleGetProvider)))
	a.srv.Handle(http.MethodPatch, "/t/:tenant/admin/custom-providers/:id", a.withTenant(a.admin(a.handleUpdateProvider)))
	a.srv.Handle(http.MethodDelete, "/t/:tenant/admin/custom-providers/:id", a.withTenant(a.admin(a.handleDeleteProvider)))
}

// providerJSON is a provider as the admin API shows it: never its secret.
type providerJSON struct {
	ID               string            `json:"id"`
	Type             string            `json:"type"`
	Issuer           string            `json:"issuer,omitempty"`
	ClientID         string            `json:"client_id"`
	ClientSecretSet  bool              `json:"client_secret_set"`
	Scopes           []string          `json:"scopes"`
	AuthorizationURL string            `json:"authorization_url,omitempty"`
	TokenURL         string            `json:"token_url,omitempty"`
	UserinfoURL      string            `json:"userinfo_url,omitempty"`
	Mapping          map[string]string `json:"mapping"`
	Enabled          bool              `json:"enabled"`
	CallbackURL      string            `json:"callback_url"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
}

func providerView(t auth.Tenant, p *auth.IdentityProvider) providerJSON {
	scopes := p.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	m := p.Mapping
	if m == nil {
		m = map[string]string{}
	}
	return providerJSON{ID: p.ID, Type: p.Kind, Issuer: p.Issuer, ClientID: p.ClientID, ClientSecretSet: p.HasSecret, Scopes: scopes,
		AuthorizationURL: p.AuthorizationURL, TokenURL: p.TokenURL, UserinfoURL: p.UserinfoURL, Mapping: m, Enabled: p.Enabled,
		CallbackURL: t.Links() + "/callback", CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

func (a *API) handleListProviders(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	ps, err := a.auth.ListProviders(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]providerJSON, len(ps))
	for i, p := range ps {
		out[i] = providerView(t, p)
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"providers": out})
}

func (a *API) handleGetProvider(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.GetProvider(r.Context(), t, httprouter.ParamsFromContext(r.Context()).ByName("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, providerView(t, p))
}

func (a *API) handleCreateProvider(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	a.saveProvider(w, r, t, "", false)
}

func (a *API) handleUpdateProvider(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	a.saveProvider(w, r, t, httprouter.ParamsFromContext(r.Context()).ByName("id"), true)
}

func (a *API) saveProvider(w http.ResponseWriter, r *http.Request, t auth.Tenant, id string, update bool) {
	var req auth.ProviderRequest
	if err := api.DecodeJSON(r, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	// A provider on a literal private address is refused when saved (a
	// name is checked at every connection).
	if !a.allowPrivate {
		for _, u := range []*string{req.Issuer, req.AuthorizationURL, req.TokenURL, req.UserinfoURL} {
			if u == nil {
				continue
			}
			if pu, err := url.Parse(*u); err == nil {
				if ip := net.ParseIP(pu.Hostname()); ip != nil && !netguard.PublicIP(ip) {
					a.writeError(w, r, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed,
						"The provider's address is loopback, private or link-local: start the server with --outbound-allow-private to allow it"))
					return
				}
			}
		}
	}
	p, err := a.auth.SaveProvider(r.Context(), t, clientOf(r), id, req, update)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	status := http.StatusCreated
	if update {
		status = http.StatusOK
	}
	api.WriteJSON(w, status, providerView(t, p))
}

func (a *API) handleDeleteProvider(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if err := a.auth.DeleteProvider(r.Context(), t, clientOf(r), httprouter.ParamsFromContext(r.Context()).ByName("id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleAuthorize starts a login through a provider (auth-js
// signInWithOAuth): 302 to the provider with state, PKCE and nonce.
func (a *API) handleAuthorize(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	q := r.URL.Query()
	u, err := a.startUpstream(r, t, q, "")
	var ae *engine.Error
	if err != nil && errors.As(err, &ae) && ae.Kind == engine.KindUnavailable {
		// The provider is down: back to the application with the error.
		to := ""
		if st, serr := a.auth.CachedSettings(r.Context(), t); serr == nil {
			to = st.RedirectFor(q.Get("redirect_to"))
		}
		a.callbackError(w, r, t, to, q.Get("code_challenge") != "", err)
		return
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	http.Redirect(w, r, u, http.StatusFound)
}

// startUpstream records the login and returns the provider's URL.
func (a *API) startUpstream(r *http.Request, t auth.Tenant, q url.Values, linkUserID string) (string, error) {
	name := q.Get("provider")
	if name == "" {
		return "", engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "Unsupported provider: missing provider")
	}
	p, err := a.auth.GetProvider(r.Context(), t, name)
	if err != nil {
		return "", engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "Unsupported provider: provider is not enabled")
	}
	start, err := a.auth.StartUpstream(r.Context(), t, p, q.Get("redirect_to"), q.Get("code_challenge"), q.Get("code_challenge_method"), linkUserID)
	if err != nil {
		return "", err
	}
	return a.upstream.AuthCodeURL(r.Context(), p, t.Links()+"/callback", start, strings.Fields(q.Get("scopes")))
}

// handleCallback is the provider's return (GoTrue's callback): the state
// is checked and spent, the code exchanged, the ID token verified, then
// the browser goes to the login's redirect_to with the session in the
// fragment, a PKCE code in the query, or the error, as GoTrue answers.
func (a *API) handleCallback(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if err := r.ParseForm(); err != nil {
		a.writeError(w, r, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "The callback's parameters do not parse"))
		return
	}
	st, err := a.auth.TakeState(r.Context(), t, r.Form.Get("state"))
	if err != nil {
		a.callbackError(w, r, t, "", false, err)
		return
	}
	pkce := st.FlowStateID != ""
	if e := r.Form.Get("error"); e != "" {
		desc := r.Form.Get("error_description")
		if desc == "" {
			desc = e
		}
		a.callbackError(w, r, t, st.RedirectTo, pkce, engine.NewError(engine.KindInvalid, auth.CodeBadOAuthCallback, "The provider answered: "+desc))
		return
	}
	p, err := a.auth.GetProvider(r.Context(), t, st.ProviderID)
	if err == nil && !p.Enabled {
		err = engine.NewError(engine.KindInvalid, auth.CodeProviderDisabled, "Unsupported provider: provider is not enabled")
	}
	if err != nil {
		a.callbackError(w, r, t, st.RedirectTo, pkce, err)
		return
	}
	id, err := a.upstream.Exchange(r.Context(), p, t.Links()+"/callback", r.Form.Get("code"), st)
	if err != nil {
		a.callbackError(w, r, t, st.RedirectTo, pkce, err)
		return
	}
	v, err := a.auth.ExternalSignIn(r.Context(), t, api.ClientOf(r), id, auth.ExternalOptions{FlowStateID: st.FlowStateID, LinkUserID: st.LinkUserID})
	if err != nil {
		a.callbackError(w, r, t, st.RedirectTo, pkce, err)
		return
	}
	if st.RedirectTo == "" {
		noStore(w)
		linkPage(w, http.StatusOK, "Signed in", "You can close this window and go back to the application.")
		return
	}
	switch {
	case v.AuthCode != "":
		http.Redirect(w, r, withQuery(st.RedirectTo, url.Values{"code": {v.AuthCode}}), http.StatusFound)
	case v.Session == nil: // linked to the signed-in user
		http.Redirect(w, r, st.RedirectTo, http.StatusFound)
	default:
		s := v.Session
		noStore(w)
		http.Redirect(w, r, withFragment(st.RedirectTo, sessionFragment(s, "")), http.StatusFound)
	}
}

// callbackError sends the browser back from a login with the error.
func (a *API) callbackError(w http.ResponseWriter, r *http.Request, t auth.Tenant, to string, pkce bool, err error) {
	a.browserError(w, r, t, to, pkce, err, http.StatusFound, "The sign-in did not complete")
}

// browserError answers a browser's trip (a mailed link, a provider's
// callback) that failed: back to to (else the site URL) with GoTrue's
// error=access_denied (server_error when something upstream failed),
// error_code and error_description, in the fragment with sb=, or in the
// query for a PKCE flow; a page titled title when there is nowhere to
// go. Never a 500.
func (a *API) browserError(w http.ResponseWriter, r *http.Request, t auth.Tenant, to string, pkce bool, err error, redirect int, title string) {
	p := a.srv.Problem(w, r, err)
	if to == "" {
		if st, serr := a.auth.CachedSettings(r.Context(), t); serr == nil {
			to = st.SiteURL
		}
	}
	errName, status, desc := "access_denied", p.Status, p.Message
	if p.Status >= 500 {
		errName, status = "server_error", http.StatusBadGateway
	}
	if p.Code == auth.CodeOTPExpired {
		desc = "Email link is invalid or has expired" // GoTrue's words
	}
	if to == "" {
		linkPage(w, status, title, desc)
		return
	}
	vals := url.Values{"error": {errName}, "error_code": {p.Code}, "error_description": {desc}}
	if pkce {
		http.Redirect(w, r, withQuery(to, vals), redirect)
		return
	}
	vals.Set("sb", "")
	http.Redirect(w, r, withFragment(to, vals), redirect)
}

// sessionFragment is a session as GoTrue puts it in a redirect's fragment.
func sessionFragment(s *auth.Session, typ string) url.Values {
	v := url.Values{"access_token": {s.AccessToken}, "token_type": {"bearer"},
		"expires_in": {strconv.FormatInt(s.ExpiresIn, 10)}, "expires_at": {strconv.FormatInt(s.ExpiresAt, 10)},
		"refresh_token": {s.RefreshToken}, "sb": {""}}
	if typ != "" {
		v.Set("type", typ)
	}
	return v
}

// handleLinkIdentity starts linking a provider to the signed-in user
// (auth-js linkIdentity): {"url": …} with skip_http_redirect, else 302.
func (a *API) handleLinkIdentity(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.Authenticate(r.Context(), t, api.Bearer(r), true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	st, err := a.auth.CachedSettings(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if !st.ManualLinking {
		a.writeError(w, r, engine.NewError(engine.KindNotFound, auth.CodeManualLinkingDisabled, "Manual linking is disabled"))
		return
	}
	u, err := a.startUpstream(r, t, r.URL.Query(), p.User.ID)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if r.URL.Query().Get("skip_http_redirect") == "true" {
		api.WriteJSON(w, http.StatusOK, map[string]string{"url": u})
		return
	}
	http.Redirect(w, r, u, http.StatusFound)
}

func (a *API) handleUnlinkIdentity(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.Authenticate(r.Context(), t, api.Bearer(r), true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if _, err := a.auth.UnlinkIdentity(r.Context(), t, api.ClientOf(r), p, httprouter.ParamsFromContext(r.Context()).ByName("id")); err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

// idTokenBody is POST /token?grant_type=id_token (auth-js
// signInWithIdToken).
type idTokenBody struct {
	Provider    string `json:"provider"`
	IDToken     string `json:"id_token"`
	Nonce       string `json:"nonce"`
	AccessToken string `json:"access_token"`
}

// idTokenGrant signs in with a native app's ID token of a provider.
func (a *API) idTokenGrant(r *http.Request, t auth.Tenant, b idTokenBody) (*auth.Session, error) {
	if b.Provider == "" || b.IDToken == "" {
		return nil, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "provider and id_token are required")
	}
	if a.upstream == nil {
		return nil, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "Unsupported provider")
	}
	p, err := a.auth.GetProvider(r.Context(), t, b.Provider)
	if err != nil || !p.Enabled {
		return nil, engine.NewError(engine.KindInvalid, auth.CodeValidationFailed, "Custom OIDC provider \""+b.Provider+"\" not allowed")
	}
	id, err := a.upstream.VerifyIDToken(r.Context(), p, b.IDToken, b.Nonce)
	if err != nil {
		return nil, err
	}
	v, err := a.auth.ExternalSignIn(r.Context(), t, api.ClientOf(r), id, auth.ExternalOptions{})
	if err != nil {
		return nil, err
	}
	return v.Session, nil
}

package gotrue

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
)

// signupBody is the body of POST /signup.
type signupBody struct {
	Email               string         `json:"email"`
	Password            string         `json:"password"`
	Data                map[string]any `json:"data"`
	CodeChallenge       string         `json:"code_challenge"`
	CodeChallengeMethod string         `json:"code_challenge_method"`
}

func (a *API) handleSignup(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b signupBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	sess, u, err := a.auth.Signup(r.Context(), t, api.ClientOf(r), auth.SignupRequest{Email: b.Email, Password: b.Password, Data: b.Data,
		RedirectTo: r.URL.Query().Get("redirect_to"), CodeChallenge: b.CodeChallenge, CodeChallengeMethod: b.CodeChallengeMethod})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if sess != nil {
		noStore(w)
		api.WriteJSON(w, http.StatusOK, sessionView(sess))
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

// noStore marks a response that carries a token or a secret: no cache may
// keep it (RFC 6749 §5.1).
func noStore(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
}

// tokenBody is the body of POST /token, for the password, refresh and
// pkce grants.
type tokenBody struct {
	Email        string `json:"email"`
	Phone        string `json:"phone"`
	Password     string `json:"password"`
	RefreshToken string `json:"refresh_token"`
	AuthCode     string `json:"auth_code"`
	CodeVerifier string `json:"code_verifier"`
	idTokenBody
}

func (a *API) handleToken(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	grant := r.URL.Query().Get("grant_type")
	if grant != "password" && grant != "refresh_token" && grant != "pkce" && grant != "id_token" {
		a.writeError(w, r, engine.NewError(engine.KindInvalid, auth.CodeUnsupportedGrant, "unsupported_grant_type"))
		return
	}
	var b tokenBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	var sess *auth.Session
	var err error
	switch grant {
	case "password":
		sess, err = a.auth.Login(r.Context(), t, api.ClientOf(r), auth.PasswordRequest{Email: b.Email, Phone: b.Phone, Password: b.Password})
	case "pkce":
		sess, err = a.auth.ExchangePKCE(r.Context(), t, api.ClientOf(r), b.AuthCode, b.CodeVerifier)
	case "id_token":
		sess, err = a.idTokenGrant(r, t, b.idTokenBody)
	default:
		sess, err = a.auth.Refresh(r.Context(), t, api.ClientOf(r), b.RefreshToken)
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	v := sessionView(sess)
	if grant == "password" {
		v.WeakPassword = json.RawMessage("null")
	}
	noStore(w)
	api.WriteJSON(w, http.StatusOK, v)
}

func (a *API) handleGetUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.Authenticate(r.Context(), t, api.Bearer(r), true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.auth.TouchLastSeen(t, p.User.ID)
	b := p.Rendered.Load()
	if b == nil {
		if b, err = api.EncodeJSON(userView(p.User)); err != nil {
			a.writeError(w, r, err) // a 500 unexpected_failure
			return
		}
		p.Rendered.Store(b)
	}
	api.WriteEncodedJSON(w, http.StatusOK, b)
}

// updateUserBody is the body of PUT /user.
type updateUserBody struct {
	Email    *string        `json:"email"`
	Password *string        `json:"password"`
	Data     map[string]any `json:"data"`
	Nonce    string         `json:"nonce"`
	// CodeChallenge, CodeChallengeMethod: an email change's PKCE.
	CodeChallenge       string `json:"code_challenge"`
	CodeChallengeMethod string `json:"code_challenge_method"`
}

func (a *API) handleUpdateUser(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.Authenticate(r.Context(), t, api.Bearer(r), true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var b updateUserBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.auth.UpdateUser(r.Context(), t, api.ClientOf(r), p, auth.UpdateUserRequest{Email: b.Email, Password: b.Password, Data: b.Data,
		Nonce: b.Nonce, RedirectTo: r.URL.Query().Get("redirect_to"), CodeChallenge: b.CodeChallenge, CodeChallengeMethod: b.CodeChallengeMethod})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

func (a *API) handleLogout(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.Authenticate(r.Context(), t, api.Bearer(r), false)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.auth.Logout(r.Context(), t, api.ClientOf(r), p, r.URL.Query().Get("scope")); err != nil {
		a.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// externalProviders are the providers GoTrue's /settings lists.
var externalProviders = []string{"apple", "azure", "bitbucket", "discord", "facebook", "figma", "fly", "github",
	"gitlab", "google", "keycloak", "kakao", "linkedin", "linkedin_oidc", "notion", "spotify", "slack",
	"slack_oidc", "workos", "twitch", "twitter", "zoom"}

func (a *API) handleGetSettings(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	st, err := a.auth.Settings(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	external := map[string]bool{"email": true, "phone": false, "anonymous_users": st.AnonymousUsers}
	for _, p := range externalProviders {
		external[p] = false
	}
	// The tenant's own providers, enabled or not, by the id /authorize takes.
	ps, err := a.auth.ListProviders(r.Context(), t)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	for _, p := range ps {
		external[p.ID] = p.Enabled
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{
		"external":            external,
		"disable_signup":      st.DisableSignup,
		"mailer_autoconfirm":  st.MailerAutoconfirm,
		"phone_autoconfirm":   false,
		"sms_provider":        "",
		"saml_enabled":        false,
		"password_min_length": st.PasswordMinLength,
	})
}

func (a *API) handleJWKS(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	ks, err := a.auth.Keys().Get(r.Context(), t.ID, t.Shard)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(token.JWKSMaxAge/time.Second)))
	api.WriteJSON(w, http.StatusOK, ks.JWKS())
}

package gotrue

import (
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// registerMailRoutes adds GoTrue's email flows: recovery, magic links and
// codes, resend, the links' /verify, invitations, generate_link and
// reauthentication.
func (a *API) registerMailRoutes() {
	a.srv.Handle(http.MethodPost, "/t/:tenant/recover", a.withTenant(a.handleRecover))
	a.srv.Handle(http.MethodPost, "/t/:tenant/otp", a.withTenant(a.handleOTP))
	a.srv.Handle(http.MethodPost, "/t/:tenant/magiclink", a.withTenant(a.handleMagicLink))
	a.srv.Handle(http.MethodPost, "/t/:tenant/resend", a.withTenant(a.handleResend))
	a.srv.Handle(http.MethodGet, "/t/:tenant/verify", a.withTenant(a.handleVerifyLink))
	a.srv.Handle(http.MethodPost, "/t/:tenant/verify", a.withTenant(a.handleVerify))
	a.srv.Handle(http.MethodGet, "/t/:tenant/reauthenticate", a.withTenant(a.handleReauthenticate))
	a.srv.Handle(http.MethodPost, "/t/:tenant/invite", a.withTenant(a.admin(a.handleInvite)))
	a.srv.Handle(http.MethodPost, "/t/:tenant/admin/generate_link", a.withTenant(a.admin(a.handleGenerateLink)))
}

// mailBody is the body of /recover, /otp, /magiclink and /resend, as
// auth-js sends it (gotrue_meta_security, a captcha token, is ignored).
type mailBody struct {
	Email               string         `json:"email"`
	Phone               string         `json:"phone"`
	Type                string         `json:"type"`
	Data                map[string]any `json:"data"`
	CreateUser          *bool          `json:"create_user"`
	CodeChallenge       string         `json:"code_challenge"`
	CodeChallengeMethod string         `json:"code_challenge_method"`
	RedirectTo          string         `json:"redirect_to"`
}

// redirectTo is a request's redirect_to: the query's (auth-js), else the
// body's.
func redirectTo(r *http.Request, body string) string {
	if q := r.URL.Query().Get("redirect_to"); q != "" {
		return q
	}
	return body
}

func (b mailBody) request(r *http.Request) auth.MailRequest {
	create := b.CreateUser == nil || *b.CreateUser
	return auth.MailRequest{Email: b.Email, RedirectTo: redirectTo(r, b.RedirectTo), CodeChallenge: b.CodeChallenge,
		CodeChallengeMethod: b.CodeChallengeMethod, CreateUser: create, Data: b.Data}
}

// decodeMail decodes a mail request's body; a phone is refused (no SMS).
func (a *API) decodeMail(w http.ResponseWriter, r *http.Request) (mailBody, bool) {
	var b mailBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return b, false
	}
	if b.Email == "" && b.Phone != "" {
		a.writeError(w, r, engine.NewError(engine.KindInvalid, "phone_provider_disabled", "Phone logins are disabled"))
		return b, false
	}
	return b, true
}

// answerEmpty answers a mail request: {} whatever the address.
func (a *API) answerEmpty(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

func (a *API) handleRecover(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if b, ok := a.decodeMail(w, r); ok {
		a.answerEmpty(w, r, a.auth.Recover(r.Context(), t, api.ClientOf(r), b.request(r)))
	}
}

func (a *API) handleOTP(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if b, ok := a.decodeMail(w, r); ok {
		a.answerEmpty(w, r, a.auth.SendOTP(r.Context(), t, api.ClientOf(r), b.request(r)))
	}
}

// handleMagicLink is GoTrue's older /magiclink: /otp that makes the user.
func (a *API) handleMagicLink(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	if b, ok := a.decodeMail(w, r); ok {
		req := b.request(r)
		req.CreateUser = true
		a.answerEmpty(w, r, a.auth.SendOTP(r.Context(), t, api.ClientOf(r), req))
	}
}

func (a *API) handleResend(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b mailBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	a.answerEmpty(w, r, a.auth.Resend(r.Context(), t, api.ClientOf(r), b.Type, b.request(r)))
}

func (a *API) handleReauthenticate(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	p, err := a.auth.Authenticate(r.Context(), t, api.Bearer(r), true)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.answerEmpty(w, r, a.auth.Reauthenticate(r.Context(), t, api.ClientOf(r), p))
}

// verifyBody is the body of POST /verify (auth-js verifyOtp).
type verifyBody struct {
	Type       string `json:"type"`
	Token      string `json:"token"`
	TokenHash  string `json:"token_hash"`
	Email      string `json:"email"`
	Phone      string `json:"phone"`
	RedirectTo string `json:"redirect_to"`
}

func (a *API) handleVerify(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b verifyBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	if b.Email == "" && b.Phone != "" {
		a.writeError(w, r, engine.NewError(engine.KindInvalid, "phone_provider_disabled", "Phone verification is not supported"))
		return
	}
	req := auth.VerifyRequest{Type: b.Type, TokenHash: b.TokenHash, Email: b.Email, Token: b.Token, RedirectTo: redirectTo(r, b.RedirectTo)}
	if req.TokenHash == "" && req.Email == "" && looksLikeTokenHash(b.Token) {
		req.TokenHash, req.Token = b.Token, "" // an older client sends the link's token as token
	}
	v, err := a.auth.Verify(r.Context(), t, api.ClientOf(r), req)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if v.Session == nil {
		api.WriteJSON(w, http.StatusOK, map[string]any{"msg": v.Message, "code": http.StatusOK})
		return
	}
	noStore(w)
	api.WriteJSON(w, http.StatusOK, sessionView(v.Session))
}

// looksLikeTokenHash: a link's token (hex SHA-224, perhaps pkce_).
func looksLikeTokenHash(s string) bool {
	s = strings.TrimPrefix(s, "pkce_")
	return len(s) == 56 && strings.Trim(s, "0123456789abcdef") == ""
}

// handleVerifyLink follows a mailed link: 303 to redirect_to when the
// tenant allows it, else to its site URL, with the session in the
// fragment (#access_token=…&sb=), a PKCE link's ?code=, or the error
// (#error=access_denied&error_code=otp_expired…), as GoTrue does. A
// tenant with no site URL and no allowed redirect gets a page instead.
func (a *API) handleVerifyLink(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	q := r.URL.Query()
	token := q.Get("token")
	pkce := strings.HasPrefix(token, "pkce_")
	v, err := a.auth.Verify(r.Context(), t, api.ClientOf(r), auth.VerifyRequest{Type: q.Get("type"), TokenHash: token,
		RedirectTo: q.Get("redirect_to"), Link: true})
	if err != nil {
		to := ""
		if st, serr := a.auth.CachedSettings(r.Context(), t); serr == nil {
			to = st.RedirectFor(q.Get("redirect_to"))
		}
		a.browserError(w, r, t, to, pkce, err, http.StatusSeeOther, "This link is invalid or has expired")
		return
	}
	if v.RedirectTo == "" {
		noStore(w)
		linkPage(w, http.StatusOK, "Done", "You can close this window and go back to the application.")
		return
	}
	switch {
	case v.AuthCode != "":
		http.Redirect(w, r, withQuery(v.RedirectTo, url.Values{"code": {v.AuthCode}}), http.StatusSeeOther)
	case v.Session == nil:
		http.Redirect(w, r, withFragment(v.RedirectTo, url.Values{"message": {v.Message}, "sb": {""}}), http.StatusSeeOther)
	default:
		noStore(w)
		http.Redirect(w, r, withFragment(v.RedirectTo, sessionFragment(v.Session, v.Type)), http.StatusSeeOther)
	}
}

// withQuery adds vals to u's query.
func withQuery(u string, vals url.Values) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := p.Query()
	for k, v := range vals {
		q[k] = v
	}
	p.RawQuery = q.Encode()
	return p.String()
}

// withFragment replaces u's fragment with vals.
func withFragment(u string, vals url.Values) string {
	base, _, _ := strings.Cut(u, "#")
	return base + "#" + vals.Encode()
}

var linkPageTmpl = template.Must(template.New("").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ .Title }}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem">
<h1>{{ .Title }}</h1><p>{{ .Text }}</p></body></html>
`))

// linkPage answers a followed link that has nowhere to go.
func linkPage(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	w.WriteHeader(status)
	_ = linkPageTmpl.Execute(w, struct{ Title, Text string }{title, text})
}

// inviteBody is the body of POST /invite.
type inviteBody struct {
	Email      string         `json:"email"`
	Data       map[string]any `json:"data"`
	RedirectTo string         `json:"redirect_to"`
}

func (a *API) handleInvite(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b inviteBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	u, err := a.auth.Invite(r.Context(), t, clientOf(r), auth.InviteRequest{Email: b.Email, Data: b.Data, RedirectTo: redirectTo(r, b.RedirectTo)})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, userView(u))
}

// generateLinkBody is the body of POST /admin/generate_link.
type generateLinkBody struct {
	Type       string         `json:"type"`
	Email      string         `json:"email"`
	NewEmail   string         `json:"new_email"`
	Password   string         `json:"password"`
	Data       map[string]any `json:"data"`
	RedirectTo string         `json:"redirect_to"`
}

// generatedLinkJSON is GoTrue's answer: the user's fields and the link's.
type generatedLinkJSON struct {
	userJSON
	ActionLink       string `json:"action_link"`
	EmailOTP         string `json:"email_otp"`
	HashedToken      string `json:"hashed_token"`
	VerificationType string `json:"verification_type"`
	RedirectTo       string `json:"redirect_to"`
}

func (a *API) handleGenerateLink(w http.ResponseWriter, r *http.Request, t auth.Tenant) {
	var b generateLinkBody
	if err := api.DecodeJSON(r, &b); err != nil {
		a.writeError(w, r, err)
		return
	}
	l, err := a.auth.GenerateLink(r.Context(), t, clientOf(r), auth.GenerateLinkRequest{Type: b.Type, Email: b.Email, NewEmail: b.NewEmail,
		Password: b.Password, Data: b.Data, RedirectTo: redirectTo(r, b.RedirectTo)})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	noStore(w)
	api.WriteJSON(w, http.StatusOK, generatedLinkJSON{userJSON: userView(l.User), ActionLink: l.ActionLink, EmailOTP: l.EmailOTP,
		HashedToken: l.HashedToken, VerificationType: l.VerificationType, RedirectTo: l.RedirectTo})
}

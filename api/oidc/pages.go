package oidc

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// Cookies of the hosted pages, scoped to the tenant's path.
const (
	sessionCookie = "keyshard_session"
	csrfCookie    = "keyshard_csrf"
)

// page is what a hosted page template is given.
type page struct {
	Title     string
	Nonce     string // the CSP nonce of the page's style
	Brand     brand
	CSRF      string
	Action    string
	Error     string // an error about the whole form
	FieldErr  string // an error about one field (FieldName)
	FieldName string
	Hidden    map[string]string
	Email     string
	UserEmail string // the signed-in user
	Client    string
	Scopes    []string
	UserCode  string
	Message   string
	Status    int
}

type brand struct {
	Name, Logo     string
	Color, OnColor template.CSS // #rrggbb, validated by the settings
}

func (p *Provider) brandOf(rt *request) brand {
	color := rt.st.BrandingColor
	if color == "" {
		color = "#1d4ed8"
	}
	b := brand{Name: rt.st.BrandingName, Logo: rt.st.BrandingLogoURL, Color: template.CSS(color), OnColor: template.CSS(onColor(color))}
	if b.Name == "" {
		b.Name = rt.ts.Tenant.Name
	}
	return b
}

// onColor is the text colour that keeps WCAG contrast on a background of
// c (#rrggbb): black or white, whichever contrasts more.
func onColor(c string) string {
	lin := func(h string) float64 {
		v, _ := strconv.ParseUint(h, 16, 8)
		x := float64(v) / 255
		if x <= 0.03928 {
			return x / 12.92
		}
		return math.Pow((x+0.055)/1.055, 2.4)
	}
	l := 0.2126*lin(c[1:3]) + 0.7152*lin(c[3:5]) + 0.0722*lin(c[5:7])
	if (l+0.05)/0.05 > 1.05/(l+0.05) {
		return "#000000"
	}
	return "#ffffff"
}

var scopeText = map[string]string{
	auth.ScopeOpenID:        "Know who you are (your account ID)",
	auth.ScopeEmail:         "See your email address",
	auth.ScopeProfile:       "See your name and profile picture",
	auth.ScopeOfflineAccess: "Stay connected when you are not using it",
}

var pages = template.Must(template.New("layout").Funcs(template.FuncMap{
	"scope": func(s string) string {
		if t, ok := scopeText[s]; ok {
			return t
		}
		return s
	},
}).Parse(layoutHTML))

func (p *Provider) render(w http.ResponseWriter, r *http.Request, name string, pg page) {
	rt := reqOf(r.Context())
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	pg.Nonce = base64.RawStdEncoding.EncodeToString(nonce[:])
	pg.Brand = p.brandOf(rt)
	if pg.CSRF == "" {
		pg.CSRF = p.csrfToken(w, r)
	}
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, pg); err != nil {
		p.srv.Logger.Error("hosted page failed to render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+pg.Nonce+"'; img-src https: data:; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	status := pg.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage renders a page that says what went wrong, with the status of
// the one mapping.
func (p *Provider) errorPage(w http.ResponseWriter, r *http.Request, err error) {
	pr := p.srv.Problem(w, r, err)
	p.render(w, r, "error", page{Title: "Something went wrong", Message: pr.Message, Status: pr.Status})
}

func (p *Provider) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	rt := reqOf(r.Context())
	return &http.Cookie{Name: name, Value: value, Path: rt.base, MaxAge: maxAge, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(rt.t.Issuer, "https://")}
}

// csrfToken returns the form token bound to the browser's CSRF cookie,
// setting the cookie first when the browser has none: HMAC(server key,
// tenant, cookie), so a page of another site can neither read nor make it.
func (p *Provider) csrfToken(w http.ResponseWriter, r *http.Request) string {
	v := ""
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		v = c.Value
	} else {
		var b [32]byte
		_, _ = rand.Read(b[:])
		v = base64.RawURLEncoding.EncodeToString(b[:])
		http.SetCookie(w, p.cookie(r, csrfCookie, v, 0))
		r.AddCookie(&http.Cookie{Name: csrfCookie, Value: v})
	}
	return p.csrfFor(r, v)
}

func (p *Provider) csrfFor(r *http.Request, cookie string) string {
	m := hmac.New(sha256.New, p.csrfKey)
	m.Write([]byte(reqOf(r.Context()).t.ID))
	m.Write([]byte{0})
	m.Write([]byte(cookie))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// csrfOK checks a POSTed form's token against the browser's cookie.
func (p *Provider) csrfOK(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return false
	}
	want := p.csrfFor(r, c.Value)
	return subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(want)) == 1
}

func (p *Provider) refuseCSRF(w http.ResponseWriter, r *http.Request) {
	p.errorPage(w, r, engine.NewError(engine.KindForbidden, "csrf_failed",
		"This form expired or did not come from this site. Go back, reload the page and try again."))
}

// browser returns the signed-in browser session, or nil.
func (p *Provider) browser(r *http.Request) (*auth.BrowserSession, error) {
	rt := reqOf(r.Context())
	if rt.browser != nil {
		return rt.browser, nil
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, nil
	}
	bs, err := p.auth.BrowserSession(r.Context(), rt.t, c.Value)
	rt.browser = bs
	return bs, err
}

// postForm parses a hosted page's form, bounded.
func postForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	return r.ParseForm()
}

// loginRequired says whether the request must sign in again: prompt=login,
// or a max_age older than the browser's sign-in.
func loginRequired(ar *auth.OAuthRequest, bs *auth.BrowserSession) bool {
	if bs == nil {
		return true
	}
	for _, pr := range ar.Prompt {
		if pr == oidc.PromptLogin {
			return true
		}
	}
	return ar.MaxAge != nil && time.Since(bs.AuthTime) > time.Duration(*ar.MaxAge)*time.Second
}

func hasPrompt(ar *auth.OAuthRequest, want string) bool {
	for _, pr := range ar.Prompt {
		if pr == want {
			return true
		}
	}
	return false
}

// handleLogin is the login page of an authorization request (?id=) or of
// the device page (?device=).
func (p *Provider) handleLogin(w http.ResponseWriter, r *http.Request) {
	rt := reqOf(r.Context())
	if r.Method == http.MethodPost {
		if err := postForm(w, r); err != nil {
			p.errorPage(w, r, engine.NewError(engine.KindInvalid, "validation_failed", "The form could not be read"))
			return
		}
	}
	id, device := r.FormValue("id"), r.FormValue("device")
	var ar *auth.OAuthRequest
	hidden := map[string]string{}
	if device != "" || id == "" {
		hidden["device"] = auth.NormalizeUserCode(device)
	} else {
		var err error
		if ar, err = p.auth.OAuthRequest(r.Context(), rt.t, id); err != nil {
			p.errorPage(w, r, err)
			return
		}
		hidden["id"] = ar.ID
	}
	title := "Sign in"
	if rt.st.BrandingName != "" || rt.ts.Tenant.Name != "" {
		title = "Sign in to " + p.brandOf(rt).Name
	}
	if r.Method != http.MethodPost {
		bs, err := p.browser(r)
		if err != nil {
			p.errorPage(w, r, err)
			return
		}
		if ar != nil && !loginRequired(ar, bs) {
			p.afterLogin(w, r, ar, bs)
			return
		}
		if ar != nil && hasPrompt(ar, oidc.PromptNone) {
			op.AuthRequestError(w, r, authRequest{OAuthRequest: ar}, oidc.ErrLoginRequired(), p.op)
			return
		}
		if ar == nil && bs != nil {
			http.Redirect(w, r, rt.base+"/oauth/device?user_code="+url.QueryEscape(hidden["device"]), http.StatusSeeOther)
			return
		}
		email := ""
		if ar != nil {
			email = ar.LoginHint
		}
		p.render(w, r, "login", page{Title: title, Action: rt.base + "/oauth/login", Hidden: hidden, Email: email})
		return
	}
	if !p.csrfOK(r) {
		p.refuseCSRF(w, r)
		return
	}
	email := r.PostFormValue("email")
	cookie, bs, err := p.auth.SignInBrowser(r.Context(), rt.t, rt.client, auth.PasswordRequest{Email: email, Password: r.PostFormValue("password")})
	if err != nil {
		pr := p.srv.Problem(w, r, err)
		msg := pr.Message
		switch {
		case pr.Code == auth.CodeInvalidCredentials:
			msg = "The email or password is not right."
		case pr.RetryAfter > 0:
			msg = fmt.Sprintf("Too many attempts: try again in %d seconds.", int((pr.RetryAfter+time.Second-1)/time.Second))
		}
		p.render(w, r, "login", page{Title: title, Action: rt.base + "/oauth/login", Hidden: hidden, Email: email,
			Error: msg, Status: pr.Status})
		return
	}
	http.SetCookie(w, p.cookie(r, sessionCookie, cookie, int(auth.BrowserSessionTTL/time.Second)))
	rt.browser = bs
	if ar == nil {
		http.Redirect(w, r, rt.base+"/oauth/device?user_code="+url.QueryEscape(hidden["device"]), http.StatusSeeOther)
		return
	}
	p.afterLogin(w, r, ar, bs)
}

// afterLogin goes on with a signed-in browser: straight back to the
// client when it needs no consent (first-party, or consented before), else
// to the consent page.
func (p *Provider) afterLogin(w http.ResponseWriter, r *http.Request, ar *auth.OAuthRequest, bs *auth.BrowserSession) {
	rt := reqOf(r.Context())
	c, err := p.auth.OAuthClient(r.Context(), rt.t, ar.ClientID)
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	if !hasPrompt(ar, oidc.PromptConsent) {
		consented := c.SkipConsent
		if !consented {
			have, err := p.auth.OAuthConsent(r.Context(), rt.t, bs.User.ID, c.ID)
			if err != nil {
				p.errorPage(w, r, err)
				return
			}
			consented = covers(have, ar.Scopes)
		}
		if consented {
			p.complete(w, r, ar, bs)
			return
		}
	}
	if hasPrompt(ar, oidc.PromptNone) {
		op.AuthRequestError(w, r, authRequest{OAuthRequest: ar}, &oidc.Error{ErrorType: "consent_required", Description: "the user has not consented to this client"}, p.op)
		return
	}
	http.Redirect(w, r, rt.base+"/oauth/consent?id="+ar.ID, http.StatusSeeOther)
}

func covers(have, want []string) bool {
	for _, s := range want {
		found := false
		for _, h := range have {
			found = found || h == s
		}
		if !found {
			return false
		}
	}
	return true
}

// complete records the user on the request and answers the browser that
// did it with the redirect to the client, code included: op's
// authorization response, issued here and not behind a callback URL that
// anyone knowing the request id could call first.
func (p *Provider) complete(w http.ResponseWriter, r *http.Request, ar *auth.OAuthRequest, bs *auth.BrowserSession) {
	rt := reqOf(r.Context())
	if err := p.auth.CompleteOAuthRequest(r.Context(), rt.t, ar.ID, bs.User.ID, bs.AuthTime, bs.AMR); err != nil {
		p.errorPage(w, r, err)
		return
	}
	done, err := p.auth.OAuthRequest(r.Context(), rt.t, ar.ID)
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	op.AuthResponse(authRequest{OAuthRequest: done}, p.op, w, r)
}

func (p *Provider) handleConsent(w http.ResponseWriter, r *http.Request) {
	rt := reqOf(r.Context())
	if r.Method == http.MethodPost {
		if err := postForm(w, r); err != nil {
			p.errorPage(w, r, engine.NewError(engine.KindInvalid, "validation_failed", "The form could not be read"))
			return
		}
	}
	ar, err := p.auth.OAuthRequest(r.Context(), rt.t, r.FormValue("id"))
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	bs, err := p.browser(r)
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	if bs == nil {
		http.Redirect(w, r, rt.base+"/oauth/login?id="+ar.ID, http.StatusSeeOther)
		return
	}
	c, err := p.auth.OAuthClient(r.Context(), rt.t, ar.ClientID)
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	if r.Method != http.MethodPost {
		p.render(w, r, "consent", page{Title: "Allow " + c.Name + "?", Action: rt.base + "/oauth/consent",
			Hidden: map[string]string{"id": ar.ID}, Client: c.Name, Scopes: ar.Scopes, UserEmail: bs.User.Email})
		return
	}
	if !p.csrfOK(r) {
		p.refuseCSRF(w, r)
		return
	}
	if r.PostFormValue("decision") != "allow" {
		op.AuthRequestError(w, r, authRequest{OAuthRequest: ar}, oidc.ErrAccessDenied().WithDescription("the user denied the request"), p.op)
		return
	}
	if err := p.auth.GrantOAuthConsent(r.Context(), rt.t, rt.client, bs.User.ID, c.ID, ar.Scopes); err != nil {
		p.errorPage(w, r, err)
		return
	}
	p.complete(w, r, ar, bs)
}

// handleDevicePage is RFC 8628's verification page: enter the code shown
// on the device, see which client asks for what, allow or deny.
func (p *Provider) handleDevicePage(w http.ResponseWriter, r *http.Request) {
	rt := reqOf(r.Context())
	if r.Method == http.MethodPost {
		if err := postForm(w, r); err != nil {
			p.errorPage(w, r, engine.NewError(engine.KindInvalid, "validation_failed", "The form could not be read"))
			return
		}
	}
	typed := r.FormValue("user_code")
	bs, err := p.browser(r)
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	if bs == nil {
		http.Redirect(w, r, rt.base+"/oauth/login?device="+url.QueryEscape(auth.NormalizeUserCode(typed)), http.StatusSeeOther)
		return
	}
	action := rt.base + "/oauth/device"
	entry := page{Title: "Connect a device", Action: action, UserCode: typed, UserEmail: bs.User.Email}
	if r.Method != http.MethodPost {
		p.render(w, r, "device", entry)
		return
	}
	if !p.csrfOK(r) {
		p.refuseCSRF(w, r)
		return
	}
	key := rt.t.ID + "|" + rt.client.IP
	if wait := p.guesses.wait(key); wait > 0 {
		entry.Status = http.StatusTooManyRequests
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		entry.FieldErr, entry.FieldName = fmt.Sprintf("Too many wrong codes: try again in %d seconds.", int(wait/time.Second)+1), "user_code"
		p.render(w, r, "device", entry)
		return
	}
	d, err := p.auth.DeviceCodeByUserCode(r.Context(), rt.t, typed)
	if err != nil {
		var ae *engine.Error
		if errors.As(err, &ae) && ae.Kind == engine.KindNotFound {
			p.guesses.fail(key)
			entry.Status = http.StatusBadRequest
			entry.FieldErr, entry.FieldName = ae.Message, "user_code"
			p.render(w, r, "device", entry)
			return
		}
		p.errorPage(w, r, err)
		return
	}
	c, err := p.auth.OAuthClient(r.Context(), rt.t, d.ClientID)
	if err != nil {
		p.errorPage(w, r, err)
		return
	}
	switch r.PostFormValue("decision") {
	case "allow", "deny":
		allow := r.PostFormValue("decision") == "allow"
		if err := p.auth.DecideDeviceCode(r.Context(), rt.t, rt.client, d.UserCode, bs, allow); err != nil {
			p.errorPage(w, r, err)
			return
		}
		msg := "Your device is connected. You can close this page and go back to it."
		if !allow {
			msg = "You denied the request. Your device will not be connected."
		}
		p.render(w, r, "done", page{Title: "Done", Message: msg})
	default:
		p.render(w, r, "device_confirm", page{Title: "Allow " + c.Name + "?", Action: action, Client: c.Name,
			Scopes: d.Scopes, UserCode: d.UserCode, UserEmail: bs.User.Email})
	}
}

// endSessionConfirmed: RP-initiated logout asks the user first (GET shows
// the page); the confirmed POST, with its CSRF token, goes on to op, which
// checks the id_token_hint and post_logout_redirect_uri and calls
// TerminateSessionFromRequest.
func (p *Provider) endSessionConfirmed(w http.ResponseWriter, r *http.Request) bool {
	if err := postForm(w, r); err != nil {
		p.errorPage(w, r, engine.NewError(engine.KindInvalid, "validation_failed", "The form could not be read"))
		return false
	}
	if r.Method != http.MethodPost || r.PostFormValue("csrf") == "" {
		hidden := map[string]string{}
		for _, k := range []string{"id_token_hint", "client_id", "post_logout_redirect_uri", "state", "logout_hint", "ui_locales"} {
			if v := r.Form.Get(k); v != "" {
				hidden[k] = v
			}
		}
		user := ""
		if bs, err := p.browser(r); err == nil && bs != nil {
			user = bs.User.Email
		}
		p.render(w, r, "logout", page{Title: "Sign out?", Action: reqOf(r.Context()).base + "/oauth/end_session", Hidden: hidden, UserEmail: user})
		return false
	}
	if !p.csrfOK(r) {
		p.refuseCSRF(w, r)
		return false
	}
	if _, err := p.browser(r); err != nil {
		p.errorPage(w, r, err)
		return false
	}
	// The cookie goes with the session op is about to end.
	http.SetCookie(w, p.cookie(r, sessionCookie, "", -1))
	return true
}

func (p *Provider) handleLoggedOut(w http.ResponseWriter, r *http.Request) {
	p.render(w, r, "done", page{Title: "Signed out", Message: "You are signed out."})
}

// errorPage (the type) turns op's plain-text refusals of an authorization
// request into an HTML page; op writes them when it must not redirect.
type errorPage struct {
	http.ResponseWriter
	p         *Provider
	r         *http.Request
	intercept bool
	status    int
	body      bytes.Buffer
}

func (e *errorPage) WriteHeader(code int) {
	if code >= 400 && strings.HasPrefix(e.Header().Get("Content-Type"), "text/plain") {
		e.intercept, e.status = true, code
		return
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *errorPage) Write(b []byte) (int, error) {
	if e.intercept {
		return e.body.Write(b)
	}
	return e.ResponseWriter.Write(b)
}

func (e *errorPage) finish() {
	if !e.intercept {
		return
	}
	h := e.ResponseWriter.Header()
	h.Del("Content-Type")
	h.Del("X-Content-Type-Options")
	msg := strings.TrimSpace(e.body.String())
	if msg == "" {
		msg = "The application sent an authorization request that cannot be served."
	}
	e.p.render(e.ResponseWriter, e.r, "error", page{Title: "This request cannot be completed", Message: msg, Status: e.status})
}

// guessLimiter counts wrong user codes per tenant and address in fixed
// windows: past the limit, the device page refuses until the window ends.
type guessLimiter struct {
	mu     sync.Mutex
	limit  int
	window time.Duration
	seen   *lru.Cache[string, *guesses]
}

type guesses struct {
	n     int
	until time.Time
}

func newGuessLimiter(limit int, window time.Duration) *guessLimiter {
	c, _ := lru.New[string, *guesses](100_000)
	return &guessLimiter{limit: limit, window: window, seen: c}
}

func (g *guessLimiter) wait(key string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.seen.Get(key)
	if !ok || time.Now().After(e.until) || e.n < g.limit {
		return 0
	}
	return time.Until(e.until)
}

func (g *guessLimiter) fail(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.seen.Get(key)
	if !ok || time.Now().After(e.until) {
		e = &guesses{until: time.Now().Add(g.window)}
		g.seen.Add(key, e)
	}
	e.n++
}

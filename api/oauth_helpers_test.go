package api_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// oauthClient registers an OAuth client through the admin API and returns
// its id and secret.
func (e *authEnv) oauthClient(base, key string, body map[string]any) (id, secret string) {
	e.tb.Helper()
	r := e.call("POST", base+"/admin/oauth/clients", key, body)
	if r.Status != 201 {
		e.tb.Fatalf("create client: %d %s", r.Status, r.Raw)
	}
	return r.str("client_id"), r.str("client_secret")
}

// serviceKey issues the tenant's service key.
func (e *authEnv) serviceKey(slug string) string {
	e.tb.Helper()
	r := e.call("POST", e.URL+"/admin/tenants/"+slug+"/service-key", "admin-secret", nil)
	if r.Status != 200 && r.Status != 201 {
		e.tb.Fatalf("service key: %d %s", r.Status, r.Raw)
	}
	return r.str("service_key")
}

// browser is a cookie-keeping HTTP client that stops at every redirect,
// so a test sees each step a browser would take.
type browser struct {
	tb     testing.TB
	client *http.Client
}

func newBrowser(tb testing.TB) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{tb: tb, client: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type pageResp struct {
	Status   int
	Location string
	Body     string
	Header   http.Header
}

func (b *browser) do(method, u string, form url.Values) pageResp {
	b.tb.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.tb.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	loc := resp.Header.Get("Location")
	if loc != "" {
		l, err := req.URL.Parse(loc)
		if err == nil {
			loc = l.String()
		}
	}
	return pageResp{Status: resp.StatusCode, Location: loc, Body: string(raw), Header: resp.Header}
}

// until follows redirects from u while they stay on the server (prefix),
// and returns the first answer that is not such a redirect.
func (b *browser) until(prefix string, r pageResp) pageResp {
	b.tb.Helper()
	for i := 0; i < 10 && r.Location != "" && strings.HasPrefix(r.Location, prefix); i++ {
		r = b.do("GET", r.Location, nil)
	}
	return r
}

var (
	hiddenRe = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	actionRe = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
)

// submit posts a page's form with its hidden fields and the given ones.
func (b *browser) submit(base string, pg pageResp, fields map[string]string) pageResp {
	b.tb.Helper()
	m := actionRe.FindStringSubmatch(pg.Body)
	if m == nil {
		b.tb.Fatalf("no form on the page (%d): %s", pg.Status, pg.Body)
	}
	form := url.Values{}
	for _, h := range hiddenRe.FindAllStringSubmatch(pg.Body, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	for k, v := range fields {
		form.Set(k, v)
	}
	u, _ := url.Parse(base)
	action, _ := u.Parse(html.UnescapeString(m[1]))
	return b.do("POST", action.String(), form)
}

// oauthSetup is a tenant with a user and a confidential client.
type oauthSetup struct {
	e        *authEnv
	base     string
	key      string
	provider *oidc.Provider
	cfg      oauth2.Config
	email    string
	password string
}

const testRedirect = "http://127.0.0.1:1/callback"

func newOAuthSetup(t *testing.T, e *authEnv, slug string, client map[string]any) *oauthSetup {
	t.Helper()
	base := e.tenant(slug)
	s := &oauthSetup{e: e, base: base, key: e.serviceKey(slug), email: "ada@" + slug + ".test", password: "correct horse battery"}
	if r := e.signup(base, s.email, s.password); r.Status != 200 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	if client == nil {
		client = map[string]any{"client_name": "Notes", "redirect_uris": []string{testRedirect},
			"grant_types": []string{"authorization_code", "refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"}}
	}
	id, secret := e.oauthClient(base, s.key, client)
	p, err := oidc.NewProvider(context.Background(), base)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	s.provider = p
	s.cfg = oauth2.Config{ClientID: id, ClientSecret: secret, Endpoint: p.Endpoint(), RedirectURL: testRedirect,
		Scopes: []string{oidc.ScopeOpenID, "email", "profile", oidc.ScopeOfflineAccess}}
	return s
}

// authorize runs the browser part of the code flow: authorize, sign in,
// consent; it returns the redirect to the client.
func (s *oauthSetup) authorize(t *testing.T, b *browser, opts ...oauth2.AuthCodeOption) (*url.URL, pageResp) {
	t.Helper()
	authURL := s.cfg.AuthCodeURL("st4te-"+t.Name(), opts...)
	pg := b.until(s.e.URL, b.do("GET", authURL, nil))
	if strings.Contains(pg.Body, `name="password"`) {
		pg = b.until(s.e.URL, b.submit(s.base, pg, map[string]string{"email": s.email, "password": s.password}))
	}
	if strings.Contains(pg.Body, `value="allow"`) {
		pg = b.until(s.e.URL, b.submit(s.base, pg, map[string]string{"decision": "allow"}))
	}
	if !strings.HasPrefix(pg.Location, testRedirect) {
		t.Fatalf("the flow did not reach the client: %d %s %s", pg.Status, pg.Location, pg.Body)
	}
	u, _ := url.Parse(pg.Location)
	return u, pg
}

// form posts a form to an OAuth endpoint, optionally with basic auth.
func (s *oauthSetup) form(path string, form url.Values, user, pass string) authResp {
	s.e.tb.Helper()
	req, _ := http.NewRequest("POST", s.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	resp, err := s.e.http.Do(req)
	if err != nil {
		s.e.tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := authResp{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	_ = json.Unmarshal(raw, &out.Body)
	return out
}

func (s *oauthSetup) introspect(tok string) authResp {
	return s.form("/oauth/introspect", url.Values{"token": {tok}}, s.cfg.ClientID, s.cfg.ClientSecret)
}

// oauthErrorCode returns the RFC 6749 error of an x/oauth2 failure.
func oauthErrorCode(err error) string {
	if re, ok := err.(*oauth2.RetrieveError); ok {
		return re.ErrorCode
	}
	return ""
}

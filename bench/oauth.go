package bench

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// The OAuth operations: the token endpoint's grants.
const (
	// OpClientCredentials: POST /oauth/token grant_type=client_credentials
	// with client_secret_basic: one secret check and one signature.
	OpClientCredentials Op = "client_credentials"
	// OpAuthorizationCode: POST /oauth/token grant_type=authorization_code,
	// the exchange step only; the codes are minted before the run.
	OpAuthorizationCode Op = "authorization_code"
)

// oauthWorkloads need SetupConfig.OAuth.
var oauthWorkloads = []string{string(OpClientCredentials), string(OpAuthorizationCode)}

// NeedsOAuth reports whether a workload needs OAuth clients.
func NeedsOAuth(workload string) bool {
	for _, w := range oauthWorkloads {
		if w == workload {
			return true
		}
	}
	return false
}

const benchRedirect = "http://127.0.0.1:9/callback"

// oauthClient is a base tenant's confidential client, first-party (no
// consent), and a browser signed in to the tenant's hosted pages.
type oauthClient struct {
	id, secret string
	browser    *http.Client

	mu    sync.Mutex
	codes []string // minted, not yet exchanged
}

// pkce is the fixture's one PKCE pair: the bench measures the exchange.
var pkceVerifier = "bench-verifier-0123456789-0123456789-0123456789"

func pkceChallenge() string {
	sum := sha256.Sum256([]byte(pkceVerifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// setupOAuth registers a client in every base tenant and signs a browser
// in to each.
func (f *Fixture) setupOAuth(ctx context.Context, t *Target, concurrency int) error {
	f.clients = make([]*oauthClient, f.base)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	for i := 0; i < f.base; i++ {
		g.Go(func() error {
			var out struct {
				ID     string `json:"client_id"`
				Secret string `json:"client_secret"`
			}
			body := map[string]any{"client_name": "bench", "redirect_uris": []string{benchRedirect}, "skip_consent": true,
				"grant_types": []string{"authorization_code", "refresh_token", "client_credentials"}}
			if err := t.mustCall(gctx, "POST", "/t/"+f.Slugs[i]+"/admin/oauth/clients", t.AdminToken, body, http.StatusCreated, &out); err != nil {
				return fmt.Errorf("create oauth client: %w", err)
			}
			jar, _ := cookiejar.New(nil)
			c := &oauthClient{id: out.ID, secret: out.Secret, browser: &http.Client{Jar: jar, Timeout: 30 * time.Second,
				Transport:     t.HTTP.Transport,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
			if err := f.signInBrowser(gctx, t, i, c); err != nil {
				return err
			}
			f.clients[i] = c
			return nil
		})
	}
	return g.Wait()
}

func (f *Fixture) authorizeURL(t *Target, tenant int, c *oauthClient) string {
	q := url.Values{"response_type": {"code"}, "client_id": {c.id}, "redirect_uri": {benchRedirect}, "scope": {"openid email"},
		"state": {"bench"}, "code_challenge": {pkceChallenge()}, "code_challenge_method": {"S256"}}
	return t.base() + "/t/" + f.Slugs[tenant] + "/oauth/authorize?" + q.Encode()
}

var (
	formHidden = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
)

// signInBrowser posts the hosted login form once: the browser's cookie
// then serves every code the fixture mints.
func (f *Fixture) signInBrowser(ctx context.Context, t *Target, tenant int, c *oauthClient) error {
	loc, body, err := browse(ctx, c.browser, "GET", f.authorizeURL(t, tenant, c), nil)
	for i := 0; err == nil && loc != "" && !strings.HasPrefix(loc, benchRedirect) && i < 5; i++ {
		loc, body, err = browse(ctx, c.browser, "GET", loc, nil)
	}
	if err != nil {
		return err
	}
	m := formAction.FindStringSubmatch(body)
	if m == nil {
		return fmt.Errorf("oauth login page: no form")
	}
	form := url.Values{"email": {f.email(tenant, 0)}, "password": {f.Password}}
	for _, h := range formHidden.FindAllStringSubmatch(body, -1) {
		form.Set(html.UnescapeString(h[1]), html.UnescapeString(h[2]))
	}
	action, _ := url.Parse(t.URL)
	action, _ = action.Parse(html.UnescapeString(m[1]))
	loc, _, err = browse(ctx, c.browser, "POST", action.String(), form)
	if err != nil {
		return err
	}
	if _, err := f.follow(ctx, c, loc); err != nil {
		return fmt.Errorf("oauth sign-in: %w", err)
	}
	return nil
}

// follow follows the server's redirects to the client's redirect URI and
// returns its code.
func (f *Fixture) follow(ctx context.Context, c *oauthClient, loc string) (string, error) {
	var err error
	for i := 0; i < 6 && loc != "" && !strings.HasPrefix(loc, benchRedirect); i++ {
		if loc, _, err = browse(ctx, c.browser, "GET", loc, nil); err != nil {
			return "", err
		}
	}
	u, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(loc, benchRedirect) || u.Query().Get("code") == "" {
		return "", fmt.Errorf("the authorization did not reach the redirect URI (%q)", loc)
	}
	return u.Query().Get("code"), nil
}

// browse sends one browser request and returns its absolute Location and
// body.
func browse(ctx context.Context, c *http.Client, method, u string, form url.Values) (string, string, error) {
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return "", "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := c.Do(req)
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	loc := res.Header.Get("Location")
	if loc != "" {
		if l, err := req.URL.Parse(loc); err == nil {
			loc = l.String()
		}
	}
	if res.StatusCode >= 400 {
		return "", "", fmt.Errorf("%s %s: status %d", method, u, res.StatusCode)
	}
	return loc, string(b), nil
}

// MintCodes mints n authorization codes, spread over the base tenants,
// for the authorization_code workload (a code lives 10 minutes).
func (f *Fixture) MintCodes(ctx context.Context, t *Target, n, concurrency int) error {
	if f.clients == nil {
		return fmt.Errorf("the fixture has no OAuth clients")
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for k := 0; k < n; k++ {
		tenant := k % f.base
		c := f.clients[tenant]
		g.Go(func() error {
			loc, _, err := browse(gctx, c.browser, "GET", f.authorizeURL(t, tenant, c), nil)
			if err != nil {
				return err
			}
			code, err := f.follow(gctx, c, loc)
			if err != nil {
				return err
			}
			c.mu.Lock()
			c.codes = append(c.codes, code)
			c.mu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// popCode takes a minted code of tenant, or "".
func (c *oauthClient) popCode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.codes) == 0 {
		return ""
	}
	code := c.codes[len(c.codes)-1]
	c.codes = c.codes[:len(c.codes)-1]
	return code
}

// tokenForm posts a form to a tenant's token endpoint with basic auth.
func (t *Target) tokenForm(ctx context.Context, path, user, pass, form string) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", t.base()+path, strings.NewReader(form))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	res, err := t.HTTP.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, 0, nil
}

// execOAuth runs one OAuth operation; ok false means there was nothing to
// send (no code left).
func (e *executor) execOAuth(ctx context.Context, c call) (status int, retry time.Duration, err error, ok bool) {
	base := "/t/" + e.f.Slugs[c.tenant]
	cl := e.f.clients[c.tenant]
	switch c.op {
	case OpClientCredentials:
		status, retry, err = e.t.tokenForm(ctx, base+"/oauth/token", cl.id, cl.secret, "grant_type=client_credentials")
	case OpAuthorizationCode:
		// The drawn tenant's codes first, then any other's.
		code := ""
		for k := 0; k < len(e.f.clients) && code == ""; k++ {
			tenant := (c.tenant + k) % len(e.f.clients)
			if code = e.f.clients[tenant].popCode(); code != "" {
				cl, base = e.f.clients[tenant], "/t/"+e.f.Slugs[tenant]
			}
		}
		if code == "" {
			return 0, 0, nil, false
		}
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {benchRedirect}, "code_verifier": {pkceVerifier}}
		status, retry, err = e.t.tokenForm(ctx, base+"/oauth/token", cl.id, cl.secret, form.Encode())
	}
	return status, retry, err, true
}

// Blackhole listens on a loopback port, accepts connections and never
// answers them (a webhook receiver that hangs); Close ends it.
func Blackhole() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, h := range held {
					_ = h.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	return ln, nil
}

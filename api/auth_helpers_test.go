package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testbackend"
	"github.com/keyshard/keyshard/transfer"
)

// authTestParams are tiny Argon2id parameters: tests run under -race on
// two noisy cores.
var authTestParams = hash.Params{MemoryKiB: 64, Time: 1, Threads: 1}

type authEnvOptions struct {
	params  hash.Params
	workers int
	budget  time.Duration
	queue   int    // per-shard writer queue (app.Config.QueueSize)
	sync    string // synchronous; default NORMAL

	background  bool              // hashes in a worker process at idle priority
	deferLimit  int               // per-shard deferred-record buffer (app.Config.DeferLimit)
	bodyTimeout time.Duration     // app.ServerConfig.BodyTimeout
	signups     auth.SignupLimits // app.ServerConfig.Signups
	events      app.EventsConfig  // app.ServerConfig.Events
	cache       int               // app.Config.CacheCapacity (0: the default)
	mail        app.MailConfig    // app.ServerConfig.Mail
	listenURL   string            // app.ServerConfig.ListenURL

	clientHeader, trustedProxies string // app.ServerConfig.ClientHeader, TrustedProxies
}

// authEnv is a real server on a loopback listener with the auth API.
type authEnv struct {
	tb   testing.TB
	URL  string
	App  *app.App
	Pool *hash.Pool
	Auth *auth.Service
	Keys *token.Keys
	// Transfer is the server's transfer service (newTransferEnv only).
	Transfer *transfer.Service
	// Server is the whole server (newAuthEnv only).
	Server *app.Server
	clock  atomic.Int64 // nanoseconds added to the service clock
	http   *http.Client
	// dataDir holds the SQLite shards (a server backend keeps its
	// tenants elsewhere).
	dataDir string
}

func newAuthEnv(tb testing.TB, o authEnvOptions) *authEnv {
	tb.Helper()
	if o.params == (hash.Params{}) {
		o.params = authTestParams
	}
	if o.sync == "" {
		o.sync = "NORMAL"
	}
	if o.clientHeader != "" && o.trustedProxies == "" {
		o.trustedProxies = api.DefaultTrustedProxies
	}
	dataDir := tb.TempDir()
	e := &authEnv{tb: tb, dataDir: dataDir}
	now := func() time.Time { return time.Now().Add(time.Duration(e.clock.Load())) }
	srv := testbackend.OpenServer(tb, app.ServerConfig{
		Storage:   app.Config{DataDir: dataDir, Synchronous: o.sync, QueueSize: o.queue, DeferLimit: o.deferLimit, CacheCapacity: o.cache},
		Hash:      hash.Config{Params: o.params, Workers: o.workers, Budget: o.budget, Background: o.background},
		MasterKey: bytes.Repeat([]byte{7}, token.MasterKeySize), AdminToken: "admin-secret",
		AccessTokenTTL: time.Hour, Now: now, BodyTimeout: o.bodyTimeout, Signups: o.signups, Events: o.events,
		Mail: o.mail, ListenURL: o.listenURL, ClientHeader: o.clientHeader, TrustedProxies: o.trustedProxies,
	})
	e.App, e.Pool, e.Keys, e.Auth, e.Server = srv.App, srv.Pool, srv.Keys, srv.Auth, srv
	hs := httptest.NewServer(srv.Handler())
	e.URL = hs.URL
	e.http = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	tb.Cleanup(func() {
		hs.Close()
		if err := srv.Close(); err != nil {
			tb.Errorf("close server: %v", err)
		}
	})
	return e
}

// advance moves the auth service's clock forward.
func (e *authEnv) advance(d time.Duration) { e.clock.Add(int64(d)) }

// tenant creates and approves a tenant and returns its base URL.
func (e *authEnv) tenant(slug string) string {
	e.tb.Helper()
	ctx := context.Background()
	if _, err := e.App.Engine.CreateTenant(ctx, slug, slug, ""); err != nil {
		e.tb.Fatal(err)
	}
	if _, err := e.App.Engine.ApproveTenant(ctx, slug); err != nil {
		e.tb.Fatal(err)
	}
	return e.URL + "/t/" + slug
}

// authResp is a decoded response.
type authResp struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
}

func (r authResp) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// call sends a JSON request; hdr holds extra header pairs.
func (e *authEnv) call(method, url, bearer string, body any, hdr ...string) authResp {
	e.tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.tb.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		e.tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.http.Do(req)
	if err != nil {
		e.tb.Errorf("%s %s: %v", method, url, err)
		return authResp{}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.tb.Errorf("%s %s: read body: %v", method, url, err)
	}
	out := authResp{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &out.Body)
	}
	return out
}

func (e *authEnv) signup(base, email, password string) authResp {
	e.tb.Helper()
	r := e.call("POST", base+"/signup", "", map[string]any{"email": email, "password": password})
	if r.Status != 200 {
		e.tb.Fatalf("signup %s: %d %s", email, r.Status, r.Raw)
	}
	return r
}

func (e *authEnv) login(base, email, password string) authResp {
	e.tb.Helper()
	return e.call("POST", base+"/token?grant_type=password", "", map[string]any{"email": email, "password": password})
}

func (e *authEnv) refresh(base, rt string) authResp {
	e.tb.Helper()
	return e.call("POST", base+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": rt})
}

// wantAuthError checks a GoTrue legacy-shaped error (no API version header).
func wantAuthError(tb testing.TB, r authResp, status int, code string) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("status %d, want %d: %s", r.Status, status, r.Raw)
	}
	if got := r.Header.Get("X-Sb-Error-Code"); got != code {
		tb.Fatalf("x-sb-error-code %q, want %q: %s", got, code, r.Raw)
	}
	if r.Body["error_code"] != code || r.Body["code"] != float64(status) || r.str("msg") == "" {
		tb.Fatalf("body %s, want code %d error_code %q and msg", r.Raw, status, code)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// write runs op on the tenant's shard.
func (e *authEnv) write(slug string, op engine.WriteFunc) {
	e.tb.Helper()
	ts, err := e.App.Engine.Tenant(context.Background(), slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	if err := ts.Write(context.Background(), op); err != nil {
		e.tb.Fatal(err)
	}
}

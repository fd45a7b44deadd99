package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testbackend"
)

const adminToken = "test-admin-token-0123456789"

// testServer is an api.Server on a real SQLite engine, served over HTTP on
// a loopback listener.
type testServer struct {
	URL     string
	DataDir string // the engine's data directory
	Parent  string // the temporary directory holding DataDir
	App     *app.App
	client  *http.Client
	log     *syncBuffer
}

// newServer opens an engine in a fresh data directory and serves it on
// 127.0.0.1 until cleanup. The cleanup fails the test if an unexpected
// (500) error was logged.
func newServer(tb testing.TB) *testServer {
	tb.Helper()
	parent := tb.TempDir()
	dir := filepath.Join(parent, "data")
	logs := &syncBuffer{}
	srv := testbackend.OpenServer(tb, app.ServerConfig{
		Storage: app.Config{DataDir: dir}, Hash: hash.Config{Params: authTestParams},
		MasterKey: bytes.Repeat([]byte{3}, token.MasterKeySize), AdminToken: adminToken,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	a := srv.App
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = srv.Close()
		tb.Fatalf("listen: %v", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	tr := &http.Transport{}
	ts := &testServer{
		URL: "http://" + ln.Addr().String(), DataDir: dir, Parent: parent, App: a, log: logs,
		client: &http.Client{
			Transport:     tr,
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := hs.Shutdown(ctx); err != nil {
			tb.Errorf("http shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve: %v", err)
		}
		tr.CloseIdleConnections()
		if st := a.Cache.Stats(); st.Pinned != 0 {
			tb.Errorf("%d shards still pinned after the server stopped", st.Pinned)
		}
		if err := srv.Close(); err != nil {
			tb.Errorf("close server: %v", err)
		}
		if strings.Contains(logs.String(), "level=ERROR") {
			tb.Errorf("server logged errors:\n%s", logs.String())
		}
	})
	return ts
}

// response is a finished HTTP exchange.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends a request with the given bearer token ("" for none) and body (a
// string or []byte is sent as is, anything else as JSON, nil as no body).
// path is sent as written, escapes included.
func (s *testServer) do(tb testing.TB, method, path, token string, body any) response {
	tb.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			tb.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.URL+path, r)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// admin sends a request with the platform admin token.
func (s *testServer) admin(tb testing.TB, method, path string, body any) response {
	tb.Helper()
	return s.do(tb, method, path, adminToken, body)
}

// wantError checks an error answer: the status and a JSON body with a
// non-empty message and the code (any code when code is "").
func wantError(tb testing.TB, what string, r response, status int, code string) {
	tb.Helper()
	if r.Status != status {
		tb.Errorf("%s: status %d, want %d; body %s", what, r.Status, status, r.Body)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var e map[string]any
	if err := json.Unmarshal(r.Body, &e); err != nil {
		tb.Errorf("%s: error body is not JSON: %v: %s", what, err, r.Body)
		return
	}
	c, _ := e["code"].(string)
	m, _ := e["message"].(string)
	if c == "" || m == "" {
		tb.Errorf("%s: error body lacks code or message: %s", what, r.Body)
	}
	if code != "" && c != code {
		tb.Errorf("%s: code %q, want %q; body %s", what, c, code, r.Body)
	}
}

// wantTenant checks a 2xx answer carrying a tenant and returns it.
func wantTenant(tb testing.TB, what string, r response, status int) engine.Tenant {
	tb.Helper()
	var t engine.Tenant
	if r.Status != status {
		tb.Fatalf("%s: status %d, want %d; body %s", what, r.Status, status, r.Body)
	}
	if err := json.Unmarshal(r.Body, &t); err != nil {
		tb.Fatalf("%s: %v: %s", what, err, r.Body)
	}
	return t
}

// listTenants returns the slugs the admin API lists.
func (s *testServer) listTenants(tb testing.TB) []string {
	tb.Helper()
	r := s.admin(tb, http.MethodGet, "/admin/tenants", nil)
	if r.Status != http.StatusOK {
		tb.Fatalf("list tenants: %d %s", r.Status, r.Body)
	}
	var body struct {
		Tenants []engine.Tenant `json:"tenants"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		tb.Fatalf("list tenants: %v: %s", err, r.Body)
	}
	if body.Tenants == nil {
		tb.Fatalf("list tenants: tenants is not an array: %s", r.Body)
	}
	out := []string{}
	for _, t := range body.Tenants {
		out = append(out, t.Slug)
	}
	return out
}

// files returns every path under root, relative to it.
func files(tb testing.TB, root string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		tb.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

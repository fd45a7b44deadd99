package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

// TestClientAddr: the address a proxy's header gives replaces the
// connection's only on a connection from a trusted proxy; in a list the
// client is the rightmost address that is not a trusted proxy, whatever
// the client wrote before it.
func TestClientAddr(t *testing.T) {
	xff, err := api.NewClientAddr("x-forwarded-for", "127.0.0.0/8, 10.0.0.0/8, ::1")
	if err != nil {
		t.Fatal(err)
	}
	realIP, err := api.NewClientAddr("X-Real-IP", "127.0.0.1, 172.16.0.0/12")
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := api.NewClientAddr("Forwarded", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	dflt, err := api.NewClientAddr("X-Forwarded-For", api.DefaultTrustedProxies)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		ca     *api.ClientAddr
		peer   string
		header []string // name, value pairs
		want   string
	}{
		{"one proxy", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "203.0.113.7"}, "203.0.113.7"},
		{"the client's own entries are skipped", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "1.2.3.4, 203.0.113.7"}, "203.0.113.7"},
		{"proxies on private addresses are skipped", xff, "10.1.2.3:5000", []string{"X-Forwarded-For", "1.2.3.4, 198.51.100.9, 10.0.0.5"}, "198.51.100.9"},
		{"headers repeated are one list", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "1.2.3.4", "X-Forwarded-For", "198.51.100.9"}, "198.51.100.9"},
		{"IPv6 client", xff, "[::1]:5000", []string{"X-Forwarded-For", "2001:db8::7"}, "2001:db8::7"},
		{"an untrusted peer's header is ignored", xff, "192.0.2.1:5000", []string{"X-Forwarded-For", "203.0.113.7"}, "192.0.2.1"},
		{"no header", xff, "127.0.0.1:5000", nil, "127.0.0.1"},
		{"a garbage header", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "not-an-address"}, "127.0.0.1"},
		{"only trusted proxies listed", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "10.0.0.1, 127.0.0.1"}, "127.0.0.1"},
		{"a single-address header", realIP, "172.17.0.2:5000", []string{"X-Real-IP", "203.0.113.7"}, "203.0.113.7"},
		{"a single-address header from a public peer", realIP, "198.51.100.1:5000", []string{"X-Real-IP", "203.0.113.7"}, "198.51.100.1"},
		{"a single-address header holding a list", realIP, "127.0.0.1:5000", []string{"X-Real-IP", "1.2.3.4, 203.0.113.7"}, "127.0.0.1"},
		{"a single-address header sent twice", realIP, "127.0.0.1:5000", []string{"X-Real-IP", "1.2.3.4", "X-Real-IP", "203.0.113.7"}, "127.0.0.1"},
		{"another header than the one named", realIP, "127.0.0.1:5000", []string{"X-Forwarded-For", "203.0.113.7"}, "127.0.0.1"},
		{"Forwarded", fwd, "127.0.0.1:5000", []string{"Forwarded", `for=1.2.3.4, for="[2001:db8::9]:4711"`}, "2001:db8::9"},
		{"a zone is dropped", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "fe80::1%eth0"}, "fe80::1"},
		{"an IPv4-mapped address is IPv4", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "::ffff:203.0.113.9"}, "203.0.113.9"},
		{"an invalid entry stops the walk", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "1.2.3.4, unknown"}, "127.0.0.1"},
		{"an obfuscated Forwarded entry", fwd, "127.0.0.1:5000", []string{"Forwarded", "for=1.2.3.4, for=_hidden"}, "127.0.0.1"},
		// The limit README states: a trusted range is skipped wherever it
		// is in the list, so a client reaching the proxy from one chooses
		// what stands before it. The default trusts loopback alone.
		{"a client on a trusted range chooses", xff, "127.0.0.1:5000", []string{"X-Forwarded-For", "198.51.100.77, 10.0.0.5"}, "198.51.100.77"},
		{"by default only loopback is trusted", dflt, "127.0.0.1:5000", []string{"X-Forwarded-For", "198.51.100.77, 10.0.0.5"}, "10.0.0.5"},
		{"by default a private peer is not trusted", dflt, "10.0.0.2:5000", []string{"X-Forwarded-For", "198.51.100.77"}, "10.0.0.2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got string
			h := c.ca.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = api.ClientOf(r).IP }))
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.peer
			for i := 0; i+1 < len(c.header); i += 2 {
				r.Header.Add(c.header[i], c.header[i+1])
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != c.want {
				t.Fatalf("client %q, want %q", got, c.want)
			}
		})
	}
	for _, bad := range []struct{ header, trusted string }{
		{"", api.DefaultTrustedProxies},
		{"X-Forwarded-For", ""},
		{"X-Forwarded-For", " , "},
		{"X-Forwarded-For", "10.0.0.0/33"},
		{"X-Forwarded-For", "proxy.internal"},
		{"X Real IP", api.DefaultTrustedProxies},
		{"X-Real-IP:", api.DefaultTrustedProxies},
	} {
		if _, err := api.NewClientAddr(bad.header, bad.trusted); err == nil {
			t.Errorf("NewClientAddr(%q, %q): no error", bad.header, bad.trusted)
		}
		// The server refuses to start with it, before it opens anything.
		if bad.header != "" {
			srv, err := app.OpenServer(context.Background(), app.ServerConfig{Storage: app.Config{DataDir: t.TempDir()},
				ClientHeader: bad.header, TrustedProxies: bad.trusted})
			if err == nil {
				_ = srv.Close()
				t.Errorf("a server with trusted proxies %q started", bad.trusted)
			} else if !errors.Is(err, engine.ErrInvalid) {
				t.Errorf("a server with trusted proxies %q: %v, want an invalid configuration", bad.trusted, err)
			}
		}
	}
}

// TestAuth_ClientAddrHeader: behind a proxy that writes X-Forwarded-For,
// the per-address signup limit counts each client apart, a client cannot
// escape it by writing addresses of its own into the header, and audit
// events keep the client's address. From a peer that is not a trusted
// proxy the header changes nothing.
func TestAuth_ClientAddrHeader(t *testing.T) {
	limits := auth.SignupLimits{PerAddress: 2, Window: time.Minute}
	signup := func(e *authEnv, base, email, xff string) authResp {
		t.Helper()
		return e.call("POST", base+"/signup", "", map[string]any{"email": email, "password": "password1"}, "X-Forwarded-For", xff)
	}

	e := newAuthEnv(t, authEnvOptions{signups: limits, clientHeader: "X-Forwarded-For"})
	base := e.tenant("acme")
	for i, email := range []string{"a1@example.com", "a2@example.com"} {
		if r := signup(e, base, email, "203.0.113.7"); r.Status != 200 {
			t.Fatalf("signup %d: %d %s", i, r.Status, r.Raw)
		}
	}
	wantAuthError(t, signup(e, base, "a3@example.com", "203.0.113.7"), 429, "over_request_rate_limit")
	// What the client wrote before the proxy's entry does not count.
	wantAuthError(t, signup(e, base, "a3@example.com", "192.0.2.44, 203.0.113.7"), 429, "over_request_rate_limit")
	if r := signup(e, base, "b1@example.com", "198.51.100.9"); r.Status != 200 {
		t.Fatalf("another client behind the proxy: %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", base+"/token?grant_type=password", "", map[string]any{"email": "b1@example.com", "password": "password1"},
		"X-Forwarded-For", "198.51.100.9"); r.Status != 200 {
		t.Fatalf("login: %d %s", r.Status, r.Raw)
	}
	key := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	r := e.call("GET", base+"/admin/audit?per_page=10", key, nil)
	var evs []struct {
		Action string `json:"action"`
		IP     string `json:"ip_address"`
	}
	if r.Status != 200 || json.Unmarshal(r.Raw, &evs) != nil {
		t.Fatalf("audit: %d %s", r.Status, r.Raw)
	}
	logins := 0
	for _, ev := range evs {
		if ev.Action == "login" {
			logins++
			if ev.IP != "198.51.100.9" {
				t.Fatalf("the login's audit event: %+v, want the address the proxy gave", ev)
			}
		}
	}
	if logins != 1 {
		t.Fatalf("audit: %d logins in %s", logins, r.Raw)
	}

	// The same server setup, but the loopback peer is not a trusted proxy.
	u := newAuthEnv(t, authEnvOptions{signups: limits, clientHeader: "X-Forwarded-For", trustedProxies: "10.0.0.0/8"})
	ubase := u.tenant("acme")
	for i, xff := range []string{"203.0.113.7", "198.51.100.9"} {
		if r := signup(u, ubase, "u"+strings.Repeat("x", i)+"@example.com", xff); r.Status != 200 {
			t.Fatalf("untrusted peer, signup %d: %d %s", i, r.Status, r.Raw)
		}
	}
	wantAuthError(t, signup(u, ubase, "u3@example.com", "192.0.2.99"), 429, "over_request_rate_limit")
}

// TestAuth_ClientAddrThroughProxy: a real reverse proxy (net/http/httputil,
// which appends the address it was reached from to X-Forwarded-For, as
// nginx's $proxy_add_x_forwarded_for does) in front of a server that
// trusts only the proxy's address. Clients on two addresses reach the
// proxy: each has its own signup budget, and one that writes an address of
// its own into the header is still counted as itself.
func TestAuth_ClientAddrThroughProxy(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{signups: auth.SignupLimits{PerAddress: 2, Window: time.Minute},
		clientHeader: "X-Forwarded-For", trustedProxies: "127.0.0.1"})
	e.tenant("acme")
	target, err := url.Parse(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	// The proxy dials the server from 127.0.0.1, the one trusted address.
	rp := httputil.NewSingleHostReverseProxy(target)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	rp.Transport = &http.Transport{DialContext: d.DialContext}
	proxy := httptest.NewServer(rp)
	defer proxy.Close()
	signup := func(c *http.Client, email, xff string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", proxy.URL+"/t/acme/signup", strings.NewReader(`{"email":"`+email+`","password":"password1"}`))
		req.Header.Set("Content-Type", "application/json")
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	two, three := fromAddress(t, "127.0.0.2"), fromAddress(t, "127.0.0.3")
	for i := range 2 {
		if st := signup(two, fmt.Sprintf("two%d@example.com", i), ""); st != 200 {
			t.Fatalf("signup %d from 127.0.0.2: %d", i, st)
		}
	}
	if st := signup(two, "two2@example.com", ""); st != 429 {
		t.Fatalf("third signup from 127.0.0.2: %d, want 429", st)
	}
	if st := signup(two, "two3@example.com", "203.0.113.50"); st != 429 {
		t.Fatalf("127.0.0.2 naming another address in the header: %d, want 429", st)
	}
	if st := signup(three, "three@example.com", ""); st != 200 {
		t.Fatalf("signup from 127.0.0.3 behind the same proxy: %d", st)
	}
}

// FuzzClientAddr: whatever the header holds, the client is the peer or a
// valid address; an untrusted peer is always itself; and for
// X-Forwarded-For the client is never a trusted proxy's address unless it
// is the peer's own.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"203.0.113.7", "1.2.3.4, 203.0.113.7", "10.0.0.1, 127.0.0.1", "unknown", "", ",,,",
		"fe80::1%eth0", "[2001:db8::1]:80", "::ffff:1.2.3.4", "for=1.2.3.4", "1.2.3.4,\t5.6.7.8 , 9.9.9.9"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	xff, err := api.NewClientAddr("X-Forwarded-For", "127.0.0.0/8, 10.0.0.0/8")
	if err != nil {
		f.Fatal(err)
	}
	trusted := func(ip net.IP) bool { // the ranges above: ::1 is not among them
		ip4 := ip.To4()
		return ip4 != nil && (ip4[0] == 127 || ip4[0] == 10)
	}
	f.Fuzz(func(t *testing.T, header string, fromProxy bool) {
		peer := "192.0.2.1"
		if fromProxy {
			peer = "127.0.0.1"
		}
		var got string
		h := xff.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = api.ClientOf(r).IP }))
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = peer + ":5000"
		r.Header["X-Forwarded-For"] = []string{header}
		h.ServeHTTP(httptest.NewRecorder(), r)
		ip := net.ParseIP(got)
		switch {
		case ip == nil:
			t.Fatalf("client %q is not an address (header %q)", got, header)
		case !fromProxy && got != peer:
			t.Fatalf("an untrusted peer became %q (header %q)", got, header)
		case got != peer && trusted(ip):
			t.Fatalf("a trusted proxy's address %q taken for the client (header %q)", got, header)
		}
	})
}

package api_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/auth"
)

// TestServer_SlowBody: a request whose body stalls (or trickles) is cut
// with 408 once the body deadline passes, and other clients are served
// meanwhile. Bounded: 20 stalled connections, a few seconds.
func TestServer_SlowBody(t *testing.T) {
	const deadline = 2 * time.Second
	e := newAuthEnv(t, authEnvOptions{bodyTimeout: deadline})
	base := e.tenant("acme")
	addr := strings.TrimPrefix(e.URL, "http://")
	head := "POST /t/acme/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
	type result struct {
		status string
		after  time.Duration
		err    error
	}
	stall := func(trickle bool) result {
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return result{err: err}
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, head+`{"email":`); err != nil {
			return result{err: err}
		}
		if trickle { // a byte every 200 ms: progress, but never the whole body
			go func() {
				for i := 0; i < 50; i++ {
					time.Sleep(200 * time.Millisecond)
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return result{status: strings.TrimSpace(line), after: time.Since(start), err: err}
	}
	var wg sync.WaitGroup
	var answered atomic.Int32
	results := make([]result, 20)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = stall(i%2 == 1)
			answered.Add(1)
		}()
	}
	// Meanwhile, while every stalled body still holds its connection, a
	// well-behaved client is served.
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 3; i++ {
		if r := e.signup(base, "meanwhile"+string(rune('a'+i))+"@example.com", "password1"); r.Status != 200 {
			t.Fatalf("a client beside the stalled bodies: %d", r.Status)
		}
	}
	if n := answered.Load(); n != 0 {
		t.Logf("%d stalled bodies were cut before the other client was served (a slow machine)", n)
	}
	// An upload may take as long as it progresses, but not stall.
	func() {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		start := time.Now()
		_, _ = io.WriteString(c, "POST /admin/tenants/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-secret\r\nContent-Length: 100000\r\n\r\nSQLite format 3\x00")
		for i := 0; i < 6; i++ { // progress for 3 s, beyond the 2 s deadline
			time.Sleep(deadline / 4)
			_, _ = c.Write([]byte{0})
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if after := time.Since(start); err != nil || !strings.HasPrefix(line, "HTTP/1.1 408") || after < 6*deadline/4+deadline {
			t.Errorf("stalled upload: %q after %v (%v), want 408 a deadline after its last byte", line, after, err)
		}
	}()
	wg.Wait()
	for i, r := range results {
		// Cut (a 408, not the client's own 30 s deadline), and not before
		// the body's deadline: the trickle's progress does not extend it.
		if r.err != nil || !strings.HasPrefix(r.status, "HTTP/1.1 408") || r.after < deadline {
			t.Errorf("stalled body %d (trickle %v): %q after %v, %v; want 408 once the %v deadline passed", i, i%2 == 1, r.status, r.after, r.err, deadline)
		}
	}
}

// TestLimitListener: past a cap a connection is answered 503 and closed; a
// closed connection gives its place back.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := api.LimitListener(inner, api.ConnLimits{Total: 3, PerAddr: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	})
	addr := inner.Addr().String()
	// from dials from a given loopback address (Linux routes 127.0.0.0/8
	// to lo) and sends a request on a connection it keeps open.
	from := func(src string) (net.Conn, string) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", src, err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return c, "write: " + err.Error()
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return c, "read: " + err.Error()
		}
		return c, strings.TrimSpace(line)
	}
	a1, s1 := from("127.0.0.1")
	a2, s2 := from("127.0.0.1")
	_, s3 := from("127.0.0.1") // a third from one address: per-address cap
	if s1 != "HTTP/1.1 200 OK" || s2 != "HTTP/1.1 200 OK" || !strings.HasPrefix(s3, "HTTP/1.1 503") {
		t.Fatalf("two allowed from one address, the third refused: %q %q %q", s1, s2, s3)
	}
	b1, s4 := from("127.0.0.2")
	_, s5 := from("127.0.0.3") // a fourth in all: total cap
	if s4 != "HTTP/1.1 200 OK" || !strings.HasPrefix(s5, "HTTP/1.1 503") {
		t.Fatalf("the total cap: %q %q", s4, s5)
	}
	a1.Close()
	b1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, s := from("127.0.0.1")
		c.Close()
		if s == "HTTP/1.1 200 OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closed connections did not give their places back: %q", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a2.Close()
}

// TestAuth_SignupLimits: signups are limited per client address (per
// tenant) and per tenant, answered 429 with Retry-After, and the buckets
// refill.
func TestAuth_SignupLimits(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{signups: auth.SignupLimits{PerAddress: 3, PerTenant: 5, Window: time.Minute}})
	a, b := e.tenant("acme"), e.tenant("beta")
	signup := func(c *http.Client, base, email string) (int, string) {
		t.Helper()
		res, err := c.Post(base+"/signup", "application/json", strings.NewReader(`{"email":"`+email+`","password":"password1"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	local, other := fromAddress(t, "127.0.0.1"), fromAddress(t, "127.0.0.2")
	for i := 0; i < 3; i++ {
		if st, _ := signup(local, a, "a"+string(rune('0'+i))+"@example.com"); st != 200 {
			t.Fatalf("signup %d: %d", i, st)
		}
	}
	st, ra := signup(local, a, "a3@example.com")
	if secs, _ := strconv.Atoi(ra); st != 429 || secs < 1 || secs > 60 {
		t.Fatalf("4th signup from one address: %d, Retry-After %q; want 429 within the minute", st, ra)
	}
	wantAuthError(t, e.call("POST", a+"/signup", "", map[string]any{"email": "a3@example.com", "password": "password1"}), 429, "over_request_rate_limit")
	if st, _ := signup(local, b, "b0@example.com"); st != 200 {
		t.Fatalf("the same address at another tenant: %d", st)
	}
	// Another address may sign up, until the tenant's own limit (5).
	for i := 0; i < 2; i++ {
		if st, _ := signup(other, a, "o"+string(rune('0'+i))+"@example.com"); st != 200 {
			t.Fatalf("another address, signup %d: %d", i, st)
		}
	}
	if st, _ := signup(fromAddress(t, "127.0.0.3"), a, "x@example.com"); st != 429 {
		t.Fatalf("the tenant's 6th signup: %d, want 429", st)
	}
	e.advance(time.Minute)
	if st, _ := signup(local, a, "later@example.com"); st != 200 {
		t.Fatalf("after the window: %d", st)
	}
}

package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A measured request is sent once: a connection closed before an answer is
// an error the run counts, not a request re-sent behind its back (fasthttp
// re-sends GET and PUT up to five times by default).
func TestCall_SentOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			buf := make([]byte, 4096)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(buf) // the request, then no answer
			_ = c.Close()
		}
	}()
	tg := &Target{URL: "http://" + ln.Addr().String()}
	for _, method := range []string{"GET", "PUT", "POST"} {
		before := conns.Load()
		status, _, err := tg.call(method, "/t/x/user", "token", "", []byte(`{}`), nil)
		if err == nil {
			t.Fatalf("%s: status %d from a server that answers nothing", method, status)
		}
		time.Sleep(50 * time.Millisecond)
		if n := conns.Load() - before; n != 1 {
			t.Fatalf("%s: sent on %d connections, want 1", method, n)
		}
	}
}

// TestClientAddresses: with Load.ClientAddresses each closed-loop client
// sends one address of its own as X-Forwarded-For, every request; the
// addresses are distinct, valid and in 198.18.0.0/15.
func TestClientAddresses(t *testing.T) {
	seen := map[string]bool{}
	_, bench, _ := net.ParseCIDR("198.18.0.0/15")
	for i := range MaxClientAddresses {
		a := ClientAddr(i)
		ip := net.ParseIP(a)
		if ip == nil || !bench.Contains(ip) || seen[a] {
			t.Fatalf("address %d: %q (valid, in 198.18.0.0/15 and new?)", i, a)
		}
		seen[a] = true
	}

	var mu sync.Mutex
	byClient := map[string]map[string]bool{} // X-Client (test's own) → X-Forwarded-For values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		c := r.URL.Query().Get("c")
		if byClient[c] == nil {
			byClient[c] = map[string]bool{}
		}
		byClient[c][r.Header.Get("X-Forwarded-For")] = true
		mu.Unlock()
	}))
	defer srv.Close()
	tg := &Target{URL: srv.URL}
	const clients, addrs = 6, 4
	e := &executor{addrs: addrs}
	ex := func(_ context.Context, c call, _ time.Time) time.Duration {
		_, _, _ = tg.call("GET", fmt.Sprintf("/x?c=%d", c.client), "", e.from(c), nil, nil)
		return 0
	}
	run(context.Background(), Load{Concurrency: clients, Requests: 60, ClientAddresses: addrs},
		func(*rand.Rand) picker { return func() call { return call{op: OpUser} } }, ex, nil)
	if len(byClient) != clients {
		t.Fatalf("%d clients seen, want %d: %v", len(byClient), clients, byClient)
	}
	for c, from := range byClient {
		var i int
		_, _ = fmt.Sscan(c, &i)
		if len(from) != 1 || !from[ClientAddr(i%addrs)] {
			t.Fatalf("client %s sent %v, want only %s", c, from, ClientAddr(i%addrs))
		}
	}
}

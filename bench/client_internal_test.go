package bench

import (
	"net"
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
		status, _, err := tg.call(method, "/t/x/user", "token", []byte(`{}`), nil)
		if err == nil {
			t.Fatalf("%s: status %d from a server that answers nothing", method, status)
		}
		time.Sleep(50 * time.Millisecond)
		if n := conns.Load() - before; n != 1 {
			t.Fatalf("%s: sent on %d connections, want 1", method, n)
		}
	}
}

package api

import (
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// ConnLimits cap the connections a server keeps open; 0 is no cap.
type ConnLimits struct {
	// Total caps every open connection together: past it a flood of
	// connections (slow or idle ones) would take the descriptors shards
	// and their files need.
	Total int
	// PerAddr caps the connections from one client address. Behind a
	// reverse proxy every client has the proxy's address: raise it or turn
	// it off there.
	PerAddr int
}

var (
	connsOpen = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "keyshard_http_connections_open",
		Help: "HTTP connections open now.",
	})
	connsRefused = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "keyshard_http_connections_refused_total",
		Help: "HTTP connections closed at once because a cap was reached, by cap (total, per_address).",
	}, []string{"cap"})
)

// refusalReply is all a refused connection is told.
var refusalReply = func() []byte {
	body := `{"code":"too_many_connections","message":"too many connections, retry shortly"}` + "\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n" +
		"Connection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}()

// LimitListener returns ln with lim's caps: a connection past a cap is
// answered 503 and closed at once, and the refusal is logged (at most
// every 10 s per cap, with the client's address).
func LimitListener(ln net.Listener, lim ConnLimits, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.Default()
	}
	return &limitListener{Listener: ln, lim: lim, log: log, perAddr: map[string]int{}, lastLog: map[string]time.Time{}}
}

type limitListener struct {
	net.Listener
	lim ConnLimits
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	total   int
	perAddr map[string]int
	lastLog map[string]time.Time // by cap
}

// Accept returns the next connection within the caps.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := hostOf(c.RemoteAddr())
		if capName := l.admit(addr); capName != "" {
			connsRefused.WithLabelValues(capName).Inc()
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write(refusalReply)
			_ = c.Close()
			continue
		}
		connsOpen.Inc()
		return &limitConn{Conn: c, l: l, addr: addr}, nil
	}
}

// admit counts a new connection from addr, or returns the cap it would
// pass.
func (l *limitListener) admit(addr string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	capName := ""
	switch {
	case l.lim.Total > 0 && l.total >= l.lim.Total:
		capName = "total"
	case l.lim.PerAddr > 0 && l.perAddr[addr] >= l.lim.PerAddr:
		capName = "per_address"
	}
	if capName != "" {
		if now := time.Now(); now.Sub(l.lastLog[capName]) >= 10*time.Second {
			l.lastLog[capName] = now
			l.log.Warn("refusing connections: cap reached", "cap", capName, "client", addr,
				"open", l.total, "open_from_client", l.perAddr[addr], "max_total", l.lim.Total, "max_per_client", l.lim.PerAddr)
		}
		return capName
	}
	l.total++
	l.perAddr[addr]++
	return ""
}

func (l *limitListener) release(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perAddr[addr]--; l.perAddr[addr] <= 0 {
		delete(l.perAddr, addr)
	}
}

// limitConn gives its place back once, when it is closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	addr string
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.release(c.addr)
		connsOpen.Dec()
	})
	return err
}

func hostOf(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

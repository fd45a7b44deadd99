package api

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/realclientip/realclientip-go"
)

// DefaultTrustedProxies are the peers whose client-address header is
// believed by default: a proxy on the same machine. Not the private
// ranges: a list header is walked past every trusted address, so a client
// that reaches the proxy from a trusted address (a load balancer that
// translates addresses, a container network, the office LAN) could put
// any address it likes before its own. A proxy elsewhere must be named.
const DefaultTrustedProxies = "127.0.0.0/8,::1/128"

// ClientAddr takes a request's client address from a header that a reverse
// proxy sets (GoTrue's GOTRUE_RATE_LIMIT_HEADER), instead of the address of
// the connection, which behind a proxy is the proxy's for every client. The
// limits per client address (failed logins, signups, the login pacer) and
// the address kept with sessions and audit events then tell clients apart.
//
// The header is believed only on a connection from a trusted proxy; any
// other peer could write whatever address it likes. X-Forwarded-For and
// Forwarded are lists each proxy appends to, whose leftmost entries the
// client wrote: the client is the rightmost address that is not a trusted
// proxy. Any other header (X-Real-IP, CF-Connecting-IP, Fly-Client-IP…)
// holds one address, which the proxy must overwrite. A request whose
// header gives no valid address keeps the connection's.
type ClientAddr struct {
	header  string
	trusted []net.IPNet
	strat   realclientip.Strategy
	single  bool // a single-address header: sent twice, it is ignored
}

// NewClientAddr returns the ClientAddr of header, believed from the peers
// in trusted (comma-separated addresses and CIDR ranges).
func NewClientAddr(header, trusted string) (*ClientAddr, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return nil, fmt.Errorf("the client address header is empty")
	}
	if !validHeaderName(header) {
		return nil, fmt.Errorf("%q is not a header name", header)
	}
	var list []string
	for _, r := range strings.Split(trusted, ",") {
		if r = strings.TrimSpace(r); r != "" {
			list = append(list, r)
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("no trusted proxies: the header %s would never be believed", header)
	}
	nets, err := realclientip.AddressesAndRangesToIPNets(list...)
	if err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	c := &ClientAddr{header: http.CanonicalHeaderKey(header), trusted: nets}
	switch c.header {
	case "X-Forwarded-For", "Forwarded":
		c.strat, err = realclientip.NewRightmostTrustedRangeStrategy(c.header, nets)
	default:
		c.strat, err = realclientip.NewSingleIPHeaderStrategy(c.header)
		c.single = true
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Header is the header's canonical name.
func (c *ClientAddr) Header() string { return c.header }

// Wrap sets each request's RemoteAddr to the client address the header
// gives, when the connection is from a trusted proxy. Everything after it
// (ClientOf, the node forwarder) sees that address.
func (c *ClientAddr) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip := c.client(r); ip != "" {
			r.RemoteAddr = net.JoinHostPort(ip, "0")
		}
		next.ServeHTTP(w, r)
	})
}

// client returns the address r's header gives, or "" when the peer is not
// trusted or the header gives none.
func (c *ClientAddr) client(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	host, _ = realclientip.SplitHostZone(host)
	peer := net.ParseIP(host)
	if peer == nil || !contains(c.trusted, peer) {
		return ""
	}
	if c.single && len(r.Header.Values(c.header)) > 1 {
		return "" // the proxy appended instead of overwriting: which one is its?
	}
	// The strategy returns a parsed address's String() or "": valid.
	ip, _ := realclientip.SplitHostZone(c.strat.ClientIP(r.Header, r.RemoteAddr)) // a zone is the proxy's, not the client's
	return ip
}

func contains(nets []net.IPNet, ip net.IP) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// validHeaderName reports whether name is an HTTP field name (RFC 9110
// token): a name with a space or a colon would never match a header.
func validHeaderName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return name != ""
}

// Package netguard keeps outbound connections (webhook deliveries, a
// tenant's SMTP server) off addresses that are not public: loopback,
// private, link-local (cloud metadata), CGNAT and reserved ranges. The
// check runs on the address actually dialled, after DNS resolution, so a
// name that resolves to a private address is refused too.
package netguard

import (
	"errors"
	"net"
	"syscall"
)

// ErrPrivateAddress refuses a connection to an address that is not public.
var ErrPrivateAddress = errors.New("the address is loopback, private, link-local or otherwise not public")

var notPublic = func() []*net.IPNet {
	var out []*net.IPNet
	for _, c := range []string{"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "64:ff9b::/96", "2001:db8::/32"} {
		_, n, _ := net.ParseCIDR(c)
		out = append(out, n)
	}
	return out
}()

// PublicIP reports whether ip is a public unicast address: not loopback,
// private (RFC 1918, ULA), link-local (169.254/16 holds cloud metadata),
// unspecified, multicast, CGNAT or reserved.
func PublicIP(ip net.IP) bool {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() ||
		ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, n := range notPublic {
		if n.Contains(ip) {
			return false
		}
	}
	return true
}

// Control is a net.Dialer Control that refuses non-public addresses.
func Control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !PublicIP(ip) {
		return ErrPrivateAddress
	}
	return nil
}

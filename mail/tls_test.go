package mail

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// testCert is a self-signed certificate for 127.0.0.1 and the pool that
// trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// tlsServer is newSMTPServer's server behind implicit TLS (implicit) or
// offering STARTTLS (!implicit); seen reports whether a connection was
// TLS when the mail came.
func tlsServer(t *testing.T, implicit bool, cert tls.Certificate) *smtpServer {
	ss := &smtpServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		if _, ok := c.TLSConnectionState(); !ok {
			return &session{s: ss, plain: true}, nil
		}
		return &session{s: ss}, nil
	}))
	srv.Domain, srv.AllowInsecureAuth = "localhost", true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	var ln net.Listener
	var err error
	if implicit {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	ss.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ss
}

// TestSend_TLS: smtps:// speaks TLS from the first byte (through our own
// dialer: go-mail does not wrap a custom dialer's connection itself), and
// ?tls=required uses STARTTLS; either way the server sees the mail on a
// TLS connection, with the certificate checked.
func TestSend_TLS(t *testing.T) {
	cert, pool := testCert(t)
	for _, c := range []struct {
		name     string
		implicit bool
		url      string
	}{
		{"implicit", true, "smtps://mailer:s3cret@%s"},
		{"starttls required", false, "smtp://mailer:s3cret@%s?tls=required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ss := tlsServer(t, c.implicit, cert)
			s, err := New(Config{URL: sprintf(c.url, ss.addr), From: "no-reply@acme.test", TLS: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(context.Background(), Message{To: "ada@example.com", Subject: "x", Text: "code 123456"}); err != nil {
				t.Fatalf("send: %v", err)
			}
			ss.mu.Lock()
			defer ss.mu.Unlock()
			if len(ss.got) != 1 || ss.got[0].plain {
				t.Fatalf("got %d mails, plain text: %v", len(ss.got), len(ss.got) == 1 && ss.got[0].plain)
			}
			// A certificate the client does not trust is refused.
			bad, _ := New(Config{URL: sprintf(c.url, ss.addr), From: "no-reply@acme.test", Timeout: 5 * time.Second})
			if err := bad.Send(context.Background(), Message{To: "ada@example.com", Subject: "x", Text: "x"}); err == nil {
				t.Fatal("an untrusted certificate was accepted")
			}
		})
	}
}

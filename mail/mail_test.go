package mail

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/keyshard/keyshard/event"
)

// smtpServer is a real SMTP server on loopback (emersion/go-smtp) that
// requires AUTH PLAIN with one user and keeps what it receives.
type smtpServer struct {
	addr string
	mu   sync.Mutex
	got  []received
}

type received struct {
	from  string
	to    []string
	data  string
	plain bool // the connection was not TLS
}

type session struct {
	s     *smtpServer
	authd bool
	r     received
	plain bool
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "mailer" || pass != "s3cret" {
			return errors.New("bad credentials")
		}
		s.authd = true
		return nil
	}), nil
}
func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authd {
		return smtp.ErrAuthRequired
	}
	s.r.from = from
	return nil
}
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error { s.r.to = append(s.r.to, to); return nil }
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.data, s.r.plain = string(b), s.plain
	s.s.mu.Lock()
	s.s.got = append(s.s.got, s.r)
	s.s.mu.Unlock()
	return nil
}
func (s *session) Reset() { s.r = received{} }

func sprintf(format, a string) string { return strings.Replace(format, "%s", a, 1) }
func (s *session) Logout() error      { return nil }

func newSMTPServer(t *testing.T) *smtpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ss := &smtpServer{addr: ln.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{s: ss}, nil }))
	srv.Domain, srv.AllowInsecureAuth = "localhost", true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ss
}

func TestSend(t *testing.T) {
	ss := newSMTPServer(t)
	s, err := New(Config{URL: "smtp://mailer:s3cret@" + ss.addr, From: "Acme <no-reply@acme.test>"})
	if err != nil {
		t.Fatal(err)
	}
	m := Message{To: "ada@example.com", Subject: "Reset your password", Text: "Your code is 123456", HTML: "<p>Your code is <b>123456</b></p>"}
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatalf("send: %v", err)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.got) != 1 {
		t.Fatalf("the server got %d mails", len(ss.got))
	}
	g := ss.got[0]
	if g.from != "no-reply@acme.test" || len(g.to) != 1 || g.to[0] != "ada@example.com" {
		t.Fatalf("envelope: from %q to %v", g.from, g.to)
	}
	for _, want := range []string{"Subject: Reset your password", "multipart/alternative", "text/plain", "text/html", "123456"} {
		if !strings.Contains(g.data, want) {
			t.Fatalf("the mail lacks %q:\n%s", want, g.data)
		}
	}
}

func TestSend_Failures(t *testing.T) {
	ss := newSMTPServer(t)
	bad, _ := New(Config{URL: "smtp://mailer:wrong@" + ss.addr, From: "no-reply@acme.test"})
	if err := bad.Send(context.Background(), Message{To: "ada@example.com", Subject: "x", Text: "x"}); err == nil {
		t.Fatal("wrong SMTP credentials sent a mail")
	}
	ok, _ := New(Config{URL: "smtp://mailer:s3cret@" + ss.addr, From: "no-reply@acme.test"})
	var drop *event.Drop
	if err := ok.Send(context.Background(), Message{To: "not an address", Subject: "x", Text: "x"}); !errors.As(err, &drop) {
		t.Fatalf("a bad recipient is not dropped: %v", err)
	}
	down, _ := New(Config{URL: "smtp://127.0.0.1:1", From: "no-reply@acme.test", Timeout: 2 * time.Second})
	if err := down.Send(context.Background(), Message{To: "ada@example.com", Subject: "x", Text: "x"}); err == nil || errors.As(err, &drop) {
		t.Fatalf("a server that is down must be retried, not dropped: %v", err)
	}
	for _, u := range []string{"http://x", "smtp://", "smtp://h:port"} {
		if _, err := New(Config{URL: u, From: "a@b.c"}); err == nil {
			t.Errorf("%s was accepted", u)
		}
	}
	if _, err := New(Config{URL: "smtp://h"}); err == nil {
		t.Error("no From was accepted")
	}
}

func TestSink(t *testing.T) {
	ss := newSMTPServer(t)
	s, _ := New(Config{URL: "smtp://mailer:s3cret@" + ss.addr, From: "no-reply@acme.test"})
	payload := []byte(`{"id":"evt_1","type":"mail.requested","data":{"to":"bob@example.com","subject":"Hi","text":"Hello"}}`)
	if err := (Sink{Sender: s}).Deliver(context.Background(), nil, event.Message{ID: 1, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	var drop *event.Drop
	if err := (Sink{Sender: s}).Deliver(context.Background(), nil, event.Message{ID: 2, Payload: []byte(`{"data":{}}`)}); !errors.As(err, &drop) {
		t.Fatalf("a row without a mail: %v", err)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.got) != 1 || ss.got[0].to[0] != "bob@example.com" {
		t.Fatalf("got %+v", ss.got)
	}
}

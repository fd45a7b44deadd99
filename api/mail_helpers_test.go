package api_test

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/keyshard/keyshard/app"
)

// mailbox is a real SMTP server on loopback (emersion/go-smtp) that keeps
// every mail it receives; down() makes it refuse mail until up().
type mailbox struct {
	tb   testing.TB
	Addr string
	mu   sync.Mutex
	got  []*gotMail
	cond *sync.Cond
	off  bool
}

// gotMail is a received mail, decoded.
type gotMail struct {
	From, To, Subject string
	Text, HTML        string
}

type mailboxSession struct {
	mb       *mailbox
	from, to string
}

func (s *mailboxSession) Mail(from string, _ *smtp.MailOptions) error {
	s.mb.mu.Lock()
	off := s.mb.off
	s.mb.mu.Unlock()
	if off {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down for the test"}
	}
	s.from = from
	return nil
}
func (s *mailboxSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = to; return nil }
func (s *mailboxSession) Data(r io.Reader) error {
	m, err := parseMail(r)
	if err != nil {
		return err
	}
	s.mb.mu.Lock()
	s.mb.got = append(s.mb.got, m)
	s.mb.cond.Broadcast()
	s.mb.mu.Unlock()
	return nil
}
func (s *mailboxSession) Reset()        {}
func (s *mailboxSession) Logout() error { return nil }

func newMailbox(tb testing.TB) *mailbox {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	mb := &mailbox{tb: tb, Addr: ln.Addr().String()}
	mb.cond = sync.NewCond(&mb.mu)
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailboxSession{mb: mb}, nil }))
	srv.Domain, srv.AllowInsecureAuth = "localhost", true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return mb
}

// config is the server's mail config for this mailbox.
func (mb *mailbox) config() app.MailConfig {
	return app.MailConfig{URL: "smtp://" + mb.Addr, From: "Keyshard <auth@example.com>"}
}

func (mb *mailbox) down() { mb.mu.Lock(); mb.off = true; mb.mu.Unlock() }
func (mb *mailbox) up()   { mb.mu.Lock(); mb.off = false; mb.mu.Unlock() }

// count is the number of mails received so far.
func (mb *mailbox) count() int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return len(mb.got)
}

// next waits for a mail to to after the first skip mails to it.
func (mb *mailbox) wait(to string, skip int, timeout time.Duration) *gotMail {
	mb.tb.Helper()
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { mb.mu.Lock(); mb.cond.Broadcast(); mb.mu.Unlock() })
	defer timer.Stop()
	mb.mu.Lock()
	defer mb.mu.Unlock()
	for {
		n := 0
		for _, m := range mb.got {
			if strings.EqualFold(m.To, to) {
				if n == skip {
					return m
				}
				n++
			}
		}
		if time.Now().After(deadline) {
			mb.tb.Fatalf("no mail #%d to %s within %v (%d mails in all)", skip+1, to, timeout, len(mb.got))
		}
		mb.cond.Wait()
	}
}

// last waits for the newest mail to to, the n-th (1-based) it received.
func (mb *mailbox) nth(to string, n int) *gotMail { return mb.wait(to, n-1, 15*time.Second) }

var (
	linkRe = regexp.MustCompile(`https?://[^\s"<>]+/verify\?[^\s"<>]+`)
	codeRe = regexp.MustCompile(`\b(\d{6})\b`)
)

// Link is the verify link in the mail's text.
func (m *gotMail) Link(tb testing.TB) string {
	tb.Helper()
	l := linkRe.FindString(m.Text)
	if l == "" {
		tb.Fatalf("no link in mail %q:\n%s", m.Subject, m.Text)
	}
	return l
}

// Code is the 6-digit code in the mail's text.
func (m *gotMail) Code(tb testing.TB) string {
	tb.Helper()
	c := codeRe.FindStringSubmatch(m.Text)
	if c == nil {
		tb.Fatalf("no code in mail %q:\n%s", m.Subject, m.Text)
	}
	return c[1]
}

func parseMail(r io.Reader) (*gotMail, error) {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return nil, err
	}
	dec := new(mime.WordDecoder)
	subj, _ := dec.DecodeHeader(msg.Header.Get("Subject"))
	m := &gotMail{From: msg.Header.Get("From"), Subject: subj}
	if to, err := mail.ParseAddress(msg.Header.Get("To")); err == nil {
		m.To = to.Address
	}
	return m, readParts(m, msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
}

func readParts(m *gotMail, ctype, enc string, body io.Reader) error {
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return err
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			// multipart.Reader decodes quoted-printable itself.
			if err := readParts(m, p.Header.Get("Content-Type"), "", p); err != nil {
				return err
			}
		}
	}
	if strings.EqualFold(enc, "quoted-printable") {
		body = quotedPrintable(body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	switch mt {
	case "text/plain":
		m.Text = string(b)
	case "text/html":
		m.HTML = string(b)
	}
	return nil
}

func quotedPrintable(r io.Reader) io.Reader { return quotedprintable.NewReader(r) }

// follow GETs a mailed link without following its redirect.
func (e *mailEnv) follow(link string) (int, string) {
	e.tb.Helper()
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(link)
	if err != nil {
		e.tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

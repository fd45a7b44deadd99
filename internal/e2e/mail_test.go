package e2e_test

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpSink is an SMTP server on loopback that refuses every mail while
// down and keeps the text part of each mail it takes.
type smtpSink struct {
	addr string

	mu      sync.Mutex // guards the fields below
	down    bool
	refused int
	got     []sunkMail
}

type sunkMail struct {
	to, subject, text string
}

type sinkSession struct{ s *smtpSink }

func (ss sinkSession) Mail(string, *smtp.MailOptions) error {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.s.down {
		ss.s.refused++
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down for the test"}
	}
	return nil
}
func (ss sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss sinkSession) Reset()                               {}
func (ss sinkSession) Logout() error                        { return nil }

func (ss sinkSession) Data(r io.Reader) error {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	m := sunkMail{subject: msg.Header.Get("Subject")}
	if to, err := mail.ParseAddress(msg.Header.Get("To")); err == nil {
		m.to = to.Address
	}
	if m.text, err = textPart(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body); err != nil {
		return err
	}
	ss.s.mu.Lock()
	ss.s.got = append(ss.s.got, m)
	ss.s.mu.Unlock()
	return nil
}

// textPart is the text/plain part of a mail body, decoded.
func textPart(ctype, enc string, body io.Reader) (string, error) {
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return "", nil
			}
			if err != nil {
				return "", err
			}
			if t, err := textPart(p.Header.Get("Content-Type"), "", p); err != nil || t != "" {
				return t, err
			}
		}
	}
	if mt != "text/plain" {
		return "", nil
	}
	if strings.EqualFold(enc, "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	b, err := io.ReadAll(body)
	return string(b), err
}

func newSMTPSink(tb testing.TB, down bool) *smtpSink {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &smtpSink{addr: ln.Addr().String(), down: down}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *smtpSink) setDown(down bool) { s.mu.Lock(); s.down = down; s.mu.Unlock() }

func (s *smtpSink) snapshot() (refused int, got []sunkMail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused, append([]sunkMail(nil), s.got...)
}

var mailCode = regexp.MustCompile(`\b(\d{6})\b`)

// TestMail_SIGKILLBetweenCommitAndSend: a recovery mail is committed (the
// request answered 200) while the SMTP server refuses mail, and the server
// is SIGKILLed before it could send it: at once, or after the outbox
// tried and was refused (the retry is then scheduled in the shard).
// Restarted on the same data directory with the SMTP server back, it
// sends the mail exactly once, and the code in it works.
func TestMail_SIGKILLBetweenCommitAndSend(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	t.Run("at once", func(t *testing.T) { mailSIGKILL(t, false) })
	t.Run("after a refused attempt", func(t *testing.T) { mailSIGKILL(t, true) })
}

func mailSIGKILL(t *testing.T, afterRefusal bool) {
	sink := newSMTPSink(t, true)
	c := newCluster(t, "", "--smtp-url", "smtp://"+sink.addr, "--smtp-from", "Keyshard <auth@example.com>")
	s := c.start()
	tn := s.createTenants("mail", 1)[0]
	key := s.must(200, "POST", "/admin/tenants/"+tn.Slug+"/service-key", c.adminToken, nil).str("service_key")
	base := "/t/" + tn.Slug
	// Auto-confirm stays on (the default): the signup mails nothing.
	s.must(200, "PATCH", base+"/admin/config/auth", key, map[string]any{"site_url": "http://app.example.com"})
	s.must(200, "POST", base+"/signup", "", map[string]any{"email": "kill@example.com", "password": "correct horse 1"})
	if r := s.must(200, "POST", base+"/recover", "", map[string]any{"email": "kill@example.com"}); strings.TrimSpace(string(r.Raw)) != "{}" {
		t.Fatalf("recover: %s", r.Raw)
	}
	if afterRefusal {
		if err := waitFor(30*time.Second, func() bool { n, _ := sink.snapshot(); return n > 0 }); err != nil {
			t.Fatalf("the outbox never tried the SMTP server\n%s", c.allLogs())
		}
	}
	s.kill()
	refusedBefore, got := sink.snapshot()
	if len(got) != 0 {
		t.Fatalf("a mail got through the SMTP server while it was down: %+v", got)
	}
	t.Logf("SIGKILLed after the commit; %d refused attempts before the kill", refusedBefore)

	sink.setDown(false)
	s = c.start()
	if err := waitFor(90*time.Second, func() bool { _, got := sink.snapshot(); return len(got) > 0 }); err != nil {
		t.Fatalf("the committed mail never arrived after the restart\n%s", c.allLogs())
	}
	// Give a duplicate every chance to show up: several rounds of the
	// outbox worker (every 500 ms).
	time.Sleep(3 * time.Second)
	_, got = sink.snapshot()
	if len(got) != 1 {
		t.Fatalf("%d mails arrived, want exactly 1: %+v", len(got), got)
	}
	m := got[0]
	if m.to != "kill@example.com" || m.subject != "Reset your password" {
		t.Fatalf("mail to %q, subject %q", m.to, m.subject)
	}
	code := mailCode.FindStringSubmatch(m.text)
	if code == nil {
		t.Fatalf("no code in the mail:\n%s", m.text)
	}
	r := s.must(200, "POST", base+"/verify", "", map[string]any{"type": "recovery", "email": "kill@example.com", "token": code[1]})
	if r.str("access_token") == "" {
		t.Fatalf("verify: %s", r.Raw)
	}
	s.stop()

	d := openDB(t, shardPath(c.dataDir, tn.ID))
	defer d.close()
	if n := d.one(`SELECT COUNT(*) FROM outbox WHERE topic = 'mail'`); n != "0" {
		t.Fatalf("%s mails left in the outbox", n)
	}
	d.integrity()
	if _, got := sink.snapshot(); len(got) != 1 {
		t.Fatalf("%d mails in the end, want 1", len(got))
	}
}

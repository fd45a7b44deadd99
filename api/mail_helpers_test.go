package api_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
)

// mailbox is a real SMTP server on loopback (emersion/go-smtp) that keeps
// every mail it receives; down() makes it refuse mail until up(), and
// requireAuth makes it ask for AUTH PLAIN.
type mailbox struct {
	tb   testing.TB
	Addr string
	mu   sync.Mutex // guards the fields below
	got  []*gotMail
	cond *sync.Cond
	off  bool
	// refused counts the mails refused while down.
	refused int
	// creds: user → password AUTH PLAIN must present (nil: no AUTH).
	creds map[string]string
	// logins are the AUTH attempts, "user:password".
	logins []string
}

// gotMail is a received mail, decoded.
type gotMail struct {
	From, To, Subject string
	Text, HTML        string
}

type mailboxSession struct {
	mb       *mailbox
	from, to string
	authed   bool
}

var _ smtp.AuthSession = (*mailboxSession)(nil)

func (s *mailboxSession) Mail(from string, _ *smtp.MailOptions) error {
	s.mb.mu.Lock()
	defer s.mb.mu.Unlock()
	if s.mb.off {
		s.mb.refused++
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down for the test"}
	}
	if s.mb.creds != nil && !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	s.from = from
	return nil
}

func (s *mailboxSession) AuthMechanisms() []string {
	s.mb.mu.Lock()
	defer s.mb.mu.Unlock()
	if s.mb.creds == nil {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *mailboxSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		s.mb.mu.Lock()
		defer s.mb.mu.Unlock()
		s.mb.logins = append(s.mb.logins, user+":"+pass)
		if want, ok := s.mb.creds[user]; !ok || want != pass {
			return errors.New("bad credentials")
		}
		s.authed = true
		return nil
	}), nil
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

// requireAuth makes the mailbox take mail only after AUTH PLAIN as user
// with pass.
func (mb *mailbox) requireAuth(user, pass string) {
	mb.mu.Lock()
	mb.creds = map[string]string{user: pass}
	mb.mu.Unlock()
}

// host and port of the mailbox, as a tenant's smtp_host and smtp_port.
func (mb *mailbox) hostPort() (string, string) {
	h, p, err := net.SplitHostPort(mb.Addr)
	if err != nil {
		mb.tb.Fatal(err)
	}
	return h, p
}

// stats returns the refused mails and the AUTH attempts so far.
func (mb *mailbox) stats() (refused int, logins []string) {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return mb.refused, append([]string(nil), mb.logins...)
}

// countTo is the number of mails received for to.
func (mb *mailbox) countTo(to string) int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	n := 0
	for _, m := range mb.got {
		if strings.EqualFold(m.To, to) {
			n++
		}
	}
	return n
}

// count is the number of mails received so far.
func (mb *mailbox) count() int {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return len(mb.got)
}

// wait waits for a mail to to after the first skip mails to it.
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

// nth waits for the n-th (1-based) mail to to.
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

// outboxMails is the number of mails in the tenant's outbox (not sent
// yet).
func (e *mailEnv) outboxMails(slug string) int {
	e.tb.Helper()
	var n int
	e.read(slug, func(q engine.Querier) error {
		return q.QueryRow(`SELECT COUNT(*) FROM outbox WHERE topic = ?`, "mail").Scan(&n)
	})
	return n
}

// drain waits until the tenant's outbox holds no mail: every mail a
// request committed has been sent (a sent mail leaves the outbox only
// after the SMTP server took it), so what the mailbox holds is final.
func (e *mailEnv) drain(slug string) {
	e.tb.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if e.outboxMails(slug) == 0 {
			return
		}
	}
	e.tb.Fatalf("%d mails of %s still in the outbox after 15 s", e.outboxMails(slug), slug)
}

// wantMails drains acme's outbox and checks how many mails the server's
// mailbox got in all.
func (e *mailEnv) wantMails(n int) {
	e.tb.Helper()
	e.drain("acme")
	if got := e.mb.count(); got != n {
		e.tb.Fatalf("%d mails sent, want %d", got, n)
	}
}

// outboxErrors are the last errors of the tenant's unsent mails.
func (e *mailEnv) outboxErrors(slug string) []string {
	e.tb.Helper()
	var out []string
	e.read(slug, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT last_error FROM outbox WHERE topic = ? AND last_error IS NOT NULL`, "mail")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				return err
			}
			out = append(out, s)
		}
		return rows.Err()
	})
	return out
}

// configure PATCHes a tenant's auth config.
func (e *mailEnv) configure(base, key string, settings map[string]any) {
	e.tb.Helper()
	if r := e.call("PATCH", base+"/admin/config/auth", key, settings); r.Status != 200 {
		e.tb.Fatalf("config %v: %d %s", settings, r.Status, r.Raw)
	}
}

// user makes a confirmed user on acme through the admin API (no mail)
// and returns its id.
func (e *mailEnv) user(email, password string, meta map[string]any) string {
	e.tb.Helper()
	body := map[string]any{"email": email, "password": password, "email_confirm": true}
	if meta != nil {
		body["user_metadata"] = meta
	}
	r := e.call("POST", e.base+"/admin/users", e.key, body)
	if r.Status != 200 || r.str("id") == "" {
		e.tb.Fatalf("create user %s: %d %s", email, r.Status, r.Raw)
	}
	return r.str("id")
}

// session signs a user of acme in with its password.
func (e *mailEnv) session(email, password string) authResp {
	e.tb.Helper()
	r := e.login(e.base, email, password)
	if r.Status != 200 || r.str("access_token") == "" {
		e.tb.Fatalf("login %s: %d %s", email, r.Status, r.Raw)
	}
	return r
}

// amrMethod is the amr method of an access token.
func amrMethod(tb testing.TB, at string) (string, int64) {
	tb.Helper()
	_, c := claimsOf(tb, at)
	amr, _ := c["amr"].([]any)
	if len(amr) != 1 {
		tb.Fatalf("amr %v", c["amr"])
	}
	a := amr[0].(map[string]any)
	ts, _ := a["timestamp"].(float64)
	return fmt.Sprint(a["method"]), int64(ts)
}

// pkcePair returns a code_verifier and its S256 code_challenge.
func pkcePair(tb testing.TB) (verifier, challenge string) {
	tb.Helper()
	b := make([]byte, 48)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	verifier = base64.RawURLEncoding.EncodeToString(b) // 64 chars
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// linkQuery is the query of a mailed link.
func linkQuery(tb testing.TB, link string) url.Values {
	tb.Helper()
	u, err := url.Parse(link)
	if err != nil {
		tb.Fatalf("link %q: %v", link, err)
	}
	return u.Query()
}

// fragmentOf is the fragment of a redirect, decoded.
func fragmentOf(tb testing.TB, loc string) url.Values {
	tb.Helper()
	_, frag, ok := strings.Cut(loc, "#")
	if !ok {
		tb.Fatalf("no fragment in %q", loc)
	}
	v, err := url.ParseQuery(frag)
	if err != nil {
		tb.Fatalf("fragment of %q: %v", loc, err)
	}
	return v
}

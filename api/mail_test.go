package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
)

// mailEnv is a server whose tenant "acme" does not auto-confirm, with its
// mails going to a real SMTP server on loopback.
type mailEnv struct {
	*authEnv
	mb   *mailbox
	base string
	key  string // acme's service key
}

func newMailEnv(t *testing.T, settings map[string]any) *mailEnv {
	t.Helper()
	mb := newMailbox(t)
	e := newAuthEnv(t, authEnvOptions{mail: mb.config(), events: app.EventsConfig{Interval: 20 * time.Millisecond,
		Backoff: func(int) time.Duration { return 200 * time.Millisecond }}})
	me := &mailEnv{authEnv: e, mb: mb, base: e.tenant("acme")}
	me.key = e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	cfg := map[string]any{"mailer_autoconfirm": false, "site_url": "http://app.example.com",
		"uri_allow_list": "http://app.example.com/**,http://localhost:3000/welcome", "smtp_max_frequency": 0, "rate_limit_email_sent": 1000}
	for k, v := range settings {
		cfg[k] = v
	}
	if r := e.call("PATCH", me.base+"/admin/config/auth", me.key, cfg); r.Status != 200 {
		t.Fatalf("config: %d %s", r.Status, r.Raw)
	}
	return me
}

func TestMail_SignupConfirmByCode(t *testing.T) {
	e := newMailEnv(t, nil)
	r := e.call("POST", e.base+"/signup?redirect_to=http://localhost:3000/welcome", "", map[string]any{"email": "Ann@Example.com", "password": "correct horse 1"})
	if r.Status != 200 || r.Body["access_token"] != nil || r.str("confirmation_sent_at") == "" {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	if r := e.login(e.base, "ann@example.com", "correct horse 1"); r.Status != 400 || r.str("error_code") != "email_not_confirmed" {
		t.Fatalf("login before confirming: %d %s", r.Status, r.Raw)
	}
	m := e.mb.nth("ann@example.com", 1)
	if !strings.Contains(m.Link(t), "type=signup") || !strings.Contains(m.Link(t), "redirect_to=http%3A%2F%2Flocalhost%3A3000%2Fwelcome") {
		t.Fatalf("link: %s", m.Link(t))
	}
	if !strings.Contains(m.From, "<auth@example.com>") || m.HTML == "" {
		t.Fatalf("from %q html %q", m.From, m.HTML)
	}
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "signup", "email": "ann@example.com", "token": "000000"}); r.Status != 403 || r.str("error_code") != "otp_expired" {
		t.Fatalf("wrong code: %d %s", r.Status, r.Raw)
	}
	r = e.call("POST", e.base+"/verify", "", map[string]any{"type": "signup", "email": "ann@example.com", "token": m.Code(t)})
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("verify: %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "signup", "email": "ann@example.com", "token": m.Code(t)}); r.Status != 403 || r.str("error_code") != "otp_expired" {
		t.Fatalf("reused code: %d %s", r.Status, r.Raw)
	}
	if r := e.login(e.base, "ann@example.com", "correct horse 1"); r.Status != 200 {
		t.Fatalf("login after confirming: %d %s", r.Status, r.Raw)
	}
}

func TestMail_RecoverLink(t *testing.T) {
	e := newMailEnv(t, map[string]any{"mailer_autoconfirm": true})
	if r := e.signup(e.base, "bob@example.com", "correct horse 1"); r.Status != 200 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	for _, addr := range []string{"bob@example.com", "nobody@example.com"} {
		if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": addr}); r.Status != 200 || strings.TrimSpace(string(r.Raw)) != "{}" {
			t.Fatalf("recover %s: %d %s", addr, r.Status, r.Raw)
		}
	}
	link := e.mb.nth("bob@example.com", 1).Link(t)
	status, loc := e.follow(link)
	if status != http.StatusSeeOther {
		t.Fatalf("verify link: %d", status)
	}
	if !strings.HasPrefix(loc, "http://app.example.com#access_token=") || !strings.Contains(loc, "type=recovery") || !strings.Contains(loc, "&sb=") {
		t.Fatalf("location: %s", loc)
	}
	if status, loc := e.follow(link); status != 303 || !strings.Contains(loc, "#error=access_denied&error_code=otp_expired") {
		t.Fatalf("reused link: %d %s", status, loc)
	}
	time.Sleep(300 * time.Millisecond)
	if n := e.mb.count(); n != 1 {
		t.Fatalf("%d mails, want 1 (none to the unknown address)", n)
	}
}

package api_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/mail"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/engine"
)

// mailEnv is a server whose tenant "acme" does not auto-confirm, with its
// mails going to a real SMTP server on loopback.
type mailEnv struct {
	*authEnv
	mb   *mailbox
	base string
	key  string // acme's service key
}

// mailEnvOptions: allowPrivate is serve --outbound-allow-private (a
// tenant's own SMTP server may be on loopback).
type mailEnvOptions struct {
	allowPrivate bool
}

// mailDefaults are acme's settings unless a test says otherwise: no
// auto-confirm, a site URL and an allow list, no per-address wait, and a
// tenant limit no test reaches by accident.
func mailDefaults() map[string]any {
	return map[string]any{"mailer_autoconfirm": false, "site_url": "http://app.example.com",
		"uri_allow_list": "http://app.example.com/**,http://localhost:3000/welcome", "smtp_max_frequency": 0, "rate_limit_email_sent": 1000}
}

func newMailEnv(t *testing.T, settings map[string]any) *mailEnv {
	t.Helper()
	return newMailEnvWith(t, mailEnvOptions{}, settings)
}

func newMailEnvWith(t *testing.T, o mailEnvOptions, settings map[string]any) *mailEnv {
	t.Helper()
	mb := newMailbox(t)
	e := newAuthEnv(t, authEnvOptions{mail: mb.config(), events: app.EventsConfig{Interval: 20 * time.Millisecond,
		Backoff: func(int) time.Duration { return 200 * time.Millisecond }, Webhooks: app.WebhooksConfig{AllowPrivate: o.allowPrivate}}})
	me := &mailEnv{authEnv: e, mb: mb, base: e.tenant("acme")}
	me.key = e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	cfg := mailDefaults()
	for k, v := range settings {
		cfg[k] = v
	}
	me.configure(me.base, me.key, cfg)
	return me
}

// gotrueHash is GoTrue's token hash: hex(sha224(address + code)).
// Keyshard's link token must NOT be it: from the address alone it would
// let anyone walk the 10^6 codes through the link, unthrottled.
var hex56Re = regexp.MustCompile(`^[0-9a-f]{56}$`)

func gotrueHash(address, code string) string {
	sum := sha256.Sum224([]byte(address + code))
	return hex.EncodeToString(sum[:])
}

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

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
	e.wantMails(1) // none to the unknown address
}

// pkceLink asks for a mail with a fresh S256 code challenge (request gets
// the challenge), checks that the n-th mail to to carries a pkce_ token
// of type typ, follows it and returns the verifier and the auth code of
// the redirect (?code=<uuid>, no fragment).
func (e *mailEnv) pkceLink(t *testing.T, to string, n int, typ string, request func(challenge string) authResp) (verifier, code string) {
	t.Helper()
	verifier, challenge := pkcePair(t)
	if r := request(challenge); r.Status != 200 {
		t.Fatalf("request with a code challenge: %d %s", r.Status, r.Raw)
	}
	link := e.mb.nth(to, n).Link(t)
	q := linkQuery(t, link)
	if tok := q.Get("token"); !strings.HasPrefix(tok, "pkce_") || len(tok) != len("pkce_")+56 || q.Get("type") != typ ||
		q.Get("redirect_to") != "http://localhost:3000/welcome" {
		t.Fatalf("PKCE link: %s", link)
	}
	status, loc := e.follow(link)
	if status != http.StatusSeeOther || strings.Contains(loc, "#") {
		t.Fatalf("PKCE link followed: %d %s", status, loc)
	}
	u, err := url.Parse(loc)
	if err != nil || u.Scheme+"://"+u.Host+u.Path != "http://localhost:3000/welcome" || len(u.Query()) != 1 {
		t.Fatalf("PKCE redirect: %s", loc)
	}
	if code = u.Query().Get("code"); !uuidRe.MatchString(code) {
		t.Fatalf("auth code %q in %s", code, loc)
	}
	return verifier, code
}

func (e *mailEnv) exchange(base, code, verifier string) authResp {
	e.tb.Helper()
	return e.call("POST", base+"/token?grant_type=pkce", "", map[string]any{"auth_code": code, "code_verifier": verifier})
}

// TestMail_PKCE: a mail asked for with a code_challenge (/otp, /recover,
// /signup) carries a pkce_ token; its link redirects with ?code=<uuid>,
// which POST /token?grant_type=pkce trades with the verifier for a
// session (amr: the link's kind) once; a reused code is 404
// flow_state_not_found, a wrong verifier 400 bad_code_verifier as GoTrue
// answers (and the code is spent by it: Keyshard's choice, GoTrue keeps
// it).
func TestMail_PKCE(t *testing.T) {
	const redirect = "?redirect_to=http://localhost:3000/welcome"
	// check runs two rounds, one mail each (to emails[i], asked for by
	// request): the first exchanged right, then reused; the second
	// exchanged with a wrong verifier first.
	check := func(t *testing.T, e *mailEnv, emails [2]string, typ, amr string, request func(email, challenge string) authResp) {
		t.Helper()
		round := func(i int) (verifier, code string) {
			t.Helper()
			return e.pkceLink(t, emails[i], e.mb.countTo(emails[i])+1, typ, func(ch string) authResp { return request(emails[i], ch) })
		}
		verifier, code := round(0)
		r := e.exchange(e.base, code, verifier)
		if r.Status != 200 || r.str("access_token") == "" || r.str("refresh_token") == "" || r.Body["user"].(map[string]any)["email"] != emails[0] {
			t.Fatalf("exchange: %d %s", r.Status, r.Raw)
		}
		if m, _ := amrMethod(t, r.str("access_token")); m != amr {
			t.Fatalf("amr method %q, want %q", m, amr)
		}
		if r.Body["user"].(map[string]any)["email_confirmed_at"] == nil {
			t.Fatalf("the user is not confirmed: %s", r.Raw)
		}
		if g := e.call("GET", e.base+"/user", r.str("access_token"), nil); g.Status != 200 || g.str("email") != emails[0] {
			t.Fatalf("GET /user: %d %s", g.Status, g.Raw)
		}
		wantAuthError(t, e.exchange(e.base, code, verifier), 404, "flow_state_not_found")

		// A second mail: the wrong verifier is refused, and spends the code.
		verifier, code = round(1)
		other, _ := pkcePair(t)
		wantAuthError(t, e.exchange(e.base, code, other), 400, "bad_code_verifier")
		wantAuthError(t, e.exchange(e.base, code, verifier), 404, "flow_state_not_found")
		wantAuthError(t, e.exchange(e.base, "", verifier), 400, "validation_failed")
	}
	t.Run("otp", func(t *testing.T) {
		e := newMailEnv(t, nil)
		e.user("pk@example.com", "correct horse 1", nil)
		check(t, e, [2]string{"pk@example.com", "pk@example.com"}, "magiclink", "magiclink", func(email, ch string) authResp {
			return e.call("POST", e.base+"/otp"+redirect, "", map[string]any{"email": email, "create_user": true,
				"code_challenge": ch, "code_challenge_method": "s256"})
		})
	})
	t.Run("recover", func(t *testing.T) {
		e := newMailEnv(t, nil)
		e.user("pk@example.com", "correct horse 1", nil)
		check(t, e, [2]string{"pk@example.com", "pk@example.com"}, "recovery", "recovery", func(email, ch string) authResp {
			return e.call("POST", e.base+"/recover"+redirect, "", map[string]any{"email": email,
				"code_challenge": ch, "code_challenge_method": "S256"})
		})
	})
	t.Run("signup", func(t *testing.T) {
		e := newMailEnv(t, nil)
		check(t, e, [2]string{"pk@example.com", "pk2@example.com"}, "signup", "signup", func(email, ch string) authResp {
			r := e.call("POST", e.base+"/signup"+redirect, "", map[string]any{"email": email, "password": "correct horse 1",
				"code_challenge": ch, "code_challenge_method": "s256"})
			if r.Body["access_token"] != nil {
				t.Fatalf("a session before confirming: %s", r.Raw)
			}
			return r
		})
		if r := e.login(e.base, "pk@example.com", "correct horse 1"); r.Status != 200 {
			t.Fatalf("login after the PKCE confirmation: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("bad challenge", func(t *testing.T) {
		e := newMailEnv(t, nil)
		for _, body := range []map[string]any{
			{"email": "pk@example.com", "code_challenge": "short", "code_challenge_method": "s256"},
			{"email": "pk@example.com", "code_challenge": strings.Repeat("a", 43)},
			{"email": "pk@example.com", "code_challenge": strings.Repeat("a", 43), "code_challenge_method": "md5"},
		} {
			wantAuthError(t, e.call("POST", e.base+"/otp", "", body), 400, "validation_failed")
		}
		e.wantMails(0)
	})
}

// adminUser finds acme's user of an address through the admin API (nil:
// none).
func (e *mailEnv) adminUser(email string) map[string]any {
	e.tb.Helper()
	r := e.call("GET", e.base+"/admin/users?per_page=1000", e.key, nil)
	if r.Status != 200 {
		e.tb.Fatalf("list users: %d %s", r.Status, r.Raw)
	}
	users, _ := r.Body["users"].([]any)
	for _, u := range users {
		if m := u.(map[string]any); m["email"] == email {
			return m
		}
	}
	return nil
}

// TestMail_OTP: /otp makes an unconfirmed user of a new address and mails
// it a confirmation (create_user true), answers {} and mails nothing for
// an unknown address with create_user false, and mails a confirmed user a
// magic link; POST /verify takes the code as type email or magiclink, and
// the link's token as token_hash (hex sha224 of address and code).
func TestMail_OTP(t *testing.T) {
	e := newMailEnv(t, nil)
	otp := func(email string, create bool) {
		t.Helper()
		r := e.call("POST", e.base+"/otp", "", map[string]any{"email": email, "create_user": create})
		if r.Status != 200 || strings.TrimSpace(string(r.Raw)) != "{}" {
			t.Fatalf("otp %s: %d %s", email, r.Status, r.Raw)
		}
	}
	verify := func(body map[string]any) authResp {
		t.Helper()
		return e.call("POST", e.base+"/verify", "", body)
	}

	otp("New@Example.com", true)
	u := e.adminUser("new@example.com")
	if u == nil || u["email_confirmed_at"] != nil || u["confirmation_sent_at"] == nil {
		t.Fatalf("the user /otp made: %v", u)
	}
	m := e.mb.nth("new@example.com", 1)
	if m.Subject != "Confirm your email address" || linkQuery(t, m.Link(t)).Get("type") != "signup" {
		t.Fatalf("a new address's mail: %q %s", m.Subject, m.Link(t))
	}
	r := verify(map[string]any{"type": "email", "email": "new@example.com", "token": m.Code(t)})
	if r.Status != 200 || r.str("access_token") == "" || r.Body["user"].(map[string]any)["email_confirmed_at"] == nil {
		t.Fatalf("verify type email: %d %s", r.Status, r.Raw)
	}
	if am, _ := amrMethod(t, r.str("access_token")); am != "otp" {
		t.Fatalf("amr %q", am)
	}

	otp("ghost@example.com", false)
	if u := e.adminUser("ghost@example.com"); u != nil {
		t.Fatalf("create_user false made a user: %v", u)
	}

	e.user("known@example.com", "correct horse 1", nil)
	otp("known@example.com", false)
	m = e.mb.nth("known@example.com", 1)
	if m.Subject != "Your sign-in link" || linkQuery(t, m.Link(t)).Get("type") != "magiclink" {
		t.Fatalf("a confirmed user's mail: %q %s", m.Subject, m.Link(t))
	}
	if r := verify(map[string]any{"type": "magiclink", "email": "known@example.com", "token": m.Code(t)}); r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("verify type magiclink: %d %s", r.Status, r.Raw)
	}
	otp("known@example.com", true)
	m = e.mb.nth("known@example.com", 2)
	if r := verify(map[string]any{"type": "email", "email": "known@example.com", "token": m.Code(t)}); r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("verify type email: %d %s", r.Status, r.Raw)
	}

	// token_hash: the link's token: random, 56 hex as GoTrue's, not
	// derived from the code.
	otp("known@example.com", false)
	m = e.mb.nth("known@example.com", 3)
	th := linkQuery(t, m.Link(t)).Get("token")
	if !hex56Re.MatchString(th) || th == gotrueHash("known@example.com", m.Code(t)) {
		t.Fatalf("link token %s: want 56 random hex, not hex(sha224(email+code)) with code %s", th, m.Code(t))
	}
	wantAuthError(t, verify(map[string]any{"type": "recovery", "token_hash": th}), 403, "otp_expired") // another kind
	r = verify(map[string]any{"type": "magiclink", "token_hash": th})
	if r.Status != 200 || r.str("access_token") == "" || r.Body["user"].(map[string]any)["email"] != "known@example.com" {
		t.Fatalf("verify token_hash: %d %s", r.Status, r.Raw)
	}
	wantAuthError(t, verify(map[string]any{"type": "magiclink", "token_hash": th}), 403, "otp_expired")

	// /magiclink, GoTrue's older /otp, mails the same.
	if r := e.call("POST", e.base+"/magiclink", "", map[string]any{"email": "known@example.com"}); r.Status != 200 {
		t.Fatalf("magiclink: %d %s", r.Status, r.Raw)
	}
	if m := e.mb.nth("known@example.com", 4); m.Subject != "Your sign-in link" {
		t.Fatalf("magiclink mail: %q", m.Subject)
	}
	wantAuthError(t, verify(map[string]any{"type": "nope", "email": "known@example.com", "token": "123456"}), 400, "validation_failed")
	e.wantMails(5) // none to ghost@
}

// TestMail_Resend: /resend signup mails an unconfirmed user a new code
// and link, and the older ones stop working; an unknown or confirmed
// address gets {} and no mail.
func TestMail_Resend(t *testing.T) {
	e := newMailEnv(t, nil)
	if r := e.call("POST", e.base+"/signup", "", map[string]any{"email": "rs@example.com", "password": "correct horse 1"}); r.Status != 200 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	first := e.mb.nth("rs@example.com", 1)
	resend := func(email string) {
		t.Helper()
		r := e.call("POST", e.base+"/resend", "", map[string]any{"type": "signup", "email": email})
		if r.Status != 200 || strings.TrimSpace(string(r.Raw)) != "{}" {
			t.Fatalf("resend %s: %d %s", email, r.Status, r.Raw)
		}
	}
	resend("rs@example.com")
	second := e.mb.nth("rs@example.com", 2)
	if first.Code(t) == second.Code(t) {
		t.Skip("the two random codes are equal (one chance in a million)")
	}
	if status, loc := e.follow(first.Link(t)); status != 303 || !strings.Contains(loc, "error_code=otp_expired") {
		t.Fatalf("the older link: %d %s", status, loc)
	}
	wantAuthError(t, e.call("POST", e.base+"/verify", "", map[string]any{"type": "signup", "email": "rs@example.com", "token": first.Code(t)}), 403, "otp_expired")
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "signup", "email": "rs@example.com", "token": second.Code(t)}); r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("the newer code: %d %s", r.Status, r.Raw)
	}
	resend("nobody@example.com")
	resend("rs@example.com") // confirmed now: nothing to resend
	wantAuthError(t, e.call("POST", e.base+"/resend", "", map[string]any{"email": "rs@example.com"}), 400, "validation_failed")
	e.wantMails(2)
}

// TestMail_Invite: POST /invite takes the tenant's service key (a member's
// token gets 403), answers the user with invited_at and the data as
// user_metadata, and mails a link that signs the invitee in (type=invite
// in the fragment); a confirmed address is 422 email_exists; inviting a
// pending invitee again replaces the older link.
func TestMail_Invite(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("member@example.com", "correct horse 1", nil)
	member := e.session("member@example.com", "correct horse 1").str("access_token")
	body := map[string]any{"email": "Inv@Example.com", "data": map[string]any{"team": "blue"}}
	wantAuthError(t, e.call("POST", e.base+"/invite", member, body), 403, "not_admin")
	if r := e.call("POST", e.base+"/invite", "", body); r.Status != 401 {
		t.Fatalf("invite without a bearer: %d %s", r.Status, r.Raw)
	}

	r := e.call("POST", e.base+"/invite", e.key, body)
	if r.Status != 200 || r.str("email") != "inv@example.com" || r.str("invited_at") == "" || r.str("confirmation_sent_at") == "" ||
		r.Body["email_confirmed_at"] != nil {
		t.Fatalf("invite: %d %s", r.Status, r.Raw)
	}
	if !reflect.DeepEqual(r.Body["user_metadata"], map[string]any{"team": "blue"}) {
		t.Fatalf("user_metadata %v, want the data as sent", r.Body["user_metadata"])
	}
	m := e.mb.nth("inv@example.com", 1)
	if m.Subject != "You've been invited" {
		t.Fatalf("subject %q", m.Subject)
	}
	q := linkQuery(t, m.Link(t))
	if q.Get("type") != "invite" || q.Get("redirect_to") != "http://app.example.com" {
		t.Fatalf("link %s", m.Link(t))
	}
	status, loc := e.follow(m.Link(t))
	if status != 303 || !strings.HasPrefix(loc, "http://app.example.com#") {
		t.Fatalf("invite link: %d %s", status, loc)
	}
	f := fragmentOf(t, loc)
	if f.Get("type") != "invite" || f.Get("access_token") == "" || f.Get("refresh_token") == "" || f.Get("token_type") != "bearer" || !f.Has("sb") {
		t.Fatalf("fragment %v", f)
	}
	if g := e.call("GET", e.base+"/user", f.Get("access_token"), nil); g.Status != 200 || g.str("email") != "inv@example.com" || g.Body["email_confirmed_at"] == nil {
		t.Fatalf("the invitee: %d %s", g.Status, g.Raw)
	}
	wantAuthError(t, e.call("POST", e.base+"/invite", e.key, body), 422, "email_exists")
	wantAuthError(t, e.call("POST", e.base+"/invite", e.key, map[string]any{"email": "member@example.com"}), 422, "email_exists")

	var invites [2]*gotMail
	for i := range invites {
		if r := e.call("POST", e.base+"/invite", e.key, map[string]any{"email": "twice@example.com"}); r.Status != 200 {
			t.Fatalf("invite #%d: %d %s", i+1, r.Status, r.Raw)
		}
		// Each received before the next replaces its token.
		invites[i] = e.mb.nth("twice@example.com", i+1)
	}
	older, newer := invites[0], invites[1]
	if status, loc := e.follow(older.Link(t)); status != 303 || !strings.Contains(loc, "error_code=otp_expired") {
		t.Fatalf("the older invitation: %d %s", status, loc)
	}
	if status, loc := e.follow(newer.Link(t)); status != 303 || fragmentOf(t, loc).Get("type") != "invite" {
		t.Fatalf("the newer invitation: %d %s", status, loc)
	}
	e.wantMails(3)
}

// TestMail_GenerateLink: POST /admin/generate_link answers the user and
// action_link, email_otp, hashed_token (the link's token, GoTrue's hash
// of the address and email_otp), verification_type and redirect_to, for
// every type, and mails nothing; each link works once.
func TestMail_GenerateLink(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("gl-magic@example.com", "correct horse 1", nil)
	e.user("gl-recovery@example.com", "correct horse 1", nil)
	e.user("gl-cur@example.com", "correct horse 1", nil)
	e.user("gl-new@example.com", "correct horse 1", nil)
	const redirect = "http://localhost:3000/welcome"
	for _, c := range []struct {
		typ, email, newEmail, password string
		linkType, address, finalEmail  string
	}{
		{typ: "signup", email: "gl-signup@example.com", password: "correct horse 2", linkType: "signup"},
		{typ: "magiclink", email: "gl-magic@example.com", linkType: "magiclink"},
		{typ: "recovery", email: "gl-recovery@example.com", linkType: "recovery"},
		{typ: "invite", email: "gl-invite@example.com", linkType: "invite"},
		{typ: "email_change_current", email: "gl-cur@example.com", newEmail: "gl-cur2@example.com", linkType: "email_change", finalEmail: "gl-cur2@example.com"},
		// GoTrue answers hashed_token = hash(current email, code) here while
		// its link carries hash(new email, code)
		// (admin_generate_link_email_change_new.json); Keyshard's
		// hashed_token is the link's token, for the new address.
		{typ: "email_change_new", email: "gl-new@example.com", newEmail: "gl-new2@example.com", linkType: "email_change", address: "gl-new2@example.com", finalEmail: "gl-new2@example.com"},
	} {
		t.Run(c.typ, func(t *testing.T) {
			body := map[string]any{"type": c.typ, "email": c.email, "redirect_to": redirect, "data": map[string]any{"src": "generate_link"}}
			if c.newEmail != "" {
				body["new_email"] = c.newEmail
			}
			if c.password != "" {
				body["password"] = c.password
			}
			r := e.call("POST", e.base+"/admin/generate_link", e.key, body)
			if r.Status != 200 {
				t.Fatalf("generate_link: %d %s", r.Status, r.Raw)
			}
			link, otp, hashed := r.str("action_link"), r.str("email_otp"), r.str("hashed_token")
			if r.str("id") == "" || r.str("email") != c.email || r.str("verification_type") != c.typ || r.str("redirect_to") != redirect {
				t.Fatalf("answer: %s", r.Raw)
			}
			if !regexp.MustCompile(`^\d{6}$`).MatchString(otp) {
				t.Fatalf("email_otp %q", otp)
			}
			if !strings.HasPrefix(link, e.base+"/verify?") {
				t.Fatalf("action_link %s", link)
			}
			q := linkQuery(t, link)
			address := c.email
			if c.address != "" {
				address = c.address
			}
			if q.Get("token") != hashed || !hex56Re.MatchString(hashed) || hashed == gotrueHash(address, otp) || q.Get("type") != c.linkType || q.Get("redirect_to") != redirect {
				t.Fatalf("hashed_token %s, link %s, want the link's random token (not hex(sha224(%s + %s)))", hashed, link, address, otp)
			}
			if c.newEmail != "" && r.str("new_email") != c.newEmail {
				t.Fatalf("new_email: %s", r.Raw)
			}
			status, loc := e.follow(link)
			if status != 303 || !strings.HasPrefix(loc, redirect+"#") {
				t.Fatalf("the link: %d %s", status, loc)
			}
			f := fragmentOf(t, loc)
			if f.Get("access_token") == "" || f.Get("type") != c.linkType {
				t.Fatalf("fragment %v", f)
			}
			want := c.email
			if c.finalEmail != "" {
				want = c.finalEmail
			}
			if g := e.call("GET", e.base+"/user", f.Get("access_token"), nil); g.Status != 200 || g.str("email") != want || g.Body["email_confirmed_at"] == nil {
				t.Fatalf("GET /user: %d %s", g.Status, g.Raw)
			}
			if status, loc := e.follow(link); status != 303 || !strings.Contains(loc, "#error=access_denied&error_code=otp_expired") {
				t.Fatalf("the link again: %d %s", status, loc)
			}
			if c.typ == "signup" {
				if r := e.login(e.base, c.email, c.password); r.Status != 200 {
					t.Fatalf("login with the generated signup's password: %d %s", r.Status, r.Raw)
				}
			}
		})
	}
	t.Run("magiclink for a new address", func(t *testing.T) {
		// As GoTrue: the user is made, and the link is its signup link.
		r := e.call("POST", e.base+"/admin/generate_link", e.key, map[string]any{"type": "magiclink", "email": "gl-fresh@example.com"})
		if r.Status != 200 || r.str("verification_type") != "signup" || r.str("email") != "gl-fresh@example.com" || r.Body["email_confirmed_at"] != nil {
			t.Fatalf("generate_link: %d %s", r.Status, r.Raw)
		}
		link := r.str("action_link")
		if q := linkQuery(t, link); q.Get("type") != "signup" || q.Get("token") != r.str("hashed_token") ||
			!hex56Re.MatchString(r.str("hashed_token")) {
			t.Fatalf("link %s: %s", link, r.Raw)
		}
		status, loc := e.follow(link)
		if status != 303 || fragmentOf(t, loc).Get("access_token") == "" {
			t.Fatalf("the link: %d %s", status, loc)
		}
	})
	t.Run("refused", func(t *testing.T) {
		member := e.session("gl-magic@example.com", "correct horse 1").str("access_token")
		wantAuthError(t, e.call("POST", e.base+"/admin/generate_link", member, map[string]any{"type": "magiclink", "email": "gl-magic@example.com"}), 403, "not_admin")
		wantAuthError(t, e.call("POST", e.base+"/admin/generate_link", e.key, map[string]any{"type": "recovery", "email": "nobody@example.com"}), 404, "user_not_found")
		wantAuthError(t, e.call("POST", e.base+"/admin/generate_link", e.key, map[string]any{"type": "bogus", "email": "gl-magic@example.com"}), 400, "validation_failed")
		wantAuthError(t, e.call("POST", e.base+"/admin/generate_link", e.key, map[string]any{"type": "signup", "email": "gl-magic@example.com", "password": "correct horse 3"}), 422, "email_exists")
		wantAuthError(t, e.call("POST", e.base+"/admin/generate_link", e.key, map[string]any{"type": "email_change_new", "email": "gl-magic@example.com", "new_email": "gl-recovery@example.com"}), 422, "email_exists")
	})
	e.wantMails(0)
}

// TestMail_EmailChange: with auto-confirm off, PUT /user {email} answers
// new_email and email_change_sent_at and changes nothing yet. Secure
// (the default): both addresses get a mail; the first verified answers
// {"msg"} without a session, the second applies the change. Otherwise
// only the new address gets one, which applies it. A taken address is 422
// email_exists.
func TestMail_EmailChange(t *testing.T) {
	const redirect = "?redirect_to=http://localhost:3000/welcome"
	t.Run("secure", func(t *testing.T) {
		e := newMailEnv(t, nil)
		e.user("ann@example.com", "correct horse 1", nil)
		at := e.session("ann@example.com", "correct horse 1").str("access_token")
		r := e.call("PUT", e.base+"/user"+redirect, at, map[string]any{"email": "Ann.New@Example.com"})
		if r.Status != 200 || r.str("email") != "ann@example.com" || r.str("new_email") != "ann.new@example.com" || r.str("email_change_sent_at") == "" {
			t.Fatalf("PUT /user: %d %s", r.Status, r.Raw)
		}
		old, nw := e.mb.nth("ann@example.com", 1), e.mb.nth("ann.new@example.com", 1)
		for _, m := range []*gotMail{old, nw} {
			if q := linkQuery(t, m.Link(t)); q.Get("type") != "email_change" || q.Get("redirect_to") != "http://localhost:3000/welcome" {
				t.Fatalf("link to %s: %s", m.To, m.Link(t))
			}
		}
		if old.Code(t) == nw.Code(t) {
			t.Log("both codes are equal (one chance in a million)")
		}
		v := e.call("POST", e.base+"/verify", "", map[string]any{"type": "email_change", "email": "ann@example.com", "token": old.Code(t)})
		if v.Status != 200 || v.str("msg") == "" || v.Body["access_token"] != nil || v.Body["code"] != float64(200) {
			t.Fatalf("the first half: %d %s", v.Status, v.Raw)
		}
		if g := e.call("GET", e.base+"/user", at, nil); g.str("email") != "ann@example.com" || g.str("new_email") != "ann.new@example.com" {
			t.Fatalf("after the first half: %s", g.Raw)
		}
		e.session("ann@example.com", "correct horse 1")
		v = e.call("POST", e.base+"/verify", "", map[string]any{"type": "email_change", "email": "ann.new@example.com", "token": nw.Code(t)})
		if v.Status != 200 || v.str("access_token") == "" || v.Body["user"].(map[string]any)["email"] != "ann.new@example.com" {
			t.Fatalf("the second half: %d %s", v.Status, v.Raw)
		}
		if g := e.call("GET", e.base+"/user", at, nil); g.Status != 200 || g.str("email") != "ann.new@example.com" || g.Body["new_email"] != nil {
			t.Fatalf("after the change: %d %s", g.Status, g.Raw)
		}
		e.session("ann.new@example.com", "correct horse 1")
		if r := e.login(e.base, "ann@example.com", "correct horse 1"); r.Status != 400 {
			t.Fatalf("login with the old address: %d %s", r.Status, r.Raw)
		}
		e.wantMails(2)
	})
	t.Run("new address only", func(t *testing.T) {
		e := newMailEnv(t, map[string]any{"mailer_secure_email_change_enabled": false})
		e.user("bo@example.com", "correct horse 1", nil)
		at := e.session("bo@example.com", "correct horse 1").str("access_token")
		if r := e.call("PUT", e.base+"/user"+redirect, at, map[string]any{"email": "bo.new@example.com"}); r.Status != 200 || r.str("new_email") != "bo.new@example.com" {
			t.Fatalf("PUT /user: %d %s", r.Status, r.Raw)
		}
		e.wantMails(1)
		if e.mb.countTo("bo@example.com") != 0 {
			t.Fatal("the current address got a mail")
		}
		status, loc := e.follow(e.mb.nth("bo.new@example.com", 1).Link(t))
		if status != 303 || !strings.HasPrefix(loc, "http://localhost:3000/welcome#") || fragmentOf(t, loc).Get("type") != "email_change" {
			t.Fatalf("the link: %d %s", status, loc)
		}
		if g := e.call("GET", e.base+"/user", fragmentOf(t, loc).Get("access_token"), nil); g.Status != 200 || g.str("email") != "bo.new@example.com" {
			t.Fatalf("after the change: %d %s", g.Status, g.Raw)
		}
		e.session("bo.new@example.com", "correct horse 1")
	})
	t.Run("taken", func(t *testing.T) {
		e := newMailEnv(t, nil)
		e.user("cy@example.com", "correct horse 1", nil)
		e.user("dee@example.com", "correct horse 1", nil)
		at := e.session("cy@example.com", "correct horse 1").str("access_token")
		for _, addr := range []string{"dee@example.com", "DEE@example.com"} {
			wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"email": addr}), 422, "email_exists")
		}
		if g := e.call("GET", e.base+"/user", at, nil); g.Body["new_email"] != nil {
			t.Fatalf("a refused change is pending: %s", g.Raw)
		}
		e.wantMails(0)
	})
}

// TestMail_Reauthenticate: GET /reauthenticate mails a code (subject and
// body); PUT /user {password, nonce} takes it once; a wrong nonce is 422
// reauthentication_not_valid. With
// security_update_password_require_reauthentication, a session signed in
// more than 24 h ago (its refreshed access token keeps the sign-in time
// in amr) needs the nonce: 400 reauthentication_needed without.
func TestMail_Reauthenticate(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("re@example.com", "correct horse 1", nil)
	s := e.session("re@example.com", "correct horse 1")
	at := s.str("access_token")
	if r := e.call("GET", e.base+"/reauthenticate", "", nil); r.Status != 401 && r.Status != 403 {
		t.Fatalf("reauthenticate without a session: %d %s", r.Status, r.Raw)
	}
	reauth := func(n int) string {
		t.Helper()
		if r := e.call("GET", e.base+"/reauthenticate", at, nil); r.Status != 200 || strings.TrimSpace(string(r.Raw)) != "{}" {
			t.Fatalf("reauthenticate: %d %s", r.Status, r.Raw)
		}
		m := e.mb.nth("re@example.com", n)
		c := codeRe.FindStringSubmatch(m.Subject)
		if c == nil || m.Subject != c[1]+" is your verification code" || m.Code(t) != c[1] || !strings.Contains(m.HTML, c[1]) {
			t.Fatalf("mail %q: %s", m.Subject, m.Text)
		}
		return c[1]
	}
	code := reauth(1)
	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 2", "nonce": wrong}), 422, "reauthentication_not_valid")
	if r := e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 2", "nonce": code}); r.Status != 200 {
		t.Fatalf("password with the nonce: %d %s", r.Status, r.Raw)
	}
	e.session("re@example.com", "correct horse 2")
	wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 3", "nonce": code}), 422, "reauthentication_not_valid")

	e.configure(e.base, e.key, map[string]any{"security_update_password_require_reauthentication": true})
	s = e.session("re@example.com", "correct horse 2")
	if r := e.call("PUT", e.base+"/user", s.str("access_token"), map[string]any{"password": "correct horse 3"}); r.Status != 200 {
		t.Fatalf("a recent session without a nonce: %d %s", r.Status, r.Raw)
	}
	_, signedIn := amrMethod(t, s.str("access_token"))
	e.advance(25 * time.Hour)
	rf := e.refresh(e.base, s.str("refresh_token"))
	if rf.Status != 200 {
		t.Fatalf("refresh after 25 h: %d %s", rf.Status, rf.Raw)
	}
	at = rf.str("access_token")
	if _, ts := amrMethod(t, at); ts != signedIn {
		t.Fatalf("amr timestamp %d after the refresh, want the sign-in's %d", ts, signedIn)
	}
	wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 4"}), 400, "reauthentication_needed")
	code = reauth(2)
	if r := e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 4", "nonce": code}); r.Status != 200 {
		t.Fatalf("an old session with the nonce: %d %s", r.Status, r.Raw)
	}
	e.session("re@example.com", "correct horse 4")
	e.wantMails(2)
}

// TestMail_Expiry: a code or link older than mailer_otp_exp seconds is 403
// otp_expired (the link: an error redirect); a younger one works.
func TestMail_Expiry(t *testing.T) {
	e := newMailEnv(t, map[string]any{"mailer_otp_exp": 60})
	e.user("ex@example.com", "correct horse 1", nil)
	recover := func(n int) *gotMail {
		t.Helper()
		if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "ex@example.com"}); r.Status != 200 {
			t.Fatalf("recover: %d %s", r.Status, r.Raw)
		}
		return e.mb.nth("ex@example.com", n)
	}
	m := recover(1)
	e.advance(61 * time.Second)
	wantAuthError(t, e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "ex@example.com", "token": m.Code(t)}), 403, "otp_expired")
	m = recover(2)
	e.advance(61 * time.Second)
	if status, loc := e.follow(m.Link(t)); status != 303 || !strings.HasPrefix(loc, "http://app.example.com#error=access_denied&error_code=otp_expired&") {
		t.Fatalf("an expired link: %d %s", status, loc)
	}
	m = recover(3)
	e.advance(30 * time.Second)
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "ex@example.com", "token": m.Code(t)}); r.Status != 200 {
		t.Fatalf("a code within mailer_otp_exp: %d %s", r.Status, r.Raw)
	}
}

// TestMail_RateLimits: smtp_max_frequency refuses a second mail of a kind
// to an address with 429 over_email_send_rate_limit and Retry-After, the
// same bytes for an address without an account; rate_limit_email_sent
// caps the tenant's mail requests an hour.
func TestMail_RateLimits(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		e := newMailEnv(t, map[string]any{"smtp_max_frequency": 60})
		e.user("known@example.com", "correct horse 1", nil)
		recover := func(addr string) authResp {
			t.Helper()
			return e.call("POST", e.base+"/recover", "", map[string]any{"email": addr})
		}
		k1, k2 := recover("known@example.com"), recover("known@example.com")
		u1, u2 := recover("unknown@example.com"), recover("unknown@example.com")
		if k1.Status != 200 || u1.Status != 200 || string(k1.Raw) != string(u1.Raw) {
			t.Fatalf("first requests: %d %s / %d %s", k1.Status, k1.Raw, u1.Status, u1.Raw)
		}
		wantAuthError(t, k2, 429, "over_email_send_rate_limit")
		wantAuthError(t, u2, 429, "over_email_send_rate_limit")
		ra, err := strconv.Atoi(k2.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 60 {
			t.Fatalf("Retry-After %q", k2.Header.Get("Retry-After"))
		}
		if string(k2.Raw) != string(u2.Raw) || k2.Header.Get("Retry-After") != u2.Header.Get("Retry-After") {
			t.Fatalf("a known and an unknown address are told apart:\n%s Retry-After %s\n%s Retry-After %s",
				k2.Raw, k2.Header.Get("Retry-After"), u2.Raw, u2.Header.Get("Retry-After"))
		}
		e.mb.nth("known@example.com", 1) // sent before the next replaces its token
		e.advance(61 * time.Second)
		if r := recover("known@example.com"); r.Status != 200 {
			t.Fatalf("after smtp_max_frequency: %d %s", r.Status, r.Raw)
		}
		e.wantMails(2)
	})
	t.Run("per tenant", func(t *testing.T) {
		e := newMailEnv(t, map[string]any{"rate_limit_email_sent": 2})
		e.user("a@example.com", "correct horse 1", nil)
		for i, addr := range []string{"a@example.com", "b@example.com"} {
			if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": addr}); r.Status != 200 {
				t.Fatalf("mail request #%d: %d %s", i+1, r.Status, r.Raw)
			}
		}
		r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "c@example.com"})
		wantAuthError(t, r, 429, "over_email_send_rate_limit")
		if r.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		wantAuthError(t, e.call("POST", e.base+"/otp", "", map[string]any{"email": "a@example.com"}), 429, "over_email_send_rate_limit")
		e.wantMails(1)
	})
}

// TestMail_Redirects: a link's redirect_to is kept when the site URL's
// host or an uri_allow_list entry (a glob) allows it, else it is the site
// URL; a failed link redirects with #error=access_denied&error_code=…
// &error_description=…&sb=.
func TestMail_Redirects(t *testing.T) {
	e := newMailEnv(t, map[string]any{"uri_allow_list": "http://localhost:3000/welcome,https://*.preview.example.org/**"})
	e.user("rd@example.com", "correct horse 1", nil)
	n := 0
	link := func(redirect string) string {
		t.Helper()
		if r := e.call("POST", e.base+"/recover?redirect_to="+url.QueryEscape(redirect), "", map[string]any{"email": "rd@example.com"}); r.Status != 200 {
			t.Fatalf("recover: %d %s", r.Status, r.Raw)
		}
		n++
		return e.mb.nth("rd@example.com", n).Link(t)
	}
	for _, c := range []struct{ asked, want string }{
		{"https://evil.example.net/phish", "http://app.example.com"},
		{"https://pr-7.preview.example.org.evil.net/x", "http://app.example.com"},
		{"javascript:alert(1)", "http://app.example.com"},
		// The glob's * must not swallow the end of another host: a ? or #
		// there leaves evil.example.net the host the tokens go to.
		{"https://evil.example.net?.preview.example.org/x", "http://app.example.com"},
		{"https://evil.example.net#.preview.example.org/x", "http://app.example.com"},
		{"https://evil.example.net\\.preview.example.org/x", "http://app.example.com"},
		{"https://pr-7.preview.example.org/auth/callback", "https://pr-7.preview.example.org/auth/callback"},
		{"http://app.example.com/deep/path", "http://app.example.com/deep/path"},
		{"http://localhost:3000/welcome", "http://localhost:3000/welcome"},
	} {
		l := link(c.asked)
		if got := linkQuery(t, l).Get("redirect_to"); got != c.want {
			t.Fatalf("redirect_to %q became %q, want %q", c.asked, got, c.want)
		}
		status, loc := e.follow(l)
		if status != 303 || !strings.HasPrefix(loc, c.want+"#access_token=") {
			t.Fatalf("%s: %d %s", c.asked, status, loc)
		}
		status, loc = e.follow(l)
		if want := c.want + "#error=access_denied&error_code=otp_expired&error_description=Email+link+is+invalid+or+has+expired&sb="; status != 303 || loc != want {
			t.Fatalf("the link again: %d %s, want %s", status, loc, want)
		}
	}
	// A link never mailed, with a redirect the tenant does not allow.
	status, loc := e.follow(e.base + "/verify?token=" + strings.Repeat("ab", 28) + "&type=recovery&redirect_to=" + url.QueryEscape("https://evil.example.net/"))
	if status != 303 || !strings.HasPrefix(loc, "http://app.example.com#error=access_denied&error_code=otp_expired&") {
		t.Fatalf("an unknown token: %d %s", status, loc)
	}
}

// TestMail_Templates: a tenant's subject, HTML and text templates of a
// kind use GoTrue's variables (HTML escaped in the HTML part); a template
// that does not parse or names an unknown variable is 400
// validation_failed naming the field, and the stored one stays; a
// template naming a metadata key renders for a user without it.
func TestMail_Templates(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("tpl@example.com", "correct horse 1", map[string]any{"name": "<b>Ann</b>"})
	html := `<p>Hi {{ .Data.name }} ({{ .Email }}) <a href="{{ .ConfirmationURL }}">reset</a> code {{ .Token }} hash {{ .TokenHash }} site {{ .SiteURL }} back to {{ .RedirectTo }}</p>`
	text := "url={{ .ConfirmationURL }}\ncode={{ .Token }}\nhash={{ .TokenHash }}\nsite={{ .SiteURL }}\nemail={{ .Email }}\nredirect={{ .RedirectTo }}\nname={{ .Data.name }}\n"
	e.configure(e.base, e.key, map[string]any{"mailer_subjects_recovery": "Reset for {{ .Email }}",
		"mailer_templates_recovery_content": html, "mailer_templates_recovery_text": text})
	if g := e.call("GET", e.base+"/admin/config/auth", e.key, nil); g.str("mailer_templates_recovery_content") != html || g.str("mailer_templates_recovery_text") != text {
		t.Fatalf("config: %s", g.Raw)
	}
	redirect := "http://app.example.com/cb?a=1&b=<x>"
	if r := e.call("POST", e.base+"/recover?redirect_to="+url.QueryEscape(redirect), "", map[string]any{"email": "tpl@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	m := e.mb.nth("tpl@example.com", 1)
	if m.Subject != "Reset for tpl@example.com" {
		t.Fatalf("subject %q", m.Subject)
	}
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(m.Text), "\n") {
		k, v, _ := strings.Cut(strings.TrimRight(l, "\r"), "=")
		vars[k] = v
	}
	code := vars["code"]
	if !regexp.MustCompile(`^\d{6}$`).MatchString(code) || !hex56Re.MatchString(vars["hash"]) || vars["hash"] != linkQuery(t, m.Link(t)).Get("token") || vars["site"] != "http://app.example.com" ||
		vars["email"] != "tpl@example.com" || vars["redirect"] != redirect || vars["name"] != "<b>Ann</b>" {
		t.Fatalf("text part:\n%s", m.Text)
	}
	if want := e.base + "/verify?token=" + vars["hash"] + "&type=recovery&redirect_to=" + url.QueryEscape(redirect); vars["url"] != want {
		t.Fatalf("ConfirmationURL %s, want %s", vars["url"], want)
	}
	for _, want := range []string{"Hi &lt;b&gt;Ann&lt;/b&gt; (tpl@example.com)", `href="` + strings.ReplaceAll(vars["url"], "&", "&amp;") + `"`,
		"code " + code, "hash " + vars["hash"], "site http://app.example.com", "back to http://app.example.com/cb?a=1&amp;b=&lt;x&gt;"} {
		if !strings.Contains(m.HTML, want) {
			t.Fatalf("HTML part lacks %q:\n%s", want, m.HTML)
		}
	}
	if strings.Contains(m.HTML, "<b>Ann") || strings.Contains(m.HTML, "<x>") {
		t.Fatalf("HTML part not escaped:\n%s", m.HTML)
	}
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "tpl@example.com", "token": code}); r.Status != 200 {
		t.Fatalf("the templated code: %d %s", r.Status, r.Raw)
	}

	for field, bad := range map[string]string{
		"mailer_templates_recovery_content":     "{{ .Token ",
		"mailer_subjects_magic_link":            "{{ .Nope }}",
		"mailer_templates_invite_text":          "Hi {{ .Nope }}",
		"mailer_templates_email_change_content": "{{ if }}",
	} {
		r := e.call("PATCH", e.base+"/admin/config/auth", e.key, map[string]any{field: bad})
		wantAuthError(t, r, 400, "validation_failed")
		if !strings.Contains(r.str("msg"), field) {
			t.Fatalf("%s: the error does not name the field: %s", field, r.Raw)
		}
	}
	if g := e.call("GET", e.base+"/admin/config/auth", e.key, nil); g.str("mailer_templates_recovery_content") != html || g.str("mailer_subjects_magic_link") != "" {
		t.Fatalf("a refused template was stored: %s", g.Raw)
	}

	// Metadata keys differ from user to user: a template naming one that a
	// user lacks still renders (and the request that mails still answers
	// as for anyone else); a key the sample data lacks is taken.
	e.configure(e.base, e.key, map[string]any{"mailer_templates_magic_link_text": "Hi {{ .Data.name }}, your code is {{ .Token }}.\n{{ .ConfirmationURL }}\n"})
	e.user("plain@example.com", "correct horse 1", nil)
	if r := e.call("POST", e.base+"/otp", "", map[string]any{"email": "plain@example.com", "create_user": false}); r.Status != 200 {
		t.Fatalf("otp for a user without the metadata key: %d %s", r.Status, r.Raw)
	}
	m = e.mb.nth("plain@example.com", 1)
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "magiclink", "email": "plain@example.com", "token": m.Code(t)}); r.Status != 200 {
		t.Fatalf("the code: %d %s", r.Status, r.Raw)
	}
	e.configure(e.base, e.key, map[string]any{"mailer_templates_magic_link_content": "<p>Team {{ .Data.team }}: {{ .Token }}</p>"})
	if r := e.call("POST", e.base+"/otp", "", map[string]any{"email": "tpl@example.com", "create_user": false}); r.Status != 200 {
		t.Fatalf("otp: %d %s", r.Status, r.Raw)
	}
	if m := e.mb.nth("tpl@example.com", 2); !strings.Contains(m.HTML, "<p>Team : ") || !strings.Contains(m.Text, "Hi <b>Ann</b>, your code is ") {
		t.Fatalf("magic link mail:\n%s\n%s", m.Text, m.HTML)
	}
}

// TestMail_SameAnswer: the requests that name an address answer a known
// and an unknown one with the same status, body and headers (timing is
// measured elsewhere).
func TestMail_SameAnswer(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("known@example.com", "correct horse 1", nil)
	if r := e.call("POST", e.base+"/signup", "", map[string]any{"email": "pending@example.com", "password": "correct horse 1"}); r.Status != 200 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	// Sent before /resend replaces its token (a mail whose token is dead
	// by the time it would be sent is dropped).
	e.mb.nth("pending@example.com", 1)
	headers := func(h http.Header) string {
		var out []string
		for k, v := range h {
			switch k {
			case "Date", "X-Request-Id", "Content-Length":
				continue
			}
			out = append(out, k+": "+strings.Join(v, ","))
		}
		sort.Strings(out)
		return strings.Join(out, "\n")
	}
	for _, c := range []struct {
		path  string
		known string
		body  map[string]any
	}{
		{"/recover", "known@example.com", map[string]any{}},
		{"/otp", "known@example.com", map[string]any{"create_user": false}},
		{"/resend", "pending@example.com", map[string]any{"type": "signup"}},
	} {
		send := func(addr string) authResp {
			b := map[string]any{"email": addr}
			for k, v := range c.body {
				b[k] = v
			}
			return e.call("POST", e.base+c.path, "", b)
		}
		k, u := send(c.known), send("unknown-"+strings.TrimPrefix(c.path, "/")+"@example.com")
		if k.Status != 200 || k.Status != u.Status || string(k.Raw) != string(u.Raw) || headers(k.Header) != headers(u.Header) {
			t.Fatalf("%s: known %d %s\n%s\nunknown %d %s\n%s", c.path, k.Status, k.Raw, headers(k.Header), u.Status, u.Raw, headers(u.Header))
		}
	}
	e.wantMails(4) // the signup's, and one to the known address of each request
}

// TestMail_CrossTenant: a code, link, token hash, auth code or session of
// one tenant is worthless on another, even for the same address there;
// trying them does not spend them.
func TestMail_CrossTenant(t *testing.T) {
	e := newMailEnv(t, nil)
	beta := e.tenant("beta")
	betaKey := e.serviceKey("beta")
	e.configure(beta, betaKey, mailDefaults())
	e.user("x@example.com", "correct horse 1", nil)
	if r := e.call("POST", beta+"/admin/users", betaKey, map[string]any{"email": "x@example.com", "password": "correct horse 1", "email_confirm": true}); r.Status != 200 {
		t.Fatalf("beta user: %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "x@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	m := e.mb.nth("x@example.com", 1)
	th := linkQuery(t, m.Link(t)).Get("token")
	wantAuthError(t, e.call("POST", beta+"/verify", "", map[string]any{"type": "recovery", "email": "x@example.com", "token": m.Code(t)}), 403, "otp_expired")
	wantAuthError(t, e.call("POST", beta+"/verify", "", map[string]any{"type": "recovery", "token_hash": th}), 403, "otp_expired")
	if status, loc := e.follow(strings.Replace(m.Link(t), e.base, beta, 1)); status != 303 || !strings.Contains(loc, "#error=access_denied&error_code=otp_expired") {
		t.Fatalf("acme's link on beta: %d %s", status, loc)
	}
	r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "x@example.com", "token": m.Code(t)})
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("acme's code on acme after the tries on beta: %d %s", r.Status, r.Raw)
	}
	if g := e.call("GET", beta+"/user", r.str("access_token"), nil); g.Status == 200 {
		t.Fatalf("acme's session on beta: %d %s", g.Status, g.Raw)
	}
	if rf := e.refresh(beta, r.str("refresh_token")); rf.Status == 200 {
		t.Fatalf("acme's refresh token on beta: %d %s", rf.Status, rf.Raw)
	}

	verifier, code := e.pkceLink(t, "x@example.com", 2, "magiclink", func(ch string) authResp {
		return e.call("POST", e.base+"/otp?redirect_to=http://localhost:3000/welcome", "", map[string]any{"email": "x@example.com",
			"code_challenge": ch, "code_challenge_method": "s256"})
	})
	wantAuthError(t, e.exchange(beta, code, verifier), 404, "flow_state_not_found")
	if r := e.exchange(e.base, code, verifier); r.Status != 200 {
		t.Fatalf("acme's auth code on acme: %d %s", r.Status, r.Raw)
	}
	e.drain("beta")
	e.wantMails(2)
}

// TestMail_TenantSMTP: a tenant's own smtp_host on loopback is refused
// while --outbound-allow-private is off (the mail stays in the outbox with
// the refusal as its last error); allowed, the mail goes through it, from
// smtp_sender_name <smtp_admin_email>, and not through the server's.
func TestMail_TenantSMTP(t *testing.T) {
	tenantSMTP := func(mb2 *mailbox) map[string]any {
		host, port := mb2.hostPort()
		return map[string]any{"smtp_host": host, "smtp_port": port, "smtp_admin_email": "support@acme.test", "smtp_sender_name": "Acme Support"}
	}
	t.Run("guarded", func(t *testing.T) {
		e := newMailEnv(t, nil)
		mb2 := newMailbox(t)
		e.configure(e.base, e.key, tenantSMTP(mb2))
		e.user("ts@example.com", "correct horse 1", nil)
		if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "ts@example.com"}); r.Status != 200 {
			t.Fatalf("recover: %d %s", r.Status, r.Raw)
		}
		var errs []string
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if errs = e.outboxErrors("acme"); len(errs) > 0 {
				break
			}
		}
		if len(errs) != 1 || !strings.Contains(errs[0], "not public") {
			t.Fatalf("outbox errors %q, want the refusal of a private address", errs)
		}
		if e.outboxMails("acme") != 1 || mb2.count() != 0 || e.mb.count() != 0 {
			t.Fatalf("outbox %d, tenant's mailbox %d, server's %d: want the mail kept, unsent", e.outboxMails("acme"), mb2.count(), e.mb.count())
		}
	})
	t.Run("allowed", func(t *testing.T) {
		e := newMailEnvWith(t, mailEnvOptions{allowPrivate: true}, nil)
		mb2 := newMailbox(t)
		e.configure(e.base, e.key, tenantSMTP(mb2))
		e.user("ts@example.com", "correct horse 1", nil)
		if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "ts@example.com"}); r.Status != 200 {
			t.Fatalf("recover: %d %s", r.Status, r.Raw)
		}
		m := mb2.nth("ts@example.com", 1)
		from, err := mail.ParseAddress(m.From)
		if err != nil || from.Name != "Acme Support" || from.Address != "support@acme.test" {
			t.Fatalf("From %q", m.From)
		}
		e.drain("acme")
		if e.mb.count() != 0 || mb2.count() != 1 {
			t.Fatalf("server's mailbox %d, tenant's %d", e.mb.count(), mb2.count())
		}
		if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "ts@example.com", "token": m.Code(t)}); r.Status != 200 {
			t.Fatalf("the code: %d %s", r.Status, r.Raw)
		}
	})
}

// TestMail_SMTPPassword: smtp_pass reads back as "********" once set,
// PATCHing that mask back keeps the stored password, and the tenant's
// SMTP server gets the password that was set (AUTH PLAIN).
func TestMail_SMTPPassword(t *testing.T) {
	e := newMailEnvWith(t, mailEnvOptions{allowPrivate: true}, nil)
	stored := func() string {
		t.Helper()
		var v string
		e.read("acme", func(q engine.Querier) error {
			return q.QueryRow(`SELECT value FROM settings WHERE "key" = ?`, "smtp_pass").Scan(&v)
		})
		return v
	}
	if g := e.call("GET", e.base+"/admin/config/auth", e.key, nil); g.Body["smtp_pass"] != "" {
		t.Fatalf("smtp_pass before it is set: %v", g.Body["smtp_pass"])
	}
	mb2 := newMailbox(t)
	mb2.requireAuth("acme", "s3cret pass")
	host, port := mb2.hostPort()
	r := e.call("PATCH", e.base+"/admin/config/auth", e.key, map[string]any{"smtp_host": host, "smtp_port": port, "smtp_user": "acme",
		"smtp_pass": "s3cret pass", "smtp_admin_email": "support@acme.test"})
	if r.Status != 200 || r.Body["smtp_pass"] != "********" {
		t.Fatalf("PATCH: %d %s", r.Status, r.Raw)
	}
	if g := e.call("GET", e.base+"/admin/config/auth", e.key, nil); g.Body["smtp_pass"] != "********" || strings.Contains(string(g.Raw), "s3cret") {
		t.Fatalf("GET shows %v", g.Body["smtp_pass"])
	}
	// Stored sealed under the master key, not in clear; the mail below
	// proves it opens to the password that was set.
	if v := stored(); !strings.HasPrefix(v, `"sealed:`) || strings.Contains(v, "s3cret") {
		t.Errorf("smtp_pass is stored as %s, want it sealed", v)
	}
	before := stored()
	if r := e.call("PATCH", e.base+"/admin/config/auth", e.key, map[string]any{"smtp_pass": "********", "smtp_sender_name": "Acme"}); r.Status != 200 || r.Body["smtp_pass"] != "********" {
		t.Fatalf("PATCH the mask back: %d %s", r.Status, r.Raw)
	}
	if v := stored(); v != before {
		t.Fatalf("PATCHing the mask back changed the stored password from %s to %s", before, v)
	}
	e.user("pw@example.com", "correct horse 1", nil)
	if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "pw@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	deadline := time.Now().Add(15 * time.Second)
	for mb2.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_, logins := mb2.stats()
	if mb2.count() != 1 {
		last := ""
		if len(logins) > 0 {
			last = logins[len(logins)-1]
		}
		t.Fatalf("no mail through the tenant's SMTP server: %d AUTH attempts, the last %q; outbox errors %q", len(logins), last, e.outboxErrors("acme"))
	}
	if len(logins) == 0 || logins[len(logins)-1] != "acme:s3cret pass" {
		t.Fatalf("AUTH attempts %q", logins)
	}
}

// TestMail_SMTPDownThenUp: a mail committed while the SMTP server refuses
// stays in the outbox, retried, and arrives once it is back.
func TestMail_SMTPDownThenUp(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("dn@example.com", "correct horse 1", nil)
	e.mb.down()
	if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "dn@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if refused, _ := e.mb.stats(); refused >= 2 {
			break
		}
	}
	time.Sleep(time.Second)
	refused, _ := e.mb.stats()
	if refused < 2 || e.mb.count() != 0 || e.outboxMails("acme") != 1 {
		t.Fatalf("while down: %d refusals, %d mails, %d in the outbox", refused, e.mb.count(), e.outboxMails("acme"))
	}
	if errs := e.outboxErrors("acme"); len(errs) != 1 || !strings.Contains(errs[0], "down for the test") {
		t.Fatalf("outbox errors %q", errs)
	}
	e.mb.up()
	m := e.mb.nth("dn@example.com", 1)
	e.wantMails(1)
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "dn@example.com", "token": m.Code(t)}); r.Status != 200 {
		t.Fatalf("the code: %d %s", r.Status, r.Raw)
	}
}

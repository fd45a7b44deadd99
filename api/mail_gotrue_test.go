package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestMail_GoTrueParity: what GoTrue does and auth-js relies on, found by
// the auth-js tests: a PKCE email change, generate_link magiclink for a
// new address, a new password equal to the current one.
func TestMail_GoTrueParity(t *testing.T) {
	t.Run("pkce email change", func(t *testing.T) {
		e := newMailEnv(t, map[string]any{"mailer_secure_email_change_enabled": false})
		e.user("old@example.com", "correct horse 1", nil)
		at := e.session("old@example.com", "correct horse 1").str("access_token")
		verifier, code := e.pkceLink(t, "new@example.com", 1, "email_change", func(ch string) authResp {
			return e.call("PUT", e.base+"/user?redirect_to=http://localhost:3000/welcome", at, map[string]any{"email": "new@example.com",
				"code_challenge": ch, "code_challenge_method": "s256"})
		})
		s := e.exchange(e.base, code, verifier)
		if s.Status != 200 {
			t.Fatalf("exchange: %d %s", s.Status, s.Raw)
		}
		if u := e.call("GET", e.base+"/user", s.str("access_token"), nil); u.str("email") != "new@example.com" {
			t.Fatalf("user after the change: %s", u.Raw)
		}
	})
	t.Run("generate_link magiclink for a new address", func(t *testing.T) {
		e := newMailEnv(t, nil)
		r := e.call("POST", e.base+"/admin/generate_link", e.key, map[string]any{"type": "magiclink", "email": "fresh@example.com"})
		if r.Status != 200 || r.str("verification_type") != "signup" || !strings.Contains(r.str("action_link"), "type=signup") || r.str("email_confirmed_at") != "" {
			t.Fatalf("generate_link: %d %s", r.Status, r.Raw)
		}
		v := e.call("POST", e.base+"/verify", "", map[string]any{"type": "signup", "email": "fresh@example.com", "token": r.str("email_otp")})
		if v.Status != 200 || v.str("access_token") == "" {
			t.Fatalf("verify: %d %s", v.Status, v.Raw)
		}
	})
	t.Run("same password", func(t *testing.T) {
		e := newMailEnv(t, nil)
		e.user("same@example.com", "correct horse 1", nil)
		at := e.session("same@example.com", "correct horse 1").str("access_token")
		wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 1"}), 422, "same_password")
		if r := e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 2"}); r.Status != 200 {
			t.Fatalf("a new password: %d %s", r.Status, r.Raw)
		}
	})
}

// TestMail_RefreshKeepsAMR: a session opened with a mailed code keeps its
// amr method (otp) and sign-in time across refreshes.
func TestMail_RefreshKeepsAMR(t *testing.T) {
	e := newMailEnv(t, map[string]any{"mailer_autoconfirm": true})
	e.user("amr@example.com", "correct horse 1", nil)
	if r := e.call("POST", e.base+"/otp", "", map[string]any{"email": "amr@example.com"}); r.Status != 200 {
		t.Fatalf("otp: %d %s", r.Status, r.Raw)
	}
	code := e.mb.nth("amr@example.com", 1).Code(t)
	s := e.call("POST", e.base+"/verify", "", map[string]any{"type": "email", "email": "amr@example.com", "token": code})
	m1, ts1 := amrMethod(t, s.str("access_token"))
	r := e.refresh(e.base, s.str("refresh_token"))
	m2, ts2 := amrMethod(t, r.str("access_token"))
	if m1 != "otp" || m2 != "otp" || ts1 != ts2 {
		t.Fatalf("amr before %s@%d, after the refresh %s@%d", m1, ts1, m2, ts2)
	}
}

// TestMail_NonceGuessesLimited: wrong reauthentication nonces count as
// failed logins of the account: past the limit the address gets 429,
// even with the right nonce.
func TestMail_NonceGuessesLimited(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("guess@example.com", "correct horse 1", nil)
	at := e.session("guess@example.com", "correct horse 1").str("access_token")
	if r := e.call("GET", e.base+"/reauthenticate", at, nil); r.Status != 200 {
		t.Fatalf("reauthenticate: %d %s", r.Status, r.Raw)
	}
	code := e.mb.nth("guess@example.com", 1).Code(t)
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		r := e.call("PUT", e.base+"/user", at, map[string]any{"password": "new password 1", "nonce": wrong})
		switch {
		case r.Status == 429:
			limited = true
		case r.Status != 422:
			t.Fatalf("guess %d: %d %s", i, r.Status, r.Raw)
		}
	}
	if !limited {
		t.Fatal("20 wrong nonces and no 429")
	}
	if r := e.call("PUT", e.base+"/user", at, map[string]any{"password": "new password 1", "nonce": code}); r.Status != 429 {
		t.Fatalf("the right nonce while limited: %d %s", r.Status, r.Raw)
	}
}

// TestMail_LinkTokenNotFromCode: GoTrue's link token is
// hex(SHA-224(address + code)); anyone who knows the address could then
// walk the 10^6 codes through POST /verify {token_hash}, which the
// throttle does not see. Keyshard's is random: the derived value opens
// nothing, even with the right code.
func TestMail_LinkTokenNotFromCode(t *testing.T) {
	e := newMailEnv(t, map[string]any{"mailer_autoconfirm": true})
	e.user("walk@example.com", "correct horse 1", nil)
	if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "walk@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	code := e.mb.nth("walk@example.com", 1).Code(t)
	wantAuthError(t, e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "token_hash": gotrueHash("walk@example.com", code)}), 403, "otp_expired")
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "walk@example.com", "token": code}); r.Status != 200 {
		t.Fatalf("the code itself: %d %s", r.Status, r.Raw)
	}
}

// TestMail_LinksIgnoreHostHeader: with the server's own URL set (serve
// sets it when there is no --public-url), a request's Host header does
// not place the mailed link: a client could send a victim's reset link
// to its own host.
func TestMail_LinksIgnoreHostHeader(t *testing.T) {
	mb := newMailbox(t)
	e := newAuthEnv(t, authEnvOptions{mail: mb.config(), listenURL: "http://auth.internal:8080"})
	base := e.tenant("acme")
	key := e.serviceKey("acme")
	if r := e.call("PATCH", base+"/admin/config/auth", key, map[string]any{"smtp_max_frequency": 0}); r.Status != 200 {
		t.Fatalf("config: %d %s", r.Status, r.Raw)
	}
	if r := e.signup(base, "host@example.com", "correct horse 1"); r.Status != 200 {
		t.Fatalf("signup: %d %s", r.Status, r.Raw)
	}
	req, _ := http.NewRequest("POST", base+"/recover", strings.NewReader(`{"email":"host@example.com"}`))
	req.Host = "attacker.example"
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("recover: %d", resp.StatusCode)
	}
	m := mb.wait("host@example.com", 0, 15*time.Second)
	if strings.Contains(m.Text+m.HTML, "attacker.example") || !strings.Contains(m.Text, "http://auth.internal:8080/t/acme/verify?token=") {
		t.Fatalf("the link follows the Host header:\n%s", m.Text)
	}
}

// TestMail_NoPasswordOracle: with a wrong nonce, the current password
// and a wrong guess get the same answer (the nonce is checked first).
func TestMail_NoPasswordOracle(t *testing.T) {
	e := newMailEnv(t, nil)
	e.user("oracle@example.com", "correct horse 1", nil)
	at := e.session("oracle@example.com", "correct horse 1").str("access_token")
	wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"password": "correct horse 1", "nonce": "000000"}), 422, "reauthentication_not_valid")
	wantAuthError(t, e.call("PUT", e.base+"/user", at, map[string]any{"password": "a wrong guess", "nonce": "000000"}), 422, "reauthentication_not_valid")
}

// TestMail_TenantFromOnlyWithItsServer: a tenant's smtp_admin_email is
// its mails' From only through its own SMTP server; through the
// operator's, the operator's From (no tenant mails as security@bank).
func TestMail_TenantFromOnlyWithItsServer(t *testing.T) {
	e := newMailEnv(t, map[string]any{"mailer_autoconfirm": true, "smtp_admin_email": "security@bank.example", "smtp_sender_name": "Bank"})
	e.user("from@example.com", "correct horse 1", nil)
	if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "from@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	m := e.mb.nth("from@example.com", 1)
	if strings.Contains(m.From, "bank.example") || !strings.Contains(m.From, "auth@example.com") {
		t.Fatalf("From %q through the operator's server", m.From)
	}
}

// TestMail_EmailChangeEndsOldTokens: a recovery link mailed to the old
// address stops working once the address changed.
func TestMail_EmailChangeEndsOldTokens(t *testing.T) {
	e := newMailEnv(t, map[string]any{"mailer_secure_email_change_enabled": false})
	e.user("before@example.com", "correct horse 1", nil)
	at := e.session("before@example.com", "correct horse 1").str("access_token")
	if r := e.call("POST", e.base+"/recover", "", map[string]any{"email": "before@example.com"}); r.Status != 200 {
		t.Fatalf("recover: %d %s", r.Status, r.Raw)
	}
	old := e.mb.nth("before@example.com", 1)
	if r := e.call("PUT", e.base+"/user", at, map[string]any{"email": "after@example.com"}); r.Status != 200 {
		t.Fatalf("change: %d %s", r.Status, r.Raw)
	}
	change := e.mb.nth("after@example.com", 1)
	if r := e.call("POST", e.base+"/verify", "", map[string]any{"type": "email_change", "email": "after@example.com", "token": change.Code(t)}); r.Status != 200 {
		t.Fatalf("verify the change: %d %s", r.Status, r.Raw)
	}
	wantAuthError(t, e.call("POST", e.base+"/verify", "", map[string]any{"type": "recovery", "email": "before@example.com", "token": old.Code(t)}), 403, "otp_expired")
	if status, loc := e.follow(old.Link(t)); status != 303 || !strings.Contains(loc, "error_code=otp_expired") {
		t.Fatalf("the old address's link: %d %s", status, loc)
	}
}

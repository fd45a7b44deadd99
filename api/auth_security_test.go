package api_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
)

func TestAuth_UpdateUserPassword(t *testing.T) {
	t.Run("EndsOtherSessions", func(t *testing.T) {
		e := newAuthEnv(t, authEnvOptions{})
		a := e.tenant("acme")
		first := e.signup(a, "pw@example.com", "password1")
		second := e.login(a, "pw@example.com", "password1")
		if first.Status != 200 || second.Status != 200 {
			t.Fatalf("signup %d, login %d", first.Status, second.Status)
		}
		// The second session changes the password.
		r := e.call("PUT", a+"/user", second.str("access_token"), map[string]any{"password": "password2"})
		if r.Status != 200 {
			t.Fatalf("PUT /user: %d %s", r.Status, r.Raw)
		}
		// The other session's refresh token and access token are dead...
		wantAuthError(t, e.refresh(a, first.str("refresh_token")), 400, "refresh_token_not_found")
		wantAuthError(t, e.call("GET", a+"/user", first.str("access_token"), nil), 403, "session_not_found")
		// ...the session that made the change lives on.
		if r := e.refresh(a, second.str("refresh_token")); r.Status != 200 {
			t.Fatalf("refresh of the changing session: %d %s", r.Status, r.Raw)
		}
		if r := e.login(a, "pw@example.com", "password2"); r.Status != 200 {
			t.Fatalf("login with the new password: %d %s", r.Status, r.Raw)
		}
	})
}

func TestAuth_UpdateUserEmail(t *testing.T) {
	// Without auto-confirm a new address waits for its mailed links: the
	// change is pending, the address unchanged (mail_test.go follows them).
	t.Run("PendingUntilConfirmed", func(t *testing.T) {
		e := newAuthEnv(t, authEnvOptions{})
		a := e.tenant("acme")
		s := e.signup(a, "old@example.com", "password1")
		e.write("acme", func(tx engine.Querier) error {
			if _, err := tx.Exec(`DELETE FROM settings WHERE "key" = 'mailer_autoconfirm'`); err != nil {
				return err
			}
			_, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES ('mailer_autoconfirm', 'false')`)
			return err
		})
		r := e.call("PUT", a+"/user", s.str("access_token"), map[string]any{"email": "victim@example.com"})
		if r.Status != http.StatusOK || r.str("new_email") != "victim@example.com" || r.str("email") != "old@example.com" {
			t.Fatalf("email change without auto-confirm: %d %s, want 200 with new_email", r.Status, r.Raw)
		}
		u := e.call("GET", a+"/user", s.str("access_token"), nil)
		if u.str("email") != "old@example.com" {
			t.Fatalf("email is %q before the change was confirmed", u.str("email"))
		}
	})
}

// TestAuth_FailedLoginAudit: a failed login's event is never lost, even
// when the shard's buffer of deferred records is full: it is written at once.
func TestAuth_FailedLoginAudit(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{deferLimit: 1})
	a := e.tenant("acme")
	e.signup(a, "audit@example.com", "password1")
	const failures = 6
	for i := range failures {
		email := "audit@example.com"
		if i%2 == 1 {
			email = "nobody@example.com"
		}
		wantAuthError(t, e.login(a, email, "wrong-password"), 400, "invalid_credentials")
	}
	count := func() int {
		ts, err := e.App.Engine.Tenant(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		defer ts.Release()
		var n int
		if err := ts.Read(context.Background(), func(q engine.Querier) error {
			return q.QueryRow(`SELECT count(*) FROM audit_log WHERE action = 'login_failed'`).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The last event may still wait in the buffer: it is flushed within a second.
	deadline := time.Now().Add(10 * time.Second)
	for count() != failures && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(); n != failures {
		t.Fatalf("login_failed events = %d, want %d", n, failures)
	}
}

// TestAuth_ApproveCreatesSigningKey: approval over the admin API creates the
// tenant's first signing key, before any request of the tenant.
func TestAuth_ApproveCreatesSigningKey(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	admin := func(method, path string, body any) authResp {
		return e.call(method, e.URL+path, "admin-secret", body)
	}
	if r := admin("POST", "/admin/tenants", map[string]any{"slug": "keyed"}); r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Raw)
	}
	if r := admin("POST", "/admin/tenants/keyed/approve", nil); r.Status != 200 {
		t.Fatalf("approve: %d %s", r.Status, r.Raw)
	}
	ts, err := e.App.Engine.Tenant(context.Background(), "keyed")
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Release()
	var n int
	if err := ts.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow(`SELECT count(*) FROM signing_keys WHERE active = 1`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("active signing keys after approval = %d, want 1", n)
	}
}

// TestAuth_WriterQueueFull holds the tenant's writer and fills its queue,
// then checks each flow's answer: login and signup 429 over_request_rate_limit
// (auth-js keeps the session on 429 only for those), refresh 503 (auth-js
// retries 5xx), all with Retry-After.
func TestAuth_WriterQueueFull(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{queue: 1})
	a := e.tenant("acme")
	s := e.signup(a, "full@example.com", "password1")

	ts, err := e.App.Engine.Tenant(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Release()
	hold, held := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = ts.Write(context.Background(), func(engine.Querier) error { close(held); <-hold; return nil })
	})
	<-held
	// Queue no-op writes until one is refused: the queue is then full.
	full := false
	for deadline := time.Now().Add(10 * time.Second); !full && time.Now().Before(deadline); {
		done := make(chan error, 1)
		wg.Go(func() { done <- ts.Write(context.Background(), func(engine.Querier) error { return nil }) })
		select {
		case err := <-done:
			if !errors.Is(err, engine.ErrOverloaded) {
				t.Fatalf("filler write: %v", err)
			}
			full = true
		case <-time.After(50 * time.Millisecond): // queued behind the held writer
		}
	}
	if !full {
		close(hold)
		t.Fatal("the writer queue never filled")
	}
	check := func(name string, r authResp, status int, code string) {
		t.Helper()
		wantAuthError(t, r, status, code)
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %d without Retry-After", name, status)
		}
	}
	check("login", e.login(a, "full@example.com", "password1"), 429, "over_request_rate_limit")
	check("signup", e.call("POST", a+"/signup", "", map[string]any{"email": "new@example.com", "password": "password1"}), 429, "over_request_rate_limit")
	r := e.refresh(a, s.str("refresh_token"))
	if r.Status != 503 || r.Header.Get("Retry-After") == "" {
		t.Errorf("refresh with a full writer queue: %d %v %s, want 503 with Retry-After", r.Status, r.Header, r.Raw)
	}
	close(hold)
	wg.Wait()
	if r := e.login(a, "full@example.com", "password1"); r.Status != 200 {
		t.Fatalf("login after the queue drained: %d %s", r.Status, r.Raw)
	}
}

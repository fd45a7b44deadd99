package api_test

import (
	"testing"

	"github.com/keyshard/keyshard/engine"
)

// GET /user answers from a session read before while the tenant's shard has
// had no commit since; every kind of write moves it on. With FULL
// (pipelined durability), so the answer after a write is the one after its
// commit.
func TestGetUser_SessionCacheFollowsWrites(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{sync: "FULL"})
	base := e.tenant("cache")
	s := e.signup(base, "cached@example.com", "password1")
	at := s.str("access_token")
	user := func() authResp { return e.call("GET", base+"/user", at, nil) }
	for range 3 {
		if r := user(); r.Status != 200 || r.str("email") != "cached@example.com" {
			t.Fatalf("GET /user: %d %s", r.Status, r.Raw)
		}
	}
	// The user's own update.
	if r := e.call("PUT", base+"/user", at, map[string]any{"data": map[string]any{"team": "a"}}); r.Status != 200 {
		t.Fatalf("PUT /user: %d %s", r.Status, r.Raw)
	}
	if r := user(); r.Status != 200 || r.Body["user_metadata"].(map[string]any)["team"] != "a" {
		t.Fatalf("GET /user after PUT /user: %d %s", r.Status, r.Raw)
	}
	// A write outside the auth flows (as an import or an admin tool does).
	e.write("cache", func(tx engine.Querier) error {
		_, err := tx.Exec(`UPDATE users SET raw_user_meta_data = '{"team":"b"}'`)
		return err
	})
	if r := user(); r.Status != 200 || r.Body["user_metadata"].(map[string]any)["team"] != "b" {
		t.Fatalf("GET /user after a direct write: %d %s", r.Status, r.Raw)
	}
	// The session ended elsewhere: the cached one must not serve.
	e.write("cache", func(tx engine.Querier) error {
		_, err := tx.Exec(`DELETE FROM sessions`)
		return err
	})
	wantAuthError(t, user(), 403, "session_not_found")

	// A session's end in time is checked on every request, cached or not.
	s2 := e.login(base, "cached@example.com", "password1")
	at2 := s2.str("access_token")
	if r := e.call("GET", base+"/user", at2, nil); r.Status != 200 {
		t.Fatalf("GET /user, second session: %d %s", r.Status, r.Raw)
	}
	e.write("cache", func(tx engine.Querier) error {
		_, err := tx.Exec(`UPDATE sessions SET not_after = 1`)
		return err
	})
	wantAuthError(t, e.call("GET", base+"/user", at2, nil), 403, "session_not_found")
	// A token of this tenant is worthless on another, cached session or not.
	other := e.tenant("cache-other")
	if r := e.call("GET", other+"/user", at2, nil); r.Status < 400 {
		t.Fatalf("another tenant accepted the token: %d %s", r.Status, r.Raw)
	}
}

// A user that cannot be encoded (a stored time past year 9999, as an
// imported file may hold) is a 500 with a JSON body, never a 200 without
// one, and nothing is kept for the next request.
func TestGetUser_UnencodableUser(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("unenc")
	at := e.signup(base, "unenc@example.com", "password1").str("access_token")
	e.write("unenc", func(tx engine.Querier) error {
		_, err := tx.Exec(`UPDATE users SET created_at = 253402300800000000`) // year 10000
		return err
	})
	for range 2 {
		wantAuthError(t, e.call("GET", base+"/user", at, nil), 500, "unexpected_failure")
	}
}

package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"

	"github.com/keyshard/keyshard/engine"
)

// keysOf returns the sorted keys of a JSON object.
func keysOf(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sameKeys(tb testing.TB, what string, m map[string]any, want ...string) {
	tb.Helper()
	sort.Strings(want)
	if got := keysOf(m); strings.Join(got, ",") != strings.Join(want, ",") {
		tb.Fatalf("%s keys %v, want %v", what, got, want)
	}
}

// GoTrue's shapes (shared/reference/gotrue-responses).
var (
	sessionKeys  = []string{"access_token", "token_type", "expires_in", "expires_at", "refresh_token", "user"}
	userKeys     = []string{"id", "aud", "role", "email", "email_confirmed_at", "phone", "confirmed_at", "last_sign_in_at", "app_metadata", "user_metadata", "identities", "created_at", "updated_at", "is_anonymous"}
	identityKeys = []string{"identity_id", "id", "user_id", "identity_data", "provider", "last_sign_in_at", "created_at", "updated_at", "email"}
)

func checkUser(tb testing.TB, u map[string]any, email string) {
	tb.Helper()
	sameKeys(tb, "user", u, userKeys...)
	if u["email"] != email || u["aud"] != "authenticated" || u["role"] != "authenticated" || u["phone"] != "" || u["is_anonymous"] != false {
		tb.Fatalf("user fields: %v", u)
	}
	for _, k := range []string{"email_confirmed_at", "confirmed_at", "last_sign_in_at", "created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339Nano, u[k].(string)); err != nil {
			tb.Fatalf("%s: %v", k, err)
		}
	}
	am := u["app_metadata"].(map[string]any)
	if am["provider"] != "email" || fmt.Sprint(am["providers"]) != "[email]" {
		tb.Fatalf("app_metadata %v", am)
	}
	um := u["user_metadata"].(map[string]any)
	if um["email"] != email || um["sub"] != u["id"] || um["email_verified"] != true || um["phone_verified"] != false {
		tb.Fatalf("user_metadata %v", um)
	}
	ids := u["identities"].([]any)
	if len(ids) != 1 {
		tb.Fatalf("identities %v", ids)
	}
	id := ids[0].(map[string]any)
	sameKeys(tb, "identity", id, identityKeys...)
	if id["provider"] != "email" || id["user_id"] != u["id"] || id["id"] != u["id"] || id["email"] != email {
		tb.Fatalf("identity %v", id)
	}
	sameKeys(tb, "identity_data", id["identity_data"].(map[string]any), "email", "email_verified", "phone_verified", "sub")
}

func checkSession(tb testing.TB, r authResp, email string) {
	tb.Helper()
	if r.Status != 200 {
		tb.Fatalf("status %d: %s", r.Status, r.Raw)
	}
	want := sessionKeys
	if _, ok := r.Body["weak_password"]; ok {
		want = append(append([]string{}, sessionKeys...), "weak_password")
	}
	sameKeys(tb, "session", r.Body, want...)
	if r.Body["token_type"] != "bearer" || r.Body["expires_in"] != float64(3600) || len(r.str("refresh_token")) != 46 {
		tb.Fatalf("session fields: %s", r.Raw)
	}
	// A response with tokens must not be cached (RFC 6749 §5.1).
	if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Pragma") != "no-cache" {
		tb.Fatalf("session response without Cache-Control: no-store: %v", r.Header)
	}
	exp := int64(r.Body["expires_at"].(float64))
	if d := time.Until(time.Unix(exp, 0)); d < 50*time.Minute || d > 70*time.Minute {
		tb.Fatalf("expires_at %d is %s away", exp, d)
	}
	checkUser(tb, r.Body["user"].(map[string]any), email)
}

// claimsOf decodes a JWT's header and claims without verifying it.
func claimsOf(tb testing.TB, tok string) (header, claims map[string]any) {
	tb.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		tb.Fatalf("not a JWT: %q", tok)
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			tb.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			tb.Fatal(err)
		}
	}
	return header, claims
}

func TestAuth_Signup(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")

	t.Run("OK", func(t *testing.T) {
		r := e.call("POST", base+"/signup", "", map[string]any{"email": " Alice@Example.COM ", "password": "secret1", "data": map[string]any{"plan": "pro"}})
		checkSession(t, r, "alice@example.com")
		if _, ok := r.Body["weak_password"]; ok {
			t.Fatal("signup must not carry weak_password")
		}
		u := r.Body["user"].(map[string]any)
		if u["user_metadata"].(map[string]any)["plan"] != "pro" {
			t.Fatalf("data not in user_metadata: %v", u["user_metadata"])
		}
		h, c := claimsOf(t, r.str("access_token"))
		if h["alg"] != "ES256" || h["kid"] == "" || h["typ"] != "JWT" {
			t.Fatalf("header %v", h)
		}
		sameKeys(t, "claims", c, "iss", "sub", "aud", "exp", "iat", "email", "phone", "app_metadata", "user_metadata", "role", "aal", "amr", "session_id", "is_anonymous")
		if c["iss"] != base || c["sub"] != u["id"] || c["aud"] != "authenticated" || c["role"] != "authenticated" || c["aal"] != "aal1" || c["email"] != "alice@example.com" {
			t.Fatalf("claims %v", c)
		}
		amr := c["amr"].([]any)[0].(map[string]any)
		if amr["method"] != "password" || amr["timestamp"] == nil {
			t.Fatalf("amr %v", amr)
		}
	})
	t.Run("ErrUserAlreadyExists", func(t *testing.T) {
		r := e.call("POST", base+"/signup", "", map[string]any{"email": "ALICE@example.com", "password": "another1"})
		wantAuthError(t, r, 422, "user_already_exists")
		if r.str("msg") != "User already registered" {
			t.Fatalf("msg %q", r.str("msg"))
		}
	})
	t.Run("ErrWeakPassword", func(t *testing.T) {
		r := e.call("POST", base+"/signup", "", map[string]any{"email": "bob@example.com", "password": "abc"})
		wantAuthError(t, r, 422, "weak_password")
		if r.str("msg") != "Password should be at least 6 characters." {
			t.Fatalf("msg %q", r.str("msg"))
		}
		wp, _ := r.Body["weak_password"].(map[string]any)
		if fmt.Sprint(wp["reasons"]) != "[length]" {
			t.Fatalf("weak_password %v", r.Body["weak_password"])
		}
	})
	t.Run("ErrWeakPasswordNewShape", func(t *testing.T) {
		r := e.call("POST", base+"/signup", "", map[string]any{"email": "bob@example.com", "password": "abc"}, "X-Supabase-Api-Version", "2024-01-01")
		if r.Status != 422 || r.Body["code"] != "weak_password" || r.str("message") == "" || r.Header.Get("X-Sb-Error-Code") != "weak_password" {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		sameKeys(t, "error", r.Body, "code", "message", "weak_password")
	})
	t.Run("ErrInvalidEmail", func(t *testing.T) {
		for _, email := range []string{"", "no-at-sign", "a@b", "x y@example.com", "@example.com",
			"c@@b.com", "q@a..com", "nul\x00@example.com", "bel\x07@example.com", "bidi\u202e@example.com", "zero\u200bwidth@example.com"} {
			r := e.call("POST", base+"/signup", "", map[string]any{"email": email, "password": "secret1"})
			wantAuthError(t, r, 400, "validation_failed")
		}
		// Invalid UTF-8 as sent (encoding/json would have replaced it with
		// U+FFFD): refused, not stored as U+FFFD, where two byte strings
		// would log into one account.
		for _, raw := range []string{"bad\xff@example.com", "bad\xfe@example.com"} {
			r := e.call("POST", base+"/signup", "", `{"email":"`+raw+`","password":"secret1"}`)
			wantAuthError(t, r, 400, "validation_failed")
		}
	})
	t.Run("ErrBadJSON", func(t *testing.T) {
		for _, body := range []string{"", "{", "[1,2]", `{"email": 5}`, `{} {}`} {
			r := e.call("POST", base+"/signup", "", body)
			if r.Status != 400 || r.Header.Get("X-Sb-Error-Code") == "" {
				t.Fatalf("body %q: %d %s", body, r.Status, r.Raw)
			}
		}
	})
	t.Run("ErrBodyTooLarge", func(t *testing.T) {
		big := `{"email":"big@example.com","password":"secret1","data":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`
		r := e.call("POST", base+"/signup", "", big)
		if r.Status != 413 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
	})
	t.Run("ErrUnknownTenant", func(t *testing.T) {
		r := e.call("POST", e.URL+"/t/nope/signup", "", map[string]any{"email": "a@example.com", "password": "secret1"})
		wantAuthError(t, r, 404, "tenant_not_found")
	})
	t.Run("ErrPendingTenant", func(t *testing.T) {
		if _, err := e.App.Engine.CreateTenant(context.Background(), "pending", "pending", ""); err != nil {
			t.Fatal(err)
		}
		r := e.call("POST", e.URL+"/t/pending/signup", "", map[string]any{"email": "a@example.com", "password": "secret1"})
		wantAuthError(t, r, 403, "tenant_pending")
	})
}

func TestAuth_PasswordLogin(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	e.signup(base, "carol@example.com", "password1")

	t.Run("OK", func(t *testing.T) {
		r := e.login(base, "CAROL@example.com", "password1")
		checkSession(t, r, "carol@example.com")
		if v, ok := r.Body["weak_password"]; !ok || v != nil {
			t.Fatalf("weak_password must be null: %s", r.Raw)
		}
	})
	t.Run("ErrWrongPassword", func(t *testing.T) {
		r := e.login(base, "carol@example.com", "password2")
		wantAuthError(t, r, 400, "invalid_credentials")
		if r.str("msg") != "Invalid login credentials" {
			t.Fatalf("msg %q", r.str("msg"))
		}
	})
	t.Run("ErrUnknownEmail", func(t *testing.T) {
		wantAuthError(t, e.login(base, "nobody@example.com", "password1"), 400, "invalid_credentials")
	})
	t.Run("ErrMissingFields", func(t *testing.T) {
		wantAuthError(t, e.login(base, "", "password1"), 400, "validation_failed")
		wantAuthError(t, e.login(base, "carol@example.com", ""), 400, "validation_failed")
	})
	t.Run("ErrUnsupportedGrant", func(t *testing.T) {
		r := e.call("POST", base+"/token?grant_type=magic", "", map[string]any{})
		wantAuthError(t, r, 400, "unsupported_grant_type")
	})
	t.Run("Rehash", func(t *testing.T) {
		e.signup(base, "old@example.com", "password1")
		bc, err := bcrypt.GenerateFromPassword([]byte("imported1"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		other, err := hash.NewPool(hash.Config{Params: hash.Params{MemoryKiB: 128, Time: 1, Threads: 1}, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		oldArgon, err := other.Hash(context.Background(), "password1")
		other.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ email, stored, password string }{
			{"carol@example.com", string(bc), "imported1"},
			{"old@example.com", oldArgon, "password1"},
		} {
			e.write("acme", func(tx engine.Querier) error {
				_, err := tx.Exec(`UPDATE users SET encrypted_password = ? WHERE email = ?`, tc.stored, tc.email)
				return err
			})
			if r := e.login(base, tc.email, tc.password); r.Status != 200 {
				t.Fatalf("login with an outdated hash: %d %s", r.Status, r.Raw)
			}
			var now string
			e.read("acme", func(q engine.Querier) error {
				return q.QueryRow(`SELECT encrypted_password FROM users WHERE email = ?`, tc.email).Scan(&now)
			})
			if !strings.HasPrefix(now, "$argon2id$v=19$m=64,t=1,p=1$") {
				t.Fatalf("hash not replaced: %q", now)
			}
			if r := e.login(base, tc.email, tc.password); r.Status != 200 {
				t.Fatalf("login after rehash: %d %s", r.Status, r.Raw)
			}
		}
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`UPDATE users SET encrypted_password = ? WHERE email = 'carol@example.com'`, "x")
			return err
		})
		// A damaged stored hash is a server fault: 500, its cause logged, not shown.
		if r := e.login(base, "carol@example.com", "password1"); r.Status != 500 || strings.Contains(string(r.Raw), "format") {
			t.Fatalf("damaged hash: %d %s", r.Status, r.Raw)
		}
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`UPDATE users SET encrypted_password = ? WHERE email = 'carol@example.com'`, oldArgon)
			return err
		})
	})
	t.Run("Audit", func(t *testing.T) {
		// The failed logins above were buffered; they ride with the next
		// write, so after one more login they are on disk.
		if r := e.login(base, "carol@example.com", "password1"); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		got := auditActions(t, e, "acme")
		for _, want := range []string{"user_signedup", "login", "login_failed"} {
			if got[want] == 0 {
				t.Fatalf("audit %v lacks %s", got, want)
			}
		}
		if got["login_failed"] != 2 {
			t.Fatalf("login_failed events %d, want 2", got["login_failed"])
		}
	})
}

func auditActions(tb testing.TB, e *authEnv, slug string) map[string]int {
	tb.Helper()
	out := map[string]int{}
	e.read(slug, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT action, COUNT(*) FROM audit_log GROUP BY action`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a string
			var n int
			if err := rows.Scan(&a, &n); err != nil {
				return err
			}
			out[a] = n
		}
		return rows.Err()
	})
	return out
}

// read runs fn on the tenant's shard.
func (e *authEnv) read(slug string, fn engine.ReadFunc) {
	e.tb.Helper()
	ts, err := e.App.Engine.Tenant(context.Background(), slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	if err := ts.Read(context.Background(), fn); err != nil {
		e.tb.Fatal(err)
	}
}

func TestAuth_User(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	s := e.signup(base, "dave@example.com", "password1")
	at := s.str("access_token")

	t.Run("Get", func(t *testing.T) {
		r := e.call("GET", base+"/user", at, nil)
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		checkUser(t, r.Body, "dave@example.com")
	})
	t.Run("ErrNoAuthorization", func(t *testing.T) {
		wantAuthError(t, e.call("GET", base+"/user", "", nil), 401, "no_authorization")
	})
	t.Run("ErrBadJWT", func(t *testing.T) {
		r := e.call("GET", base+"/user", "not-a-jwt", nil)
		wantAuthError(t, r, 403, "bad_jwt")
		want := "invalid JWT: unable to parse or verify signature, token is malformed: token contains an invalid number of segments"
		if r.str("msg") != want {
			t.Fatalf("msg %q, want %q", r.str("msg"), want)
		}
		// A tampered signature.
		wantAuthError(t, e.call("GET", base+"/user", at[:len(at)-4]+"AAAA", nil), 403, "bad_jwt")
		// An HS256 token (algorithm confusion) is refused.
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
		raw, _ := hs.SignedString([]byte("k"))
		wantAuthError(t, e.call("GET", base+"/user", raw, nil), 403, "bad_jwt")
	})
	t.Run("Update", func(t *testing.T) {
		r := e.call("PUT", base+"/user", at, map[string]any{"data": map[string]any{"theme": "dark", "n": 1}})
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		um := r.Body["user_metadata"].(map[string]any)
		if um["theme"] != "dark" || um["email"] != "dave@example.com" {
			t.Fatalf("user_metadata %v", um)
		}
		r = e.call("PUT", base+"/user", at, map[string]any{"data": map[string]any{"theme": nil}})
		if _, ok := r.Body["user_metadata"].(map[string]any)["theme"]; ok || r.Status != 200 {
			t.Fatalf("null must remove the key: %s", r.Raw)
		}
		r = e.call("PUT", base+"/user", at, map[string]any{"password": "newpassword"})
		if r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.login(base, "dave@example.com", "password1"), 400, "invalid_credentials")
		if r := e.login(base, "dave@example.com", "newpassword"); r.Status != 200 {
			t.Fatalf("login with new password: %d %s", r.Status, r.Raw)
		}
		r = e.call("PUT", base+"/user", at, map[string]any{"email": "Dave2@Example.com"})
		if r.Status != 200 || r.Body["email"] != "dave2@example.com" {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		if id := r.Body["identities"].([]any)[0].(map[string]any); id["email"] != "dave2@example.com" {
			t.Fatalf("identity %v", id)
		}
		if r := e.login(base, "dave2@example.com", "newpassword"); r.Status != 200 {
			t.Fatalf("login with new email: %d %s", r.Status, r.Raw)
		}
		acts := auditActions(t, e, "acme")
		if acts["user_modified"] != 4 {
			t.Fatalf("audit %v", acts)
		}
	})
	t.Run("ErrUpdate", func(t *testing.T) {
		e.signup(base, "erin@example.com", "password1")
		wantAuthError(t, e.call("PUT", base+"/user", at, map[string]any{"password": "abc"}), 422, "weak_password")
		wantAuthError(t, e.call("PUT", base+"/user", at, map[string]any{"email": "erin@example.com"}), 422, "email_exists")
		wantAuthError(t, e.call("PUT", base+"/user", at, map[string]any{"email": "bad"}), 400, "validation_failed")
		wantAuthError(t, e.call("PUT", base+"/user", "", map[string]any{}), 401, "no_authorization")
	})
	t.Run("LastSeen", func(t *testing.T) {
		if r := e.call("GET", base+"/user", at, nil); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		// The deferred last-seen update rides with the next write.
		if r := e.call("PUT", base+"/user", at, map[string]any{"data": map[string]any{}}); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		var seen *int64
		e.read("acme", func(q engine.Querier) error {
			return q.QueryRow(`SELECT last_seen_at FROM users WHERE email = 'dave2@example.com'`).Scan(&seen)
		})
		if seen == nil {
			t.Fatal("last_seen_at not written")
		}
	})
	// GET /user reads the session, the user and its identities in one
	// joined query: every identity comes back, in creation order, with the
	// user's columns; a user with none has []; a deleted user is refused.
	t.Run("IdentitiesJoined", func(t *testing.T) {
		s := e.signup(base, "fay@example.com", "password1")
		at, uid := s.str("access_token"), s.Body["user"].(map[string]any)["id"].(string)
		e.write("acme", func(tx engine.Querier) error {
			for _, row := range []struct {
				id, provider string
				created      int64
			}{{"idn-late", "github", 4e15}, {"idn-early", "gitlab", 1}} {
				if _, err := tx.Exec(`INSERT INTO identities (id, user_id, provider, provider_id, identity_data, email, created_at, updated_at)
					VALUES (?, ?, ?, ?, ?, NULL, ?, ?)`, row.id, uid, row.provider, row.provider+"-1", `{"sub":"`+row.provider+`"}`, row.created, row.created); err != nil {
					return err
				}
			}
			_, err := tx.Exec(`UPDATE users SET raw_app_meta_data = 'null' WHERE id = ?`, uid)
			return err
		})
		r := e.call("GET", base+"/user", at, nil)
		if r.Status != 200 || r.str("email") != "fay@example.com" || r.str("id") != uid {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		if am, ok := r.Body["app_metadata"].(map[string]any); !ok || len(am) != 0 {
			t.Fatalf("stored null app_metadata must read as {}: %s", r.Raw)
		}
		var got []string
		for _, v := range r.Body["identities"].([]any) {
			id := v.(map[string]any)
			got = append(got, id["provider"].(string))
			if id["user_id"] != uid || id["identity_data"] == nil {
				t.Fatalf("identity %v", id)
			}
		}
		if strings.Join(got, ",") != "gitlab,email,github" {
			t.Fatalf("identities in order %v, want gitlab,email,github", got)
		}
		// Stored text that is empty reads as {}; text that is not a JSON
		// object is a 500 with a JSON body, never passed through.
		e.write("acme", func(tx engine.Querier) error {
			if _, err := tx.Exec(`UPDATE identities SET identity_data = '' WHERE id = 'idn-late'`); err != nil {
				return err
			}
			_, err := tx.Exec(`UPDATE users SET raw_user_meta_data = ' [1] ' WHERE id = ?`, uid)
			return err
		})
		if r := e.call("GET", base+"/user", at, nil); r.Status != 500 || r.Body == nil {
			t.Fatalf("metadata that is not an object: %d %s, want 500 with a JSON body", r.Status, r.Raw)
		}
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`UPDATE users SET raw_user_meta_data = '{"a":1}' WHERE id = ?`, uid)
			return err
		})
		r = e.call("GET", base+"/user", at, nil)
		if um, ok := r.Body["user_metadata"].(map[string]any); r.Status != 200 || !ok || um["a"] != float64(1) {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		for _, v := range r.Body["identities"].([]any) {
			if id := v.(map[string]any); id["provider"] == "github" {
				if d, ok := id["identity_data"].(map[string]any); !ok || len(d) != 0 {
					t.Fatalf("empty identity_data must read as {}: %v", id)
				}
			}
		}
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`DELETE FROM identities WHERE user_id = ?`, uid)
			return err
		})
		r = e.call("GET", base+"/user", at, nil)
		if ids, ok := r.Body["identities"].([]any); r.Status != 200 || !ok || len(ids) != 0 {
			t.Fatalf("no identities must read as []: %d %s", r.Status, r.Raw)
		}
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`UPDATE users SET deleted_at = 1 WHERE id = ?`, uid)
			return err
		})
		wantAuthError(t, e.call("GET", base+"/user", at, nil), 403, "user_not_found")
	})
}

func TestAuth_Logout(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	e.signup(base, "frank@example.com", "password1")

	t.Run("Local", func(t *testing.T) {
		a := e.login(base, "frank@example.com", "password1")
		b := e.login(base, "frank@example.com", "password1")
		r := e.call("POST", base+"/logout?scope=local", a.str("access_token"), nil)
		if r.Status != 204 || len(r.Raw) != 0 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.call("GET", base+"/user", a.str("access_token"), nil), 403, "session_not_found")
		wantAuthError(t, e.call("POST", base+"/logout", a.str("access_token"), nil), 403, "session_not_found")
		wantAuthError(t, e.refresh(base, a.str("refresh_token")), 400, "refresh_token_not_found")
		if r := e.call("GET", base+"/user", b.str("access_token"), nil); r.Status != 200 {
			t.Fatalf("other session must survive a local logout: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("Others", func(t *testing.T) {
		a := e.login(base, "frank@example.com", "password1")
		b := e.login(base, "frank@example.com", "password1")
		if r := e.call("POST", base+"/logout?scope=others", a.str("access_token"), nil); r.Status != 204 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		if r := e.call("GET", base+"/user", a.str("access_token"), nil); r.Status != 200 {
			t.Fatalf("own session must survive: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.call("GET", base+"/user", b.str("access_token"), nil), 403, "session_not_found")
	})
	t.Run("Global", func(t *testing.T) {
		a := e.login(base, "frank@example.com", "password1")
		b := e.login(base, "frank@example.com", "password1")
		if r := e.call("POST", base+"/logout", a.str("access_token"), nil); r.Status != 204 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		for _, s := range []authResp{a, b} {
			wantAuthError(t, e.call("GET", base+"/user", s.str("access_token"), nil), 403, "session_not_found")
			wantAuthError(t, e.refresh(base, s.str("refresh_token")), 400, "refresh_token_not_found")
		}
		if acts := auditActions(t, e, "acme"); acts["logout"] != 3 {
			t.Fatalf("audit %v", acts)
		}
	})
	t.Run("ErrScope", func(t *testing.T) {
		a := e.login(base, "frank@example.com", "password1")
		wantAuthError(t, e.call("POST", base+"/logout?scope=everything", a.str("access_token"), nil), 400, "validation_failed")
		wantAuthError(t, e.call("POST", base+"/logout", "", nil), 401, "no_authorization")
	})
}

func TestAuth_SettingsHealthJWKS(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")

	r := e.call("GET", base+"/settings", "", nil)
	if r.Status != 200 || r.Body["mailer_autoconfirm"] != true || r.Body["disable_signup"] != false {
		t.Fatalf("settings %d %s", r.Status, r.Raw)
	}
	if ext := r.Body["external"].(map[string]any); ext["email"] != true || ext["phone"] != false {
		t.Fatalf("external %v", ext)
	}
	if r := e.call("GET", base+"/health", "", nil); r.Status != 200 || r.Body["status"] != "ok" {
		t.Fatalf("health %d %s", r.Status, r.Raw)
	}
	if r := e.call("GET", e.URL+"/t/nope/health", "", nil); r.Status != 404 || r.Body["code"] != "tenant_not_found" {
		t.Fatalf("health of unknown tenant %d %s", r.Status, r.Raw)
	}

	s := e.signup(base, "gina@example.com", "password1")
	at := s.str("access_token")
	jwks := e.call("GET", base+"/.well-known/jwks.json", "", nil)
	if jwks.Status != 200 {
		t.Fatalf("jwks %d %s", jwks.Status, jwks.Raw)
	}
	if _, err := verifyWithJWKS(jwks.Raw, at); err != nil {
		t.Fatalf("token does not verify with the tenant's JWKS: %v", err)
	}
}

// verifyWithJWKS verifies tok with the keys of a JWKS document, as a
// relying party would.
func verifyWithJWKS(doc []byte, tok string) (map[string]any, error) {
	// go-jose (the JOSE library go-oidc verifies with) reads the JWKS and
	// checks the signature: our JWK encoding is checked by another's.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, err
	}
	sig, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.EdDSA})
	if err != nil {
		return nil, err
	}
	if len(sig.Signatures) != 1 {
		return nil, fmt.Errorf("%d signatures", len(sig.Signatures))
	}
	keys := set.Key(sig.Signatures[0].Header.KeyID)
	if len(keys) != 1 || keys[0].Algorithm != sig.Signatures[0].Header.Algorithm || !keys[0].Valid() || !keys[0].IsPublic() {
		return nil, fmt.Errorf("no published key for kid %q (alg %s)", sig.Signatures[0].Header.KeyID, sig.Signatures[0].Header.Algorithm)
	}
	payload, err := sig.Verify(keys[0])
	if err != nil {
		return nil, err
	}
	var claims map[string]any
	return claims, json.Unmarshal(payload, &claims)
}

func TestAuth_Isolation(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	a := e.tenant("tenant-a")
	b := e.tenant("tenant-b")
	sa := e.signup(a, "same@example.com", "password1")
	e.signup(b, "same@example.com", "password2")

	t.Run("AccessToken", func(t *testing.T) {
		for _, method := range []string{"GET", "PUT"} {
			r := e.call(method, b+"/user", sa.str("access_token"), map[string]any{})
			wantAuthError(t, r, 403, "bad_jwt")
		}
		wantAuthError(t, e.call("POST", b+"/logout", sa.str("access_token"), nil), 403, "bad_jwt")
	})
	t.Run("RefreshToken", func(t *testing.T) {
		wantAuthError(t, e.refresh(b, sa.str("refresh_token")), 400, "refresh_token_not_found")
		if r := e.refresh(a, sa.str("refresh_token")); r.Status != 200 {
			t.Fatalf("refresh on the right tenant: %d %s", r.Status, r.Raw)
		}
	})
	t.Run("JWKS", func(t *testing.T) {
		jb := e.call("GET", b+"/.well-known/jwks.json", "", nil)
		if _, err := verifyWithJWKS(jb.Raw, sa.str("access_token")); err == nil {
			t.Fatal("tenant B's JWKS verifies tenant A's token")
		}
	})
	t.Run("Passwords", func(t *testing.T) {
		wantAuthError(t, e.login(b, "same@example.com", "password1"), 400, "invalid_credentials")
	})
}

func TestAuth_KeyRotation(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	old := e.signup(base, "hank@example.com", "password1")
	oldKid, _ := claimsOf(t, old.str("access_token"))
	ts, err := e.App.Engine.Tenant(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	kid, signsAt, err := e.Keys.Rotate(context.Background(), ts.Tenant.ID, ts, token.RotateOptions{})
	ts.Release()
	if err != nil {
		t.Fatal(err)
	}
	// The new key is published at once, but signs only once clients that
	// cached the JWKS (max-age 10 min) have seen it.
	jwks := e.call("GET", base+"/.well-known/jwks.json", "", nil)
	if n := len(jwks.Body["keys"].([]any)); n != 2 || !strings.Contains(string(jwks.Raw), kid) {
		t.Fatalf("JWKS after rotation: %s, want the old key and the next one", jwks.Raw)
	}
	if d := time.Until(signsAt); d < 9*time.Minute || d > 11*time.Minute {
		t.Fatalf("the new key signs in %v, want 10 min", d)
	}
	meanwhile := e.login(base, "hank@example.com", "password1")
	if h, _ := claimsOf(t, meanwhile.str("access_token")); h["kid"] != oldKid["kid"] {
		t.Fatalf("a token before the new key is due has kid %v, want the old %v", h["kid"], oldKid["kid"])
	}
	e.advance(10*time.Minute + time.Second)
	fresh := e.login(base, "hank@example.com", "password1")
	if h, _ := claimsOf(t, fresh.str("access_token")); h["kid"] != kid {
		t.Fatalf("new token kid %v, want %s", h["kid"], kid)
	}
	jwks = e.call("GET", base+"/.well-known/jwks.json", "", nil)
	if n := len(jwks.Body["keys"].([]any)); n != 2 {
		t.Fatalf("JWKS has %d keys after rotation, want 2 (old one until its tokens expire)", n)
	}
	for _, s := range []authResp{old, fresh} {
		if r := e.call("GET", base+"/user", s.str("access_token"), nil); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		if _, err := verifyWithJWKS(jwks.Raw, s.str("access_token")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuth_SigningAlgorithms: a tenant signs with the algorithm of its
// key: ES256 by default, RS256, EdDSA or HS256 after a rotation naming it;
// the asymmetric ones verify through the JWKS with another JOSE library,
// an HS256 secret is never published, and a token naming another
// algorithm than its key's is refused.
func TestAuth_SigningAlgorithms(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	for _, alg := range []string{"ES256", "RS256", "EdDSA", "HS256"} {
		t.Run(alg, func(t *testing.T) {
			slug := strings.ToLower(alg)
			base := e.tenant(slug)
			// Over the platform API, as an operator rotates.
			wantError := e.call("POST", e.URL+"/admin/tenants/"+slug+"/signing-keys", "wrong", map[string]any{"algorithm": alg})
			if wantError.Status != 401 {
				t.Fatalf("rotation without the platform token: %d", wantError.Status)
			}
			if r := e.call("POST", e.URL+"/admin/tenants/"+slug+"/signing-keys", "admin-secret", map[string]any{"algorithm": "none"}); r.Status != 400 {
				t.Fatalf("rotation to an unknown algorithm: %d %s", r.Status, r.Raw)
			}
			rot := e.call("POST", e.URL+"/admin/tenants/"+slug+"/signing-keys", "admin-secret", map[string]any{"algorithm": alg, "immediately": true})
			kid := rot.str("kid")
			if rot.Status != 200 || kid == "" || rot.str("algorithm") != alg {
				t.Fatalf("rotation: %d %s", rot.Status, rot.Raw)
			}
			// Only an HS256 rotation shows its secret, once, uncached.
			if (rot.str("secret") != "") != (alg == "HS256") || (alg == "HS256" && rot.Header.Get("Cache-Control") != "no-store") {
				t.Fatalf("rotation to %s: secret %q, headers %v", alg, rot.str("secret"), rot.Header)
			}
			s := e.signup(base, "u@"+slug+".example", "password1")
			h, _ := claimsOf(t, s.str("access_token"))
			if h["alg"] != alg || h["kid"] != kid {
				t.Fatalf("header %v, want alg %s kid %s", h, alg, kid)
			}
			if r := e.call("GET", base+"/user", s.str("access_token"), nil); r.Status != 200 {
				t.Fatalf("GET /user: %d %s", r.Status, r.Raw)
			}
			jwks := e.call("GET", base+"/.well-known/jwks.json", "", nil)
			_, err := verifyWithJWKS(jwks.Raw, s.str("access_token"))
			switch {
			case alg == "HS256" && (err == nil || len(jwks.Body["keys"].([]any)) != 0):
				t.Fatalf("an HS256 secret is published: %s", jwks.Raw)
			case alg != "HS256" && err != nil:
				t.Fatalf("verify through the JWKS: %v", err)
			}
			if alg == "HS256" { // the tenant's backend verifies with the secret it was shown
				secret, _ := base64.RawURLEncoding.DecodeString(rot.str("secret"))
				if _, err := jwt.Parse(s.str("access_token"), func(*jwt.Token) (any, error) { return secret, nil },
					jwt.WithValidMethods([]string{"HS256"})); err != nil {
					t.Fatalf("HS256 token with the shown secret: %v", err)
				}
			}
			// The same claims with HS256 in the header, MACed with public
			// material (the JWKS) as the secret: refused, its key is not HS256.
			parts := strings.Split(s.str("access_token"), ".")
			hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"` + kid + `","typ":"JWT"}`))
			if alg != "HS256" {
				mac := jwt.SigningMethodHS256
				sig, _ := mac.Sign(hdr+"."+parts[1], []byte(jwks.Raw))
				bad := hdr + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
				wantAuthError(t, e.call("GET", base+"/user", bad, nil), 403, "bad_jwt")
			}
		})
	}
}

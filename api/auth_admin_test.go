package api_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
)

func TestAuth_TenantAdmin(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	other := e.tenant("other")

	issue := func(slug string) string {
		r := e.call("POST", e.URL+"/admin/tenants/"+slug+"/service-key", "admin-secret", nil)
		if r.Status != 200 || !strings.HasPrefix(r.str("service_key"), "ks_svc_") {
			t.Fatalf("issue service key: %d %s", r.Status, r.Raw)
		}
		return r.str("service_key")
	}
	if r := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "wrong", nil); r.Status != 401 {
		t.Fatalf("service key without the platform token: %d %s", r.Status, r.Raw)
	}
	key := issue("acme")
	otherKey := issue("other")

	t.Run("ErrNoKey", func(t *testing.T) {
		wantAuthError(t, e.call("GET", base+"/admin/users", "", nil), 401, "no_authorization")
		wantAuthError(t, e.call("GET", base+"/admin/users", "ks_svc_wrong", nil), 401, "no_authorization")
		wantAuthError(t, e.call("GET", base+"/admin/users", otherKey, nil), 401, "no_authorization")
		s := e.signup(other, "u@example.com", "password1")
		// A user's own token, without an owner or admin role: GoTrue's answer.
		wantAuthError(t, e.call("GET", other+"/admin/users", s.str("access_token"), nil), 403, "not_admin")
	})
	t.Run("Users", func(t *testing.T) {
		r := e.call("POST", base+"/admin/users", key, map[string]any{"email": "Admin.Made@example.com", "password": "password1", "email_confirm": true, "user_metadata": map[string]any{"team": "a"}})
		if r.Status != 200 || r.str("email") != "admin.made@example.com" || r.str("email_confirmed_at") == "" {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		id := r.str("id")
		wantAuthError(t, e.call("POST", base+"/admin/users", key, map[string]any{"email": "admin.made@example.com"}), 422, "email_exists")
		if r := e.login(base, "admin.made@example.com", "password1"); r.Status != 200 {
			t.Fatalf("login of an admin-made user: %d %s", r.Status, r.Raw)
		}
		e.signup(base, "self@example.com", "password1")
		r = e.call("GET", base+"/admin/users?per_page=1&page=2", key, nil)
		if r.Status != 200 || len(r.Body["users"].([]any)) != 1 || r.Header.Get("X-Total-Count") != "2" {
			t.Fatalf("list: %d %s", r.Status, r.Raw)
		}
		// Newest first, as GoTrue lists (admin_list_users.json): page 2 of
		// 1 holds the older user; the list carries no identities.
		if u := r.Body["users"].([]any)[0].(map[string]any); u["email"] != "admin.made@example.com" || u["identities"] != nil {
			t.Fatalf("page 2: %v", u)
		}
		if got := r.Header.Get("Link"); got != `</t/acme/admin/users?page=2&per_page=1>; rel="last"` {
			t.Fatalf("Link of the last page: %q", got)
		}
		r = e.call("GET", base+"/admin/users?per_page=1&page=1", key, nil)
		if got := r.Header.Get("Link"); got != `</t/acme/admin/users?page=2&per_page=1>; rel="next", </t/acme/admin/users?page=2&per_page=1>; rel="last"` ||
			r.Body["users"].([]any)[0].(map[string]any)["email"] != "self@example.com" {
			t.Fatalf("page 1: Link %q, %s", got, r.Raw)
		}
		for _, q := range []string{"page=-1", "per_page=x", "page=1.5"} {
			wantAuthError(t, e.call("GET", base+"/admin/users?"+q, key, nil), 400, "validation_failed")
		}
		filtered := e.call("GET", base+"/admin/users?filter=ADMIN.m", key, nil)
		if len(filtered.Body["users"].([]any)) != 1 || filtered.Header.Get("X-Total-Count") != "1" {
			t.Fatalf("filter: %s", filtered.Raw)
		}
		// The metadata the administrator set, as sent (GoTrue adds only
		// email_verified).
		if got := filtered.Body["users"].([]any)[0].(map[string]any)["user_metadata"]; fmt.Sprint(got) != "map[email_verified:true team:a]" {
			t.Fatalf("user_metadata of an admin-made user: %v", got)
		}
		r = e.call("PUT", base+"/admin/users/"+id, key, map[string]any{"app_metadata": map[string]any{"roles": []string{"admin"}}, "user_metadata": map[string]any{"team": "b"}})
		if r.Status != 200 || r.Body["user_metadata"].(map[string]any)["team"] != "b" || r.Body["app_metadata"].(map[string]any)["roles"] == nil {
			t.Fatalf("update: %d %s", r.Status, r.Raw)
		}
		// One update, one event, naming all it changed; the actor is the
		// service role, the user a trait (GoTrue's audit shape).
		var evs []struct {
			Action  string  `json:"action"`
			ActorID *string `json:"actor_id"`
			Actor   *string `json:"actor_username"`
			Payload struct {
				Changed []string          `json:"changed"`
				By      string            `json:"by"`
				Traits  map[string]string `json:"traits"`
			} `json:"payload"`
		}
		if r := e.call("GET", base+"/admin/audit?per_page=2", key, nil); r.Status != 200 || jsonUnmarshal(r.Raw, &evs) != nil || len(evs) != 2 {
			t.Fatalf("audit after update: %d %s", r.Status, r.Raw)
		}
		if ev := evs[0]; ev.Action != "user_modified" || evs[1].Action == "user_modified" || ev.Payload.By != "admin" ||
			strings.Join(ev.Payload.Changed, ",") != "user_metadata,app_metadata" || ev.Payload.Traits["user_id"] != id ||
			ev.Actor == nil || *ev.Actor != "service_role" || ev.ActorID == nil || *ev.ActorID != "00000000-0000-0000-0000-000000000000" {
			t.Fatalf("audit of the admin update: %+v", evs)
		}
		// A ban: the right password answers user_banned, and the user's
		// sessions end; "none" lifts it.
		banned := e.login(base, "admin.made@example.com", "password1")
		r = e.call("PUT", base+"/admin/users/"+id, key, map[string]any{"ban_duration": "1h"})
		if until, err := time.Parse(time.RFC3339Nano, r.str("banned_until")); r.Status != 200 || err != nil || time.Until(until) < 59*time.Minute {
			t.Fatalf("ban: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.login(base, "admin.made@example.com", "password1"), 400, "user_banned")
		wantAuthError(t, e.refresh(base, banned.str("refresh_token")), 400, "refresh_token_not_found")
		wantAuthError(t, e.call("PUT", base+"/admin/users/"+id, key, map[string]any{"ban_duration": "forever"}), 400, "validation_failed")
		if r := e.call("PUT", base+"/admin/users/"+id, key, map[string]any{"ban_duration": "none"}); r.Status != 200 || r.Body["banned_until"] != nil {
			t.Fatalf("unban: %d %s", r.Status, r.Raw)
		}
		again := e.login(base, "admin.made@example.com", "password1")
		if again.Status != 200 {
			t.Fatalf("login after the ban was lifted: %d %s", again.Status, again.Raw)
		}
		// A session that escaped a ban (here: a ban written straight into
		// the shard, as a restore would bring it) cannot refresh.
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`UPDATE users SET banned_until = ? WHERE id = ?`, time.Now().Add(time.Hour).UnixMicro(), id)
			return err
		})
		wantAuthError(t, e.refresh(base, again.str("refresh_token")), 400, "user_banned")
		// … and its token is left as it was: refused before any rotation.
		e.write("acme", func(tx engine.Querier) error {
			var n, revoked int
			err := tx.QueryRow(`SELECT COUNT(*), COALESCE(SUM(revoked), 0) FROM refresh_tokens WHERE session_id = ?`, sessionID(t, again)).Scan(&n, &revoked)
			if err == nil && (n != 1 || revoked != 0) {
				t.Errorf("the banned user's refresh rotated its token: %d tokens, %d revoked", n, revoked)
			}
			return err
		})
		e.write("acme", func(tx engine.Querier) error {
			_, err := tx.Exec(`UPDATE users SET banned_until = NULL WHERE id = ?`, id)
			return err
		})
		if r := e.call("GET", base+"/admin/users/"+id, key, nil); r.Status != 200 || r.str("id") != id {
			t.Fatalf("get: %d %s", r.Status, r.Raw)
		}
		live := e.login(base, "admin.made@example.com", "password1")
		if r := e.call("DELETE", base+"/admin/users/"+id, key, nil); r.Status != 200 {
			t.Fatalf("delete: %d %s", r.Status, r.Raw)
		}
		// The deleted user's token: GoTrue's user_not_found (on which auth-js
		// clears its session), not session_not_found.
		for _, c := range []struct{ method, path string }{{"GET", "/user"}, {"POST", "/logout"}} {
			wantAuthError(t, e.call(c.method, base+c.path, live.str("access_token"), nil), 403, "user_not_found")
		}
		wantAuthError(t, e.call("GET", base+"/admin/users/"+id, key, nil), 404, "user_not_found")
		wantAuthError(t, e.call("DELETE", base+"/admin/users/"+id, key, nil), 404, "user_not_found")
		wantAuthError(t, e.login(base, "admin.made@example.com", "password1"), 400, "invalid_credentials")
	})
	t.Run("Audit", func(t *testing.T) {
		r := e.call("GET", base+"/admin/audit?per_page=3", key, nil)
		var evs []map[string]any
		if err := jsonUnmarshal(r.Raw, &evs); err != nil || r.Status != 200 || len(evs) != 3 {
			t.Fatalf("audit: %d %s", r.Status, r.Raw)
		}
		if evs[0]["action"] != "user_deleted" {
			t.Fatalf("newest event %v", evs[0])
		}
		sameKeys(t, "audit event", evs[0], "id", "action", "actor_id", "actor_username", "ip_address", "payload", "created_at")
	})
	t.Run("SoftDelete", func(t *testing.T) {
		r := e.call("POST", base+"/admin/users", key, map[string]any{"email": "soft@example.com", "password": "password1", "email_confirm": true})
		id := r.str("id")
		live := e.login(base, "soft@example.com", "password1")
		if r := e.call("DELETE", base+"/admin/users/"+id, key, map[string]any{"should_soft_delete": true}); r.Status != 200 || string(r.Raw) != "{}\n" {
			t.Fatalf("soft delete: %d %q", r.Status, r.Raw)
		}
		// As GoTrue: still there for the administrator, marked deleted,
		// its address and metadata gone; nothing of it signs in.
		r = e.call("GET", base+"/admin/users/"+id, key, nil)
		if r.Status != 200 || r.str("deleted_at") == "" || r.str("email") == "soft@example.com" || fmt.Sprint(r.Body["user_metadata"]) != "map[]" {
			t.Fatalf("a soft-deleted user: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.login(base, "soft@example.com", "password1"), 400, "invalid_credentials")
		wantAuthError(t, e.call("GET", base+"/user", live.str("access_token"), nil), 403, "user_not_found")
		wantAuthError(t, e.call("DELETE", base+"/admin/users/"+id, key, nil), 404, "user_not_found")
		// The address is free again.
		e.signup(base, "soft@example.com", "password1")
	})
}

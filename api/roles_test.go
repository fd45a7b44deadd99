package api_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// TestRoles: the platform admin names a tenant's owner; owners and admins
// use the tenant's admin API with their own access tokens; only an owner
// changes roles; a member's token opens nothing of it; an admin of one
// tenant is nobody at another.
func TestRoles(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	a := e.tenant("acme")
	b := e.tenant("beta")
	for _, u := range []string{"owner", "admin", "member"} {
		if r := e.signup(a, u+"@acme.test", "password1"); r.Status != 200 {
			t.Fatalf("signup %s: %d %s", u, r.Status, r.Raw)
		}
	}
	if r := e.signup(b, "someone@beta.test", "password1"); r.Status != 200 {
		t.Fatal(r.Status)
	}
	if r := e.call("POST", e.URL+"/admin/tenants/acme/owner", "admin-secret", map[string]any{"email": "nobody@acme.test"}); r.Status != 404 {
		t.Fatalf("owner that is no user: %d %s", r.Status, r.Raw)
	}
	if r := e.call("POST", e.URL+"/admin/tenants/acme/owner", "", map[string]any{"email": "owner@acme.test"}); r.Status != 401 {
		t.Fatalf("naming an owner without the platform token: %d", r.Status)
	}
	if r := e.call("POST", e.URL+"/admin/tenants/acme/owner", "admin-secret", map[string]any{"email": "owner@acme.test"}); r.Status != 200 || r.str("org_role") != "owner" {
		t.Fatalf("name owner: %d %s", r.Status, r.Raw)
	}
	token := func(email string) string {
		r := e.login(a, email, "password1")
		if r.Status != 200 {
			t.Fatalf("login %s: %d %s", email, r.Status, r.Raw)
		}
		return r.str("access_token")
	}
	owner := token("owner@acme.test")
	var claims map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(owner, ".")[1])
	_ = json.Unmarshal(raw, &claims)
	if claims["org_role"] != "owner" {
		t.Fatalf("the owner's token: %s", raw)
	}
	list := e.call("GET", a+"/admin/users", owner, nil)
	if list.Status != 200 {
		t.Fatalf("owner lists users: %d %s", list.Status, list.Raw)
	}
	ids := map[string]string{}
	for _, u := range list.Body["users"].([]any) {
		m := u.(map[string]any)
		ids[strings.TrimSuffix(m["email"].(string), "@acme.test")] = m["id"].(string)
	}
	if r := e.call("PUT", a+"/admin/users/"+ids["admin"], owner, map[string]any{"app_metadata": map[string]any{"org_role": "admin"}}); r.Status != 200 {
		t.Fatalf("owner makes an admin: %d %s", r.Status, r.Raw)
	}
	if r := e.call("PUT", a+"/admin/users/"+ids["member"], owner, map[string]any{"app_metadata": map[string]any{"org_role": "god"}}); r.Status != 400 {
		t.Fatalf("an unknown role: %d %s", r.Status, r.Raw)
	}
	admin := token("admin@acme.test")
	for _, c := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"GET", "/admin/users", nil, 200},
		{"GET", "/admin/audit", nil, 200},
		{"GET", "/admin/config/auth", nil, 200},
		{"PATCH", "/admin/config/auth", map[string]any{"branding_display_name": "Acme"}, 200},
		{"POST", "/admin/oauth/clients", map[string]any{"client_name": "x", "redirect_uris": []string{"https://x.example/cb"}}, 201},
		{"PUT", "/admin/users/" + ids["member"], map[string]any{"user_metadata": map[string]any{"team": "b"}}, 200},
	} {
		if r := e.call(c.method, a+c.path, admin, c.body); r.Status != c.want {
			t.Fatalf("admin %s %s: %d %s", c.method, c.path, r.Status, r.Raw)
		}
	}
	r := e.call("PUT", a+"/admin/users/"+ids["member"], admin, map[string]any{"app_metadata": map[string]any{"org_role": "admin"}})
	wantAuthError(t, r, 403, "not_admin")
	// The audit log names the admin who acted.
	audit := e.call("GET", a+"/admin/audit", owner, nil)
	if !strings.Contains(string(audit.Raw), ids["admin"]) {
		t.Fatalf("the audit log does not name the acting admin: %s", audit.Raw)
	}
	member := token("member@acme.test")
	for _, c := range []struct{ method, path string }{
		{"GET", "/admin/users"}, {"GET", "/admin/audit"}, {"GET", "/admin/config/auth"}, {"GET", "/admin/oauth/clients"},
		{"DELETE", "/admin/users/" + ids["owner"]},
	} {
		wantAuthError(t, e.call(c.method, a+c.path, member, nil), 403, "not_admin")
	}
	// Taking the role away counts at once, for a token issued before.
	if r := e.call("PUT", a+"/admin/users/"+ids["admin"], owner, map[string]any{"app_metadata": map[string]any{"org_role": "member"}}); r.Status != 200 {
		t.Fatalf("demote: %d %s", r.Status, r.Raw)
	}
	wantAuthError(t, e.call("GET", a+"/admin/users", admin, nil), 403, "not_admin")
	// acme's owner at beta.
	for _, path := range []string{"/admin/users", "/admin/config/auth", "/admin/oauth/clients"} {
		if r := e.call("GET", b+path, owner, nil); r.Status != 403 || r.Body["error_code"] != "bad_jwt" {
			t.Fatalf("acme's owner at beta %s: %d %s", path, r.Status, r.Raw)
		}
	}
}

package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestAuth_Config: a tenant's auth config over GET/PATCH
// /t/{slug}/admin/config/auth with Supabase's Management API field names,
// for the service key or the platform token, and what each setting does.
func TestAuth_Config(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	key := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	cfg := base + "/admin/config/auth"
	patch := func(bearer string, body any) authResp {
		t.Helper()
		return e.call("PATCH", cfg, bearer, body)
	}
	t.Run("Defaults", func(t *testing.T) {
		r := e.call("GET", cfg, key, nil)
		if r.Status != 200 || r.Body["disable_signup"] != false || r.Body["mailer_autoconfirm"] != true ||
			r.Body["password_min_length"] != float64(6) || r.Body["jwt_exp"] != float64(0) || r.Body["cors_allowed_origins"] != "" {
			t.Fatalf("defaults: %d %s", r.Status, r.Raw)
		}
		sameKeys(t, "config", r.Body, "disable_signup", "external_anonymous_users_enabled", "mailer_autoconfirm", "password_min_length", "password_required_characters",
			"jwt_exp", "site_url", "uri_allow_list", "cors_allowed_origins", "oauth_server_enabled", "oauth_server_allow_dynamic_registration",
			"branding_display_name", "branding_logo_url", "branding_primary_color",
			"mailer_otp_exp", "mailer_secure_email_change_enabled", "security_update_password_require_reauthentication",
			"external_email_linking_enabled", "security_manual_linking_enabled",
			"external_google_enabled", "external_google_client_id", "external_google_secret", "external_apple_enabled", "external_apple_client_id", "external_apple_secret",
			"external_github_enabled", "external_github_client_id", "external_github_secret", "external_azure_enabled", "external_azure_client_id", "external_azure_secret", "external_azure_url",
			"external_gitlab_enabled", "external_gitlab_client_id", "external_gitlab_secret", "external_gitlab_url",
			"smtp_max_frequency", "rate_limit_email_sent", "smtp_host", "smtp_port", "smtp_user", "smtp_pass", "smtp_admin_email", "smtp_sender_name",
			"mailer_subjects_confirmation", "mailer_templates_confirmation_content", "mailer_templates_confirmation_text",
			"mailer_subjects_recovery", "mailer_templates_recovery_content", "mailer_templates_recovery_text",
			"mailer_subjects_magic_link", "mailer_templates_magic_link_content", "mailer_templates_magic_link_text",
			"mailer_subjects_invite", "mailer_templates_invite_content", "mailer_templates_invite_text",
			"mailer_subjects_email_change", "mailer_templates_email_change_content", "mailer_templates_email_change_text",
			"mailer_subjects_reauthentication", "mailer_templates_reauthentication_content", "mailer_templates_reauthentication_text")
		if r.Body["mailer_otp_exp"] != float64(3600) || r.Body["smtp_max_frequency"] != float64(60) || r.Body["rate_limit_email_sent"] != float64(30) ||
			r.Body["mailer_secure_email_change_enabled"] != true || r.Body["smtp_pass"] != "" || r.Body["smtp_port"] != "" {
			t.Fatalf("mail defaults: %s", r.Raw)
		}
		if r.Body["oauth_server_enabled"] != true || r.Body["oauth_server_allow_dynamic_registration"] != false {
			t.Fatalf("oauth defaults: %s", r.Raw)
		}
		if r := e.call("GET", cfg, "admin-secret", nil); r.Status != 200 {
			t.Fatalf("the platform token: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.call("GET", cfg, "", nil), 401, "no_authorization")
		wantAuthError(t, e.call("GET", cfg, "ks_svc_wrong", nil), 401, "no_authorization")
		s := e.signup(base, "member@example.com", "password1")
		wantAuthError(t, e.call("GET", cfg, s.str("access_token"), nil), 403, "not_admin")
	})
	t.Run("ErrValidation", func(t *testing.T) {
		for _, c := range []struct {
			body  string
			field string
		}{
			{`{"disable_signups": true}`, "disable_signups"},
			{`{"disable_signup": "yes"}`, "disable_signup"},
			{`{"password_min_length": 3}`, "password_min_length"},
			{`{"password_min_length": "8"}`, "password_min_length"},
			{`{"jwt_exp": 999999}`, "jwt_exp"},
			{`{"jwt_exp": 10}`, "jwt_exp"},
			{`{"site_url": "not a url"}`, "site_url"},
			{`{"password_required_characters": "abc"}`, "password_required_characters"},
			{`{"cors_allowed_origins": "https://app.example/path"}`, "cors_allowed_origins"},
			{`{"cors_allowed_origins": "ftp://app.example"}`, "cors_allowed_origins"},
			{`{"mailer_autoconfirm": false, "nope": 1}`, "nope"},
		} {
			r := patch(key, c.body)
			wantAuthError(t, r, 400, "validation_failed")
			if msg := r.str("msg"); !strings.Contains(msg, `"`+c.field+`"`) {
				t.Fatalf("%s: message %q does not name the field", c.body, msg)
			}
		}
		wantAuthError(t, patch(key, `[1]`), 400, "bad_json")
		// All or nothing: the valid field of a refused patch did not apply.
		if r := e.call("GET", cfg, key, nil); r.Body["mailer_autoconfirm"] != true {
			t.Fatalf("a refused patch changed the config: %s", r.Raw)
		}
	})
	t.Run("Apply", func(t *testing.T) {
		r := patch(key, map[string]any{"password_min_length": 10, "jwt_exp": 120, "site_url": "https://app.example",
			"uri_allow_list": "https://app.example/**", "cors_allowed_origins": "https://App.example:443/, http://localhost:5173"})
		if r.Status != 200 || r.Body["jwt_exp"] != float64(120) || r.Body["cors_allowed_origins"] != "https://app.example,http://localhost:5173" {
			t.Fatalf("patch: %d %s", r.Status, r.Raw)
		}
		// A password under the new minimum is weak.
		wantAuthError(t, e.call("POST", base+"/signup", "", map[string]any{"email": "short@example.com", "password": "password1"}), 422, "weak_password")
		// Tokens live jwt_exp seconds.
		s := e.signup(base, "long@example.com", "password12")
		_, claims := claimsOf(t, s.str("access_token"))
		if s.Body["expires_in"] != float64(120) || claims["exp"].(float64)-claims["iat"].(float64) != 120 {
			t.Fatalf("jwt_exp 120: expires_in %v, exp-iat %v", s.Body["expires_in"], claims["exp"].(float64)-claims["iat"].(float64))
		}
		// Required characters.
		if r := patch("admin-secret", `{"password_required_characters": "abcdefghijklmnopqrstuvwxyz:ABCDEFGHIJKLMNOPQRSTUVWXYZ:0123456789"}`); r.Status != 200 {
			t.Fatalf("patch by the platform: %d %s", r.Status, r.Raw)
		}
		r = e.call("POST", base+"/signup", "", map[string]any{"email": "chars@example.com", "password": "alllowercase1"})
		wantAuthError(t, r, 422, "weak_password")
		if reasons := r.Body["weak_password"].(map[string]any)["reasons"].([]any); len(reasons) != 1 || reasons[0] != "characters" {
			t.Fatalf("reasons %v", reasons)
		}
		e.signup(base, "chars@example.com", "Mixed1case2")
		// Signups closed: /settings says so, and a signup is refused.
		if r := patch(key, `{"disable_signup": true}`); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		if r := e.call("GET", base+"/settings", "", nil); r.Body["disable_signup"] != true {
			t.Fatalf("settings after closing signups: %s", r.Raw)
		}
		wantAuthError(t, e.call("POST", base+"/signup", "", map[string]any{"email": "late@example.com", "password": "Password123"}), 422, "signup_disabled")
		// Every change is an audit event, with what changed and who did it.
		acts := auditActions(t, e, "acme")
		if acts["settings_updated"] != 3 {
			t.Fatalf("audit %v: want 3 settings_updated", acts)
		}
	})
	t.Run("MailerAutoconfirmOff", func(t *testing.T) {
		e := newAuthEnv(t, authEnvOptions{})
		base := e.tenant("beta")
		key := e.call("POST", e.URL+"/admin/tenants/beta/service-key", "admin-secret", nil).str("service_key")
		if r := e.call("PATCH", base+"/admin/config/auth", key, `{"mailer_autoconfirm": false}`); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		if r := e.call("GET", base+"/settings", "", nil); r.Body["mailer_autoconfirm"] != false {
			t.Fatalf("settings: %s", r.Raw)
		}
		r := e.call("POST", base+"/signup", "", map[string]any{"email": "wait@example.com", "password": "password1"})
		if r.Status != 200 || r.Body["access_token"] != nil || r.str("id") == "" || r.Body["email_confirmed_at"] != nil {
			t.Fatalf("signup with autoconfirm off: %d %s", r.Status, r.Raw)
		}
		wantAuthError(t, e.login(base, "wait@example.com", "password1"), 400, "email_not_confirmed")
	})
}

// TestAuth_CORS: a browser page on another origin may call a tenant: any
// origin without credentials by default, only the tenant's listed origins
// (with credentials) once it lists some; the preflight allows every header
// auth-js sends.
func TestAuth_CORS(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	key := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	preflight := func(url, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("OPTIONS", url, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "apikey,authorization,content-type,x-client-info,x-supabase-api-version")
		res, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	allows := func(res *http.Response, headers ...string) bool {
		got := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers"))
		for _, h := range headers {
			if !strings.Contains(got, h) {
				return false
			}
		}
		return true
	}
	t.Run("AnyOrigin", func(t *testing.T) {
		res := preflight(base+"/token?grant_type=password", "http://localhost:5173")
		if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
			res.Header.Get("Access-Control-Allow-Credentials") != "" || !strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") ||
			!allows(res, "apikey", "authorization", "content-type", "x-client-info", "x-supabase-api-version") {
			t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
		}
		r := e.call("POST", base+"/signup", "", map[string]any{"email": "cors@example.com", "password": "password1"}, "Origin", "http://localhost:5173")
		if r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "X-Total-Count") || !strings.Contains(r.Header.Get("Vary"), "Origin") {
			t.Fatalf("response to a browser: %d %v", r.Status, r.Header)
		}
		// An error is readable too (the page learns why), and the platform
		// API is not open to browsers.
		if r := e.call("GET", e.URL+"/t/nope/settings", "", nil, "Origin", "http://localhost:5173"); r.Status != 404 || r.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("an unknown tenant to a browser: %d %v", r.Status, r.Header)
		}
		if r := e.call("GET", e.URL+"/admin/tenants", "admin-secret", nil, "Origin", "http://localhost:5173"); r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("the platform API answered a browser: %v", r.Header)
		}
	})
	t.Run("ListedOrigins", func(t *testing.T) {
		if r := e.call("PATCH", base+"/admin/config/auth", key, `{"cors_allowed_origins": "https://app.example"}`); r.Status != 200 {
			t.Fatalf("%d %s", r.Status, r.Raw)
		}
		res := preflight(base+"/token?grant_type=password", "https://app.example")
		if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			res.Header.Get("Access-Control-Allow-Credentials") != "true" || !allows(res, "apikey") {
			t.Fatalf("preflight of a listed origin: %d %v", res.StatusCode, res.Header)
		}
		if res := preflight(base+"/token?grant_type=password", "https://evil.example"); res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight of an unlisted origin: %v", res.Header)
		}
		if r := e.call("GET", base+"/settings", "", nil, "Origin", "https://evil.example"); r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("response to an unlisted origin: %v", r.Header)
		}
		if r := e.call("GET", base+"/settings", "", nil, "Origin", "https://app.example"); r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
			r.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Fatalf("response to a listed origin: %v", r.Header)
		}
	})
}

// TestAuth_Anonymous: with the tenant's external_anonymous_users_enabled,
// POST /signup without an email makes an anonymous user (GoTrue's
// anon_signup.json), who becomes permanent by adding an email.
func TestAuth_Anonymous(t *testing.T) {
	e := newAuthEnv(t, authEnvOptions{})
	base := e.tenant("acme")
	key := e.call("POST", e.URL+"/admin/tenants/acme/service-key", "admin-secret", nil).str("service_key")
	wantAuthError(t, e.call("POST", base+"/signup", "", `{}`), 422, "anonymous_provider_disabled")
	if r := e.call("PATCH", base+"/admin/config/auth", key, `{"external_anonymous_users_enabled": true}`); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Raw)
	}
	if r := e.call("GET", base+"/settings", "", nil); r.Body["external"].(map[string]any)["anonymous_users"] != true {
		t.Fatalf("settings: %s", r.Raw)
	}
	r := e.call("POST", base+"/signup", "", `{"data":{"cart":3}}`)
	if r.Status != 200 || r.str("access_token") == "" {
		t.Fatalf("anonymous signup: %d %s", r.Status, r.Raw)
	}
	u := r.Body["user"].(map[string]any)
	if u["is_anonymous"] != true || u["email"] != "" || len(u["identities"].([]any)) != 0 || fmt.Sprint(u["app_metadata"]) != "map[]" ||
		fmt.Sprint(u["user_metadata"]) != "map[cart:3]" {
		t.Fatalf("anonymous user: %v", u)
	}
	_, c := claimsOf(t, r.str("access_token"))
	if c["is_anonymous"] != true || c["amr"].([]any)[0].(map[string]any)["method"] != "anonymous" {
		t.Fatalf("anonymous claims: %v", c)
	}
	at := r.str("access_token")
	// Refresh keeps the session anonymous.
	ref := e.refresh(base, r.str("refresh_token"))
	if _, c := claimsOf(t, ref.str("access_token")); ref.Status != 200 || c["amr"].([]any)[0].(map[string]any)["method"] != "anonymous" {
		t.Fatalf("refresh of an anonymous session: %d %v", ref.Status, c)
	}
	// Adding an email makes it permanent (autoconfirm on), then a password.
	conv := e.call("PUT", base+"/user", at, map[string]any{"email": "Anon.Convert@example.com"})
	if conv.Status != 200 || conv.Body["is_anonymous"] != false || conv.str("email") != "anon.convert@example.com" ||
		conv.str("email_confirmed_at") == "" || len(conv.Body["identities"].([]any)) != 1 || conv.Body["user_metadata"].(map[string]any)["email_verified"] != true {
		t.Fatalf("conversion: %d %s", conv.Status, conv.Raw)
	}
	if r := e.call("PUT", base+"/user", at, map[string]any{"password": "password1"}); r.Status != 200 {
		t.Fatalf("password: %d %s", r.Status, r.Raw)
	}
	if r := e.login(base, "anon.convert@example.com", "password1"); r.Status != 200 {
		t.Fatalf("login of the converted user: %d %s", r.Status, r.Raw)
	}
	// An email taken by another user cannot be claimed.
	other := e.call("POST", base+"/signup", "", `{}`)
	wantAuthError(t, e.call("PUT", base+"/user", other.str("access_token"), map[string]any{"email": "anon.convert@example.com"}), 422, "email_exists")
	// Signups closed: no anonymous ones either.
	e.call("PATCH", base+"/admin/config/auth", key, `{"disable_signup": true}`)
	wantAuthError(t, e.call("POST", base+"/signup", "", `{}`), 422, "signup_disabled")
}

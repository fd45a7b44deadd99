package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// Settings are a tenant's auth settings, stored in its settings table, one
// row per setting a tenant changed. Their names over the API are those of
// Supabase's Management API auth config, which Supabase users script
// against; cors_allowed_origins is Keyshard's.
type Settings struct {
	DisableSignup     bool // disable_signup
	MailerAutoconfirm bool // mailer_autoconfirm
	PasswordMinLength int  // password_min_length
	// PasswordRequiredCharacters is "" or one of Supabase's values: sets
	// of characters separated by ':', each of which a new password must
	// use (password_required_characters).
	PasswordRequiredCharacters string
	// JWTExp is the access token lifetime in seconds; 0: the server's
	// (jwt_exp).
	JWTExp int
	// SiteURL and URIAllowList are where mailed links may send a user
	// (site_url, uri_allow_list: comma-separated).
	SiteURL, URIAllowList string
	// CORSAllowedOrigins are the origins that may call the tenant from a
	// browser with credentials, comma-separated; empty: any origin,
	// without credentials (cors_allowed_origins).
	CORSAllowedOrigins string
	// AnonymousUsers lets POST /signup without an email make an anonymous
	// user (external_anonymous_users_enabled).
	AnonymousUsers bool
	// OAuthServerEnabled: the tenant serves OAuth 2.0 / OpenID Connect
	// (oauth_server_enabled, default on).
	OAuthServerEnabled bool
	// OAuthDynamicRegistration opens RFC 7591 registration to anyone;
	// off, it takes the service key as initial access token
	// (oauth_server_allow_dynamic_registration).
	OAuthDynamicRegistration bool
	// Branding of the hosted login, consent and device pages: a display
	// name, a logo URL (https) and a primary colour (#rrggbb).
	BrandingName, BrandingLogoURL, BrandingColor string

	// Mail (mailsettings.go): the lifetime of mailed links and codes in
	// seconds (mailer_otp_exp); whether an email change is confirmed by
	// both addresses (mailer_secure_email_change_enabled); whether a
	// password change needs a mailed nonce
	// (security_update_password_require_reauthentication).
	MailerOTPExp           int
	SecureEmailChange      bool
	PasswordRequiresReauth bool
	// The tenant's own SMTP server and sender (smtp_host, smtp_port,
	// smtp_user, smtp_pass, smtp_admin_email, smtp_sender_name); no host:
	// the server's.
	SMTPHost, SMTPUser, SMTPPass, SMTPAdminEmail, SMTPSenderName string
	SMTPPort                                                     int
	// SMTPMaxFrequency: seconds between two mails of a kind to one address
	// (smtp_max_frequency); RateLimitEmailSent: mails per hour of the
	// tenant (rate_limit_email_sent).
	SMTPMaxFrequency, RateLimitEmailSent int
	// MailTemplates per MailKind.
	MailTemplates [numMailKinds]MailTemplate

	// Upstream providers: a first login through one joins the user of the
	// same address when the provider verified it
	// (external_email_linking_enabled, default off); a signed-in user may
	// link providers (security_manual_linking_enabled, Supabase's, default
	// off).
	EmailLinking, ManualLinking bool
}

// DefaultSettings apply to settings a tenant has not set.
var DefaultSettings = Settings{MailerAutoconfirm: true, PasswordMinLength: 6, OAuthServerEnabled: true,
	MailerOTPExp: 3600, SecureEmailChange: true, SMTPMaxFrequency: 60, RateLimitEmailSent: 30}

// Supabase's values of password_required_characters.
var requiredCharacterSets = []string{
	"",
	"abcdefghijklmnopqrstuvwxyz:ABCDEFGHIJKLMNOPQRSTUVWXYZ:0123456789",
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:0123456789",
	"abcdefghijklmnopqrstuvwxyz:ABCDEFGHIJKLMNOPQRSTUVWXYZ:0123456789:!@#$%^&*()_+-=[]{};'\\\\:\"|<>?,./`~",
}

// setting is one field of Settings: its name, its value as JSON, and how
// a JSON value is checked and set (svc bounds jwt_exp).
type setting struct {
	name string
	get  func(st *Settings) any
	set  func(svc *Service, st *Settings, raw json.RawMessage) error
}

var settingFields = []setting{
	{"disable_signup", func(st *Settings) any { return st.DisableSignup },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			return decodeSetting(raw, &st.DisableSignup)
		}},
	{"external_anonymous_users_enabled", func(st *Settings) any { return st.AnonymousUsers },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			return decodeSetting(raw, &st.AnonymousUsers)
		}},
	{"mailer_autoconfirm", func(st *Settings) any { return st.MailerAutoconfirm },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			return decodeSetting(raw, &st.MailerAutoconfirm)
		}},
	{"password_min_length", func(st *Settings) any { return st.PasswordMinLength },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.PasswordMinLength); err != nil {
				return err
			}
			if st.PasswordMinLength < 6 || st.PasswordMinLength > maxPasswordLen {
				return fmt.Errorf("must be from 6 to %d", maxPasswordLen)
			}
			return nil
		}},
	{"password_required_characters", func(st *Settings) any { return st.PasswordRequiredCharacters },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.PasswordRequiredCharacters); err != nil {
				return err
			}
			for _, v := range requiredCharacterSets {
				if st.PasswordRequiredCharacters == v {
					return nil
				}
			}
			return fmt.Errorf("must be one of Supabase's values (\"\", lower:upper:digits, letters:digits, lower:upper:digits:symbols)")
		}},
	{"jwt_exp", func(st *Settings) any { return st.JWTExp },
		func(svc *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.JWTExp); err != nil {
				return err
			}
			// Retired signing keys verify for the server's lifetime only:
			// a longer one would outlive its key after a rotation.
			if svc == nil { // reading what was stored: checked when it was
				return nil
			}
			if max := int(svc.ttl / time.Second); st.JWTExp != 0 && (st.JWTExp < 30 || st.JWTExp > max) {
				return fmt.Errorf("must be from 30 to %d seconds (the server's --access-token-ttl), or 0 for that", max)
			}
			return nil
		}},
	{"site_url", func(st *Settings) any { return st.SiteURL },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.SiteURL); err != nil {
				return err
			}
			if st.SiteURL == "" {
				return nil
			}
			u, err := url.Parse(st.SiteURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("must be an absolute http or https URL")
			}
			return nil
		}},
	{"uri_allow_list", func(st *Settings) any { return st.URIAllowList },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.URIAllowList); err != nil {
				return err
			}
			if len(st.URIAllowList) > 8192 || strings.ContainsAny(st.URIAllowList, " \t\r\n") {
				return fmt.Errorf("must be URLs separated by commas, 8 KiB at most")
			}
			return nil
		}},
	{"cors_allowed_origins", func(st *Settings) any { return st.CORSAllowedOrigins },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.CORSAllowedOrigins); err != nil {
				return err
			}
			var out []string
			for _, o := range splitList(st.CORSAllowedOrigins) {
				norm, ok := normalizeOrigin(o)
				if !ok {
					return fmt.Errorf("%q is not an origin (scheme://host[:port], http or https)", o)
				}
				out = append(out, norm)
			}
			st.CORSAllowedOrigins = strings.Join(out, ",")
			return nil
		}},
	{"oauth_server_enabled", func(st *Settings) any { return st.OAuthServerEnabled },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			return decodeSetting(raw, &st.OAuthServerEnabled)
		}},
	{"oauth_server_allow_dynamic_registration", func(st *Settings) any { return st.OAuthDynamicRegistration },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			return decodeSetting(raw, &st.OAuthDynamicRegistration)
		}},
	{"branding_display_name", func(st *Settings) any { return st.BrandingName },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.BrandingName); err != nil {
				return err
			}
			if len(st.BrandingName) > 100 {
				return fmt.Errorf("must be at most 100 characters")
			}
			return nil
		}},
	{"branding_logo_url", func(st *Settings) any { return st.BrandingLogoURL },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.BrandingLogoURL); err != nil {
				return err
			}
			if st.BrandingLogoURL == "" {
				return nil
			}
			u, err := url.Parse(st.BrandingLogoURL)
			if err != nil || u.Scheme != "https" || u.Host == "" || len(st.BrandingLogoURL) > 2048 {
				return fmt.Errorf("must be an absolute https URL")
			}
			return nil
		}},
	{"branding_primary_color", func(st *Settings) any { return st.BrandingColor },
		func(_ *Service, st *Settings, raw json.RawMessage) error {
			if err := decodeSetting(raw, &st.BrandingColor); err != nil {
				return err
			}
			if st.BrandingColor != "" && !validColor(st.BrandingColor) {
				return fmt.Errorf("must be a colour as #rrggbb")
			}
			return nil
		}},
}

// validColor accepts #rrggbb.
func validColor(c string) bool {
	if len(c) != 7 || c[0] != '#' {
		return false
	}
	for i := 1; i < 7; i++ {
		if !strings.ContainsRune("0123456789abcdefABCDEF", rune(c[i])) {
			return false
		}
	}
	return true
}

// decodeSetting decodes one JSON value, refusing a value of another type.
func decodeSetting(raw json.RawMessage, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("has the wrong type: want %s", jsonType(v))
	}
	return nil
}

func jsonType(v any) string {
	switch v.(type) {
	case *bool:
		return "a boolean"
	case *int:
		return "an integer"
	}
	return "a string"
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// normalizeOrigin returns o as browsers send it in Origin: scheme://host,
// with a port only when it is not the scheme's.
func normalizeOrigin(o string) (string, bool) {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return strings.ToLower(u.Scheme) + "://" + host, true
}

// AllowsOrigin reports whether a browser page of origin may call the
// tenant, and with credentials: any origin may, without, when the tenant
// lists none; else only the listed ones, with.
func (st Settings) AllowsOrigin(origin string) (allowed, credentials bool) {
	if st.CORSAllowedOrigins == "" {
		return true, false
	}
	for _, o := range splitList(st.CORSAllowedOrigins) {
		if o == origin {
			return true, true
		}
	}
	return false, false
}

// Map returns the settings by their API names.
func (st Settings) Map() map[string]any {
	out := make(map[string]any, len(settingFields))
	for _, f := range settingFields {
		out[f.name] = f.get(&st)
	}
	return out
}

func loadSettings(q engine.Querier) (Settings, error) {
	st := DefaultSettings
	rows, err := q.Query(`SELECT "key", value FROM settings`)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return st, err
		}
		for _, f := range settingFields {
			if f.name == k {
				// A stored value is what an update checked; one that no
				// longer reads keeps the default rather than fail reads.
				cur := st
				if f.set(nil, &cur, json.RawMessage(v)) == nil {
					st = cur
				}
			}
		}
	}
	return st, rows.Err()
}

// Settings returns the tenant's settings as stored now.
func (s *Service) Settings(ctx context.Context, t Tenant) (Settings, error) {
	start := s.now()
	var st Settings
	err := t.Shard.Read(ctx, func(q engine.Querier) (err error) {
		st, err = loadSettings(q)
		return err
	})
	if err == nil {
		s.cacheSettings(t.ID, st, start)
	}
	return st, err
}

// cacheSettings remembers st as read at at, unless what is remembered was
// read later: a read that began before an update committed must not put
// back what the update replaced.
func (s *Service) cacheSettings(tenantID string, st Settings, at time.Time) {
	s.settingsMu.Lock()
	defer s.settingsMu.Unlock()
	if cur, ok := s.settings.Peek(tenantID); ok && cur.at.After(at) {
		return
	}
	s.settings.Add(tenantID, cachedSettings{st: st, at: at})
}

// settingsFresh is how long a tenant's settings are used from memory by
// the paths that read them on every request (token lifetime, CORS); a
// change made through this server applies at once, one made through
// another within this time.
const settingsFresh = 30 * time.Second

type cachedSettings struct {
	st Settings
	at time.Time
}

// CachedSettings returns the tenant's settings from memory when read less
// than settingsFresh ago, else as Settings does.
func (s *Service) CachedSettings(ctx context.Context, t Tenant) (Settings, error) {
	if c, ok := s.settings.Peek(t.ID); ok && s.now().Sub(c.at) < settingsFresh {
		return c.st, nil
	}
	return s.Settings(ctx, t)
}

func newSettingsCache() *lru.Cache[string, cachedSettings] {
	c, _ := lru.New[string, cachedSettings](10_000) // a constant size: no error
	return c
}

// UpdateSettings changes the settings named in patch (API names → JSON
// values), all or none: an unknown name or a value of the wrong type or
// range is a validation_failed naming the field. The change is one write
// with its settings.updated event, which actor caused.
func (s *Service) UpdateSettings(ctx context.Context, t Tenant, c Client, actor event.Actor, patch map[string]json.RawMessage) (Settings, error) {
	patch = maps.Clone(patch)
	presets, err := presetRequests(patch)
	if err != nil {
		return Settings{}, err
	}
	type presetChange struct {
		p      *IdentityProvider
		sealed []byte
		update bool
	}
	var changes []presetChange
	for _, id := range slices.Sorted(maps.Keys(presets)) {
		cur, err := s.GetProvider(ctx, t, id)
		var ae *engine.Error
		if errors.As(err, &ae) && ae.Code == CodeProviderNotFound {
			cur, err = nil, nil
		}
		if err != nil {
			return Settings{}, err
		}
		p, sealed, err := s.prepareProvider(t, cur, id, *presets[id])
		if err != nil {
			return Settings{}, validationf("external_%s: %s", id, strings.TrimPrefix(err.Error(), "validation_failed: "))
		}
		changes = append(changes, presetChange{p, sealed, cur != nil})
	}
	names := make([]string, 0, len(patch))
	for name := range patch {
		names = append(names, name)
	}
	sort.Strings(names)
	var probe Settings
	for _, name := range names {
		f, ok := settingField(name)
		if !ok {
			return Settings{}, validationf("Unknown auth config field %q", name)
		}
		if err := f.set(s, &probe, patch[name]); err != nil {
			return Settings{}, validationf("Auth config field %q %v", name, err)
		}
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	var st Settings
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		for _, ch := range changes {
			if err := s.writeProvider(tx, t, c, ch.p, ch.sealed, ch.update, now); err != nil {
				return err
			}
		}
		for _, name := range names {
			if name == "smtp_pass" && string(patch[name]) == `"`+secretMask+`"` {
				continue // the mask GET shows: the stored password stays
			}
			f, _ := settingField(name)
			_ = f.set(s, &probe, patch[name]) // checked above
			var value []byte
			if name == "smtp_pass" { // its get shows the mask; stored sealed
				value, _ = json.Marshal(s.sealSMTPPass(t, probe.SMTPPass))
			} else {
				value, _ = json.Marshal(f.get(&probe))
			}
			if _, err := tx.Exec(`DELETE FROM settings WHERE "key" = ?`, name); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES (?, ?)`, name, string(value)); err != nil {
				return err
			}
		}
		var err error
		if st, err = loadSettings(tx); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.SettingsUpdated, Actor: actor, IP: c.IP,
			Data: map[string]any{"changed": names}, At: now})
	})
	if err != nil {
		return Settings{}, writeError(err, engine.KindUnavailable)
	}
	s.cacheSettings(t.ID, st, s.now())
	return st, nil
}

func settingField(name string) (setting, bool) {
	for _, f := range settingFields {
		if f.name == name {
			return f, true
		}
	}
	return setting{}, false
}

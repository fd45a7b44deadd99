package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// UpstreamIdentity is who a provider says signed in: its subject, and the
// address only when the provider vouches for it (EmailVerified).
type UpstreamIdentity struct {
	Provider      string
	Subject       string
	Email         string
	EmailVerified bool
	// Data is the identity's data as GoTrue keeps it (iss, sub, email,
	// email_verified, name, picture, …).
	Data map[string]any
}

// ExternalOptions say what a login through a provider is for: a session,
// or a PKCE auth code (FlowStateID), or linking to a signed-in user.
type ExternalOptions struct {
	FlowStateID string
	LinkUserID  string
}

// ExternalSignIn signs in the user of an upstream identity: the user who
// has it; else, when linking, the signed-in user; else, when the tenant
// links by verified email and the provider verified the address, its
// user; else a new user (when signups are allowed). An address that has
// a user the identity may not join is refused (422 email_exists): a
// provider's unverified claim never takes over an account.
func (s *Service) ExternalSignIn(ctx context.Context, t Tenant, c Client, id UpstreamIdentity, o ExternalOptions) (*Verified, error) {
	if id.Subject == "" {
		return nil, newError(engine.KindInvalid, CodeBadOAuthCallback, "The provider did not say who signed in (no subject)")
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return nil, err
	}
	email := NormalizeEmail(id.Email)
	if email != "" && validateEmail(email) != nil {
		email = ""
	}
	// Only an address the provider verified becomes the user's: an
	// unverified claim stays in the identity's data, or anyone could
	// sign up as victim@ through a lax provider and wait for the owner's
	// first mailed link to confirm the account the attacker holds.
	verified := ""
	if id.EmailVerified {
		verified = email
	}
	data := map[string]any{}
	for k, v := range id.Data {
		data[k] = v
	}
	data["sub"], data["provider_id"] = id.Subject, id.Subject
	if email != "" {
		data["email"], data["email_verified"] = email, id.EmailVerified
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	ts := now.UnixMicro()
	is := &issued{sessionAt: now.Unix(), method: "oauth"}
	out := &Verified{}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		*is, out.AuthCode = issued{sessionAt: now.Unix(), method: "oauth"}, ""
		var uid, iid string
		err := tx.QueryRow(`SELECT user_id, id FROM identities WHERE provider = ? AND provider_id = ?`, id.Provider, id.Subject).Scan(&uid, &iid)
		if err != nil && !errors.Is(err, engine.ErrNoRows) {
			return err
		}
		created, linked := false, false
		switch {
		case err == nil && o.LinkUserID != "" && uid != o.LinkUserID:
			return newError(engine.KindRefused, CodeIdentityAlreadyExists, "Identity is already linked to another user")
		case err == nil:
			if _, err := tx.Exec(`UPDATE identities SET identity_data = ?, email = ?, last_sign_in_at = ?, updated_at = ? WHERE id = ?`,
				mustJSON(data), nullable(email), ts, ts, iid); err != nil {
				return err
			}
		case o.LinkUserID != "":
			uid, linked = o.LinkUserID, true
		default:
			var u *User
			if verified != "" {
				if u, err = liveUserByEmail(tx, verified); err != nil {
					return err
				}
			}
			switch {
			case u != nil && st.EmailLinking && u.EmailConfirmedAt != nil && u.EmailConfirmedBy != ConfirmedAutoconfirm && u.EmailConfirmedBy != "":
				// The address was proven (a mailed link, the administrator,
				// a provider), not just typed in at a signup the tenant
				// auto-confirmed: the identity joins its user.
				uid, linked = u.ID, true
			case u != nil:
				return newError(engine.KindRefused, CodeEmailExists,
					"A user with this email address has already been registered; sign in and link this provider")
			case st.DisableSignup:
				return newError(engine.KindRefused, CodeSignupDisabled, "Signups not allowed for this instance")
			default:
				if uid, err = insertExternalUser(tx, id, verified, data, ts); err != nil {
					return err
				}
				created = true
			}
		}
		if created || linked {
			if _, err := tx.Exec(`INSERT INTO identities (id, user_id, provider, provider_id, identity_data, email, last_sign_in_at, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, newUUID(), uid, id.Provider, id.Subject, mustJSON(data), nullable(email), ts, ts, ts); err != nil {
				if errors.Is(err, engine.ErrConflict) {
					return newError(engine.KindRefused, CodeIdentityAlreadyExists, "Identity is already linked to another user")
				}
				return err
			}
		}
		u, err := userByID(tx, uid)
		if errors.Is(err, engine.ErrNoRows) {
			return errUserGone()
		}
		if err != nil {
			return err
		}
		if u.Banned(now) {
			return newError(engine.KindInvalid, CodeUserBanned, "User is banned")
		}
		if err := addProvider(tx, u, id.Provider); err != nil {
			return err
		}
		if created {
			if err := s.record(tx, t, &event.Event{Type: event.UserCreated, Actor: event.User(uid, email), IP: c.IP,
				Data: map[string]any{"provider": id.Provider}, At: now}); err != nil {
				return err
			}
		}
		if created || linked {
			if err := s.record(tx, t, &event.Event{Type: event.IdentityLinked, Actor: event.User(uid, u.Email), IP: c.IP,
				Data: map[string]any{"provider": id.Provider, "by": linkReason(created, o.LinkUserID != "")}, At: now}); err != nil {
				return err
			}
		}
		if o.FlowStateID != "" {
			code := newUUID()
			n, err := tx.Exec(`UPDATE flow_states SET user_id = ?, auth_code_hash = ?, auth_code_issued_at = ? WHERE id = ? AND auth_code_hash IS NULL`,
				uid, hashToken(code), ts, o.FlowStateID)
			if err != nil {
				return err
			}
			if n == 0 {
				return newError(engine.KindNotFound, CodeFlowStateNotFound, "invalid flow state, no valid flow state found")
			}
			out.AuthCode = code
			return nil
		}
		if o.LinkUserID != "" {
			return nil // linked: the caller keeps its session
		}
		if err := signIn(tx, u, "", now); err != nil {
			return err
		}
		if is.sessionID, is.refresh, err = createSession(tx, uid, now, c); err != nil {
			return err
		}
		if err := setSessionMethod(tx, is.sessionID, is.method); err != nil {
			return err
		}
		if err := s.record(tx, t, &event.Event{Type: event.UserSignedIn, Actor: event.User(uid, u.Email), IP: c.IP,
			Data: map[string]any{"provider": id.Provider}, At: now}); err != nil {
			return err
		}
		is.user, err = userByID(tx, uid)
		return err
	})
	if err != nil {
		var ae *engine.Error
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, writeError(err, engine.KindRateLimited)
	}
	if out.AuthCode != "" || o.LinkUserID != "" {
		return out, nil
	}
	if out.Session, err = s.session(ctx, t, is); err != nil {
		return nil, err
	}
	return out, nil
}

func linkReason(created, manual bool) string {
	switch {
	case created:
		return "signup"
	case manual:
		return "link"
	}
	return "verified_email"
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// insertExternalUser makes the user of a first login through a provider:
// confirmed when the provider verified its address, with the identity's
// data as its metadata (GoTrue).
func insertExternalUser(tx engine.Querier, id UpstreamIdentity, email string, data map[string]any, ts int64) (string, error) {
	uid := newUUID()
	var confirmed any
	if email != "" {
		confirmed = ts // only a verified address comes here
	}
	app := map[string]any{"provider": id.Provider, "providers": []string{id.Provider}}
	var by any
	if confirmed != nil {
		by = ConfirmedProvider
	}
	_, err := tx.Exec(`INSERT INTO users (id, aud, role, email, encrypted_password, email_confirmed_at, email_confirmed_by, last_sign_in_at,
		raw_app_meta_data, raw_user_meta_data, is_anonymous, created_at, updated_at)
		VALUES (?, 'authenticated', 'authenticated', ?, '', ?, ?, ?, ?, ?, 0, ?, ?)`,
		uid, nullable(email), confirmed, by, ts, mustJSON(app), mustJSON(data), ts, ts)
	return uid, err
}

// addProvider adds provider to u's app_metadata.providers.
func addProvider(tx engine.Querier, u *User, provider string) error {
	app, err := objectMap(u.AppMetadata)
	if err != nil {
		return err
	}
	var list []string
	if raw, ok := app["providers"].([]any); ok {
		for _, p := range raw {
			if s, ok := p.(string); ok {
				list = append(list, s)
			}
		}
	}
	if slices.Contains(list, provider) {
		return nil
	}
	app["providers"] = append(list, provider)
	if _, ok := app["provider"]; !ok {
		app["provider"] = provider
	}
	_, err = tx.Exec(`UPDATE users SET raw_app_meta_data = ? WHERE id = ?`, mustJSON(app), u.ID)
	return err
}

// UnlinkIdentity removes one of the caller's identities, unless it is the
// last way the user can log in.
func (s *Service) UnlinkIdentity(ctx context.Context, t Tenant, c Client, p *Principal, identityID string) (*User, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	var out *User
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		u, err := userByID(tx, p.User.ID)
		if err != nil {
			return err
		}
		var found *Identity
		for i := range u.Identities {
			if u.Identities[i].IdentityID == identityID {
				found = &u.Identities[i]
			}
		}
		if found == nil {
			return newError(engine.KindNotFound, CodeIdentityNotFound, "Identity doesn't exist")
		}
		if len(u.Identities) <= 1 {
			return newError(engine.KindRefused, CodeSingleIdentity, "User must have at least 1 identity after unlinking")
		}
		if _, err := tx.Exec(`DELETE FROM identities WHERE id = ?`, identityID); err != nil {
			return err
		}
		app, err := objectMap(u.AppMetadata)
		if err != nil {
			return err
		}
		var left []string
		for _, id := range u.Identities {
			if id.IdentityID != identityID && !slices.Contains(left, id.Provider) {
				left = append(left, id.Provider)
			}
		}
		app["providers"] = left
		if app["provider"] == found.Provider {
			app["provider"] = left[0]
		}
		ts := now.UnixMicro()
		if _, err := tx.Exec(`UPDATE users SET raw_app_meta_data = ?, updated_at = ? WHERE id = ?`, mustJSON(app), ts, u.ID); err != nil {
			return err
		}
		if err := s.record(tx, t, &event.Event{Type: event.IdentityUnlinked, Actor: event.User(u.ID, u.Email), IP: c.IP,
			Data: map[string]any{"provider": found.Provider, "identity_id": identityID}, At: now}); err != nil {
			return err
		}
		out, err = userByID(tx, u.ID)
		return err
	})
	if err != nil {
		var ae *engine.Error
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, writeError(err, engine.KindUnavailable)
	}
	return out, nil
}

// IDTokenNonce checks GoTrue's nonce rule for grant_type=id_token: a
// nonce given must be the token's nonce, or its SHA-256 in hex (what a
// native Google or Apple sign-in puts in the token); a token with a nonce
// needs one.
func IDTokenNonce(tokenNonce, given string) error {
	if tokenNonce == "" && given == "" {
		return nil
	}
	if tokenNonce == "" || given == "" {
		return newError(engine.KindInvalid, CodeBadIDToken, "Passed nonce and nonce in id_token should either both exist or not.")
	}
	if tokenNonce == given || strings.EqualFold(tokenNonce, hashToken(given)) {
		return nil
	}
	return newError(engine.KindInvalid, CodeBadIDToken, "Nonces mismatch")
}

package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// Passwords longer than this are refused: Argon2 would take them, but a
// megabyte password is an attack on the hash pool, not a password.
const maxPasswordLen = 1024

func checkPassword(pw string, st Settings) error {
	if utf8.RuneCountInString(pw) < st.PasswordMinLength {
		return &engine.Error{Kind: engine.KindRefused, Code: CodeWeakPassword,
			Message: fmt.Sprintf("Password should be at least %d characters.", st.PasswordMinLength), Reasons: []string{"length"}}
	}
	if len(pw) > maxPasswordLen {
		return validationf("Password cannot be longer than %d bytes", maxPasswordLen)
	}
	if st.PasswordRequiredCharacters != "" {
		for _, set := range strings.Split(st.PasswordRequiredCharacters, ":") {
			if set != "" && !strings.ContainsAny(pw, set) {
				return &engine.Error{Kind: engine.KindRefused, Code: CodeWeakPassword,
					Message: "Password should contain at least one character of each: " + strings.Join(strings.Split(st.PasswordRequiredCharacters, ":"), ", "),
					Reasons: []string{"characters"}}
			}
		}
	}
	return nil
}

// SignupRequest is a signup: an email, a password and user metadata.
type SignupRequest struct {
	Email    string
	Password string
	Data     map[string]any
	// RedirectTo and the PKCE challenge shape the confirmation mail's
	// link, when the tenant does not auto-confirm.
	RedirectTo                         string
	CodeChallenge, CodeChallengeMethod string
}

// Signup creates a user with an email identity. With auto-confirm on it
// returns a session, else the unconfirmed user (session nil).
func (s *Service) Signup(ctx context.Context, t Tenant, c Client, req SignupRequest) (*Session, *User, error) {
	if strings.TrimSpace(req.Email) == "" && req.Password == "" {
		return s.signupAnonymous(ctx, t, c, req.Data)
	}
	email := NormalizeEmail(req.Email)
	if err := validateEmail(email); err != nil {
		return nil, nil, err
	}
	if req.Password == "" {
		return nil, nil, validationf("Signup requires a valid password")
	}
	pc, err := parseChallenge(req.CodeChallenge, req.CodeChallengeMethod)
	if err != nil {
		return nil, nil, err
	}
	if err := s.signups.allow(t.ID, c.IP); err != nil {
		return nil, nil, err
	}
	var st Settings
	exists := false
	err = t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		if st, err = loadSettings(q); err != nil {
			return err
		}
		var one int
		err = q.QueryRow(`SELECT 1 FROM users WHERE email = ?`, email).Scan(&one)
		exists = err == nil
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if st.DisableSignup {
		return nil, nil, newError(engine.KindRefused, CodeSignupDisabled, "Signups not allowed for this instance")
	}
	if err := checkPassword(req.Password, st); err != nil {
		return nil, nil, err
	}
	if exists { // no hash spent on a signup that cannot succeed
		return nil, nil, errUserExists()
	}
	if !st.MailerAutoconfirm {
		if err := s.mails.allow(t.ID, st, "signup", email); err != nil {
			return nil, nil, err
		}
	}
	pk := s.pace.key(c.IP, t.ID, email)
	if err := s.admitHash(ctx, pk); err != nil {
		return nil, nil, err
	}
	pwHash, err := s.hashes.Hash(ctx, req.Password)
	if err != nil {
		return nil, nil, s.hashRefusal(pk, err)
	}
	s.pace.served(pk)
	now := s.now().UTC().Truncate(time.Microsecond)
	nu := newUser{email: email, pwHash: pwHash, data: req.Data, confirmed: st.MailerAutoconfirm, signedIn: st.MailerAutoconfirm}
	is := &issued{sessionAt: now.Unix()}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		uid, err := nu.insert(tx, now)
		if err != nil {
			return err
		}
		if st.MailerAutoconfirm {
			if is.sessionID, is.refresh, err = createSession(tx, uid, now, c); err != nil {
				return err
			}
		}
		if err := s.record(tx, t, &event.Event{Type: event.UserCreated, Actor: event.User(uid, email), IP: c.IP,
			Data: map[string]any{"provider": "email"}, At: now}); err != nil {
			return err
		}
		if is.user, err = userByID(tx, uid); err != nil || st.MailerAutoconfirm {
			return err
		}
		if err := s.sendConfirmation(tx, t, st, is.user, pc, req.RedirectTo, now); err != nil {
			return err
		}
		if err := s.recordRequest(tx, t, c, event.UserConfirmationRequested, is.user, email, now, nil); err != nil {
			return err
		}
		is.user, err = userByID(tx, uid)
		return err
	})
	if errors.Is(err, engine.ErrConflict) {
		return nil, nil, errUserExists()
	}
	if err != nil {
		return nil, nil, writeError(err, engine.KindRateLimited)
	}
	if !st.MailerAutoconfirm {
		return nil, is.user, nil
	}
	sess, err := s.session(ctx, t, is)
	return sess, is.user, err
}

// signupAnonymous makes an anonymous user with a session, as GoTrue's
// POST /signup with neither email nor password when the tenant allows
// anonymous sign-ins (anon_signup.json): no identity, no email, empty
// app_metadata; the user becomes permanent by adding an email
// (UpdateUser).
func (s *Service) signupAnonymous(ctx context.Context, t Tenant, c Client, data map[string]any) (*Session, *User, error) {
	if err := s.signups.allow(t.ID, c.IP); err != nil {
		return nil, nil, err
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	if st.DisableSignup {
		return nil, nil, newError(engine.KindRefused, CodeSignupDisabled, "Signups not allowed for this instance")
	}
	if !st.AnonymousUsers {
		return nil, nil, newError(engine.KindRefused, CodeAnonymousDisabled, "Anonymous sign-ins are disabled")
	}
	if data == nil {
		data = map[string]any{}
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	ts := now.UnixMicro()
	is := &issued{sessionAt: now.Unix(), method: "anonymous"}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		uid := newUUID()
		if _, err := tx.Exec(`INSERT INTO users (id, aud, role, email, encrypted_password, last_sign_in_at,
			raw_app_meta_data, raw_user_meta_data, is_anonymous, created_at, updated_at)
			VALUES (?, 'authenticated', 'authenticated', NULL, '', ?, '{}', ?, 1, ?, ?)`, uid, ts, mustJSON(data), ts, ts); err != nil {
			return err
		}
		var err error
		if is.sessionID, is.refresh, err = createSession(tx, uid, now, c); err != nil {
			return err
		}
		if err := s.record(tx, t, &event.Event{Type: event.UserCreated, Actor: event.User(uid, ""), IP: c.IP,
			Data: map[string]any{"provider": "anonymous"}, At: now}); err != nil {
			return err
		}
		is.user, err = userByID(tx, uid)
		return err
	})
	if err != nil {
		return nil, nil, writeError(err, engine.KindRateLimited)
	}
	sess, err := s.session(ctx, t, is)
	return sess, is.user, err
}

// newUser is a user to insert with its email identity.
type newUser struct {
	email, pwHash       string
	data, appData       map[string]any
	confirmed, signedIn bool
	// admin: made by the administrator, whose user_metadata is kept as
	// sent, with only email_verified added (as GoTrue does); a signup's
	// also gets its identity's data (email, email_verified, phone_verified,
	// sub).
	admin bool
	// plainMeta: user_metadata is data as sent (an invitation's, GoTrue).
	plainMeta bool
}

// insert adds the user and its email identity and returns the user's id.
func (nu newUser) insert(tx engine.Querier, now time.Time) (string, error) {
	ts := now.UnixMicro()
	uid, iid := newUUID(), newUUID()
	identity := map[string]any{"email": nu.email, "email_verified": nu.confirmed, "phone_verified": false, "sub": uid}
	meta := map[string]any{}
	maps.Copy(meta, nu.data)
	switch {
	case nu.plainMeta:
	case nu.admin:
		meta["email_verified"] = nu.confirmed
	default:
		maps.Copy(meta, identity)
	}
	app := map[string]any{}
	maps.Copy(app, nu.appData)
	app["provider"], app["providers"] = "email", []string{"email"}
	var confirmed, signedIn any
	if nu.confirmed {
		confirmed = ts
	}
	if nu.signedIn {
		signedIn = ts
	}
	var confirmedBy any
	if nu.confirmed {
		confirmedBy = ConfirmedAutoconfirm
		if nu.admin {
			confirmedBy = ConfirmedAdmin
		}
	}
	if _, err := tx.Exec(`INSERT INTO users (id, aud, role, email, encrypted_password, email_confirmed_at, email_confirmed_by, last_sign_in_at,
		raw_app_meta_data, raw_user_meta_data, is_anonymous, created_at, updated_at)
		VALUES (?, 'authenticated', 'authenticated', ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)`,
		uid, nu.email, nu.pwHash, confirmed, confirmedBy, signedIn, mustJSON(app), mustJSON(meta), ts, ts); err != nil {
		return "", err
	}
	if _, err := tx.Exec(`INSERT INTO identities (id, user_id, provider, provider_id, identity_data, email, last_sign_in_at, created_at, updated_at)
		VALUES (?, ?, 'email', ?, ?, ?, ?, ?, ?)`, iid, uid, uid, mustJSON(identity), nu.email, signedIn, ts, ts); err != nil {
		return "", err
	}
	return uid, nil
}

func errUserExists() *engine.Error {
	return newError(engine.KindRefused, CodeUserAlreadyExists, "User already registered")
}

// PasswordRequest is a password login (by email; phone logins are refused).
type PasswordRequest struct {
	Email    string
	Phone    string
	Password string
}

// Login checks an email and password and opens a session. An unknown email
// costs the same hash as a wrong password; failures are audited through
// the shard's buffer. A hash with outdated parameters is replaced.
func (s *Service) Login(ctx context.Context, t Tenant, c Client, req PasswordRequest) (*Session, error) {
	u, newHash, err := s.verifyLogin(ctx, t, c, req)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	is := &issued{sessionAt: now.Unix()}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		if err := signIn(tx, u, newHash, now); err != nil {
			return err
		}
		var err error
		if is.sessionID, is.refresh, err = createSession(tx, u.ID, now, c); err != nil {
			return err
		}
		if err := s.recordSignIn(tx, t, c, u, newHash, now, nil); err != nil {
			return err
		}
		is.user, err = userByID(tx, u.ID)
		return err
	})
	if err != nil {
		return nil, writeError(err, engine.KindRateLimited)
	}
	return s.session(ctx, t, is)
}

// signIn records a sign-in of u in the write that opens its session. It is
// checked again there: a ban or delete committed while the password was
// hashed must not get a session. A non-empty newHash replaces an outdated
// hash, only if the password did not change meanwhile.
func signIn(tx engine.Querier, u *User, newHash string, now time.Time) error {
	ts := now.UnixMicro()
	n, err := tx.Exec(`UPDATE users SET last_sign_in_at = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL
		AND (banned_until IS NULL OR banned_until <= ?)`, ts, ts, u.ID, ts)
	if err != nil {
		return err
	}
	if n == 0 {
		var banned int
		if err := tx.QueryRow(`SELECT 1 FROM users WHERE id = ? AND deleted_at IS NULL AND banned_until > ?`, u.ID, ts).Scan(&banned); err == nil {
			return newError(engine.KindInvalid, CodeUserBanned, "User is banned")
		}
		return errInvalidCredentials() // deleted since we read it
	}
	if newHash != "" {
		if _, err := tx.Exec(`UPDATE users SET encrypted_password = ? WHERE id = ? AND encrypted_password = ?`,
			newHash, u.ID, u.EncryptedPassword); err != nil {
			return err
		}
	}
	return nil
}

// recordSignIn records the sign-in event; extra adds to its data.
func (s *Service) recordSignIn(tx engine.Querier, t Tenant, c Client, u *User, newHash string, now time.Time, extra map[string]any) error {
	payload := map[string]any{"provider": "email"}
	if newHash != "" {
		payload["rehashed"] = true
	}
	for k, v := range extra {
		payload[k] = v
	}
	return s.record(tx, t, &event.Event{Type: event.UserSignedIn, Actor: event.User(u.ID, u.Email), IP: c.IP, Data: payload, At: now})
}

// verifyLogin checks an email and password, with the throttle, the hash
// pool's admission and the failed-login audit, and returns the user and,
// when its hash is outdated, a new hash to store.
func (s *Service) verifyLogin(ctx context.Context, t Tenant, c Client, req PasswordRequest) (*User, string, error) {
	email := NormalizeEmail(req.Email)
	if email == "" && req.Phone != "" {
		return nil, "", newError(engine.KindInvalid, "phone_provider_disabled", "Phone logins are disabled")
	}
	if email == "" || req.Password == "" {
		return nil, "", validationf("A valid email and password are required")
	}
	if err := s.throttleWait(ctx, t, email, c.IP); err != nil {
		return nil, "", err
	}
	if len(req.Password) > maxPasswordLen {
		s.throttle.Fail(t.ID, email, c.IP)
		return nil, "", errInvalidCredentials()
	}
	// A saturated pool refuses before the user is read: under a login storm
	// most requests are refused, and each refusal should cost next to nothing.
	pk := s.pace.key(c.IP, t.ID, email)
	if err := s.admitHash(ctx, pk); err != nil {
		return nil, "", err
	}
	var u *User
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		u, err = userByEmail(q, email)
		if errors.Is(err, engine.ErrNoRows) {
			u, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, "", err
	}
	if u == nil || u.EncryptedPassword == "" {
		if err := s.hashes.VerifyDummy(ctx, req.Password); err != nil {
			return nil, "", s.hashRefusal(pk, err)
		}
		s.pace.served(pk)
		s.throttle.Fail(t.ID, email, c.IP)
		if err := s.auditFailedLogin(ctx, t, c, "", email, "unknown_email"); err != nil {
			return nil, "", err
		}
		return nil, "", errInvalidCredentials()
	}
	ok, stale, err := s.hashes.Verify(ctx, u.EncryptedPassword, req.Password)
	if err != nil {
		return nil, "", s.hashRefusal(pk, err)
	}
	s.pace.served(pk)
	if !ok {
		s.throttle.Fail(t.ID, email, c.IP)
		if err := s.auditFailedLogin(ctx, t, c, u.ID, email, "wrong_password"); err != nil {
			return nil, "", err
		}
		return nil, "", errInvalidCredentials()
	}
	if u.EmailConfirmedAt == nil {
		return nil, "", newError(engine.KindInvalid, CodeEmailNotConfirmed, "Email not confirmed")
	}
	if u.Banned(s.now()) {
		return nil, "", newError(engine.KindInvalid, CodeUserBanned, "User is banned")
	}
	s.throttle.Succeed(t.ID, email, c.IP)
	newHash := ""
	if stale {
		// Best effort: a saturated pool must not fail a good login.
		if h, err := s.hashes.Hash(ctx, req.Password); err == nil {
			newHash = h
		}
	}
	return u, newHash, nil
}

// throttleWait applies the failed-login throttle before a secret of the
// account (a password, a mailed code, a nonce) is checked: refused (429)
// past the pair's limit, or held while the account is being guessed from
// many addresses (every attempt waits, the owner's too, but is not
// refused).
func (s *Service) throttleWait(ctx context.Context, t Tenant, email, ip string) error {
	if err := s.throttle.Seed(t.ID, func(since time.Time) ([]Attempt, error) { return loginAttempts(ctx, t, since) }); err != nil {
		return err
	}
	wait, err := s.throttle.Allow(t.ID, email, ip)
	if err != nil || wait <= 0 {
		return err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxSeedAttempts bounds the audit rows a throttle's Seed reads.
const maxSeedAttempts = 100_000

// loginAttempts reads the tenant's password logins, failed and not, since
// a time, from its audit log (the throttle's Seed).
func loginAttempts(ctx context.Context, t Tenant, since time.Time) ([]Attempt, error) {
	var out []Attempt
	err := t.Shard.Read(engine.LongRead(ctx), func(q engine.Querier) error {
		rows, err := q.Query(`SELECT action, COALESCE(actor_email, ''), COALESCE(ip, ''), created_at FROM audit_log
			WHERE created_at >= ? AND action IN (?, ?) ORDER BY id LIMIT ?`,
			since.UnixMicro(), event.UserSignInFailed.Action, event.UserSignedIn.Action, maxSeedAttempts)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var action, email, ip string
			var at int64
			if err := rows.Scan(&action, &email, &ip, &at); err != nil {
				return err
			}
			if email == "" {
				continue
			}
			out = append(out, Attempt{Email: email, IP: ip, At: time.UnixMicro(at), OK: action == event.UserSignedIn.Action})
		}
		return rows.Err()
	})
	return out, err
}

// auditFailedLogin buffers a login_failed event: a failed login writes
// nothing else, so its event rides with a later batch. When the shard's
// buffer is full the event is written now instead; if that fails too, the
// login is answered with that error rather than losing its event.
func (s *Service) auditFailedLogin(ctx context.Context, t Tenant, c Client, userID, email, reason string) error {
	now := s.now()
	op := func(tx engine.Querier) error {
		return s.record(tx, t, &event.Event{Type: event.UserSignInFailed, Actor: event.User(userID, email), IP: c.IP,
			Data: map[string]any{"reason": reason}, At: now})
	}
	if err := t.Shard.Defer("", op); !errors.Is(err, engine.ErrOverloaded) {
		return err
	}
	return writeError(t.Shard.Write(ctx, op), engine.KindRateLimited)
}

// How an address was confirmed (users.email_confirmed_by).
const (
	ConfirmedAutoconfirm = "autoconfirm"
	ConfirmedLink        = "link"
	ConfirmedAdmin       = "admin"
	ConfirmedProvider    = "provider"
)

// confirmedByFor is how an address taken at once is confirmed: by the
// administrator, or as typed (auto-confirm).
func confirmedByFor(admin bool) string {
	if admin {
		return ConfirmedAdmin
	}
	return ConfirmedAutoconfirm
}

// refreshedAtResolution: a session's refreshed_at is rewritten at most
// this often.
const refreshedAtResolution = time.Minute

// maxWalk bounds the steps from a presented ancestor token to the active
// one: more rotations than this within the grace interval is not a client
// that lost a response.
const maxWalk = 256

// Refresh rotates a refresh token: the presented token is revoked and its
// derived child returned with a new access token. The parent of the active
// token, or a token revoked less than the grace interval ago, returns the
// current session unchanged; any other reuse revokes the whole session.
// The check and the rotation run in one write, so concurrent refreshes of
// one token are ordered by the shard's writer.
func (s *Service) Refresh(ctx context.Context, t Tenant, c Client, presented string) (*Session, error) {
	is, err := s.rotate(ctx, t, c, presented, "")
	if err != nil {
		return nil, err
	}
	return s.session(ctx, t, is)
}

// rotate runs a refresh token's rotation and reuse detection in one write
// and returns what it issued, or its failure. clientID is the OAuth client
// whose grant the token must belong to; "" (GoTrue's refresh) refuses the
// tokens of OAuth grants, so a client's token never becomes an unscoped
// session.
func (s *Service) rotate(ctx context.Context, t Tenant, c Client, presented, clientID string) (*issued, error) {
	if !validRefreshToken(presented) {
		return nil, validationf("Refresh token is not valid")
	}
	h := refreshKey(presented)
	is := &issued{}
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		now := s.now().UTC().Truncate(time.Microsecond)
		ts := now.UnixMicro()
		*is = issued{}
		var userID string
		var id, updated int64
		var sessID string
		var revoked bool
		var sessCreated, notAfter, refreshedAt *int64
		var amr, grantClient *string
		// One statement for the token, its session, its OAuth grant and the
		// user with its identities (the answer's user: a refresh does not
		// change it). The writer is the shard's one serial resource, but a
		// separate read transaction after the commit cost more CPU in all.
		rows, err := tx.Query(`SELECT rt.id, rt.user_id, rt.session_id, rt.revoked, rt.updated_at, s.created_at, s.not_after, s.refreshed_at, s.amr, g.client_id,
			`+userColumns+`, `+identityColumns+`
			FROM refresh_tokens rt LEFT JOIN sessions s ON s.id = rt.session_id LEFT JOIN oauth_grants g ON g.session_id = rt.session_id
			LEFT JOIN users u ON u.id = rt.user_id AND u.deleted_at IS NULL LEFT JOIN identities i ON i.user_id = u.id
			WHERE rt.token_hash = ? ORDER BY i.created_at, i.id`, h)
		if err != nil {
			return err
		}
		u, found, err := scanUserRows(rows, &id, &userID, &sessID, &revoked, &updated, &sessCreated, &notAfter, &refreshedAt, &amr, &grantClient)
		if err != nil {
			return err
		}
		// No user: it was deleted (its sessions go with it), so the token
		// is as good as gone; nothing is rotated.
		if !found || u == nil {
			is.failure = errRefreshNotFound()
			return nil
		}
		is.user = u
		// A ban ends the user's sessions; a session that escaped it (a ban
		// restored from an export, one racing a login) is refused, and its
		// token left as it was.
		if u.Banned(now) {
			is.failure = newError(engine.KindInvalid, CodeUserBanned, "User is banned")
			return nil
		}
		if (grantClient == nil && clientID != "") || (grantClient != nil && *grantClient != clientID) || sessCreated == nil {
			is.failure = errRefreshNotFound()
			return nil
		}
		if notAfter != nil && *notAfter <= ts {
			if revoked {
				is.failure = errRefreshAlreadyUsed()
			} else {
				is.failure = newError(engine.KindInvalid, CodeSessionExpired, "Invalid Refresh Token: Session Expired")
			}
			return nil
		}
		is.sessionID, is.sessionAt = sessID, time.UnixMicro(*sessCreated).Unix()
		if amr != nil {
			is.method = *amr
		}
		if !revoked {
			child := refreshPrefix(now) + s.derive(t.ID, presented)
			if _, err := tx.Exec(`UPDATE refresh_tokens SET revoked = 1, updated_at = ? WHERE id = ?`, ts, id); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO refresh_tokens (token_hash, user_id, session_id, parent, revoked, created_at, updated_at)
				VALUES (?, ?, ?, ?, 0, ?, ?)`, refreshKey(child), userID, sessID, h, ts, ts); err != nil {
				return err
			}
			// refreshed_at says when the session was last used, to the
			// minute: a client refreshing more often does not rewrite the
			// session row each time (its token rows are the record).
			if refreshedAt == nil || ts-*refreshedAt >= refreshedAtResolution.Microseconds() {
				if _, err := tx.Exec(`UPDATE sessions SET refreshed_at = ?, updated_at = ? WHERE id = ?`, ts, ts, sessID); err != nil {
					return err
				}
			}
			if err := s.record(tx, t, &event.Event{Type: event.SessionRefreshed, Actor: event.User(userID, ""), IP: c.IP,
				Data: map[string]any{"session_id": sessID}, At: now}); err != nil {
				return err
			}
			is.refresh = child
		} else {
			active, ok, err := s.activeFrom(tx, t.ID, sessID, presented, h, ts-updated < s.grace.Microseconds(), clientID != "")
			if err != nil {
				return err
			}
			if !ok {
				// Reuse of an old token: someone else may hold the family.
				if _, err := tx.Exec(`UPDATE refresh_tokens SET revoked = 1, updated_at = ? WHERE session_id = ? AND revoked = 0`, ts, sessID); err != nil {
					return err
				}
				if _, err := tx.Exec(`UPDATE sessions SET not_after = ?, updated_at = ? WHERE id = ?`, ts, ts, sessID); err != nil {
					return err
				}
				if err := s.record(tx, t, &event.Event{Type: event.SessionRevoked, Actor: event.User(userID, ""), IP: c.IP,
					Data: map[string]any{"session_id": sessID, "reason": "refresh_token_reuse"}, At: now}); err != nil {
					return err
				}
				is.failure = errRefreshAlreadyUsed()
				return nil
			}
			is.refresh = active
		}
		return nil
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	if is.failure != nil {
		return nil, is.failure
	}
	return is, nil
}

// activeFrom returns the session's active refresh token when the presented
// revoked token may still reach it: it is the active token's parent, or it
// was revoked within the grace interval (inGrace). The active token is
// recomputed by deriving forward from the presented one.
//
// strict (an OAuth grant) accepts the parent only within the grace
// interval too: a thief replaying a token one step behind its client must
// not be answered forever (RFC 9700 §4.14.2).
func (s *Service) activeFrom(tx engine.Querier, tenantID, sessID, presented, h string, inGrace, strict bool) (string, bool, error) {
	var activeHash string
	var parent *string
	err := tx.QueryRow(`SELECT token_hash, parent FROM refresh_tokens WHERE session_id = ? AND revoked = 0 ORDER BY id DESC LIMIT 1`, sessID).
		Scan(&activeHash, &parent)
	if errors.Is(err, engine.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	isParent := parent != nil && *parent == h && !strict
	if !isParent && !inGrace {
		return "", false, nil
	}
	// The active token is its prefix (kept in clear in its key) and a
	// secret derived from the presented token's, a few steps on.
	prefix := refreshKeyPrefix(activeHash)
	cur := presented
	for range maxWalk {
		cur = s.derive(tenantID, cur)
		if subtle.ConstantTimeCompare([]byte(refreshKey(prefix+cur)), []byte(activeHash)) == 1 {
			return prefix + cur, true, nil
		}
	}
	return "", false, nil
}

// UpdateUserRequest changes a user: a nil field is left as it is; a
// metadata key set to nil is removed.
type UpdateUserRequest struct {
	Email    *string
	Password *string
	Data     map[string]any
	// Nonce is the code GET /reauthenticate mailed, for a password change.
	Nonce string
	// RedirectTo is where the email change's links go; with a PKCE
	// challenge they end in ?code= (auth-js flowType pkce).
	RedirectTo                         string
	CodeChallenge, CodeChallengeMethod string
}

// UpdateUser changes the caller's email, password and metadata (keys set
// to null are removed). A new email is applied at once when the tenant
// auto-confirms; else it waits for the links mailed to the new address
// (and to the current one: secure email change).
func (s *Service) UpdateUser(ctx context.Context, t Tenant, c Client, p *Principal, req UpdateUserRequest) (*User, error) {
	return s.updateUser(ctx, t, c, p, userChange{UpdateUserRequest: req})
}

// userChange is an update of a user; the administrator may also change
// its app metadata, confirm its email and ban it.
type userChange struct {
	UpdateUserRequest
	appData      map[string]any
	confirmEmail bool
	// ban: set banned_until to bannedUntil (nil: lift the ban).
	ban         bool
	bannedUntil *time.Time
}

// updateUser applies ch in one write, which records one user.updated
// event naming everything that changed.
func (s *Service) updateUser(ctx context.Context, t Tenant, c Client, p *Principal, ch userChange) (*User, error) {
	u, req := p.User, ch.UpdateUserRequest
	// Without claims the caller is the tenant's administrator (AdminUpdateUser).
	admin, keepSession := p.Claims == nil, ""
	if !admin {
		keepSession = p.Claims.SessionID
	}
	var newEmail, pendingEmail, pwHash string
	st, err := s.Settings(ctx, t)
	if err != nil {
		return nil, err
	}
	pc, err := parseChallenge(req.CodeChallenge, req.CodeChallengeMethod)
	if err != nil {
		return nil, err
	}
	if req.Email != nil {
		e := NormalizeEmail(*req.Email)
		if e != u.Email {
			if err := validateEmail(e); err != nil {
				return nil, err
			}
			newEmail = e
			if !st.MailerAutoconfirm && !admin {
				// Applied when the mailed links are followed.
				pendingEmail, newEmail = e, ""
				if err := s.mails.allow(t.ID, st, "email_change", e); err != nil {
					return nil, err
				}
			}
		}
	}
	// A reauthentication nonce is 6 digits: its guesses are limited like
	// passwords' (the account's failures, from this address and from all).
	nonceChecked := req.Password != nil && !admin && req.Nonce != "" && u.Email != ""
	if nonceChecked {
		if err := s.throttleWait(ctx, t, u.Email, c.IP); err != nil {
			return nil, err
		}
	}
	samePassword := false
	if req.Password != nil {
		if !admin && u.EncryptedPassword != "" {
			// As GoTrue: a new password must differ from the current one;
			// said only after the nonce is checked (inside the write), or a
			// wrong nonce would still answer whether a guess is the password.
			var err error
			if samePassword, _, err = s.hashes.Verify(ctx, u.EncryptedPassword, *req.Password); err != nil {
				return nil, hashError(err)
			}
		}
		var err error
		if pwHash, err = s.newPasswordHash(ctx, t, *req.Password); err != nil {
			return nil, err
		}
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	ts := now.UnixMicro()
	var out *User
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		cur, err := userByID(tx, u.ID)
		if errors.Is(err, engine.ErrNoRows) {
			return newError(engine.KindNotFound, CodeUserNotFound, "User not found")
		}
		if err != nil {
			return err
		}
		if pwHash != "" && !admin {
			if err := checkNonce(tx, st, p, req.Nonce, now); err != nil {
				return err
			}
			if samePassword {
				return newError(engine.KindRefused, "same_password", "New password should be different from the old password.")
			}
		}
		if pendingEmail != "" {
			var taken int
			if err := tx.QueryRow(`SELECT 1 FROM users WHERE email = ?`, pendingEmail).Scan(&taken); err == nil {
				return newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
			} else if !errors.Is(err, engine.ErrNoRows) {
				return err
			}
			if err := s.sendEmailChange(tx, t, st, cur, pendingEmail, pc, req.RedirectTo, now); err != nil {
				return err
			}
			if err := s.recordRequest(tx, t, c, event.UserEmailChangeRequested, cur, cur.Email, now, nil); err != nil {
				return err
			}
		}
		meta, err := objectMap(cur.UserMetadata)
		if err != nil {
			return err
		}
		for k, v := range req.Data {
			if v == nil {
				delete(meta, k)
			} else {
				meta[k] = v
			}
		}
		changed := []string{}
		if newEmail != "" && cur.IsAnonymous {
			// An anonymous user becomes permanent: its email, confirmed
			// (a tenant that auto-confirms), and an email identity, as GoTrue
			// (anon_update_email.json: app_metadata stays as it was).
			meta["email_verified"] = true
			if _, err := tx.Exec(`UPDATE users SET email = ?, email_confirmed_at = ?, email_confirmed_by = ?, is_anonymous = 0 WHERE id = ?`,
				newEmail, ts, confirmedByFor(admin), u.ID); err != nil {
				if errors.Is(err, engine.ErrConflict) {
					return newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
				}
				return err
			}
			identity := map[string]any{"email": newEmail, "email_verified": true, "phone_verified": false, "sub": u.ID}
			if _, err := tx.Exec(`INSERT INTO identities (id, user_id, provider, provider_id, identity_data, email, last_sign_in_at, created_at, updated_at)
				VALUES (?, ?, 'email', ?, ?, ?, ?, ?, ?)`, newUUID(), u.ID, u.ID, mustJSON(identity), newEmail, ts, ts, ts); err != nil {
				return err
			}
			changed = append(changed, "email", "is_anonymous")
		} else if newEmail != "" {
			// Links and codes mailed to the old address end with it.
			if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE user_id = ?`, u.ID); err != nil {
				return err
			}
			meta["email"] = newEmail
			if _, err := tx.Exec(`UPDATE users SET email = ? WHERE id = ?`, newEmail, u.ID); err != nil {
				if errors.Is(err, engine.ErrConflict) {
					return newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
				}
				return err
			}
			for _, id := range cur.Identities {
				if id.Provider != "email" {
					continue
				}
				data, err := objectMap(id.IdentityData)
				if err != nil {
					return err
				}
				data["email"] = newEmail
				if _, err := tx.Exec(`UPDATE identities SET email = ?, identity_data = ?, updated_at = ? WHERE id = ?`,
					newEmail, mustJSON(data), ts, id.IdentityID); err != nil {
					return err
				}
			}
			changed = append(changed, "email")
		}
		if pwHash != "" {
			if _, err := tx.Exec(`UPDATE users SET encrypted_password = ? WHERE id = ?`, pwHash, u.ID); err != nil {
				return err
			}
			// As GoTrue: a new password ends every other session, so a stolen
			// refresh token stops working. Refresh tokens go by cascade.
			if err := endSessions(tx, `user_id = ? AND id <> ?`, u.ID, keepSession); err != nil {
				return err
			}
			changed = append(changed, "password")
		}
		if req.Data != nil {
			changed = append(changed, "user_metadata")
		}
		if _, err := tx.Exec(`UPDATE users SET raw_user_meta_data = ?, updated_at = ? WHERE id = ?`, mustJSON(meta), ts, u.ID); err != nil {
			return err
		}
		if ch.appData != nil {
			app, err := objectMap(cur.AppMetadata)
			if err != nil {
				return err
			}
			for k, v := range ch.appData {
				if k == "provider" || k == "providers" {
					continue
				}
				if v == nil {
					delete(app, k)
				} else {
					app[k] = v
				}
			}
			if _, err := tx.Exec(`UPDATE users SET raw_app_meta_data = ? WHERE id = ?`, mustJSON(app), u.ID); err != nil {
				return err
			}
			changed = append(changed, "app_metadata")
		}
		if ch.confirmEmail {
			if _, err := tx.Exec(`UPDATE users SET email_confirmed_by = CASE WHEN email_confirmed_at IS NULL THEN ? ELSE email_confirmed_by END,
				email_confirmed_at = COALESCE(email_confirmed_at, ?) WHERE id = ?`, ConfirmedAdmin, ts, u.ID); err != nil {
				return err
			}
			changed = append(changed, "email_confirmed_at")
		}
		if ch.ban {
			if _, err := tx.Exec(`UPDATE users SET banned_until = ? WHERE id = ?`, timePtrMicros(ch.bannedUntil), u.ID); err != nil {
				return err
			}
			if ch.bannedUntil != nil {
				// A banned user keeps no session: its refresh tokens stop
				// working now, its access tokens when they expire.
				if err := endSessions(tx, `user_id = ?`, u.ID); err != nil {
					return err
				}
			}
			changed = append(changed, "banned_until")
		}
		email := cur.Email
		if newEmail != "" {
			email = newEmail
		}
		ev := &event.Event{Type: event.UserUpdated, Actor: event.User(u.ID, email), IP: c.IP, Data: map[string]any{"changed": changed}, At: now}
		if admin {
			ev.Actor, ev.Target = c.AdminActor(), event.Target{ID: u.ID, Email: email}
			ev.Data["by"] = "admin"
		}
		if err := s.record(tx, t, ev); err != nil {
			return err
		}
		if slices.Contains(changed, "password") {
			pw := &event.Event{Type: event.PasswordChanged, Actor: ev.Actor, Target: ev.Target, IP: c.IP, Data: map[string]any{}, At: now}
			if admin {
				pw.Data["by"] = "admin"
			}
			if err := s.record(tx, t, pw); err != nil {
				return err
			}
		}
		out, err = userByID(tx, u.ID)
		return err
	})
	if nonceChecked {
		var ae *engine.Error
		if errors.As(err, &ae) && ae.Code == CodeReauthNotValid {
			s.throttle.Fail(t.ID, u.Email, c.IP)
		} else if err == nil {
			s.throttle.Succeed(t.ID, u.Email, c.IP)
		}
	}
	if err != nil {
		return nil, writeError(err, engine.KindRateLimited)
	}
	return out, nil
}

// Logout scopes.
const (
	ScopeGlobal = "global"
	ScopeLocal  = "local"
	ScopeOthers = "others"
)

// Logout ends the caller's session (local), every session of the user
// (global, the default) or every other one (others). Their refresh tokens
// go with them.
func (s *Service) Logout(ctx context.Context, t Tenant, c Client, p *Principal, scope string) error {
	var where string
	args := []any{}
	switch scope {
	case "", ScopeGlobal:
		scope, where = ScopeGlobal, `user_id = ?`
		args = append(args, p.Claims.Subject)
	case ScopeLocal:
		where = `id = ?`
		args = append(args, p.Claims.SessionID)
	case ScopeOthers:
		where = `user_id = ? AND id <> ?`
		args = append(args, p.Claims.Subject, p.Claims.SessionID)
	default:
		return validationf("Unsupported logout scope %q", scope)
	}
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if err := endSessions(tx, where, args...); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.SessionLoggedOut, Actor: event.User(p.Claims.Subject, p.Claims.Email), IP: c.IP,
			Data: map[string]any{"scope": scope, "session_id": p.Claims.SessionID}, At: now})
	})
	if err != nil {
		return writeError(err, engine.KindUnavailable)
	}
	return nil
}

// endSessions deletes the sessions matching where (a condition on the
// sessions table) with their refresh tokens, OAuth grants and browser
// cookies, explicitly: portable to
// backends where the cascade is not enabled.
func endSessions(tx engine.Querier, where string, args ...any) error {
	for _, table := range []string{"refresh_tokens", "oauth_grants", "oauth_browser_sessions"} {
		if _, err := tx.Exec(`DELETE FROM `+table+` WHERE session_id IN (SELECT id FROM sessions WHERE `+where+`)`, args...); err != nil {
			return err
		}
	}
	_, err := tx.Exec(`DELETE FROM sessions WHERE `+where, args...)
	return err
}

// newPasswordHash checks a new password against the tenant's rules and
// hashes it on the shared pool.
func (s *Service) newPasswordHash(ctx context.Context, t Tenant, password string) (string, error) {
	st, err := s.Settings(ctx, t)
	if err != nil {
		return "", err
	}
	if err := checkPassword(password, st); err != nil {
		return "", err
	}
	h, err := s.hashes.Hash(ctx, password)
	if err != nil {
		return "", hashError(err)
	}
	return h, nil
}

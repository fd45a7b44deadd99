package auth

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// Lifetimes of the OAuth provider's short-lived records.
const (
	AuthRequestTTL    = 10 * time.Minute // an authorization request and its code
	DeviceCodeTTL     = 10 * time.Minute
	DevicePollSeconds = 5
	BrowserSessionTTL = 24 * time.Hour
)

// OAuthRequest is a pending authorization request (RFC 6749 §4.1.1): what
// the client asked for, then who signed in for it.
type OAuthRequest struct {
	ID                  string   `json:"-"`
	ClientID            string   `json:"-"`
	RedirectURI         string   `json:"redirect_uri"`
	ResponseType        string   `json:"response_type"`
	ResponseMode        string   `json:"response_mode,omitempty"`
	Scopes              []string `json:"scopes"`
	State               string   `json:"state,omitempty"`
	Nonce               string   `json:"nonce,omitempty"`
	CodeChallenge       string   `json:"code_challenge,omitempty"`
	CodeChallengeMethod string   `json:"code_challenge_method,omitempty"`
	Prompt              []string `json:"prompt,omitempty"`
	MaxAge              *uint    `json:"max_age,omitempty"`
	LoginHint           string   `json:"login_hint,omitempty"`

	UserID   string    `json:"-"`
	AuthTime time.Time `json:"-"`
	AMR      []string  `json:"-"`
	Done     bool      `json:"-"`
	Expires  time.Time `json:"-"`
}

// OAuthGrant is what a client holds for a user: a session with scopes.
type OAuthGrant struct {
	SessionID string
	ClientID  string
	UserID    string
	Scopes    []string
	AuthTime  time.Time
	AMR       []string
}

// BrowserSession is a signed-in browser of the hosted pages.
type BrowserSession struct {
	SessionID string
	User      *User
	AuthTime  time.Time
	AMR       []string
}

// DeviceCode is a device authorization (RFC 8628).
type DeviceCode struct {
	ClientID string
	UserCode string
	Scopes   []string
	State    string // pending, approved, denied, used
	UserID   string
	AuthTime time.Time
	AMR      []string
	Expires  time.Time
	// SlowDown: the client polled faster than its interval, which grew.
	SlowDown bool
}

func errInvalidGrant(msg string) *engine.Error {
	return newError(engine.KindInvalid, "invalid_grant", msg)
}

func errAuthRequestNotFound() *engine.Error {
	return newError(engine.KindNotFound, "oauth_authorization_not_found", "The authorization request is unknown or expired; start again from the application")
}

func jsonList(raw string) []string {
	var out []string
	_ = json.Unmarshal([]byte(raw), &out)
	return out
}

// CreateOAuthRequest stores a validated authorization request; it expires
// after AuthRequestTTL.
func (s *Service) CreateOAuthRequest(ctx context.Context, t Tenant, r *OAuthRequest) error {
	now := s.now().UTC()
	r.ID, r.Expires = newUUID(), now.Add(AuthRequestTTL)
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		// Expired requests go as new ones come: the table holds minutes of them.
		if _, err := tx.Exec(`DELETE FROM oauth_auth_requests WHERE expires_at < ?`, now.Add(-AuthRequestTTL).UnixMicro()); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO oauth_auth_requests (id, client_id, request, amr, expires_at, created_at) VALUES (?, ?, ?, '[]', ?, ?)`,
			r.ID, r.ClientID, string(body), r.Expires.UnixMicro(), now.UnixMicro())
		return err
	})
	return writeError(err, engine.KindRateLimited)
}

const requestColumns = `id, client_id, request, COALESCE(user_id, ''), COALESCE(auth_time, 0), amr, done, expires_at, used_at`

func scanRequest(row engine.Row) (*OAuthRequest, *int64, error) {
	var r OAuthRequest
	var body, amr string
	var authTime, expires int64
	var used *int64
	if err := row.Scan(&r.ID, &r.ClientID, &body, &r.UserID, &authTime, &amr, &r.Done, &expires, &used); err != nil {
		return nil, nil, err
	}
	id, client := r.ID, r.ClientID
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, nil, err
	}
	r.ID, r.ClientID = id, client
	r.AMR = jsonList(amr)
	if authTime != 0 {
		r.AuthTime = time.UnixMicro(authTime).UTC()
	}
	r.Expires = time.UnixMicro(expires).UTC()
	return &r, used, nil
}

// OAuthRequest returns a pending, unexpired authorization request.
func (s *Service) OAuthRequest(ctx context.Context, t Tenant, id string) (*OAuthRequest, error) {
	if !ValidUUID(id) {
		return nil, errAuthRequestNotFound()
	}
	var r *OAuthRequest
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var used *int64
		var err error
		r, used, err = scanRequest(q.QueryRow(`SELECT `+requestColumns+` FROM oauth_auth_requests WHERE id = ?`, id))
		if errors.Is(err, engine.ErrNoRows) || err == nil && (used != nil || !r.Expires.After(s.now())) {
			return errAuthRequestNotFound()
		}
		return err
	})
	return r, err
}

// CompleteOAuthRequest records who signed in for a request, with consent
// given: the authorization endpoint's callback then issues its code.
func (s *Service) CompleteOAuthRequest(ctx context.Context, t Tenant, id, userID string, authTime time.Time, amr []string) error {
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		n, err := tx.Exec(`UPDATE oauth_auth_requests SET user_id = ?, auth_time = ?, amr = ?, done = 1
			WHERE id = ? AND used_at IS NULL AND code_hash IS NULL AND expires_at > ?`,
			userID, authTime.UnixMicro(), mustJSON(amr), id, s.now().UnixMicro())
		if err == nil && n == 0 {
			return errAuthRequestNotFound()
		}
		return err
	})
	return writeError(err, engine.KindRateLimited)
}

// SaveOAuthCode binds a code (its hash) to a completed request; a request
// gets one code only.
func (s *Service) SaveOAuthCode(ctx context.Context, t Tenant, id, code string) error {
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		n, err := tx.Exec(`UPDATE oauth_auth_requests SET code_hash = ? WHERE id = ? AND done = 1 AND code_hash IS NULL AND used_at IS NULL`,
			hashToken(code), id)
		if err == nil && n == 0 {
			return errAuthRequestNotFound()
		}
		return err
	})
	return writeError(err, engine.KindUnavailable)
}

// OAuthRequestByCode returns the completed request a code was issued for,
// and whether the code was exchanged already. A used code is not refused
// here: the caller authenticates the client and checks PKCE first, then
// calls RevokeCodeGrant (RFC 6749 §4.1.2: the grant its first exchange
// issued is revoked), so that a stolen used code alone revokes nothing.
func (s *Service) OAuthRequestByCode(ctx context.Context, t Tenant, code string) (*OAuthRequest, bool, error) {
	if code == "" || len(code) > 512 {
		return nil, false, errInvalidGrant("invalid code")
	}
	h := hashToken(code)
	var r *OAuthRequest
	var used *int64
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		r, used, err = scanRequest(q.QueryRow(`SELECT `+requestColumns+` FROM oauth_auth_requests WHERE code_hash = ?`, h))
		return err
	})
	if errors.Is(err, engine.ErrNoRows) {
		return nil, false, errInvalidGrant("invalid code")
	}
	if err != nil {
		return nil, false, err
	}
	if used != nil {
		return r, true, nil
	}
	if !r.Expires.After(s.now()) || !r.Done {
		return nil, false, errInvalidGrant("code expired")
	}
	return r, false, nil
}

// RevokeCodeGrant ends the grant that the exchange of request id's code
// opened, and answers the replay's refusal.
func (s *Service) RevokeCodeGrant(ctx context.Context, t Tenant, c Client, id string) error {
	if err := s.revokeCodeGrant(ctx, t, c, id); err != nil {
		return err
	}
	return errInvalidGrant("code already used; the tokens it issued are revoked")
}

// revokeCodeGrant ends the grant issued for the request id.
func (s *Service) revokeCodeGrant(ctx context.Context, t Tenant, c Client, id string) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var sessID, clientID string
		var userID *string
		err := tx.QueryRow(`SELECT COALESCE(session_id, ''), client_id, user_id FROM oauth_auth_requests WHERE id = ?`, id).Scan(&sessID, &clientID, &userID)
		if errors.Is(err, engine.ErrNoRows) || err == nil && sessID == "" {
			return nil
		}
		if err != nil {
			return err
		}
		return s.revokeGrant(tx, t, c, sessID, clientID, "authorization_code_reuse", now)
	})
	return writeError(err, engine.KindUnavailable)
}

// revokeGrant ends a grant session and records why.
func (s *Service) revokeGrant(tx engine.Querier, t Tenant, c Client, sessID, clientID, reason string, now time.Time) error {
	var userID string
	err := tx.QueryRow(`SELECT user_id FROM sessions WHERE id = ?`, sessID).Scan(&userID)
	if errors.Is(err, engine.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := endSessions(tx, `id = ?`, sessID); err != nil {
		return err
	}
	return s.record(tx, t, &event.Event{Type: event.OAuthGrantRevoked, Actor: event.User(userID, ""), IP: c.IP,
		Data: map[string]any{"session_id": sessID, "client_id": clientID, "reason": reason}, At: now})
}

// GrantRequest opens a grant: from a code's request (RequestID) or an
// approved device code (DeviceCode), for a user.
type GrantRequest struct {
	ClientID   string
	UserID     string
	Scopes     []string
	AuthTime   time.Time
	AMR        []string
	RequestID  string // the authorization request whose code is exchanged
	DeviceCode string // the device code exchanged
	Refresh    bool   // issue a refresh token (offline_access)
}

// IssueOAuthGrant opens the grant: a session with an oauth_grants row and,
// with Refresh, its first refresh token. The code or device code is marked
// used in the same write, so of two concurrent exchanges one fails.
func (s *Service) IssueOAuthGrant(ctx context.Context, t Tenant, c Client, g GrantRequest) (sessionID, refresh string, err error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	var failure error
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		failure, sessionID, refresh = nil, "", ""
		ts := now.UnixMicro()
		sessionID = newUUID()
		switch {
		case g.RequestID != "":
			n, err := tx.Exec(`UPDATE oauth_auth_requests SET used_at = ?, session_id = ? WHERE id = ? AND used_at IS NULL AND done = 1`,
				ts, sessionID, g.RequestID)
			if err != nil {
				return err
			}
			if n == 0 {
				// Two exchanges of one code at once: the first to commit
				// won; this one revokes what it issued, as a replay does.
				var sess string
				if err := tx.QueryRow(`SELECT COALESCE(session_id, '') FROM oauth_auth_requests WHERE id = ?`, g.RequestID).Scan(&sess); err == nil && sess != "" {
					if err := s.revokeGrant(tx, t, c, sess, g.ClientID, "authorization_code_reuse", now); err != nil {
						return err
					}
				}
				failure = errInvalidGrant("code already used; the tokens it issued are revoked")
				return nil
			}
		case g.DeviceCode != "":
			n, err := tx.Exec(`UPDATE oauth_device_codes SET state = 'used' WHERE device_code_hash = ? AND state = 'approved' AND expires_at > ?`,
				hashToken(g.DeviceCode), ts)
			if err != nil {
				return err
			}
			if n == 0 {
				failure = errInvalidGrant("device code already used")
				return nil
			}
		default:
			return errors.New("auth: a grant needs a code or a device code")
		}
		var one int
		err := tx.QueryRow(`SELECT 1 FROM users WHERE id = ? AND deleted_at IS NULL AND (banned_until IS NULL OR banned_until <= ?)`, g.UserID, ts).Scan(&one)
		if errors.Is(err, engine.ErrNoRows) {
			failure = errInvalidGrant("the user can no longer sign in")
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO sessions (id, user_id, aal, user_agent, ip, refreshed_at, created_at, updated_at)
			VALUES (?, ?, 'aal1', ?, ?, ?, ?, ?)`, sessionID, g.UserID, c.UserAgent, c.IP, ts, ts, ts); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO oauth_grants (session_id, client_id, scopes, auth_time, amr, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			sessionID, g.ClientID, mustJSON(g.Scopes), g.AuthTime.UnixMicro(), mustJSON(g.AMR), ts); err != nil {
			return err
		}
		if g.Refresh {
			refresh = newRefreshToken(now)
			if _, err := tx.Exec(`INSERT INTO refresh_tokens (token_hash, user_id, session_id, parent, revoked, created_at, updated_at)
				VALUES (?, ?, ?, NULL, 0, ?, ?)`, refreshKey(refresh), g.UserID, sessionID, ts, ts); err != nil {
				return err
			}
		}
		return s.record(tx, t, &event.Event{Type: event.OAuthTokenIssued, Actor: event.User(g.UserID, ""), IP: c.IP,
			Data: map[string]any{"client_id": g.ClientID, "session_id": sessionID, "scopes": strings.Join(g.Scopes, " ")}, At: now})
	})
	if err != nil {
		return "", "", writeError(err, engine.KindUnavailable)
	}
	if failure != nil {
		return "", "", failure
	}
	return sessionID, refresh, nil
}

// OAuthGrantByRefresh returns the grant a refresh token belongs to, if it
// is one of clientID's ("" for any client). It does not check that the
// token is still the active one: RotateOAuthRefresh decides that.
func (s *Service) OAuthGrantByRefresh(ctx context.Context, t Tenant, presented string) (*OAuthGrant, error) {
	if !validRefreshToken(presented) {
		return nil, errRefreshNotFound()
	}
	var g *OAuthGrant
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var sessID string
		err := q.QueryRow(`SELECT session_id FROM refresh_tokens WHERE token_hash = ?`, refreshKey(presented)).Scan(&sessID)
		if err != nil {
			return err
		}
		g, err = grantBySession(q, sessID, s.now())
		return err
	})
	if errors.Is(err, engine.ErrNoRows) {
		return nil, errRefreshNotFound()
	}
	return g, err
}

// grantBySession returns a live grant session.
func grantBySession(q engine.Querier, sessID string, now time.Time) (*OAuthGrant, error) {
	g := &OAuthGrant{SessionID: sessID}
	var scopes, amr string
	var authTime int64
	var notAfter *int64
	err := q.QueryRow(`SELECT g.client_id, g.scopes, g.auth_time, g.amr, s.user_id, s.not_after
		FROM oauth_grants g JOIN sessions s ON s.id = g.session_id WHERE g.session_id = ?`, sessID).
		Scan(&g.ClientID, &scopes, &authTime, &amr, &g.UserID, &notAfter)
	if err != nil {
		return nil, err
	}
	if notAfter != nil && *notAfter <= now.UnixMicro() {
		return nil, engine.ErrNoRows
	}
	g.Scopes, g.AMR, g.AuthTime = jsonList(scopes), jsonList(amr), time.UnixMicro(authTime).UTC()
	return g, nil
}

// RotateOAuthRefresh rotates a refresh token of clientID's grant, with
// GoTrue's reuse detection: a token presented again outside the grace
// interval revokes the grant.
func (s *Service) RotateOAuthRefresh(ctx context.Context, t Tenant, c Client, clientID, presented string) (string, error) {
	is, err := s.rotate(ctx, t, c, presented, clientID)
	if err != nil {
		var ae *engine.Error
		switch {
		case errors.As(err, &ae) && ae.Code == CodeUserBanned:
			return "", errInvalidGrant("the user can no longer sign in")
		case errors.As(err, &ae) && (ae.Code == CodeRefreshNotFound || ae.Code == CodeRefreshAlreadyUsed || ae.Code == CodeSessionExpired):
			return "", errInvalidGrant(ae.Message)
		}
		return "", err
	}
	return is.refresh, nil
}

// OAuthGrantActive returns the live grant of a session, or nil.
func (s *Service) OAuthGrantActive(ctx context.Context, t Tenant, sessID string) (*OAuthGrant, error) {
	if !ValidUUID(sessID) {
		return nil, nil
	}
	var g *OAuthGrant
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		g, err = grantBySession(q, sessID, s.now())
		if errors.Is(err, engine.ErrNoRows) {
			g, err = nil, nil
		}
		return err
	})
	return g, err
}

// OAuthTokenRevoked reports whether an access token's id was revoked.
func (s *Service) OAuthTokenRevoked(ctx context.Context, t Tenant, jti string) (bool, error) {
	var revoked bool
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var one int
		err := q.QueryRow(`SELECT 1 FROM oauth_revoked_tokens WHERE jti = ?`, jti).Scan(&one)
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		revoked = err == nil
		return err
	})
	return revoked, err
}

// RevokeOAuthAccessToken denies an access token's id until it expires.
func (s *Service) RevokeOAuthAccessToken(ctx context.Context, t Tenant, jti string, exp time.Time) error {
	now := s.now()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`DELETE FROM oauth_revoked_tokens WHERE expires_at < ?`, now.UnixMicro()); err != nil {
			return err
		}
		var one int
		if err := tx.QueryRow(`SELECT 1 FROM oauth_revoked_tokens WHERE jti = ?`, jti).Scan(&one); err == nil {
			return nil
		} else if !errors.Is(err, engine.ErrNoRows) {
			return err
		}
		_, err := tx.Exec(`INSERT INTO oauth_revoked_tokens (jti, expires_at) VALUES (?, ?)`, jti, exp.UnixMicro())
		return err
	})
	return writeError(err, engine.KindUnavailable)
}

// RevokeOAuthGrant ends clientID's grant session (a refresh token's
// revocation, RFC 7009 §2.1: its access tokens go with it). Another
// client's grant is left alone.
func (s *Service) RevokeOAuthGrant(ctx context.Context, t Tenant, c Client, clientID, sessID string) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var owner string
		err := tx.QueryRow(`SELECT client_id FROM oauth_grants WHERE session_id = ?`, sessID).Scan(&owner)
		if errors.Is(err, engine.ErrNoRows) || err == nil && owner != clientID {
			return nil
		}
		if err != nil {
			return err
		}
		return s.revokeGrant(tx, t, c, sessID, clientID, "revoked_by_client", now)
	})
	return writeError(err, engine.KindUnavailable)
}

// EndOAuthGrants ends every grant of a user to a client (RP-initiated
// logout); clientID "" ends every client's.
func (s *Service) EndOAuthGrants(ctx context.Context, t Tenant, userID, clientID string) error {
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if clientID == "" {
			return endClientSessions(tx, `session_id IN (SELECT id FROM sessions WHERE user_id = ?)`, userID)
		}
		return endClientSessions(tx, `client_id = ? AND session_id IN (SELECT id FROM sessions WHERE user_id = ?)`, clientID, userID)
	})
	return writeError(err, engine.KindUnavailable)
}

// UserByID returns a user that is not deleted.
func (s *Service) UserByID(ctx context.Context, t Tenant, id string) (*User, error) {
	var u *User
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		u, err = userByID(q, id)
		return err
	})
	return u, err
}

// SignInBrowser checks an email and password as Login does and opens a
// browser session of the hosted pages: a session row (no refresh token)
// and the cookie's hash. The cookie is returned once.
func (s *Service) SignInBrowser(ctx context.Context, t Tenant, c Client, req PasswordRequest) (string, *BrowserSession, error) {
	u, newHash, err := s.verifyLogin(ctx, t, c, req)
	if err != nil {
		return "", nil, err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	cookie := newClientSecret()
	bs := &BrowserSession{SessionID: newUUID(), User: u, AuthTime: now, AMR: []string{"pwd"}}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		if err := signIn(tx, u, newHash, now); err != nil {
			return err
		}
		ts := now.UnixMicro()
		if _, err := tx.Exec(`INSERT INTO sessions (id, user_id, aal, user_agent, ip, refreshed_at, created_at, updated_at)
			VALUES (?, ?, 'aal1', ?, ?, ?, ?, ?)`, bs.SessionID, u.ID, c.UserAgent, c.IP, ts, ts, ts); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM oauth_browser_sessions WHERE expires_at < ?`, ts); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO oauth_browser_sessions (token_hash, session_id, expires_at, created_at) VALUES (?, ?, ?, ?)`,
			hashToken(cookie), bs.SessionID, now.Add(BrowserSessionTTL).UnixMicro(), ts); err != nil {
			return err
		}
		return s.recordSignIn(tx, t, c, u, newHash, now, map[string]any{"session_id": bs.SessionID, "hosted": true})
	})
	if err != nil {
		return "", nil, writeError(err, engine.KindRateLimited)
	}
	return cookie, bs, nil
}

// BrowserSession returns the live browser session of a cookie, or nil: its
// session row must still exist (logout, a ban, a revocation end it) and its
// user must still be able to sign in.
func (s *Service) BrowserSession(ctx context.Context, t Tenant, cookie string) (*BrowserSession, error) {
	if cookie == "" || len(cookie) > 64 {
		return nil, nil
	}
	var bs *BrowserSession
	now := s.now()
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var sessID string
		var expires, created int64
		var notAfter *int64
		err := q.QueryRow(`SELECT b.session_id, b.expires_at, s.created_at, s.not_after FROM oauth_browser_sessions b
			JOIN sessions s ON s.id = b.session_id WHERE b.token_hash = ?`, hashToken(cookie)).Scan(&sessID, &expires, &created, &notAfter)
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if expires <= now.UnixMicro() || notAfter != nil && *notAfter <= now.UnixMicro() {
			return nil
		}
		var userID string
		if err := q.QueryRow(`SELECT user_id FROM sessions WHERE id = ?`, sessID).Scan(&userID); err != nil {
			return err
		}
		u, err := userByID(q, userID)
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if u.Banned(now) {
			return nil
		}
		bs = &BrowserSession{SessionID: sessID, User: u, AuthTime: time.UnixMicro(created).UTC(), AMR: []string{"pwd"}}
		return nil
	})
	return bs, err
}

// EndBrowserSession signs a browser out: its session row goes.
func (s *Service) EndBrowserSession(ctx context.Context, t Tenant, c Client, bs *BrowserSession) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if err := endSessions(tx, `id = ?`, bs.SessionID); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.SessionLoggedOut, Actor: event.User(bs.User.ID, bs.User.Email), IP: c.IP,
			Data: map[string]any{"scope": "local", "session_id": bs.SessionID, "hosted": true}, At: now})
	})
	return writeError(err, engine.KindUnavailable)
}

// OAuthConsent returns the scopes a user consented to for a client.
func (s *Service) OAuthConsent(ctx context.Context, t Tenant, userID, clientID string) ([]string, error) {
	var scopes []string
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var raw string
		err := q.QueryRow(`SELECT scopes FROM oauth_consents WHERE user_id = ? AND client_id = ?`, userID, clientID).Scan(&raw)
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		scopes = jsonList(raw)
		return err
	})
	return scopes, err
}

// GrantOAuthConsent records a user's consent to scopes for a client (added
// to what was consented before).
func (s *Service) GrantOAuthConsent(ctx context.Context, t Tenant, c Client, userID, clientID string, scopes []string) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		ts := now.UnixMicro()
		var raw string
		err := tx.QueryRow(`SELECT scopes FROM oauth_consents WHERE user_id = ? AND client_id = ?`, userID, clientID).Scan(&raw)
		switch {
		case errors.Is(err, engine.ErrNoRows):
			if _, err := tx.Exec(`INSERT INTO oauth_consents (user_id, client_id, scopes, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
				userID, clientID, mustJSON(dedupe(scopes)), ts, ts); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			if _, err := tx.Exec(`UPDATE oauth_consents SET scopes = ?, updated_at = ? WHERE user_id = ? AND client_id = ?`,
				mustJSON(dedupe(append(jsonList(raw), scopes...))), ts, userID, clientID); err != nil {
				return err
			}
		}
		return s.record(tx, t, &event.Event{Type: event.OAuthConsentGranted, Actor: event.User(userID, ""), IP: c.IP,
			Data: map[string]any{"client_id": clientID, "scopes": strings.Join(scopes, " ")}, At: now})
	})
	return writeError(err, engine.KindUnavailable)
}

// AccessTokenTTL is the lifetime of the tenant's access tokens: its
// jwt_exp, never past the server's.
func (s *Service) AccessTokenTTL(ctx context.Context, t Tenant) time.Duration {
	if st, err := s.CachedSettings(ctx, t); err == nil && st.JWTExp > 0 {
		return min(time.Duration(st.JWTExp)*time.Second, s.ttl)
	}
	return s.ttl
}

// MaxAccessTokenTTL is the server's access token lifetime, which no
// tenant's exceeds.
func (s *Service) MaxAccessTokenTTL() time.Duration { return s.ttl }

// MetadataMap decodes a user's metadata object.
func MetadataMap(raw json.RawMessage) (map[string]any, error) { return objectMap(raw) }

// Now is the service's clock.
func (s *Service) Now() time.Time { return s.now() }

package auth

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
)

// Session is what signup, login and refresh hand out: a signed access
// token (a bearer token), its lifetime, the refresh token that continues
// the session, and the user.
type Session struct {
	AccessToken  string
	ExpiresIn    int64 // seconds
	ExpiresAt    int64 // unix seconds
	RefreshToken string
	User         *User
}

// issued is what a write that creates or continues a session hands back.
type issued struct {
	user        *User
	sessionID   string
	sessionAt   int64  // session creation, unix seconds: the amr timestamp
	method      string // the amr method: "password" unless set
	refresh     string
	failure     *engine.Error // an outcome to answer after the write committed
	refreshedAt time.Time
}

// setSessionMethod records how a session was opened when not by
// password (otp, oauth, magiclink, …): its refreshed tokens keep that amr.
func setSessionMethod(tx engine.Querier, id, method string) error {
	_, err := tx.Exec(`UPDATE sessions SET amr = ? WHERE id = ?`, method, id)
	return err
}

// createSession inserts a session and its first refresh token.
func createSession(tx engine.Querier, userID string, now time.Time, c Client) (id, refresh string, err error) {
	id = newUUID()
	ts := now.UnixMicro()
	if _, err = tx.Exec(`INSERT INTO sessions (id, user_id, aal, user_agent, ip, refreshed_at, created_at, updated_at)
		VALUES (?, ?, 'aal1', ?, ?, ?, ?, ?)`, id, userID, c.UserAgent, c.IP, ts, ts, ts); err != nil {
		return "", "", err
	}
	refresh = newRefreshToken(now)
	if _, err = tx.Exec(`INSERT INTO refresh_tokens (token_hash, user_id, session_id, parent, revoked, created_at, updated_at)
		VALUES (?, ?, ?, NULL, 0, ?, ?)`, refreshKey(refresh), userID, id, ts, ts); err != nil {
		return "", "", err
	}
	return id, refresh, nil
}

// session signs an access token for the issued session.
func (s *Service) session(ctx context.Context, t Tenant, is *issued) (*Session, error) {
	ks, err := s.keys.Get(ctx, t.ID, t.Shard)
	if err != nil {
		return nil, err
	}
	ttl := s.ttl
	if st, err := s.CachedSettings(ctx, t); err != nil {
		return nil, err
	} else if st.JWTExp > 0 {
		// Never past the server's lifetime, which retired keys verify for
		// (a value stored under a longer --access-token-ttl).
		ttl = min(time.Duration(st.JWTExp)*time.Second, s.ttl)
	}
	now := s.now()
	exp := now.Add(ttl).Unix()
	u := is.user
	c := &token.Claims{
		Issuer: t.Issuer, Subject: u.ID, Audience: u.Aud, ExpiresAt: exp, IssuedAt: now.Unix(),
		Email: u.Email, Phone: u.Phone, AppMetadata: object(u.AppMetadata), UserMetadata: object(u.UserMetadata),
		Role: u.Role, AAL: "aal1", AMR: []token.AMR{{Method: is.amrMethod(), Timestamp: is.sessionAt}},
		SessionID: is.sessionID, IsAnonymous: u.IsAnonymous, OrgRole: OrgRole(u),
	}
	at, err := ks.Sign(c)
	if err != nil {
		return nil, err
	}
	return &Session{AccessToken: at, ExpiresIn: int64(ttl / time.Second), ExpiresAt: exp,
		RefreshToken: is.refresh, User: u}, nil
}

// amrMethod is how the session was opened: an anonymous user's sessions
// are "anonymous" (GoTrue's amr), the others "password".
func (is *issued) amrMethod() string {
	switch {
	case is.method != "":
		return is.method
	case is.user != nil && is.user.IsAnonymous:
		return "anonymous"
	}
	return "password"
}

// Principal is the caller of an authenticated request.
type Principal struct {
	Claims *token.Claims
	User   *User
	// Rendered is where the HTTP edge keeps what it made of User, shared
	// with every later request answered from the same cached read of the
	// session (see Authenticate). Nil when User was not read or the read
	// is not cached.
	Rendered *Rendered
}

// Rendered holds one rendering of a cached read's user (GET /user's body):
// the read is reused only while its shard has had no commit, so neither
// the user nor anything made of it alone can have changed. It is dropped
// with the read.
type Rendered struct{ b atomic.Pointer[[]byte] }

// Load returns the rendering stored before, or nil.
func (r *Rendered) Load() []byte {
	if r == nil {
		return nil
	}
	if b := r.b.Load(); b != nil {
		return *b
	}
	return nil
}

// Store keeps b, which must be made of the principal's User alone and must
// not be written to after. A nil Rendered keeps nothing, nor does one given
// more than maxRendered bytes: the session cache's memory stays bounded
// (16,384 sessions × 4 KiB) whatever the users' metadata.
func (r *Rendered) Store(b []byte) {
	if r != nil && len(b) <= maxRendered {
		r.b.Store(&b)
	}
}

// maxRendered is the largest rendering kept; a usual user is 1-2 KiB.
const maxRendered = 4 << 10

// Authenticate checks a bearer access token: signed by one of the tenant's
// keys, issued by it, not expired, and its session still alive. withUser
// also loads the user.
func (s *Service) Authenticate(ctx context.Context, t Tenant, bearer string, withUser bool) (*Principal, error) {
	if bearer == "" {
		return nil, newError(engine.KindUnauthenticated, CodeNoAuthorization, "This endpoint requires a Bearer token")
	}
	claims, err := s.keys.Verify(ctx, t.ID, t.Shard, bearer, t.issuerOK)
	if err != nil {
		if errors.Is(err, token.ErrInvalidToken) {
			return nil, &engine.Error{Kind: engine.KindForbidden, Code: CodeBadJWT, Message: err.Error()}
		}
		return nil, err
	}
	p := &Principal{Claims: claims}
	now := s.now().UnixMicro()
	// A session (and its user) read before is reused while the shard's
	// generation has not moved: no commit since, so the same read would
	// answer the same. Time-bound checks run again on every request.
	gen, cacheable := engine.GenerationOf(t.Shard)
	key := t.ID + "\x00" + claims.SessionID
	if cacheable {
		if e, ok := s.sessions.Get(key); ok && e.gen == gen && sessionLive(e.userID, e.notAfter, claims.Subject, now) && (!withUser || e.user != nil) {
			if withUser {
				u := *e.user // the cached one is shared: callers get their own
				p.User, p.Rendered = &u, e.rendered
			}
			return p, nil
		}
	}
	var cached *sessionEntry
	err = t.Shard.Read(ctx, func(q engine.Querier) error {
		var userID string
		var notAfter *int64
		if !withUser {
			err := q.QueryRow(`SELECT user_id, not_after FROM sessions WHERE id = ?`, claims.SessionID).Scan(&userID, &notAfter)
			if errors.Is(err, engine.ErrNoRows) || err == nil && !sessionLive(userID, notAfter, claims.Subject, now) {
				return noSession(q, claims.Subject)
			}
			if err == nil {
				cached = &sessionEntry{gen: gen, userID: userID, notAfter: notAfter}
			}
			return err
		}
		// One query (one read transaction) for the session, its user and
		// the user's identities: GET /user runs this on every call.
		rows, err := q.Query(`SELECT s.user_id, s.not_after, `+userColumns+`, `+identityColumns+`
			FROM sessions s LEFT JOIN users u ON u.id = s.user_id AND u.deleted_at IS NULL
			LEFT JOIN identities i ON i.user_id = u.id
			WHERE s.id = ? ORDER BY i.created_at, i.id`, claims.SessionID)
		if err != nil {
			return err
		}
		u, found, err := scanUserRows(rows, &userID, &notAfter)
		switch {
		case err != nil:
			return err
		case !found || !sessionLive(userID, notAfter, claims.Subject, now):
			return noSession(q, claims.Subject)
		case u == nil:
			return errUserGone()
		}
		p.User = u
		cu := *u
		cached = &sessionEntry{gen: gen, userID: userID, notAfter: notAfter, user: &cu, rendered: new(Rendered)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cacheable && cached != nil {
		p.Rendered = cached.rendered
		s.sessions.Add(key, cached)
	}
	return p, nil
}

// sessionEntry is a session read by Authenticate, valid while its shard's
// generation is gen.
type sessionEntry struct {
	gen      uint64
	userID   string
	notAfter *int64
	user     *User     // nil when read without the user
	rendered *Rendered // with user: the edge's rendering of it
}

// sessionCacheSize bounds the sessions Authenticate keeps (all tenants).
const sessionCacheSize = 16384

func newSessionCache() *lru.Cache[string, *sessionEntry] {
	c, _ := lru.New[string, *sessionEntry](sessionCacheSize) // size > 0: no error
	return c
}

// errUserGone: a valid token of a user that no longer exists (GoTrue's
// answer, on which auth-js clears its stored session).
func errUserGone() *engine.Error {
	return newError(engine.KindForbidden, CodeUserNotFound, "User from sub claim in JWT does not exist")
}

// noSession is the refusal of a token whose session is gone: user_not_found
// when its user is gone too (deleting a user deletes its sessions, and
// GoTrue names the user), else session_not_found. It runs on refusals only.
func noSession(q engine.Querier, subject string) error {
	var one int
	err := q.QueryRow(`SELECT 1 FROM users WHERE id = ? AND deleted_at IS NULL`, subject).Scan(&one)
	switch {
	case errors.Is(err, engine.ErrNoRows):
		return errUserGone()
	case err != nil:
		return err
	}
	return errSessionNotFound()
}

// sessionLive says whether a session row of userID, ending at notAfter
// (nil: never), still serves the token's subject at now (microseconds).
func sessionLive(userID string, notAfter *int64, subject string, now int64) bool {
	return userID == subject && (notAfter == nil || *notAfter > now)
}

// TouchLastSeen records that the user was seen now, through the shard's
// debounced buffer (at most one write per user per debounce interval).
// A full buffer drops the update: last-seen is best effort.
func (s *Service) TouchLastSeen(t Tenant, userID string) {
	at := s.now().UnixMicro()
	_ = t.Shard.Defer("last_seen:"+userID, func(tx engine.Querier) error {
		_, err := tx.Exec(`UPDATE users SET last_seen_at = ? WHERE id = ?`, at, userID)
		return err
	})
}

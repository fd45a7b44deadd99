package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// One-time tokens: what a mailed link or code proves. Each has two
// secrets, as GoTrue's mails carry: a link token (56 hex characters, the
// template's {{ .TokenHash }}, what verifyOtp({token_hash}) sends) and a
// 6-digit code. GoTrue derives the link token from the code
// (hex(SHA-224(address + code))), which lets anyone who knows the address
// walk the 10^6 codes through the link, unthrottled; Keyshard's link
// token is random. The row holds SHA-256 of each (with the kind; the
// code's with the address too), so a copy of the database opens nothing;
// the code is looked up only with its address, under the login throttle.
// A newer token of a kind replaces the user's older one; a token is
// deleted when used.

// Token kinds (one_time_tokens.kind).
const (
	tokSignup             = "signup"
	tokInvite             = "invite"
	tokRecovery           = "recovery"
	tokMagicLink          = "magiclink"
	tokEmailChangeCurrent = "email_change_current"
	tokEmailChangeNew     = "email_change_new"
	tokReauth             = "reauthentication"
)

// verifyKinds are the token kinds each /verify type accepts.
var verifyKinds = map[string][]string{
	"signup":       {tokSignup},
	"invite":       {tokInvite},
	"recovery":     {tokRecovery},
	"magiclink":    {tokMagicLink, tokSignup},
	"email":        {tokMagicLink, tokSignup, tokInvite},
	"email_change": {tokEmailChangeNew, tokEmailChangeCurrent},
}

// pkcePrefix marks the token of a link that ends in ?code= (PKCE).
const pkcePrefix = "pkce_"

// newOTP returns 6 random digits.
func newOTP() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// newLinkToken returns a link token: 28 random bytes in hex, the shape of
// GoTrue's.
func newLinkToken() string {
	var b [28]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// storedTokenHash is what one_time_tokens.token_hash holds.
func storedTokenHash(kind, linkToken string) string {
	return hashToken(kind + "\x00" + strings.ToLower(linkToken))
}

// storedCodeHash is what one_time_tokens.code_hash holds.
func storedCodeHash(kind, address, code string) string {
	return hashToken(kind + "\x00" + address + "\x00" + code)
}

// mailToken is a token just issued: the code and the link token.
type mailToken struct {
	OTP, TokenHash string
	pkce           bool
}

// linkToken is the token= of its link.
func (m mailToken) linkToken() string {
	if m.pkce {
		return pkcePrefix + m.TokenHash
	}
	return m.TokenHash
}

// issueToken replaces the user's token of kind with a new one for
// address, valid for the tenant's mailer_otp_exp.
func issueToken(tx engine.Querier, st Settings, userID, kind, address, flowID string, now time.Time) (mailToken, error) {
	tok := mailToken{OTP: newOTP(), TokenHash: newLinkToken(), pkce: flowID != ""}
	if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE user_id = ? AND kind = ?`, userID, kind); err != nil {
		return mailToken{}, err
	}
	var flow any
	if flowID != "" {
		flow = flowID
	}
	exp := now.Add(time.Duration(st.MailerOTPExp) * time.Second)
	if _, err := tx.Exec(`INSERT INTO one_time_tokens (id, user_id, kind, token_hash, code_hash, relates_to, flow_state_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, newUUID(), userID, kind, storedTokenHash(kind, tok.TokenHash),
		storedCodeHash(kind, address, tok.OTP), address, flow, now.UnixMicro(), exp.UnixMicro()); err != nil {
		return mailToken{}, err
	}
	return tok, nil
}

// foundToken is a token row found by its hash.
type foundToken struct {
	id, userID, kind, address string
	flowID                    *string
	expiresAt                 int64
}

// findToken looks a link token up among kinds, findCode an address's
// code; the row is compared again in constant time (the lookup is by a
// hash of it already).
func findToken(tx engine.Querier, kinds []string, linkToken string) (*foundToken, error) {
	return findBy(tx, "token_hash", kinds, func(kind string) string { return storedTokenHash(kind, linkToken) })
}

func findCode(tx engine.Querier, kinds []string, address, code string) (*foundToken, error) {
	return findBy(tx, "code_hash", kinds, func(kind string) string { return storedCodeHash(kind, address, code) })
}

func findBy(tx engine.Querier, column string, kinds []string, hash func(kind string) string) (*foundToken, error) {
	for _, kind := range kinds {
		h := hash(kind)
		var f foundToken
		var stored string
		err := tx.QueryRow(`SELECT id, user_id, kind, relates_to, flow_state_id, expires_at, `+column+` FROM one_time_tokens WHERE `+column+` = ?`, h).
			Scan(&f.id, &f.userID, &f.kind, &f.address, &f.flowID, &f.expiresAt, &stored)
		if errors.Is(err, engine.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare([]byte(stored), []byte(h)) != 1 {
			continue
		}
		return &f, nil
	}
	return nil, nil
}

func errOTPExpired() *engine.Error {
	return newError(engine.KindForbidden, CodeOTPExpired, "Token has expired or is invalid")
}

// PKCE: a link requested with a code_challenge ends in ?code=<auth code>,
// which POST /token?grant_type=pkce exchanges with the code_verifier.

// authCodeTTL bounds the time from a followed link to the exchange of
// its auth code.
const authCodeTTL = 5 * time.Minute

// pkceChallenge is a request's code_challenge, checked.
type pkceChallenge struct {
	challenge, method string
}

// parseChallenge checks a code_challenge and its method; both empty is
// no PKCE.
func parseChallenge(challenge, method string) (*pkceChallenge, error) {
	if challenge == "" && method == "" {
		return nil, nil
	}
	if challenge == "" || method == "" {
		return nil, validationf("PKCE flow requires code_challenge_method and code_challenge")
	}
	m := strings.ToLower(method)
	if m != "s256" && m != "plain" {
		return nil, validationf("Code challenge method not supported")
	}
	if len(challenge) < 43 || len(challenge) > 128 || strings.Trim(challenge, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") != "" {
		return nil, validationf("code challenge has to be between 43 and 128 characters of [A-Za-z0-9-._~]")
	}
	return &pkceChallenge{challenge: challenge, method: m}, nil
}

// newFlowState stores a PKCE flow state for a link of authMethod; its
// auth code is set when the link is followed.
func newFlowState(tx engine.Querier, st Settings, pc *pkceChallenge, authMethod string, now time.Time) (string, error) {
	if pc == nil {
		return "", nil
	}
	// The tenant's expired flow states go with each new one: requests
	// that never came back would otherwise pile up.
	if _, err := tx.Exec(`DELETE FROM flow_states WHERE expires_at <= ?`, now.UnixMicro()); err != nil {
		return "", err
	}
	id := newUUID()
	exp := now.Add(time.Duration(st.MailerOTPExp)*time.Second + authCodeTTL)
	_, err := tx.Exec(`INSERT INTO flow_states (id, code_challenge, code_challenge_method, authentication_method, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?)`, id, pc.challenge, pc.method, authMethod, now.UnixMicro(), exp.UnixMicro())
	return id, err
}

// checkVerifier compares a code_verifier with its stored challenge.
func checkVerifier(method, challenge, verifier string) bool {
	got := verifier
	if method == "s256" {
		sum := sha256.Sum256([]byte(verifier))
		got = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

// Redirects: a link's redirect_to is kept when the tenant allows it, else
// the tenant's site URL takes its place.

// redirectAllowed reports whether the tenant lets a mailed link send a
// user to u: the site URL's own host, or a match of an uri_allow_list
// entry (exact, or a glob: * within a path segment, ** across).
func (st Settings) redirectAllowed(u string) bool {
	if u == "" || len(u) > 2048 {
		return false
	}
	p, err := url.Parse(u)
	if err != nil || p.Scheme == "" || p.User != nil || strings.EqualFold(p.Scheme, "javascript") || strings.EqualFold(p.Scheme, "data") {
		return false
	}
	if st.SiteURL != "" {
		if s, err := url.Parse(st.SiteURL); err == nil && strings.EqualFold(s.Scheme, p.Scheme) && strings.EqualFold(s.Host, p.Host) {
			return true
		}
	}
	for _, entry := range splitList(st.URIAllowList) {
		if entry == u {
			return true
		}
		if strings.Contains(entry, "*") && globHostMatches(entry, p.Host) {
			if ok, err := doublestar.Match(entry, u); err == nil && ok {
				return true
			}
		}
	}
	return false
}

// globHostMatches reports whether the host part of an allow-list glob
// matches host by itself: matched against the whole URL, the * of
// https://*.example.org/** would also take the end of another host and a
// ? or # (https://evil.net?.example.org/), which leaves evil.net the host
// the link's tokens go to. An entry that is not scheme://host… is matched
// as a whole only.
func globHostMatches(entry, host string) bool {
	_, rest, ok := strings.Cut(entry, "://")
	if !ok {
		return true
	}
	pattern, _, _ := strings.Cut(rest, "/")
	ok, err := doublestar.Match(pattern, host)
	return err == nil && ok
}

// redirectFor returns where a link sends the user: requested when
// allowed, else the site URL ("" when the tenant has none).
func (st Settings) redirectFor(requested string) string {
	if st.redirectAllowed(requested) {
		return requested
	}
	return st.SiteURL
}

// RedirectFor is redirectFor for the HTTP edge (GET /verify's errors).
func (st Settings) RedirectFor(requested string) string { return st.redirectFor(requested) }

// actionLink is a mailed link: the tenant's /verify with the token, the
// type and where to go after.
func actionLink(t Tenant, tok mailToken, typ, redirect string) string {
	link := t.Links() + "/verify?token=" + tok.linkToken() + "&type=" + url.QueryEscape(typ)
	if redirect != "" {
		link += "&redirect_to=" + url.QueryEscape(redirect)
	}
	return link
}

// mailOut is one mail to send: kind, the address, the token and link it
// carries.
type mailOut struct {
	kind     MailKind
	tokKind  string // the token's kind (one_time_tokens.kind)
	to       string
	tok      mailToken
	link     string
	redirect string
	newEmail string
	user     *User
}

// enqueueMail renders the tenant's template and writes the mail to the
// outbox, in tx: it is sent only if tx commits, and is never lost once
// it has.
func (s *Service) enqueueMail(tx engine.Querier, t Tenant, st Settings, m mailOut, now time.Time) error {
	d := MailData{ConfirmationURL: m.link, Token: m.tok.OTP, TokenHash: m.tok.TokenHash, SiteURL: st.SiteURL,
		Email: m.to, NewEmail: m.newEmail, RedirectTo: m.redirect}
	if m.user != nil {
		d.Email = m.user.Email
		if meta, err := objectMap(m.user.UserMetadata); err == nil {
			d.Data = meta
		}
	}
	msg, err := st.render(m.kind, m.to, d)
	if err != nil {
		return fmt.Errorf("mail template %s: %w", m.kind, err)
	}
	if m.tokKind != "" {
		msg.Token = storedTokenHash(m.tokKind, m.tok.TokenHash)
	}
	payload, err := json.Marshal(map[string]any{"data": msg})
	if err != nil {
		return err
	}
	return s.events.Enqueue(tx, t.ID, newUUID(), "mail."+m.kind.String(), payload, now, []string{MailTopic})
}

// decoyMail does, for an address without an account, the work of a mail
// in tx: the token's statements (on no row), the rendering, and an outbox
// row whose token never existed, which the mail sink drops unsent. The
// two answers then take about the same time on every backend (on a
// networked database each statement is a round trip).
func (s *Service) decoyMail(tx engine.Querier, t Tenant, st Settings, kind MailKind, tokKind, typ, address string,
	pc *pkceChallenge, redirectTo string, now time.Time) error {
	// A PKCE request's flow state is written as for a real one (it
	// expires unused).
	if _, err := newFlowState(tx, st, pc, typ, now); err != nil {
		return err
	}
	nobody := newUUID()
	if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE user_id = ? AND kind = ?`, nobody, tokKind); err != nil {
		return err
	}
	tok := mailToken{OTP: newOTP(), TokenHash: newLinkToken(), pkce: pc != nil}
	redirect := st.redirectFor(redirectTo)
	if err := s.enqueueMail(tx, t, st, mailOut{kind: kind, tokKind: tokKind, to: address, tok: tok,
		link: actionLink(t, tok, typ, redirect), redirect: redirect}, now); err != nil {
		return err
	}
	_, err := tx.Exec(`UPDATE users SET recovery_sent_at = ? WHERE id = ?`, now.UnixMicro(), nobody)
	return err
}

// MailTopic is the outbox topic of mails (the mail package's sink).
const MailTopic = "mail"

// recordRequest records that a mail was asked for: for a user, or for an
// address without an account (the same write, so that both answers take
// about the same time).
func (s *Service) recordRequest(tx engine.Querier, t Tenant, c Client, typ event.Type, u *User, address string, now time.Time, data map[string]any) error {
	if data == nil {
		data = map[string]any{}
	}
	ev := &event.Event{Type: typ, IP: c.IP, Data: data, At: now}
	if u != nil {
		ev.Actor = event.User(u.ID, u.Email)
	} else {
		ev.Actor = event.User("", address)
		data["unknown_address"] = true
	}
	return s.record(tx, t, ev)
}

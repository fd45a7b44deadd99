package auth

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// The email flows, as GoTrue's: confirmation of a signup, password
// recovery, magic links and codes, invites, secure email change and
// reauthentication. Each mail is an outbox row written in the transaction
// of the token it carries. The requests that name an address answer the
// same whether or not it has an account.

// MailRequest asks for a mail to an address: /recover, /otp, /magiclink,
// /resend.
type MailRequest struct {
	Email      string
	RedirectTo string
	// CodeChallenge, CodeChallengeMethod: PKCE (the link ends in ?code=).
	CodeChallenge, CodeChallengeMethod string
	// CreateUser: /otp and /magiclink make the user when the tenant
	// allows signups; Data is its metadata.
	CreateUser bool
	Data       map[string]any
}

// prepareMail checks a request's address and PKCE challenge against the
// tenant's mail limits, and returns the tenant's settings.
func (s *Service) prepareMail(ctx context.Context, t Tenant, group string, req MailRequest) (string, *pkceChallenge, Settings, error) {
	email := NormalizeEmail(req.Email)
	if email == "" {
		return "", nil, Settings{}, validationf("An email address is required")
	}
	if err := validateEmail(email); err != nil {
		return "", nil, Settings{}, err
	}
	pc, err := parseChallenge(req.CodeChallenge, req.CodeChallengeMethod)
	if err != nil {
		return "", nil, Settings{}, err
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return "", nil, Settings{}, err
	}
	if err := s.mails.allow(t.ID, st, group, email); err != nil {
		return "", nil, Settings{}, err
	}
	return email, pc, st, nil
}

// liveUserByEmail reads the live user of an address, nil if none.
func liveUserByEmail(q engine.Querier, email string) (*User, error) {
	u, err := userByEmail(q, email)
	if errors.Is(err, engine.ErrNoRows) {
		return nil, nil
	}
	return u, err
}

// Recover mails a password recovery link and code to the address's user;
// an address without an account gets the same answer and no mail.
func (s *Service) Recover(ctx context.Context, t Tenant, c Client, req MailRequest) error {
	email, pc, st, err := s.prepareMail(ctx, t, "recovery", req)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		u, err := liveUserByEmail(tx, email)
		if err != nil {
			return err
		}
		if u == nil || u.Banned(now) {
			if err := s.decoyMail(tx, t, st, MailRecovery, tokRecovery, "recovery", email, pc, req.RedirectTo, now); err != nil {
				return err
			}
			return s.recordRequest(tx, t, c, event.UserRecoveryRequested, nil, email, now, nil)
		}
		if err := s.sendTokenMail(tx, t, st, u, MailRecovery, tokRecovery, "recovery", u.Email, "", pc, req.RedirectTo, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE users SET recovery_sent_at = ? WHERE id = ?`, now.UnixMicro(), u.ID); err != nil {
			return err
		}
		return s.recordRequest(tx, t, c, event.UserRecoveryRequested, u, email, now, nil)
	})
	return writeError(err, engine.KindRateLimited)
}

// sendTokenMail issues a token of kind for u, mailed to address as a
// mail of mk whose link has type typ.
func (s *Service) sendTokenMail(tx engine.Querier, t Tenant, st Settings, u *User, mk MailKind, kind, typ, address, newEmail string,
	pc *pkceChallenge, redirectTo string, now time.Time) error {
	flowID, err := newFlowState(tx, st, pc, typ, now)
	if err != nil {
		return err
	}
	tok, err := issueToken(tx, st, u.ID, kind, address, flowID, now)
	if err != nil {
		return err
	}
	redirect := st.redirectFor(redirectTo)
	return s.enqueueMail(tx, t, st, mailOut{kind: mk, tokKind: kind, to: address, tok: tok, link: actionLink(t, tok, typ, redirect),
		redirect: redirect, newEmail: newEmail, user: u}, now)
}

// SendOTP mails a magic link and code (/otp, /magiclink): to a confirmed
// user a sign-in mail, to an unconfirmed one a confirmation mail; with
// CreateUser a new address becomes an unconfirmed user, when the tenant
// allows signups. Every address gets the same answer.
func (s *Service) SendOTP(ctx context.Context, t Tenant, c Client, req MailRequest) error {
	email, pc, st, err := s.prepareMail(ctx, t, "magiclink", req)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		u, err := liveUserByEmail(tx, email)
		if err != nil {
			return err
		}
		if u == nil && req.CreateUser && !st.DisableSignup {
			uid, err := newUser{email: email, data: req.Data, confirmed: false}.insert(tx, now)
			if err != nil {
				return err
			}
			if err := s.record(tx, t, &event.Event{Type: event.UserCreated, Actor: event.User(uid, email), IP: c.IP,
				Data: map[string]any{"provider": "email", "method": "otp"}, At: now}); err != nil {
				return err
			}
			if u, err = userByID(tx, uid); err != nil {
				return err
			}
		}
		if u == nil || u.Banned(now) {
			if err := s.decoyMail(tx, t, st, MailMagicLink, tokMagicLink, "magiclink", email, pc, req.RedirectTo, now); err != nil {
				return err
			}
			return s.recordRequest(tx, t, c, event.UserMagicLinkRequested, nil, email, now, nil)
		}
		if u.EmailConfirmedAt == nil {
			if err := s.sendConfirmation(tx, t, st, u, pc, req.RedirectTo, now); err != nil {
				return err
			}
			return s.recordRequest(tx, t, c, event.UserConfirmationRequested, u, email, now, nil)
		}
		if err := s.sendTokenMail(tx, t, st, u, MailMagicLink, tokMagicLink, "magiclink", u.Email, "", pc, req.RedirectTo, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE users SET recovery_sent_at = ? WHERE id = ?`, now.UnixMicro(), u.ID); err != nil {
			return err
		}
		return s.recordRequest(tx, t, c, event.UserMagicLinkRequested, u, email, now, nil)
	})
	return writeError(err, engine.KindRateLimited)
}

// sendConfirmation mails u's signup confirmation.
func (s *Service) sendConfirmation(tx engine.Querier, t Tenant, st Settings, u *User, pc *pkceChallenge, redirectTo string, now time.Time) error {
	if err := s.sendTokenMail(tx, t, st, u, MailConfirmation, tokSignup, "signup", u.Email, "", pc, redirectTo, now); err != nil {
		return err
	}
	_, err := tx.Exec(`UPDATE users SET confirmation_sent_at = ? WHERE id = ?`, now.UnixMicro(), u.ID)
	return err
}

// Resend mails again a signup confirmation (typ "signup") or an email
// change's confirmations ("email_change"); an address with nothing to
// resend gets the same answer and no mail.
func (s *Service) Resend(ctx context.Context, t Tenant, c Client, typ string, req MailRequest) error {
	switch typ {
	case "signup", "email_change":
	case "sms", "phone_change":
		return newError(engine.KindInvalid, "phone_provider_disabled", "Phone confirmations are not supported")
	default:
		return validationf("Missing one of these types: signup, email_change, sms, phone_change")
	}
	email, pc, st, err := s.prepareMail(ctx, t, typ, req)
	if err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		u, err := liveUserByEmail(tx, email)
		if err != nil {
			return err
		}
		if typ == "email_change" && u == nil {
			// The address may be the new one of a pending change.
			var id string
			err := tx.QueryRow(`SELECT id FROM users WHERE email_change = ? AND deleted_at IS NULL`, email).Scan(&id)
			if err == nil {
				u, err = userByID(tx, id)
			}
			if err != nil && !errors.Is(err, engine.ErrNoRows) {
				return err
			}
		}
		switch {
		case u == nil || u.Banned(now):
		case typ == "signup" && u.EmailConfirmedAt == nil:
			if err := s.sendConfirmation(tx, t, st, u, pc, req.RedirectTo, now); err != nil {
				return err
			}
			return s.recordRequest(tx, t, c, event.UserConfirmationRequested, u, email, now, nil)
		case typ == "email_change" && u.NewEmail != "":
			if err := s.sendEmailChange(tx, t, st, u, u.NewEmail, pc, req.RedirectTo, now); err != nil {
				return err
			}
			return s.recordRequest(tx, t, c, event.UserEmailChangeRequested, u, email, now, nil)
		}
		typEv := event.UserConfirmationRequested
		if typ == "email_change" {
			typEv = event.UserEmailChangeRequested
		}
		return s.recordRequest(tx, t, c, typEv, nil, email, now, nil)
	})
	return writeError(err, engine.KindRateLimited)
}

// sendEmailChange mails the confirmations of u's change to newEmail: to
// the new address, and to the current one when the tenant asks both
// (secure email change, the default).
func (s *Service) sendEmailChange(tx engine.Querier, t Tenant, st Settings, u *User, newEmail string, pc *pkceChallenge, redirectTo string, now time.Time) error {
	if err := s.sendTokenMail(tx, t, st, u, MailEmailChange, tokEmailChangeNew, "email_change", newEmail, newEmail, pc, redirectTo, now); err != nil {
		return err
	}
	if st.SecureEmailChange && u.Email != "" {
		if err := s.sendTokenMail(tx, t, st, u, MailEmailChange, tokEmailChangeCurrent, "email_change", u.Email, newEmail, pc, redirectTo, now); err != nil {
			return err
		}
	} else if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE user_id = ? AND kind = ?`, u.ID, tokEmailChangeCurrent); err != nil {
		return err
	}
	ts := now.UnixMicro()
	_, err := tx.Exec(`UPDATE users SET email_change = ?, email_change_sent_at = ?, email_change_confirm_status = 0, updated_at = ? WHERE id = ?`,
		newEmail, ts, ts, u.ID)
	return err
}

// InviteRequest invites an address: POST /invite, by the administrator.
type InviteRequest struct {
	Email      string
	Data       map[string]any
	RedirectTo string
}

// Invite makes an unconfirmed user for the address and mails it an
// invitation, which signs it in when followed. An address that already
// has a confirmed user is refused (422 email_exists); an invited one that
// has not accepted yet is invited again.
func (s *Service) Invite(ctx context.Context, t Tenant, c Client, req InviteRequest) (*User, error) {
	email := NormalizeEmail(req.Email)
	if err := validateEmail(email); err != nil {
		return nil, err
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return nil, err
	}
	if err := s.mails.allow(t.ID, st, "invite", email); err != nil {
		return nil, err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	var out *User
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		u, err := s.invitee(tx, t, c, email, req.Data, now)
		if err != nil {
			return err
		}
		if err := s.sendTokenMail(tx, t, st, u, MailInvite, tokInvite, "invite", email, "", nil, req.RedirectTo, now); err != nil {
			return err
		}
		if err := s.record(tx, t, &event.Event{Type: event.UserInvited, Actor: c.AdminActor(), Target: event.Target{ID: u.ID, Email: email},
			IP: c.IP, Data: map[string]any{}, At: now}); err != nil {
			return err
		}
		out, err = userByID(tx, u.ID)
		return err
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	return out, nil
}

// invitee returns the user an invitation of email is for: a new one, or
// the invited user who has not accepted yet.
func (s *Service) invitee(tx engine.Querier, t Tenant, c Client, email string, data map[string]any, now time.Time) (*User, error) {
	u, err := liveUserByEmail(tx, email)
	if err != nil {
		return nil, err
	}
	ts := now.UnixMicro()
	if u != nil {
		if u.EmailConfirmedAt != nil || u.InvitedAt == nil {
			return nil, newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
		}
	} else if u, err = s.adminCreatesUser(tx, t, c, newUser{email: email, data: data, plainMeta: true}, "invite", now); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(`UPDATE users SET invited_at = ?, confirmation_sent_at = ?, updated_at = ? WHERE id = ?`, ts, ts, ts, u.ID); err != nil {
		return nil, err
	}
	return u, nil
}

// adminCreatesUser inserts nu for the administrator's invitation or
// generated link (by), with its user.created event, and reads it back.
func (s *Service) adminCreatesUser(tx engine.Querier, t Tenant, c Client, nu newUser, by string, now time.Time) (*User, error) {
	uid, err := nu.insert(tx, now)
	if err != nil {
		return nil, err
	}
	if err := s.record(tx, t, &event.Event{Type: event.UserCreated, Actor: c.AdminActor(), Target: event.Target{ID: uid, Email: nu.email},
		IP: c.IP, Data: map[string]any{"provider": "email", "by": by}, At: now}); err != nil {
		return nil, err
	}
	return userByID(tx, uid)
}

// Reauthenticate mails the caller a 6-digit nonce, which PUT /user then
// takes for a password change.
func (s *Service) Reauthenticate(ctx context.Context, t Tenant, c Client, p *Principal) error {
	u := p.User
	if u.Email == "" {
		return newError(engine.KindRefused, CodeReauthNotValid, "Reauthentication requires an email address")
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return err
	}
	if err := s.mails.allow(t.ID, st, "reauthentication", u.Email); err != nil {
		return err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		tok, err := issueToken(tx, st, u.ID, tokReauth, u.Email, "", now)
		if err != nil {
			return err
		}
		if err := s.enqueueMail(tx, t, st, mailOut{kind: MailReauthentication, tokKind: tokReauth, to: u.Email, tok: tok, user: u}, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE users SET reauthentication_sent_at = ? WHERE id = ?`, now.UnixMicro(), u.ID); err != nil {
			return err
		}
		return s.recordRequest(tx, t, c, event.UserReauthRequested, u, u.Email, now, nil)
	})
	return writeError(err, engine.KindRateLimited)
}

// reauthWindow: with security_update_password_require_reauthentication, a
// session signed in longer ago than this needs a nonce for a new password
// (GoTrue's 24 hours).
const reauthWindow = 24 * time.Hour

// checkNonce, in the write of a password change: a nonce given is checked
// and spent whatever the tenant requires; none is refused when the tenant
// requires one and the session is not recent.
func checkNonce(tx engine.Querier, st Settings, p *Principal, nonce string, now time.Time) error {
	if nonce == "" {
		if !st.PasswordRequiresReauth || p.Claims == nil {
			return nil
		}
		signedIn := time.Unix(p.Claims.IssuedAt, 0)
		if len(p.Claims.AMR) > 0 {
			signedIn = time.Unix(p.Claims.AMR[0].Timestamp, 0)
		}
		if now.Sub(signedIn) < reauthWindow {
			return nil
		}
		return newError(engine.KindInvalid, CodeReauthNeeded, "Password update requires reauthentication")
	}
	invalid := newError(engine.KindRefused, CodeReauthNotValid, "Nonce has expired or is invalid")
	if p.User.Email == "" {
		return invalid
	}
	f, err := findCode(tx, []string{tokReauth}, p.User.Email, strings.TrimSpace(nonce))
	if err != nil {
		return err
	}
	if f == nil || f.userID != p.User.ID {
		return invalid
	}
	if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE id = ?`, f.id); err != nil {
		return err
	}
	if f.expiresAt <= now.UnixMicro() {
		return invalid
	}
	_, err = tx.Exec(`UPDATE users SET reauthentication_sent_at = NULL WHERE id = ?`, p.User.ID)
	return err
}

// GenerateLinkRequest is POST /admin/generate_link: a link of a type for
// an address, returned rather than mailed.
type GenerateLinkRequest struct {
	Type       string // signup, invite, magiclink, recovery, email_change_current, email_change_new
	Email      string
	NewEmail   string
	Password   string
	Data       map[string]any
	RedirectTo string
}

// GeneratedLink is what POST /admin/generate_link answers: the user and
// the link's parts.
type GeneratedLink struct {
	User             *User
	ActionLink       string
	EmailOTP         string
	HashedToken      string
	VerificationType string
	RedirectTo       string
}

// GenerateLink makes the link a mail of req.Type would carry, for the
// administrator to deliver: no mail is sent. signup and invite make the
// user when the address has none.
func (s *Service) GenerateLink(ctx context.Context, t Tenant, c Client, req GenerateLinkRequest) (*GeneratedLink, error) {
	email := NormalizeEmail(req.Email)
	if err := validateEmail(email); err != nil {
		return nil, err
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return nil, err
	}
	var newEmail, pwHash string
	switch req.Type {
	case "signup":
		if req.Password == "" {
			return nil, validationf("Signup requires a valid password")
		}
		if err := checkPassword(req.Password, st); err != nil {
			return nil, err
		}
		if pwHash, err = s.hashes.Hash(ctx, req.Password); err != nil {
			return nil, hashError(err)
		}
	case "invite", "magiclink", "recovery":
	case "email_change_current", "email_change_new":
		newEmail = NormalizeEmail(req.NewEmail)
		if err := validateEmail(newEmail); err != nil {
			return nil, err
		}
		if newEmail == email {
			return nil, newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
		}
	default:
		return nil, validationf("Invalid email action link type requested: %q", req.Type)
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	ts := now.UnixMicro()
	out := &GeneratedLink{VerificationType: req.Type, RedirectTo: st.redirectFor(req.RedirectTo)}
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		u, err := liveUserByEmail(tx, email)
		if err != nil {
			return err
		}
		kind, typ, address := req.Type, req.Type, email
		switch req.Type {
		case "signup":
			if u != nil && u.EmailConfirmedAt != nil {
				return newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
			}
			if u == nil {
				if u, err = s.adminCreatesUser(tx, t, c, newUser{email: email, pwHash: pwHash, data: req.Data, plainMeta: true}, "generate_link", now); err != nil {
					return err
				}
			}
			kind = tokSignup
			if _, err := tx.Exec(`UPDATE users SET confirmation_sent_at = ? WHERE id = ?`, ts, u.ID); err != nil {
				return err
			}
		case "invite":
			if u, err = s.invitee(tx, t, c, email, req.Data, now); err != nil {
				return err
			}
			kind = tokInvite
		case "magiclink", "recovery":
			if u == nil && req.Type == "magiclink" {
				// As GoTrue: a magic link for a new address makes the user
				// and is its signup link.
				if u, err = s.adminCreatesUser(tx, t, c, newUser{email: email, data: req.Data}, "generate_link", now); err != nil {
					return err
				}
				kind, typ, out.VerificationType = tokSignup, "signup", "signup"
				if _, err := tx.Exec(`UPDATE users SET confirmation_sent_at = ? WHERE id = ?`, ts, u.ID); err != nil {
					return err
				}
				break
			}
			if u == nil {
				return newError(engine.KindNotFound, CodeUserNotFound, "User with this email not found")
			}
			kind = map[string]string{"magiclink": tokMagicLink, "recovery": tokRecovery}[req.Type]
			if _, err := tx.Exec(`UPDATE users SET recovery_sent_at = ? WHERE id = ?`, ts, u.ID); err != nil {
				return err
			}
		default: // email_change_current, email_change_new
			if u == nil {
				return newError(engine.KindNotFound, CodeUserNotFound, "User with this email not found")
			}
			var taken int
			if err := tx.QueryRow(`SELECT 1 FROM users WHERE email = ?`, newEmail).Scan(&taken); err == nil {
				return newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
			} else if !errors.Is(err, engine.ErrNoRows) {
				return err
			}
			typ = "email_change"
			if req.Type == "email_change_new" {
				address = newEmail
			}
			if _, err := tx.Exec(`UPDATE users SET email_change = ?, email_change_sent_at = ?, email_change_confirm_status = 0 WHERE id = ?`,
				newEmail, ts, u.ID); err != nil {
				return err
			}
		}
		tok, err := issueToken(tx, st, u.ID, kind, address, "", now)
		if err != nil {
			return err
		}
		out.ActionLink, out.EmailOTP, out.HashedToken = actionLink(t, tok, typ, out.RedirectTo), tok.OTP, tok.TokenHash
		out.User, err = userByID(tx, u.ID)
		return err
	})
	if errors.Is(err, engine.ErrConflict) {
		return nil, errUserExists()
	}
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	return out, nil
}

// VerifyRequest is GET or POST /verify: a token hash (the link's token=,
// or verifyOtp's token_hash), or an address and its 6-digit code.
type VerifyRequest struct {
	Type       string
	TokenHash  string
	Email      string
	Token      string
	RedirectTo string
	// Link: GET /verify, where a PKCE token ends in an auth code rather
	// than a session.
	Link bool
}

// Verified is what following a link or entering a code did: a session,
// a PKCE auth code, or (the first half of a secure email change) a
// message.
type Verified struct {
	Session  *Session
	AuthCode string
	Message  string
	Type     string
	// RedirectTo: where the link goes next (allowed, else the site URL).
	RedirectTo string
}

// Verify spends a mailed token: confirms the address, accepts the
// invitation, applies the email change, and signs the user in.
func (s *Service) Verify(ctx context.Context, t Tenant, c Client, req VerifyRequest) (*Verified, error) {
	kinds, ok := verifyKinds[req.Type]
	if !ok {
		if req.Type == "" {
			return nil, validationf("Verify requires a verification type")
		}
		if req.Type == "sms" || req.Type == "phone_change" {
			return nil, newError(engine.KindInvalid, "phone_provider_disabled", "Phone verification is not supported")
		}
		return nil, validationf("Unsupported verification type %q", req.Type)
	}
	st, err := s.Settings(ctx, t)
	if err != nil {
		return nil, err
	}
	th := strings.TrimPrefix(strings.TrimSpace(req.TokenHash), pkcePrefix)
	email := NormalizeEmail(req.Email)
	code := strings.TrimSpace(req.Token)
	if th == "" {
		if req.Token == "" {
			return nil, validationf("Verify requires a token or a token hash")
		}
		if email == "" {
			return nil, validationf("Verify requires an email address with a token")
		}
		// A code is 6 digits: its guesses are limited like passwords'.
		if err := s.throttleWait(ctx, t, email, c.IP); err != nil {
			return nil, err
		}
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	out := &Verified{Type: req.Type, RedirectTo: st.redirectFor(req.RedirectTo)}
	is := &issued{sessionAt: now.Unix(), method: "otp"}
	var failure *engine.Error
	err = t.Shard.Write(ctx, func(tx engine.Querier) error {
		*is, failure, out.AuthCode, out.Message = issued{sessionAt: now.Unix(), method: "otp"}, nil, "", ""
		var f *foundToken
		var err error
		if th != "" {
			f, err = findToken(tx, kinds, th)
		} else {
			f, err = findCode(tx, kinds, email, code)
		}
		if err != nil {
			return err
		}
		if f == nil {
			failure = errOTPExpired()
			return nil
		}
		if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE id = ?`, f.id); err != nil {
			return err
		}
		if email != "" && f.address != email {
			failure = errOTPExpired()
			return nil
		}
		if f.expiresAt <= now.UnixMicro() {
			failure = errOTPExpired()
			return nil
		}
		u, err := userByID(tx, f.userID)
		if errors.Is(err, engine.ErrNoRows) {
			failure = errOTPExpired()
			return nil
		}
		if err != nil {
			return err
		}
		if u.Banned(now) {
			failure = newError(engine.KindInvalid, CodeUserBanned, "User is banned")
			return nil
		}
		done, err := s.applyToken(tx, t, c, st, u, f, out, now)
		if err != nil || !done {
			return err
		}
		if f.flowID != nil && req.Link {
			// PKCE: the link ends in ?code=; the session is made when the
			// code is exchanged with its verifier.
			code := newUUID()
			n, err := tx.Exec(`UPDATE flow_states SET user_id = ?, auth_code_hash = ?, auth_code_issued_at = ? WHERE id = ? AND auth_code_hash IS NULL`,
				u.ID, hashToken(code), now.UnixMicro(), *f.flowID)
			if err != nil {
				return err
			}
			if n == 0 {
				failure = newError(engine.KindNotFound, CodeFlowStateNotFound, "invalid flow state, no valid flow state found")
				return nil
			}
			out.AuthCode = code
			return nil
		}
		if err := signIn(tx, u, "", now); err != nil {
			return err
		}
		if is.sessionID, is.refresh, err = createSession(tx, u.ID, now, c); err != nil {
			return err
		}
		if err := setSessionMethod(tx, is.sessionID, is.method); err != nil {
			return err
		}
		if err := s.recordSignIn(tx, t, c, u, "", now, map[string]any{"method": "otp", "type": f.kind}); err != nil {
			return err
		}
		is.user, err = userByID(tx, u.ID)
		return err
	})
	if errors.Is(err, engine.ErrConflict) {
		return nil, newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
	}
	if err != nil {
		var ae *engine.Error
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, writeError(err, engine.KindUnavailable)
	}
	if failure != nil {
		if req.TokenHash == "" && failure.Code == CodeOTPExpired {
			s.throttle.Fail(t.ID, email, c.IP)
		}
		return nil, failure
	}
	if out.AuthCode != "" || out.Message != "" {
		return out, nil
	}
	if req.TokenHash == "" {
		s.throttle.Succeed(t.ID, email, c.IP)
	}
	if out.Session, err = s.session(ctx, t, is); err != nil {
		return nil, err
	}
	return out, nil
}

// applyToken does what a spent token of f.kind proves, in its write. done
// false: nothing to sign in yet (the first half of a secure email change,
// whose message is set on out).
func (s *Service) applyToken(tx engine.Querier, t Tenant, c Client, st Settings, u *User, f *foundToken, out *Verified, now time.Time) (bool, error) {
	ts := now.UnixMicro()
	switch f.kind {
	case tokSignup, tokInvite, tokRecovery, tokMagicLink:
		if u.EmailConfirmedAt != nil {
			return true, nil
		}
		if err := confirmEmail(tx, u, ts); err != nil {
			return false, err
		}
		return true, s.record(tx, t, &event.Event{Type: event.UserEmailConfirmed, Actor: event.User(u.ID, u.Email), IP: c.IP,
			Data: map[string]any{"type": f.kind}, At: now})
	case tokEmailChangeCurrent, tokEmailChangeNew:
		if u.NewEmail == "" {
			return false, errOTPExpired()
		}
		var other int
		err := tx.QueryRow(`SELECT 1 FROM one_time_tokens WHERE user_id = ? AND kind IN (?, ?)`, u.ID, tokEmailChangeCurrent, tokEmailChangeNew).Scan(&other)
		if err != nil && !errors.Is(err, engine.ErrNoRows) {
			return false, err
		}
		if err == nil && st.SecureEmailChange {
			if _, err := tx.Exec(`UPDATE users SET email_change_confirm_status = 1, updated_at = ? WHERE id = ?`, ts, u.ID); err != nil {
				return false, err
			}
			out.Message = "Confirmation link accepted. Please proceed to confirm link sent to the other email"
			return false, nil
		}
		if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE user_id = ? AND kind IN (?, ?)`, u.ID, tokEmailChangeCurrent, tokEmailChangeNew); err != nil {
			return false, err
		}
		old := u.Email
		if err := setEmail(tx, u, u.NewEmail, ts); err != nil {
			return false, err
		}
		return true, s.record(tx, t, &event.Event{Type: event.UserUpdated, Actor: event.User(u.ID, u.NewEmail), IP: c.IP,
			Data: map[string]any{"changed": []string{"email"}, "previous_email": old}, At: now})
	}
	return false, errOTPExpired()
}

// confirmEmail confirms u's address, in its row, metadata and identity.
func confirmEmail(tx engine.Querier, u *User, ts int64) error {
	meta, err := objectMap(u.UserMetadata)
	if err != nil {
		return err
	}
	if _, ok := meta["email_verified"]; ok {
		meta["email_verified"] = true
	}
	if _, err := tx.Exec(`UPDATE users SET email_confirmed_by = CASE WHEN email_confirmed_at IS NULL THEN ? ELSE email_confirmed_by END,
		email_confirmed_at = COALESCE(email_confirmed_at, ?), raw_user_meta_data = ?, updated_at = ? WHERE id = ?`,
		ConfirmedLink, ts, mustJSON(meta), ts, u.ID); err != nil {
		return err
	}
	return updateEmailIdentity(tx, u, func(data map[string]any) { data["email_verified"] = true }, "", ts)
}

// updateEmailIdentity changes the data of u's email identity (and its
// email when email is not empty).
func updateEmailIdentity(tx engine.Querier, u *User, change func(map[string]any), email string, ts int64) error {
	for _, id := range u.Identities {
		if id.Provider != "email" {
			continue
		}
		data, err := objectMap(id.IdentityData)
		if err != nil {
			return err
		}
		change(data)
		addr := id.Email
		if email != "" {
			addr = email
		}
		if _, err := tx.Exec(`UPDATE identities SET email = ?, identity_data = ?, updated_at = ? WHERE id = ?`,
			addr, mustJSON(data), ts, id.IdentityID); err != nil {
			return err
		}
	}
	return nil
}

// setEmail makes newEmail u's confirmed address: an anonymous user
// becomes permanent with an email identity.
func setEmail(tx engine.Querier, u *User, newEmail string, ts int64) error {
	meta, err := objectMap(u.UserMetadata)
	if err != nil {
		return err
	}
	if u.IsAnonymous {
		meta["email_verified"] = true
	} else if _, ok := meta["email"]; ok {
		meta["email"] = newEmail
	}
	// Links and codes mailed to the old address end with it.
	if _, err := tx.Exec(`DELETE FROM one_time_tokens WHERE user_id = ?`, u.ID); err != nil {
		return err
	}
	if _, err := tx.Exec(`UPDATE users SET email = ?, email_confirmed_at = ?, email_confirmed_by = ?, is_anonymous = 0, email_change = NULL,
		email_change_sent_at = NULL, email_change_confirm_status = 0, raw_user_meta_data = ?, updated_at = ? WHERE id = ?`,
		newEmail, ts, ConfirmedLink, mustJSON(meta), ts, u.ID); err != nil {
		return err
	}
	hasEmail := false
	for _, id := range u.Identities {
		hasEmail = hasEmail || id.Provider == "email"
	}
	if !hasEmail {
		identity := map[string]any{"email": newEmail, "email_verified": true, "phone_verified": false, "sub": u.ID}
		_, err := tx.Exec(`INSERT INTO identities (id, user_id, provider, provider_id, identity_data, email, last_sign_in_at, created_at, updated_at)
			VALUES (?, ?, 'email', ?, ?, ?, ?, ?, ?)`, newUUID(), u.ID, u.ID, mustJSON(identity), newEmail, ts, ts, ts)
		return err
	}
	return updateEmailIdentity(tx, u, func(data map[string]any) { data["email"], data["email_verified"] = newEmail, true }, newEmail, ts)
}

// ExchangePKCE trades the auth code of a followed PKCE link and its
// code_verifier for a session (POST /token?grant_type=pkce). A code is
// spent by its first exchange, right or wrong.
func (s *Service) ExchangePKCE(ctx context.Context, t Tenant, c Client, authCode, verifier string) (*Session, error) {
	if authCode == "" || verifier == "" {
		return nil, validationf("invalid request: both auth code and code verifier should be non-empty")
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	is := &issued{sessionAt: now.Unix()}
	var failure *engine.Error
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		failure = nil
		var id, challenge, method, authMethod string
		var userID *string
		var issuedAt *int64
		err := tx.QueryRow(`SELECT id, user_id, code_challenge, code_challenge_method, authentication_method, auth_code_issued_at
			FROM flow_states WHERE auth_code_hash = ?`, hashToken(authCode)).Scan(&id, &userID, &challenge, &method, &authMethod, &issuedAt)
		if errors.Is(err, engine.ErrNoRows) {
			failure = newError(engine.KindNotFound, CodeFlowStateNotFound, "invalid flow state, no valid flow state found")
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM flow_states WHERE id = ?`, id); err != nil {
			return err
		}
		if userID == nil || issuedAt == nil || now.Sub(time.UnixMicro(*issuedAt)) > authCodeTTL {
			failure = newError(engine.KindRefused, CodeFlowStateExpired, "invalid flow state, flow state has expired")
			return nil
		}
		if !checkVerifier(method, challenge, verifier) {
			failure = newError(engine.KindInvalid, CodeBadCodeVerifier, "code challenge does not match previously saved code verifier")
			return nil
		}
		u, err := userByID(tx, *userID)
		if errors.Is(err, engine.ErrNoRows) {
			failure = errUserGone()
			return nil
		}
		if err != nil {
			return err
		}
		if err := signIn(tx, u, "", now); err != nil {
			return err
		}
		is.method = authMethod
		if is.sessionID, is.refresh, err = createSession(tx, u.ID, now, c); err != nil {
			return err
		}
		if err := setSessionMethod(tx, is.sessionID, is.method); err != nil {
			return err
		}
		if err := s.recordSignIn(tx, t, c, u, "", now, map[string]any{"method": "pkce", "type": authMethod}); err != nil {
			return err
		}
		is.user, err = userByID(tx, u.ID)
		return err
	})
	if err != nil {
		var ae *engine.Error
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, writeError(err, engine.KindUnavailable)
	}
	if failure != nil {
		return nil, failure
	}
	return s.session(ctx, t, is)
}

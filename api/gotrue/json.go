package gotrue

import (
	"encoding/json"
	"time"

	"github.com/keyshard/keyshard/auth"
)

// userJSON is GoTrue's user object, in its field order and with its
// optional fields.
type userJSON struct {
	ID               string          `json:"id"`
	Aud              string          `json:"aud"`
	Role             string          `json:"role"`
	Email            string          `json:"email"`
	EmailConfirmedAt *time.Time      `json:"email_confirmed_at,omitempty"`
	InvitedAt        *time.Time      `json:"invited_at,omitempty"`
	Phone            string          `json:"phone"`
	PhoneConfirmedAt *time.Time      `json:"phone_confirmed_at,omitempty"`
	ConfirmationSent *time.Time      `json:"confirmation_sent_at,omitempty"`
	ConfirmedAt      *time.Time      `json:"confirmed_at,omitempty"`
	RecoverySentAt   *time.Time      `json:"recovery_sent_at,omitempty"`
	NewEmail         string          `json:"new_email,omitempty"`
	EmailChangeSent  *time.Time      `json:"email_change_sent_at,omitempty"`
	ReauthSentAt     *time.Time      `json:"reauthentication_sent_at,omitempty"`
	LastSignInAt     *time.Time      `json:"last_sign_in_at,omitempty"`
	AppMetadata      json.RawMessage `json:"app_metadata"`
	UserMetadata     json.RawMessage `json:"user_metadata"`
	Identities       []identityJSON  `json:"identities"`
	CreatedAt        time.Time       `json:"created_at"`
	UpdatedAt        time.Time       `json:"updated_at"`
	BannedUntil      *time.Time      `json:"banned_until,omitempty"`
	DeletedAt        *time.Time      `json:"deleted_at,omitempty"`
	IsAnonymous      bool            `json:"is_anonymous"`
}

// identityJSON is GoTrue's identity object.
type identityJSON struct {
	IdentityID   string          `json:"identity_id"`
	ProviderID   string          `json:"id"`
	UserID       string          `json:"user_id"`
	IdentityData json.RawMessage `json:"identity_data"`
	Provider     string          `json:"provider"`
	LastSignInAt *time.Time      `json:"last_sign_in_at,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
	Email        string          `json:"email"`
}

// userView shapes u as GoTrue's user object. Handlers encode the struct
// itself rather than a type with a MarshalJSON method: encoding/json
// re-scans and compacts whatever such a method returns, which was 8% of
// the CPU of GET /user.
func userView(u *auth.User) userJSON {
	confirmed := u.EmailConfirmedAt
	if confirmed == nil {
		confirmed = u.PhoneConfirmedAt
	}
	var ids []identityJSON // nil (JSON null) when not read, as GoTrue's user lists
	if u.Identities != nil {
		ids = make([]identityJSON, len(u.Identities))
	}
	for i, id := range u.Identities {
		ids[i] = identityJSON{IdentityID: id.IdentityID, ProviderID: id.ProviderID, UserID: id.UserID,
			IdentityData: object(id.IdentityData), Provider: id.Provider, LastSignInAt: id.LastSignInAt,
			CreatedAt: id.CreatedAt, UpdatedAt: id.UpdatedAt, Email: id.Email}
	}
	return userJSON{
		ID: u.ID, Aud: u.Aud, Role: u.Role, Email: u.Email, EmailConfirmedAt: u.EmailConfirmedAt,
		Phone: u.Phone, PhoneConfirmedAt: u.PhoneConfirmedAt, ConfirmedAt: confirmed,
		LastSignInAt: u.LastSignInAt, AppMetadata: object(u.AppMetadata), UserMetadata: object(u.UserMetadata),
		Identities: ids, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, IsAnonymous: u.IsAnonymous,
		BannedUntil: u.BannedUntil, DeletedAt: u.DeletedAt,
		InvitedAt: u.InvitedAt, ConfirmationSent: u.ConfirmationSentAt, RecoverySentAt: u.RecoverySentAt,
		NewEmail: u.NewEmail, EmailChangeSent: u.EmailChangeSentAt, ReauthSentAt: u.ReauthenticationSentAt,
	}
}

// usersView shapes a list of users.
func usersView(us []*auth.User) []userJSON {
	out := make([]userJSON, len(us))
	for i, u := range us {
		out[i] = userView(u)
	}
	return out
}

// object returns JSON object text for encoding, {} when empty.
func object(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("{}")
	}
	return raw
}

// sessionJSON is GoTrue's session: the answer of signup, login and refresh.
type sessionJSON struct {
	AccessToken  string   `json:"access_token"`
	TokenType    string   `json:"token_type"`
	ExpiresIn    int64    `json:"expires_in"`
	ExpiresAt    int64    `json:"expires_at"`
	RefreshToken string   `json:"refresh_token"`
	User         userJSON `json:"user"`
	// WeakPassword is null on a password login, absent otherwise (GoTrue).
	WeakPassword json.RawMessage `json:"weak_password,omitempty"`
}

func sessionView(s *auth.Session) sessionJSON {
	return sessionJSON{AccessToken: s.AccessToken, TokenType: "bearer", ExpiresIn: s.ExpiresIn, ExpiresAt: s.ExpiresAt,
		RefreshToken: s.RefreshToken, User: userView(s.User)}
}

// auditJSON is one entry of GoTrue's admin audit list.
type auditJSON struct {
	ID        int64           `json:"id"`
	Action    string          `json:"action"`
	ActorID   *string         `json:"actor_id"`
	Email     *string         `json:"actor_username"`
	IP        string          `json:"ip_address"`
	Payload   json.RawMessage `json:"payload"`
	CreatedAt time.Time       `json:"created_at"`
}

func auditView(evs []auth.AuditEvent) []auditJSON {
	out := make([]auditJSON, len(evs))
	for i, ev := range evs {
		out[i] = auditJSON{ID: ev.ID, Action: ev.Action, ActorID: ev.ActorID, Email: ev.Email, IP: ev.IP,
			Payload: ev.Payload, CreatedAt: ev.CreatedAt}
	}
	return out
}

package auth

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// User is an end user of a tenant. Its JSON is GoTrue's user object.
type User struct {
	ID                string
	Aud               string
	Role              string
	Email             string
	Phone             string
	EncryptedPassword string
	EmailConfirmedAt  *time.Time
	PhoneConfirmedAt  *time.Time
	LastSignInAt      *time.Time
	LastSeenAt        *time.Time
	AppMetadata       map[string]any
	UserMetadata      map[string]any
	Identities        []Identity
	IsAnonymous       bool
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// Identity is one way a user signs in (provider "email" for now).
type Identity struct {
	IdentityID   string         `json:"identity_id"`
	ProviderID   string         `json:"id"`
	UserID       string         `json:"user_id"`
	IdentityData map[string]any `json:"identity_data"`
	Provider     string         `json:"provider"`
	LastSignInAt *time.Time     `json:"last_sign_in_at,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
	Email        string         `json:"email"`
}

// userJSON fixes GoTrue's field order and optional fields.
type userJSON struct {
	ID               string         `json:"id"`
	Aud              string         `json:"aud"`
	Role             string         `json:"role"`
	Email            string         `json:"email"`
	EmailConfirmedAt *time.Time     `json:"email_confirmed_at,omitempty"`
	Phone            string         `json:"phone"`
	PhoneConfirmedAt *time.Time     `json:"phone_confirmed_at,omitempty"`
	ConfirmedAt      *time.Time     `json:"confirmed_at,omitempty"`
	LastSignInAt     *time.Time     `json:"last_sign_in_at,omitempty"`
	AppMetadata      map[string]any `json:"app_metadata"`
	UserMetadata     map[string]any `json:"user_metadata"`
	Identities       []Identity     `json:"identities"`
	CreatedAt        time.Time      `json:"created_at"`
	UpdatedAt        time.Time      `json:"updated_at"`
	IsAnonymous      bool           `json:"is_anonymous"`
}

// MarshalJSON encodes u as GoTrue does.
func (u *User) MarshalJSON() ([]byte, error) { return json.Marshal(u.View()) }

// View returns the user as the value its JSON encodes. A handler that
// writes the user alone encodes View() rather than the User: encoding/json
// re-scans and compacts whatever a MarshalJSON method returns, which was 8%
// of the CPU of GET /user.
func (u *User) View() any {
	confirmed := u.EmailConfirmedAt
	if confirmed == nil {
		confirmed = u.PhoneConfirmedAt
	}
	ids := u.Identities
	if ids == nil {
		ids = []Identity{}
	}
	return userJSON{
		ID: u.ID, Aud: u.Aud, Role: u.Role, Email: u.Email, EmailConfirmedAt: u.EmailConfirmedAt,
		Phone: u.Phone, PhoneConfirmedAt: u.PhoneConfirmedAt, ConfirmedAt: confirmed,
		LastSignInAt: u.LastSignInAt, AppMetadata: nonNilMap(u.AppMetadata), UserMetadata: nonNilMap(u.UserMetadata),
		Identities: ids, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, IsAnonymous: u.IsAnonymous,
	}
}

func nonNilMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// micros converts a stored time to UTC time.Time; nil stays nil.
func micros(v *int64) *time.Time {
	if v == nil {
		return nil
	}
	t := time.UnixMicro(*v).UTC()
	return &t
}

func timePtrMicros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

const userColumns = `id, aud, role, COALESCE(email, ''), COALESCE(phone, ''), encrypted_password,
	email_confirmed_at, phone_confirmed_at, last_sign_in_at, last_seen_at,
	raw_app_meta_data, raw_user_meta_data, is_anonymous, created_at, updated_at`

func scanUser(row engine.Row) (*User, error) {
	var u User
	var ec, pc, ls, lseen *int64
	var app, meta string
	var created, updated int64
	if err := row.Scan(&u.ID, &u.Aud, &u.Role, &u.Email, &u.Phone, &u.EncryptedPassword,
		&ec, &pc, &ls, &lseen, &app, &meta, &u.IsAnonymous, &created, &updated); err != nil {
		return nil, err
	}
	u.EmailConfirmedAt, u.PhoneConfirmedAt, u.LastSignInAt, u.LastSeenAt = micros(ec), micros(pc), micros(ls), micros(lseen)
	u.CreatedAt, u.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	if err := json.Unmarshal([]byte(app), &u.AppMetadata); err != nil {
		return nil, fmt.Errorf("user %s app metadata: %w", u.ID, err)
	}
	if err := json.Unmarshal([]byte(meta), &u.UserMetadata); err != nil {
		return nil, fmt.Errorf("user %s user metadata: %w", u.ID, err)
	}
	return &u, nil
}

// userByID loads a live user and its identities; ErrNoRows if absent.
func userByID(q engine.Querier, id string) (*User, error) {
	u, err := scanUser(q.QueryRow(`SELECT `+userColumns+` FROM users WHERE id = ? AND deleted_at IS NULL`, id))
	if err != nil {
		return nil, err
	}
	return u, loadIdentities(q, u)
}

// userByEmail loads a live user by normalized email, without identities;
// ErrNoRows if absent.
func userByEmail(q engine.Querier, email string) (*User, error) {
	return scanUser(q.QueryRow(`SELECT `+userColumns+` FROM users WHERE email = ? AND deleted_at IS NULL`, email))
}

func loadIdentities(q engine.Querier, u *User) error {
	rows, err := q.Query(`SELECT id, provider_id, provider, identity_data, COALESCE(email, ''), last_sign_in_at, created_at, updated_at
		FROM identities WHERE user_id = ? ORDER BY created_at, id`, u.ID)
	if err != nil {
		return err
	}
	defer rows.Close()
	u.Identities = u.Identities[:0]
	for rows.Next() {
		var id Identity
		var data string
		var ls *int64
		var created, updated int64
		if err := rows.Scan(&id.IdentityID, &id.ProviderID, &id.Provider, &data, &id.Email, &ls, &created, &updated); err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(data), &id.IdentityData); err != nil {
			return fmt.Errorf("identity %s data: %w", id.IdentityID, err)
		}
		id.UserID = u.ID
		id.LastSignInAt = micros(ls)
		id.CreatedAt, id.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
		u.Identities = append(u.Identities, id)
	}
	return rows.Err()
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of JSON-decoded values are marshalled
	}
	return string(b)
}

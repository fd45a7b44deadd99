package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// User is an end user of a tenant, as the flows return it; api/gotrue
// shapes it as GoTrue's user object.
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
	AppMetadata       json.RawMessage // a JSON object, as stored
	UserMetadata      json.RawMessage // a JSON object, as stored
	// Identities: nil when not read (a list of users), else every one.
	Identities  []Identity
	IsAnonymous bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// BannedUntil: the user may not sign in before it (nil: not banned).
	BannedUntil *time.Time
	// DeletedAt: set on a user the administrator soft-deleted.
	DeletedAt *time.Time
	// The mail state, as GoTrue names it: when each kind of mail was
	// last sent, and a pending email change (NewEmail, confirmed by the
	// current address already when EmailChangeConfirmed).
	InvitedAt, ConfirmationSentAt, RecoverySentAt *time.Time
	EmailChangeSentAt, ReauthenticationSentAt     *time.Time
	NewEmail                                      string
	EmailChangeConfirmed                          bool
	// EmailConfirmedBy says how the address was confirmed: autoconfirm
	// (taken as typed), link (a mailed link or code), admin, provider.
	EmailConfirmedBy string
}

// Banned reports whether the user is banned at now.
func (u *User) Banned(now time.Time) bool { return u.BannedUntil != nil && u.BannedUntil.After(now) }

// Identity is one way a user signs in (provider "email" for now).
type Identity struct {
	IdentityID   string // the row's id
	ProviderID   string // the user's id at the provider
	UserID       string
	IdentityData json.RawMessage // a JSON object, as stored
	Provider     string
	LastSignInAt *time.Time
	CreatedAt    time.Time
	UpdatedAt    time.Time
	Email        string
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

// userColumns are the users columns scanUser reads, from table alias u.
const userColumns = `u.id, u.aud, u.role, COALESCE(u.email, ''), COALESCE(u.phone, ''), u.encrypted_password,
	u.email_confirmed_at, u.phone_confirmed_at, u.last_sign_in_at, u.last_seen_at,
	u.raw_app_meta_data, u.raw_user_meta_data, u.is_anonymous, u.created_at, u.updated_at, u.banned_until, u.deleted_at,
	u.invited_at, u.confirmation_sent_at, u.recovery_sent_at, u.email_change_sent_at, u.reauthentication_sent_at,
	COALESCE(u.email_change, ''), u.email_change_confirm_status, COALESCE(u.email_confirmed_by, '')`

// identityColumns are the identities columns (alias i) that follow
// userColumns in a query joining a user with its identities.
const identityColumns = `i.id, i.provider_id, i.provider, i.identity_data, COALESCE(i.email, ''), i.last_sign_in_at, i.created_at, i.updated_at`

// userScan holds the destinations of one row of userColumns (and, when
// joined, identityColumns). The metadata stays the JSON text it is stored
// as: decoding it into maps and encoding them again was most of the JSON
// work of GET /user and refresh, and only updates need the maps.
type userScan struct {
	u                  User
	id                 *string // NULL: no user matched a LEFT JOIN
	ec, pc, ls, lseen  *int64
	banned, deleted    *int64
	mailSent           [5]*int64 // invited, confirmation, recovery, email change, reauthentication
	app, meta          []byte
	created, updated   int64
	iid                *string // NULL: the user has no identity
	ident              Identity
	idata              []byte
	ils                *int64
	icreated, iupdated int64
}

func (d *userScan) userDest() []any {
	u := &d.u
	return []any{&d.id, &u.Aud, &u.Role, &u.Email, &u.Phone, &u.EncryptedPassword,
		&d.ec, &d.pc, &d.ls, &d.lseen, &d.app, &d.meta, &u.IsAnonymous, &d.created, &d.updated, &d.banned, &d.deleted,
		&d.mailSent[0], &d.mailSent[1], &d.mailSent[2], &d.mailSent[3], &d.mailSent[4], &u.NewEmail, &u.EmailChangeConfirmed,
		&u.EmailConfirmedBy}
}

func (d *userScan) identityDest() []any {
	id := &d.ident
	return []any{&d.iid, &id.ProviderID, &id.Provider, &d.idata, &id.Email, &d.ils, &d.icreated, &d.iupdated}
}

// user returns the scanned user, nil when the row held none.
func (d *userScan) user() (*User, error) {
	if d.id == nil {
		return nil, nil
	}
	u := d.u
	u.ID = *d.id
	u.EmailConfirmedAt, u.PhoneConfirmedAt, u.LastSignInAt, u.LastSeenAt = micros(d.ec), micros(d.pc), micros(d.ls), micros(d.lseen)
	u.BannedUntil, u.DeletedAt = micros(d.banned), micros(d.deleted)
	u.InvitedAt, u.ConfirmationSentAt, u.RecoverySentAt = micros(d.mailSent[0]), micros(d.mailSent[1]), micros(d.mailSent[2])
	u.EmailChangeSentAt, u.ReauthenticationSentAt = micros(d.mailSent[3]), micros(d.mailSent[4])
	u.CreatedAt, u.UpdatedAt = time.UnixMicro(d.created).UTC(), time.UnixMicro(d.updated).UTC()
	var err error
	if u.AppMetadata, err = storedObject(d.app); err != nil {
		return nil, fmt.Errorf("user %s app metadata: %w", u.ID, err)
	}
	if u.UserMetadata, err = storedObject(d.meta); err != nil {
		return nil, fmt.Errorf("user %s user metadata: %w", u.ID, err)
	}
	return &u, nil
}

// identity returns the scanned identity of u, false when the row held none.
func (d *userScan) identity(u *User) (Identity, bool, error) {
	if d.iid == nil {
		return Identity{}, false, nil
	}
	id := d.ident
	id.IdentityID, id.UserID = *d.iid, u.ID
	var err error
	if id.IdentityData, err = storedObject(d.idata); err != nil {
		return Identity{}, false, fmt.Errorf("identity %s data: %w", id.IdentityID, err)
	}
	id.LastSignInAt = micros(d.ils)
	id.CreatedAt, id.UpdatedAt = time.UnixMicro(d.icreated).UTC(), time.UnixMicro(d.iupdated).UTC()
	return id, true, nil
}

// storedObject checks stored JSON object text before it is passed through
// to a response or a token: empty or null is {}, anything but a valid JSON
// object is an error (as decoding it was), never text a client would choke
// on. json.Valid is one pass over the text; decoding it into a map and
// encoding that again, as before, was most of the JSON work of GET /user.
func storedObject(b []byte) (json.RawMessage, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || string(t) == "null" {
		return json.RawMessage("{}"), nil
	}
	if t[0] != '{' || !json.Valid(t) {
		return nil, errors.New("not a JSON object")
	}
	return t, nil
}

func scanUser(row engine.Row) (*User, error) {
	var d userScan
	if err := row.Scan(d.userDest()...); err != nil {
		return nil, err
	}
	u, err := d.user()
	if err == nil && u == nil {
		err = engine.ErrNoRows
	}
	return u, err
}

// scanUserRows reads the rows of a query selecting prefix columns, then
// userColumns, then identityColumns of a LEFT JOIN of the user's
// identities: the user (nil if no row, or its columns are NULL) with its
// identities in row order, and whether there was a row at all. prefix
// is scanned from every row (a join repeats it).
func scanUserRows(rows engine.Rows, prefix ...any) (*User, bool, error) {
	defer rows.Close()
	var d userScan
	var u *User
	found := false
	dest := append(append(append([]any(nil), prefix...), d.userDest()...), d.identityDest()...)
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, false, err
		}
		if !found {
			found = true
			var err error
			if u, err = d.user(); err != nil {
				return nil, false, err
			}
			if u == nil {
				continue
			}
			u.Identities = []Identity{}
		}
		if u == nil {
			continue
		}
		id, ok, err := d.identity(u)
		if err != nil {
			return nil, false, err
		}
		if ok {
			u.Identities = append(u.Identities, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	return u, found, nil
}

// userByID loads a live user and its identities, in one query (one read
// transaction); ErrNoRows if absent.
func userByID(q engine.Querier, id string) (*User, error) {
	return loadUser(q, id, false)
}

// loadUser loads a user with its identities; withDeleted also finds a
// soft-deleted one (the administrator's view).
func loadUser(q engine.Querier, id string, withDeleted bool) (*User, error) {
	live := ` AND u.deleted_at IS NULL`
	if withDeleted {
		live = ``
	}
	rows, err := q.Query(`SELECT `+userColumns+`, `+identityColumns+`
		FROM users u LEFT JOIN identities i ON i.user_id = u.id
		WHERE u.id = ?`+live+` ORDER BY i.created_at, i.id`, id)
	if err != nil {
		return nil, err
	}
	u, _, err := scanUserRows(rows)
	if err == nil && u == nil {
		err = engine.ErrNoRows
	}
	return u, err
}

// userByEmail loads a live user by normalized email, without identities;
// ErrNoRows if absent.
func userByEmail(q engine.Querier, email string) (*User, error) {
	return scanUser(q.QueryRow(`SELECT `+userColumns+` FROM users u WHERE u.email = ? AND u.deleted_at IS NULL`, email))
}

// object returns JSON object text for encoding, {} when empty (a User
// built without scanning).
func object(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("{}")
	}
	return raw
}

// objectMap decodes stored JSON object text for a change; an empty text
// is an empty map.
func objectMap(raw json.RawMessage) (map[string]any, error) {
	m := map[string]any{}
	if len(raw) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("stored JSON object: %w", err)
	}
	if m == nil { // the text was null
		m = map[string]any{}
	}
	return m, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of JSON-decoded values are marshalled
	}
	return string(b)
}

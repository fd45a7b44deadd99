package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// ServiceKeyPrefix starts every tenant service key, so a leaked one is easy
// to recognize in logs and scanners.
const ServiceKeyPrefix = "ks_svc_"

const serviceKeySetting = "service_key_sha256"

// IssueServiceKey creates a new service key for the tenant, replacing any
// previous one, and returns it. Only its SHA-256 is stored.
func (s *Service) IssueServiceKey(ctx context.Context, t Tenant) (string, error) {
	key := ServiceKeyPrefix + randomBase62(40)
	sum := sha256.Sum256([]byte(key))
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`DELETE FROM settings WHERE "key" = ?`, serviceKeySetting); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO settings ("key", value) VALUES (?, ?)`, serviceKeySetting, hex.EncodeToString(sum[:])); err != nil {
			return err
		}
		return s.record(tx, t, &event.Event{Type: event.ServiceKeyIssued, Actor: event.Actor{Kind: event.ActorPlatform}, At: now})
	})
	if err != nil {
		return "", err
	}
	return key, nil
}

// CheckServiceKey accepts the tenant's service key (constant-time).
func (s *Service) CheckServiceKey(ctx context.Context, t Tenant, presented string) error {
	deny := newError(engine.KindUnauthenticated, CodeNoAuthorization, "A valid tenant service key is required")
	if presented == "" {
		return deny
	}
	var stored string
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		return q.QueryRow(`SELECT value FROM settings WHERE "key" = ?`, serviceKeySetting).Scan(&stored)
	})
	if errors.Is(err, engine.ErrNoRows) {
		return deny
	}
	if err != nil {
		return err
	}
	want, err := hex.DecodeString(stored)
	got := sha256.Sum256([]byte(presented))
	if err != nil || subtle.ConstantTimeCompare(got[:], want) != 1 {
		return deny
	}
	return nil
}

// Page bounds a listing. Page numbers start at 1.
type Page struct {
	Page, PerPage int
}

// Page sizes: the default, and the most one page may hold.
const (
	DefaultPerPage = 50
	MaxPerPage     = 1000
)

// Bounds returns the page's limit and offset.
func (p Page) Bounds() (limit, offset int) { return p.norm() }

func (p Page) norm() (limit, offset int) {
	if p.PerPage <= 0 || p.PerPage > MaxPerPage {
		p.PerPage = DefaultPerPage
	}
	if p.Page <= 0 {
		p.Page = 1
	}
	return p.PerPage, (p.Page - 1) * p.PerPage
}

// ListUsers returns a page of users, newest first, without their
// identities, and how many there are in all, as GoTrue's admin list:
// soft-deleted users included. filter, when set, keeps the users whose
// email contains it.
func (s *Service) ListUsers(ctx context.Context, t Tenant, p Page, filter string) ([]*User, int, error) {
	limit, offset := p.norm()
	where, args := ``, []any{}
	if filter != "" {
		where, args = ` WHERE u.email LIKE ? ESCAPE '!'`, append(args, "%"+likeEscaper.Replace(strings.ToLower(filter))+"%")
	}
	var out []*User
	var total int
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		if err := q.QueryRow(`SELECT COUNT(*) FROM users u`+where, args...).Scan(&total); err != nil {
			return err
		}
		rows, err := q.Query(`SELECT `+userColumns+` FROM users u`+where+` ORDER BY u.created_at DESC, u.id DESC LIMIT ? OFFSET ?`,
			append(args, limit, offset)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d userScan
			if err := rows.Scan(d.userDest()...); err != nil {
				return err
			}
			u, err := d.user()
			if err != nil {
				return err
			}
			out = append(out, u)
		}
		return rows.Err()
	})
	return out, total, err
}

// likeEscaper escapes LIKE's wildcards with '!'.
var likeEscaper = strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")

func errAdminUserNotFound() *engine.Error {
	return newError(engine.KindNotFound, CodeUserNotFound, "User not found")
}

// GetUser returns one user by id, a soft-deleted one included.
func (s *Service) GetUser(ctx context.Context, t Tenant, id string) (*User, error) {
	var u *User
	err := t.Shard.Read(ctx, func(q engine.Querier) (err error) {
		u, err = loadUser(q, id, true)
		return err
	})
	if errors.Is(err, engine.ErrNoRows) {
		return nil, errAdminUserNotFound()
	}
	return u, err
}

// AdminUserRequest creates or changes a user as the tenant's administrator.
type AdminUserRequest struct {
	Email        *string
	Password     *string
	EmailConfirm bool
	UserMetadata map[string]any
	AppMetadata  map[string]any
	// BanDuration bans the user for a Go duration ("24h"), or lifts the
	// ban ("none"), as GoTrue's ban_duration.
	BanDuration *string
}

// CreateUser creates a user as the tenant's administrator (no session).
func (s *Service) CreateUser(ctx context.Context, t Tenant, c Client, req AdminUserRequest) (*User, error) {
	if err := checkRoleChange(c, req.AppMetadata); err != nil {
		return nil, err
	}
	if req.Email == nil {
		return nil, validationf("An email address is required")
	}
	email := NormalizeEmail(*req.Email)
	if err := validateEmail(email); err != nil {
		return nil, err
	}
	pwHash := ""
	if req.Password != nil {
		var err error
		if pwHash, err = s.newPasswordHash(ctx, t, *req.Password); err != nil {
			return nil, err
		}
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	nu := newUser{email: email, pwHash: pwHash, data: req.UserMetadata, appData: req.AppMetadata, confirmed: req.EmailConfirm, admin: true}
	var u *User
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		uid, err := nu.insert(tx, now)
		if err != nil {
			return err
		}
		if err := s.record(tx, t, &event.Event{Type: event.UserCreated, Actor: c.AdminActor(), Target: event.Target{ID: uid, Email: email},
			IP: c.IP, Data: map[string]any{"provider": "email", "via": "admin"}, At: now}); err != nil {
			return err
		}
		u, err = userByID(tx, uid)
		return err
	})
	if errors.Is(err, engine.ErrConflict) {
		return nil, newError(engine.KindRefused, CodeEmailExists, "A user with this email address has already been registered")
	}
	if err != nil {
		return nil, writeError(err, engine.KindRateLimited)
	}
	return u, nil
}

// AdminUpdateUser changes a user's email, password, metadata or
// confirmation as the tenant's administrator, in one write.
func (s *Service) AdminUpdateUser(ctx context.Context, t Tenant, c Client, id string, req AdminUserRequest) (*User, error) {
	if err := checkRoleChange(c, req.AppMetadata); err != nil {
		return nil, err
	}
	ch := userChange{
		UpdateUserRequest: UpdateUserRequest{Email: req.Email, Password: req.Password, Data: req.UserMetadata},
		appData:           req.AppMetadata, confirmEmail: req.EmailConfirm,
	}
	if req.BanDuration != nil {
		ch.ban = true
		if *req.BanDuration != "none" {
			d, err := time.ParseDuration(*req.BanDuration)
			if err != nil || d <= 0 {
				return nil, validationf("invalid format for ban duration: %q is not a duration such as \"24h\", or \"none\"", *req.BanDuration)
			}
			until := s.now().UTC().Add(d).Truncate(time.Microsecond)
			ch.bannedUntil = &until
		}
	}
	cur, err := s.GetUser(ctx, t, id)
	if err != nil {
		return nil, err
	}
	if cur.DeletedAt != nil {
		return nil, errAdminUserNotFound()
	}
	return s.updateUser(ctx, t, c, &Principal{User: cur}, ch)
}

// DeleteUser deletes a user with its identities, sessions and tokens; a
// soft delete (GoTrue's should_soft_delete) keeps the user's row, marked
// deleted, with its email, metadata and identities' provider ids replaced
// so that nothing of it signs in or blocks its address, as GoTrue does.
func (s *Service) DeleteUser(ctx context.Context, t Tenant, c Client, id string, soft bool) error {
	now := s.now().UTC()
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var email string
		if err := tx.QueryRow(`SELECT COALESCE(email, '') FROM users WHERE id = ? AND deleted_at IS NULL`, id).Scan(&email); err != nil {
			if errors.Is(err, engine.ErrNoRows) {
				return errAdminUserNotFound()
			}
			return err
		}
		if err := endSessions(tx, `user_id = ?`, id); err != nil {
			return err
		}
		ev := &event.Event{Type: event.UserDeleted, Actor: c.AdminActor(), Target: event.Target{ID: id, Email: email}, IP: c.IP, At: now}
		if soft {
			ts := now.UnixMicro()
			if _, err := tx.Exec(`UPDATE users SET email = ?, phone = NULL, encrypted_password = '', raw_app_meta_data = '{}',
				raw_user_meta_data = '{}', deleted_at = ?, updated_at = ? WHERE id = ?`, randomBase62(64), ts, ts, id); err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE identities SET provider_id = ?, email = NULL, identity_data = '{}', updated_at = ? WHERE user_id = ?`,
				randomBase62(64), ts, id); err != nil {
				return err
			}
			if _, err := tx.Exec(`DELETE FROM oauth_consents WHERE user_id = ?`, id); err != nil {
				return err
			}
			ev.Data = map[string]any{"soft": true}
			return s.record(tx, t, ev)
		}
		for _, q := range []string{`DELETE FROM identities WHERE user_id = ?`, `DELETE FROM oauth_consents WHERE user_id = ?`, `DELETE FROM users WHERE id = ?`} {
			if _, err := tx.Exec(q, id); err != nil {
				return err
			}
		}
		return s.record(tx, t, ev)
	})
	return writeError(err, engine.KindUnavailable)
}

// AuditEvent is one entry of the tenant's audit log.
type AuditEvent struct {
	ID        int64
	Action    string
	ActorID   *string
	Email     *string // the actor's
	IP        string
	Payload   json.RawMessage // a JSON object
	CreatedAt time.Time
}

// ListAudit returns a page of audit events, newest first.
func (s *Service) ListAudit(ctx context.Context, t Tenant, p Page) ([]AuditEvent, error) {
	limit, offset := p.norm()
	out := []AuditEvent{}
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT id, action, actor_id, actor_email, COALESCE(ip, ''), payload, created_at
			FROM audit_log ORDER BY id DESC LIMIT ? OFFSET ?`, limit, offset)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ev AuditEvent
			var payload string
			var at int64
			if err := rows.Scan(&ev.ID, &ev.Action, &ev.ActorID, &ev.Email, &ev.IP, &payload, &at); err != nil {
				return err
			}
			ev.Payload, ev.CreatedAt = json.RawMessage(payload), time.UnixMicro(at).UTC()
			out = append(out, ev)
		}
		return rows.Err()
	})
	return out, err
}

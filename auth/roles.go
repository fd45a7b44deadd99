package auth

import (
	"context"
	"errors"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
)

// Roles inside a tenant, kept in a user's app_metadata under OrgRoleKey
// and carried in its access tokens as the claim org_role. Owners and admins
// use the tenant's admin API with their own access token; members (and
// users without a role) cannot.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
	OrgRoleKey = "org_role"
)

// CodeNotAdmin is GoTrue's refusal of its admin API to a user's token
// without the admin role.
const CodeNotAdmin = "not_admin"

// OrgRole returns the user's role in its tenant, "" for none.
func OrgRole(u *User) string {
	m, err := objectMap(u.AppMetadata)
	if err != nil {
		return ""
	}
	r, _ := m[OrgRoleKey].(string)
	if !validRole(r) {
		return ""
	}
	return r
}

func validRole(r string) bool { return r == RoleOwner || r == RoleAdmin || r == RoleMember }

// IsOrgAdmin reports whether a role opens the tenant's admin API.
func IsOrgAdmin(role string) bool { return role == RoleOwner || role == RoleAdmin }

func errNotAdmin(msg string) *engine.Error {
	return newError(engine.KindForbidden, CodeNotAdmin, msg)
}

// checkRoleChange refuses an app_metadata change of org_role that the
// acting client may not make: only an owner (or the service key, or the
// platform) grants or takes away a role; an admin manages members' other
// fields.
func checkRoleChange(c Client, appData map[string]any) error {
	v, ok := appData[OrgRoleKey]
	if !ok {
		return nil
	}
	r, isStr := v.(string)
	if v != nil && (!isStr || !validRole(r)) {
		return validationf("app_metadata.%s must be owner, admin or member", OrgRoleKey)
	}
	if c.Actor.Kind == event.ActorUser && c.ActorRole != RoleOwner {
		return errNotAdmin("Only an owner of the tenant changes roles")
	}
	return nil
}

// AdminActor is the actor of an administrative action: the admin user acting
// with its token, else the service key.
func (c Client) AdminActor() event.Actor {
	if c.Actor.Kind != "" {
		return c.Actor
	}
	return event.Actor{Kind: event.ActorServiceKey}
}

// SetOrgRole gives the user with the email a role (the platform admin
// naming a tenant's first owner).
func (s *Service) SetOrgRole(ctx context.Context, t Tenant, c Client, email, role string) (*User, error) {
	if !validRole(role) {
		return nil, validationf("role must be owner, admin or member")
	}
	email = NormalizeEmail(email)
	var u *User
	now := s.now().UTC().Truncate(time.Microsecond)
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		cur, err := userByEmail(tx, email)
		if errors.Is(err, engine.ErrNoRows) {
			return errAdminUserNotFound()
		}
		if err != nil {
			return err
		}
		app, err := objectMap(cur.AppMetadata)
		if err != nil {
			return err
		}
		app[OrgRoleKey] = role
		ts := now.UnixMicro()
		if _, err := tx.Exec(`UPDATE users SET raw_app_meta_data = ?, updated_at = ? WHERE id = ?`, mustJSON(app), ts, cur.ID); err != nil {
			return err
		}
		if err := s.record(tx, t, &event.Event{Type: event.UserUpdated, Actor: c.AdminActor(), Target: event.Target{ID: cur.ID, Email: cur.Email},
			IP: c.IP, Data: map[string]any{"org_role": role}, At: now}); err != nil {
			return err
		}
		u, err = userByID(tx, cur.ID)
		return err
	})
	if err != nil {
		return nil, writeError(err, engine.KindUnavailable)
	}
	return u, nil
}

// Package event is the one seam through which a write says "this
// happened": a flow records a domain event inside the write that caused it,
// and the same transaction writes the event's audit row and, for the types
// a sink subscribes to, its rows in the tenant's outbox. The outbox is
// delivered later, at least once, by background workers (engine.Worker
// running an Outbox job); webhooks and mail are sinks.
//
// A new event type is a Type below, recorded by the flow where it happens.
package event

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Type is a kind of event. Name is what its outbox rows carry (a webhook's
// event name); Action is its audit log action, GoTrue's name for it. Two
// types may share a Name (a logout and a refresh token's reuse both revoke
// a session).
type Type struct {
	Name   string
	Action string
}

// The types of event Keyshard records.
var (
	UserCreated      = Type{"user.created", "user_signedup"}
	UserSignedIn     = Type{"user.signedin", "login"}
	UserSignInFailed = Type{"user.signin_failed", "login_failed"}
	UserUpdated      = Type{"user.updated", "user_modified"}
	UserDeleted      = Type{"user.deleted", "user_deleted"}
	SessionRefreshed = Type{"session.refreshed", "token_refreshed"}
	SessionRevoked   = Type{"session.revoked", "token_revoked"} // a refresh token reused: the session ended
	SessionLoggedOut = Type{"session.revoked", "logout"}
	ServiceKeyIssued = Type{"service_key.issued", "service_key_issued"}
	SettingsUpdated  = Type{"settings.updated", "settings_updated"}

	OAuthClientCreated       = Type{"oauth_client.created", "oauth_client_created"}
	OAuthClientUpdated       = Type{"oauth_client.updated", "oauth_client_updated"}
	OAuthClientSecretRotated = Type{"oauth_client.secret_rotated", "oauth_client_secret_rotated"}
	OAuthClientDeleted       = Type{"oauth_client.deleted", "oauth_client_deleted"}
	OAuthConsentGranted      = Type{"oauth.consent_granted", "oauth_consent_granted"}
	OAuthTokenIssued         = Type{"oauth.token_issued", "oauth_token_issued"} // a grant began: a code or device code exchanged
	OAuthGrantRevoked        = Type{"session.revoked", "oauth_grant_revoked"}   // revocation, code reuse, refresh token reuse
	OAuthDeviceApproved      = Type{"oauth.device_approved", "oauth_device_approved"}
	OAuthDeviceDenied        = Type{"oauth.device_denied", "oauth_device_denied"}

	PasswordChanged = Type{"password.changed", "user_updated_password"}

	// Mailed links and codes: requested (the address may have no account:
	// Data["unknown_address"]), and what following one did.
	UserConfirmationRequested = Type{"user.confirmation_requested", "user_confirmation_requested"}
	UserRecoveryRequested     = Type{"user.recovery_requested", "user_recovery_requested"}
	UserMagicLinkRequested    = Type{"user.magiclink_requested", "magiclink_requested"}
	UserInvited               = Type{"user.invited", "user_invited"}
	UserEmailChangeRequested  = Type{"user.email_change_requested", "user_email_change_requested"}
	UserReauthRequested       = Type{"user.reauthenticate_requested", "user_reauthenticate_requested"}
	UserEmailConfirmed        = Type{"user.email_confirmed", "user_confirmed"}

	// Upstream identity providers and identities.
	ProviderCreated      = Type{"identity_provider.created", "identity_provider_created"}
	ProviderUpdated      = Type{"identity_provider.updated", "identity_provider_updated"}
	ProviderDeleted      = Type{"identity_provider.deleted", "identity_provider_deleted"}
	IdentityLinked       = Type{"identity.linked", "identity_linked"}
	IdentityUnlinked     = Type{"identity.unlinked", "identity_unlinked"}
	WebhookCreated       = Type{"webhook.created", "webhook_created"}
	WebhookUpdated       = Type{"webhook.updated", "webhook_updated"}
	WebhookDeleted       = Type{"webhook.deleted", "webhook_deleted"}
	WebhookSecretRotated = Type{"webhook.secret_rotated", "webhook_secret_rotated"}
	WebhookTest          = Type{"webhook.test", "webhook_test"}
	WebhookDisabled      = Type{"webhook.disabled", "webhook_disabled"} // deliveries kept failing: an admin must look
)

// ActorKind says who did something.
type ActorKind string

// Actors.
const (
	ActorUser       ActorKind = "user"        // an end user, on their own behalf
	ActorServiceKey ActorKind = "service_key" // the tenant's administrator, with its service key
	ActorPlatform   ActorKind = "platform"    // the platform admin
)

// Actor is who caused an event.
type Actor struct {
	Kind  ActorKind
	ID    string // a user's id (ActorUser)
	Email string // a user's email, or the address a failed login named
}

// User returns the actor for an end user acting on their own behalf.
func User(id, email string) Actor { return Actor{Kind: ActorUser, ID: id, Email: email} }

// Target is what an event happened to: a user, for now.
type Target struct {
	ID    string
	Email string
}

// Event is something that happened in a tenant.
type Event struct {
	Type   Type
	Actor  Actor
	Target Target // zero when the actor acted on itself or on no user
	IP     string // the client's address
	Data   map[string]any
	At     time.Time
}

// newID returns a random event id, the idempotency key of its deliveries.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "evt_" + hex.EncodeToString(b[:])
}

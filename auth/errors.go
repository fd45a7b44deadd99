package auth

import (
	"fmt"

	"github.com/keyshard/keyshard/engine"
)

// Flows fail with *engine.Error: a kind, a stable code and a message fit
// for the client; the HTTP edge maps it to a status and GoTrue's shape.

func newError(kind engine.Kind, code, msg string) *engine.Error {
	return engine.NewError(kind, code, msg)
}

// GoTrue error codes used by Keyshard.
const (
	CodeInvalidCredentials   = "invalid_credentials"
	CodeUserAlreadyExists    = "user_already_exists"
	CodeEmailExists          = "email_exists"
	CodeWeakPassword         = "weak_password"
	CodeRefreshAlreadyUsed   = "refresh_token_already_used"
	CodeRefreshNotFound      = "refresh_token_not_found"
	CodeSessionNotFound      = "session_not_found"
	CodeSessionExpired       = "session_expired"
	CodeUserNotFound         = "user_not_found"
	CodeBadJWT               = "bad_jwt"
	CodeNoAuthorization      = "no_authorization"
	CodeValidationFailed     = "validation_failed"
	CodeOverRequestRateLimit = "over_request_rate_limit"
	CodeEmailNotConfirmed    = "email_not_confirmed"
	CodeUserBanned           = "user_banned"
	CodeAnonymousDisabled    = "anonymous_provider_disabled"
	CodeSignupDisabled       = "signup_disabled"
	CodeUnsupportedGrant     = "unsupported_grant_type"
	CodeServiceUnavailable   = "service_unavailable"

	CodeOverEmailSendRateLimit = "over_email_send_rate_limit"
	CodeOTPExpired             = "otp_expired"
	CodeFlowStateNotFound      = "flow_state_not_found"
	CodeFlowStateExpired       = "flow_state_expired"
	CodeBadCodeVerifier        = "bad_code_verifier"
	CodeReauthNeeded           = "reauthentication_needed"
	CodeReauthNotValid         = "reauthentication_not_valid"
	CodeEmailAddressInvalid    = "email_address_invalid"

	CodeProviderNotFound      = "provider_not_found"
	CodeProviderDisabled      = "provider_disabled"
	CodeBadOAuthState         = "bad_oauth_state"
	CodeBadOAuthCallback      = "bad_oauth_callback"
	CodeIdentityAlreadyExists = "identity_already_exists"
	CodeIdentityNotFound      = "identity_not_found"
	CodeSingleIdentity        = "single_identity_not_deletable"
	CodeManualLinkingDisabled = "manual_linking_disabled"
	CodeBadIDToken            = "bad_id_token"
)

var (
	errInvalidCredentials = func() *engine.Error {
		return newError(engine.KindInvalid, CodeInvalidCredentials, "Invalid login credentials")
	}
	errRefreshNotFound = func() *engine.Error {
		return newError(engine.KindInvalid, CodeRefreshNotFound, "Invalid Refresh Token: Refresh Token Not Found")
	}
	errRefreshAlreadyUsed = func() *engine.Error {
		return newError(engine.KindInvalid, CodeRefreshAlreadyUsed, "Invalid Refresh Token: Already Used")
	}
	errSessionNotFound = func() *engine.Error {
		return newError(engine.KindForbidden, CodeSessionNotFound, "Session from session_id claim in JWT does not exist")
	}
)

func validationf(format string, args ...any) *engine.Error {
	return newError(engine.KindInvalid, CodeValidationFailed, fmt.Sprintf(format, args...))
}

package auth

import (
	"fmt"
	"net/http"
	"time"
)

// Error is a failure of an auth flow the client can act on: an HTTP status,
// a GoTrue error code and a message fit for the client.
type Error struct {
	Status  int
	Code    string
	Message string
	// Reasons lists why a password is weak (weak_password only).
	Reasons []string
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter time.Duration
	// Err is the cause, if any; never shown to the client.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func newError(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
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
	CodeSignupDisabled       = "signup_disabled"
	CodeUnsupportedGrant     = "unsupported_grant_type"
)

var (
	errInvalidCredentials = func() *Error {
		return newError(http.StatusBadRequest, CodeInvalidCredentials, "Invalid login credentials")
	}
	errRefreshNotFound = func() *Error {
		return newError(http.StatusBadRequest, CodeRefreshNotFound, "Invalid Refresh Token: Refresh Token Not Found")
	}
	errRefreshAlreadyUsed = func() *Error {
		return newError(http.StatusBadRequest, CodeRefreshAlreadyUsed, "Invalid Refresh Token: Already Used")
	}
	errSessionNotFound = func() *Error {
		return newError(http.StatusForbidden, CodeSessionNotFound, "Session from session_id claim in JWT does not exist")
	}
)

func validationf(format string, args ...any) *Error {
	return newError(http.StatusBadRequest, CodeValidationFailed, fmt.Sprintf(format, args...))
}

package engine

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors that callers test with errors.Is. Backends wrap them with
// context; the HTTP edge maps each to one status and one stable error code.
var (
	// ErrTenantNotFound: no tenant has that slug or id.
	ErrTenantNotFound = errors.New("tenant not found")
	// ErrTenantSuspended: the tenant exists but is suspended; its data is kept.
	ErrTenantSuspended = errors.New("tenant suspended")
	// ErrTenantPending: the tenant was requested and not yet approved.
	ErrTenantPending = errors.New("tenant pending approval")
	// ErrOverloaded: a bounded queue or buffer is full; retry later.
	ErrOverloaded = errors.New("overloaded")
	// ErrBusy: the database lock was not obtained within the busy timeout.
	ErrBusy = errors.New("database busy")
	// ErrClosed: the shard or engine is closed or closing.
	ErrClosed = errors.New("closed")
	// ErrConflict: a unique value (slug, email, ...) is already taken.
	ErrConflict = errors.New("conflict")
	// ErrNoRows: a query that expects one row found none.
	ErrNoRows = errors.New("no rows")
	// ErrInvalid: the input is not acceptable; the wrapping message says why.
	ErrInvalid = errors.New("invalid input")
	// ErrUnavailable: the tenant's storage cannot be reached or is damaged.
	ErrUnavailable = errors.New("storage unavailable")
	// ErrMoving: the tenant is being moved (its writes are fenced) or has
	// just moved; retry shortly. It wraps ErrUnavailable.
	ErrMoving = fmt.Errorf("tenant is being moved, retry: %w", ErrUnavailable)
	// ErrFenced: the tenant's fencing token says another node owns it now
	// (several nodes sharing a catalog): this node's shard of it commits
	// nothing more. It wraps ErrUnavailable.
	ErrFenced = &Error{Kind: KindUnavailable, Code: "tenant_moving", Message: "the tenant has moved to another node, retry",
		RetryAfter: time.Second, Err: ErrUnavailable}
	// ErrNotOwner: another node owns the tenant (several nodes sharing a
	// catalog); the HTTP edge forwards its requests there. It wraps
	// ErrUnavailable.
	ErrNotOwner = &Error{Kind: KindUnavailable, Code: "tenant_moving", Message: "the tenant is served by another node, retry",
		RetryAfter: time.Second, Err: ErrUnavailable}
)

// Invalidf returns an error wrapping ErrInvalid with a message meant for the
// client (it must not contain secrets).
func Invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

// Kind is the class of a failure, in terms every protocol understands: the
// HTTP edge turns it into a status, an OAuth error or an HTML page. It says
// nothing of HTTP itself.
type Kind uint8

// Kinds of failure.
const (
	// KindInternal: a fault of the server; its cause is logged, not shown.
	KindInternal Kind = iota
	// KindInvalid: the request cannot succeed as sent (bad input, wrong
	// credentials, an unknown or spent token).
	KindInvalid
	// KindUnauthenticated: the request carries no credentials, or none this
	// server knows.
	KindUnauthenticated
	// KindForbidden: the credentials are known but do not allow this.
	KindForbidden
	// KindNotFound: what the request names does not exist.
	KindNotFound
	// KindConflict: the request contradicts the current state (a taken
	// name, a wrong lifecycle step).
	KindConflict
	// KindRefused: well formed, but a rule of the tenant refuses it (the
	// user exists, the password is weak, signups are closed).
	KindRefused
	// KindRateLimited: too many requests of this kind; retry after
	// Error.RetryAfter.
	KindRateLimited
	// KindUnavailable: the service cannot answer now; retry shortly.
	KindUnavailable
)

// Error is a failure a client can act on: its kind, a stable machine code
// (GoTrue's vocabulary where GoTrue has a name for it) and a message fit
// for the client. It carries no protocol detail; the HTTP edge maps it, in
// one function, to a status and each protocol's shape.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	// Reasons lists why a password is weak (weak_password only).
	Reasons []string
	// RetryAfter, when set, tells the client when to try again.
	RetryAfter time.Duration
	// Err is the cause, if any; never shown to the client.
	Err error
}

// NewError returns an Error of kind with a code and a client message.
func NewError(kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: code, Message: message}
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

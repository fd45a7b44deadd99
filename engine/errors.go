package engine

import (
	"errors"
	"fmt"
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
)

// Invalidf returns an error wrapping ErrInvalid with a message meant for the
// client (it must not contain secrets).
func Invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

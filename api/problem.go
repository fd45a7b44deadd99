package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
)

// Problem is an error as a client is told it: an HTTP status, a stable
// code, a message, and what a client needs to act on it. Every protocol's
// writer (GoTrue's two JSON shapes, the platform's, RFC 6749's, an HTML
// page) formats a Problem; none maps errors itself.
type Problem struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // 0: no Retry-After
	Reasons    []string      // weak_password only
}

// statusOf is the HTTP status of each kind of failure.
var statusOf = [...]int{
	engine.KindInternal:        http.StatusInternalServerError,
	engine.KindInvalid:         http.StatusBadRequest,
	engine.KindUnauthenticated: http.StatusUnauthorized,
	engine.KindForbidden:       http.StatusForbidden,
	engine.KindNotFound:        http.StatusNotFound,
	engine.KindConflict:        http.StatusConflict,
	engine.KindRefused:         http.StatusUnprocessableEntity,
	engine.KindRateLimited:     http.StatusTooManyRequests,
	engine.KindUnavailable:     http.StatusServiceUnavailable,
}

// ProblemOf maps an error to what the client is told. It is the one place
// where an error becomes a status and a code: an *engine.Error by its kind
// and code, the engine's sentinel errors by a fixed table, a body over its
// limit as 413; anything else is a 500 whose text is not shown. A 503 or
// 429 carries a Retry-After of at least a second.
func ProblemOf(err error) Problem {
	p := problemOf(err)
	if p.RetryAfter == 0 && (p.Status == http.StatusServiceUnavailable || p.Status == http.StatusTooManyRequests) {
		p.RetryAfter = time.Second
	}
	return p
}

func problemOf(err error) Problem {
	var ee *engine.Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ee):
		status := http.StatusInternalServerError
		if int(ee.Kind) < len(statusOf) {
			status = statusOf[ee.Kind]
		}
		return Problem{Status: status, Code: ee.Code, Message: ee.Message, RetryAfter: ee.RetryAfter, Reasons: ee.Reasons}
	case errors.As(err, &mbe):
		return Problem{Status: http.StatusRequestEntityTooLarge, Code: "request_too_large",
			Message: "request body is larger than " + size(mbe.Limit)}
	case errors.Is(err, engine.ErrInvalid):
		return Problem{Status: http.StatusBadRequest, Code: "validation_failed", Message: err.Error()}
	case errors.Is(err, engine.ErrTenantNotFound):
		return Problem{Status: http.StatusNotFound, Code: "tenant_not_found", Message: "no such tenant"}
	case errors.Is(err, engine.ErrTenantSuspended):
		return Problem{Status: http.StatusForbidden, Code: "tenant_suspended", Message: "this tenant is suspended"}
	case errors.Is(err, engine.ErrTenantPending):
		return Problem{Status: http.StatusForbidden, Code: "tenant_pending", Message: "this tenant is not approved yet"}
	case errors.Is(err, engine.ErrWrongStatus):
		return Problem{Status: http.StatusConflict, Code: "invalid_tenant_status", Message: err.Error()}
	case errors.Is(err, engine.ErrConflict):
		return Problem{Status: http.StatusConflict, Code: "conflict", Message: err.Error()}
	case errors.Is(err, engine.ErrOverloaded):
		return Problem{Status: http.StatusServiceUnavailable, Code: "overloaded", Message: "the server is overloaded, retry later"}
	case errors.Is(err, engine.ErrBusy):
		return Problem{Status: http.StatusServiceUnavailable, Code: "database_busy", Message: "the tenant's database is busy, retry later"}
	case errors.Is(err, migrations.ErrSchemaTooNew):
		return Problem{Status: http.StatusServiceUnavailable, Code: "tenant_unavailable", Message: "the tenant's data was written by a newer version"}
	case errors.Is(err, engine.ErrMoving):
		return Problem{Status: http.StatusServiceUnavailable, Code: "tenant_moving", Message: "the tenant is being moved, retry shortly"}
	case errors.Is(err, engine.ErrUnavailable):
		return Problem{Status: http.StatusServiceUnavailable, Code: "tenant_unavailable", Message: "the tenant's storage is unavailable"}
	case errors.Is(err, engine.ErrClosed):
		return Problem{Status: http.StatusServiceUnavailable, Code: "shutting_down", Message: "the server is shutting down"}
	case errors.Is(err, errBodyTimeout):
		return Problem{Status: http.StatusRequestTimeout, Code: "request_timeout", Message: "the request body did not arrive in time"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return Problem{Status: http.StatusServiceUnavailable, Code: "request_timeout", Message: "the request timed out"}
	}
	return Problem{Status: http.StatusInternalServerError, Code: "unexpected_failure", Message: "internal error"}
}

// size says a byte count as the limits are set: 1 MiB, 8 GiB.
func size(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + " " + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// Problem maps err for the response w is about to carry: it logs what the
// operator must see (an unknown error once, with the request id; a storage
// fault or a dead hash worker with its cause) and sets Retry-After. The
// caller then writes the Problem in its protocol's shape.
func (s *Server) Problem(w http.ResponseWriter, r *http.Request, err error) Problem {
	p := ProblemOf(err)
	rid := w.Header().Get("X-Request-Id")
	switch {
	case p.Status == http.StatusInternalServerError:
		s.Logger.Error("request failed", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", rid)
	case errors.Is(err, engine.ErrUnavailable):
		s.Logger.Warn("tenant storage unavailable", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", rid)
	case errors.Is(err, hash.ErrWorkerFailed):
		s.Logger.Error("password hash worker failed", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", rid)
	}
	if p.RetryAfter > 0 {
		secs := int((p.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	return p
}

// WriteError answers err in the platform's shape, {"code","message"}.
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	p := s.Problem(w, r, err)
	WriteJSON(w, p.Status, map[string]string{"code": p.Code, "message": p.Message})
}

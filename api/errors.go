package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
)

// apiError is an error with a status and a stable code chosen by a handler.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.message }

func errorf(status int, code, message string) error {
	return &apiError{status: status, code: code, message: message}
}

// errorStatus maps an error to its HTTP status, stable code and client
// message. Unknown errors are 500 with their text hidden.
func errorStatus(err error) (status int, code, message string) {
	var ae *apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.code, ae.message
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "request_too_large", "request body is larger than 1 MiB"
	case errors.Is(err, engine.ErrInvalid):
		return http.StatusBadRequest, "validation_failed", err.Error()
	case errors.Is(err, engine.ErrTenantNotFound):
		return http.StatusNotFound, "tenant_not_found", "no such tenant"
	case errors.Is(err, engine.ErrTenantSuspended):
		return http.StatusForbidden, "tenant_suspended", "this tenant is suspended"
	case errors.Is(err, engine.ErrTenantPending):
		return http.StatusForbidden, "tenant_pending", "this tenant is not approved yet"
	case errors.Is(err, engine.ErrWrongStatus):
		return http.StatusConflict, "invalid_tenant_status", err.Error()
	case errors.Is(err, engine.ErrConflict):
		return http.StatusConflict, "conflict", err.Error()
	case errors.Is(err, engine.ErrOverloaded):
		return http.StatusServiceUnavailable, "overloaded", "the server is overloaded, retry later"
	case errors.Is(err, engine.ErrBusy):
		return http.StatusServiceUnavailable, "database_busy", "the tenant's database is busy, retry later"
	case errors.Is(err, migrations.ErrSchemaTooNew):
		return http.StatusServiceUnavailable, "tenant_unavailable", "the tenant's data was written by a newer version"
	case errors.Is(err, engine.ErrMoving):
		return http.StatusServiceUnavailable, "tenant_moving", "the tenant is being moved, retry shortly"
	case errors.Is(err, engine.ErrUnavailable):
		return http.StatusServiceUnavailable, "tenant_unavailable", "the tenant's storage is unavailable"
	case errors.Is(err, engine.ErrClosed):
		return http.StatusServiceUnavailable, "shutting_down", "the server is shutting down"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "request_timeout", "the request timed out"
	}
	return http.StatusInternalServerError, "unexpected_failure", "internal error"
}

// writeError answers err as {"code","message"}; 5xx get Retry-After where a
// retry can help, and unknown errors are logged once with the request id.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := errorStatus(err)
	if status == http.StatusInternalServerError {
		s.Logger.Error("request failed", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
	}
	s.logFault(w, r, err)
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeErrorCode(w, status, code, msg)
}

// logFault logs a tenant's storage fault, or a password hash worker
// process that died, with its cause: the client's 503 says only that the
// service is unavailable, the operator needs to know why.
func (s *Server) logFault(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, engine.ErrUnavailable):
		s.Logger.Warn("tenant storage unavailable", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
	case errors.Is(err, hash.ErrWorkerFailed):
		s.Logger.Error("password hash worker failed", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
	}
}

func writeErrorCode(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}

// writeJSON encodes v before it writes the status, so that a value that
// cannot be encoded is a 500 with a JSON body rather than a 200 with none.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"code":"unexpected_failure","message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// decodeJSON reads a JSON object body into v, refusing unknown trailing data.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errorf(http.StatusBadRequest, "bad_json", "request body is empty")
		}
		return errorf(http.StatusBadRequest, "bad_json", "request body is not valid JSON: "+err.Error())
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "bad_json", "request body has data after the JSON value")
	}
	// More is false also when reading on failed: a valid value followed by
	// more than the limit of white space must still answer 413.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "bad_json", "request body could not be read")
	}
	return nil
}

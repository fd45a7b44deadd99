package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/auth"
)

// APIVersionHeader is sent by auth-js; when a request carries it, errors
// use GoTrue's newer shape {"code":"<error_code>","message":…}.
const APIVersionHeader = "X-Supabase-Api-Version"

// writeAuthError answers err in GoTrue's error shape: with the request's
// X-Supabase-Api-Version header {"code":"<error_code>","message":…}, else
// {"code":<status>,"error_code":…,"msg":…}; the x-sb-error-code header
// either way. Unknown errors are 500 with their text hidden and logged once.
func (s *Server) writeAuthError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *auth.Error
	var status int
	var code, msg string
	var reasons []string
	var retry time.Duration
	if errors.As(err, &ae) {
		status, code, msg, reasons, retry = ae.Status, ae.Code, ae.Message, ae.Reasons, ae.RetryAfter
	} else {
		status, code, msg = errorStatus(err)
		if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
			retry = time.Second
		}
	}
	if status == http.StatusInternalServerError {
		s.Logger.Error("request failed", "err", err, "method", r.Method, "route", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
	}
	s.logFault(w, r, err)
	if retry > 0 {
		secs := int((retry + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	w.Header().Set("X-Sb-Error-Code", code)
	body := map[string]any{}
	if r.Header.Get(APIVersionHeader) != "" {
		body["code"], body["message"] = code, msg
	} else {
		body["code"], body["error_code"], body["msg"] = status, code, msg
	}
	if code == auth.CodeWeakPassword {
		if reasons == nil {
			reasons = []string{}
		}
		body["weak_password"] = map[string]any{"reasons": reasons}
	}
	writeJSON(w, status, body)
}

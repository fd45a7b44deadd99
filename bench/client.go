package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Target is the server under load.
type Target struct {
	URL        string // base URL, e.g. http://127.0.0.1:8080
	AdminToken string // platform admin token (setup only)
	HTTP       *http.Client
}

// NewHTTPClient returns a client that keeps up to conns idle connections
// to one host: open-loop load must not pay a TCP handshake per request.
func NewHTTPClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// call sends one JSON request and returns the status and, for a 429 or
// 503, the Retry-After delay; when out is not nil and the answer is 2xx,
// the body is decoded into it. The body is always read to the end so that
// the connection is reused.
func (t *Target) call(ctx context.Context, method, path, bearer string, body []byte, out any) (int, time.Duration, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(t.URL, "/")+path, rd)
	if err != nil {
		return 0, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := t.HTTP.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	var retry time.Duration
	if res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable {
		if secs, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && secs > 0 {
			retry = time.Duration(secs) * time.Second
		}
	}
	if out != nil && res.StatusCode/100 == 2 {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			_, _ = io.Copy(io.Discard, res.Body)
			return res.StatusCode, retry, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, retry, nil
}

// mustCall is call for setup steps: any status other than want is an error
// that quotes the body.
func (t *Target) mustCall(ctx context.Context, method, path, bearer string, body any, want int, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	var rd io.Reader
	if b != nil {
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(t.URL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := t.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if res.StatusCode != want {
		return &StatusError{Method: method, Path: path, Status: res.StatusCode, Want: want, Body: string(bytes.TrimSpace(raw))}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// sessionBody is the part of a GoTrue session answer the load generator uses.
type sessionBody struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// StatusError is a setup request answered with an unexpected status.
type StatusError struct {
	Method, Path string
	Status, Want int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d, want %d: %s", e.Method, e.Path, e.Status, e.Want, e.Body)
}

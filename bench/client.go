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
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Target is the server under load.
type Target struct {
	URL        string       // base URL, e.g. http://127.0.0.1:8080
	AdminToken string       // platform admin token (setup only)
	HTTP       *http.Client // setup, OAuth flows, metrics; its Timeout also bounds measured requests

	fastOnce sync.Once
	fast     *fasthttp.Client // measured requests (call)
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
// the body is decoded into it. from, when not empty, is sent as
// X-Forwarded-For (Load.ClientAddresses).
//
// Measured requests go through fasthttp, not net/http: the generator shares
// the machine's cores with the server it measures, and net/http's client
// (a reader and a writer goroutine per connection, a request and header
// maps allocated per call) cost ≈ 34 µs of CPU per GET /user, as much as
// the server's answer. fasthttp sends and reads on the caller's goroutine
// and reuses its request and response objects. Setup and OAuth flows keep
// net/http (t.HTTP).
func (t *Target) call(method, path, bearer, from string, body []byte, out any) (int, time.Duration, error) {
	c := t.fastClient()
	req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.SetRequestURI(t.base() + path)
	req.Header.SetMethod(method)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	if err := c.DoTimeout(req, res, t.timeout()); err != nil {
		return 0, 0, err
	}
	status := res.StatusCode()
	var retry time.Duration
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		if secs, err := strconv.Atoi(string(res.Header.Peek("Retry-After"))); err == nil && secs > 0 {
			retry = time.Duration(secs) * time.Second
		}
	}
	if out != nil && status/100 == 2 {
		var err error
		if sb, ok := out.(*sessionBody); ok {
			err = decodeSession(res.Body(), sb)
		} else {
			err = json.Unmarshal(res.Body(), out)
		}
		if err != nil {
			return status, retry, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return status, retry, nil
}

// base is the target's URL without a trailing slash.
func (t *Target) base() string { return strings.TrimRight(t.URL, "/") }

// timeout bounds one measured request: the net/http client's, or 30 s.
func (t *Target) timeout() time.Duration {
	if t.HTTP != nil && t.HTTP.Timeout > 0 {
		return t.HTTP.Timeout
	}
	return 30 * time.Second
}

// fastClient returns the client of measured requests, made on first use.
func (t *Target) fastClient() *fasthttp.Client {
	t.fastOnce.Do(func() {
		t.fast = &fasthttp.Client{
			Name:               "keyshard-bench",
			MaxConnsPerHost:    maxBenchConns,
			MaxConnWaitTimeout: t.timeout(),
			ReadBufferSize:     16 << 10,
			DialDualStack:      true, // a target on [::1] as well as 127.0.0.1
			// Every request is sent once and counted as it ends: fasthttp
			// would otherwise re-send GET and PUT up to 5 times on any
			// connection error and report the last attempt, hiding errors
			// and stretching latencies.
			MaxIdemponentCallAttempts: 1,
			// Unlike net/http, fasthttp does not re-send a request that
			// met a keep-alive connection the server (or a proxy: nginx
			// keeps 75 s) had just closed; idle connections are dropped
			// well before any such timeout instead.
			MaxIdleConnDuration:    10 * time.Second,
			DisablePathNormalizing: true,
		}
	})
	return t.fast
}

// maxBenchConns bounds the connections of measured requests to one host,
// as NewHTTPClient's idle pool does for net/http: more clients than this
// wait for a free connection instead of failing.
const maxBenchConns = 4096

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
	req, err := http.NewRequestWithContext(ctx, method, t.base()+path, rd)
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

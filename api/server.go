// Package api is Keyshard's HTTP edge: one router with the middleware every
// route shares (request ids, body limits, metrics by route template), the
// one mapping of errors to what a client is told (ProblemOf), JSON in and
// out, and the resolution of /t/{tenant}. Each protocol is a sub-package
// that registers its routes on a Server and formats its own responses:
// api/gotrue (the GoTrue-compatible tenant API) and api/platform (the
// platform admin API); an OAuth provider or hosted pages go beside them.
package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyshard/keyshard/engine"
)

// MaxBodyBytes bounds every request body; larger bodies answer 413.
const MaxBodyBytes = 1 << 20

// Server is the router every protocol registers its routes on, with the
// engine whose tenants they serve. Create it with NewServer.
type Server struct {
	Engine *engine.Engine
	Logger *slog.Logger
	// BodyTimeout is the longest a request's body may take to arrive,
	// counted from the end of its headers (DefaultBodyTimeout when 0); a
	// route with a body limit of its own (an upload) gets it anew for every
	// read that makes progress instead. Past it the read fails and the
	// request is answered 408, so a client that stalls its body holds its
	// connection that long at most.
	BodyTimeout time.Duration
	// Origins is the CORS policy of tenants' routes; nil allows any origin
	// without credentials.
	Origins OriginPolicy

	router *httprouter.Router
}

// DefaultBodyTimeout is Server.BodyTimeout's default.
const DefaultBodyTimeout = 60 * time.Second

// NewServer returns a server with the routes every installation has:
// /healthz, /metrics and /t/{tenant}/health. A nil logger logs to
// slog.Default().
func NewServer(e *engine.Engine, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{Engine: e, Logger: log, router: httprouter.New()}
	// Routes match the decoded path, where "%2f" is a separator: a "fixed
	// path" redirect would turn /t/acme%2f..%2fx/… into a redirect to tenant
	// x. A path that is not a route is a 404.
	s.router.RedirectFixedPath = false
	s.router.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeCode(w, http.StatusNotFound, "not_found", "no such route")
	})
	s.router.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeCode(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
	})
	s.router.GlobalOPTIONS = http.HandlerFunc(s.handleOptions)
	s.router.PanicHandler = func(w http.ResponseWriter, r *http.Request, p any) {
		s.Logger.Error("handler panic", "panic", p, "path", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
		writeCode(w, http.StatusInternalServerError, "unexpected_failure", "internal error")
	}
	s.Handle(http.MethodGet, "/healthz", func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	metrics := promhttp.Handler()
	s.Handle(http.MethodGet, "/metrics", func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		metrics.ServeHTTP(w, r)
	})
	s.Handle(http.MethodGet, "/t/:tenant/health", s.handleTenantHealth)
	return s
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.router }

// writeCode answers the router's own refusals in the platform's shape.
func writeCode(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, map[string]string{"code": code, "message": msg})
}

var (
	httpRequests = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "keyshard_http_requests_total",
		Help: "HTTP requests by route template, method and status code.",
	}, []string{"route", "method", "code"})
	httpSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keyshard_http_request_duration_seconds",
		Help:    "HTTP request latency by route template.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	}, []string{"route", "method"})
)

// Handle registers h on route with the middleware every route has: request
// id, the MaxBodyBytes body limit, metrics labelled by the route template
// (never by tenant).
func (s *Server) Handle(method, route string, h httprouter.Handle) {
	s.HandleLimit(method, route, MaxBodyBytes, h)
}

// HandleLimit is Handle with a body limit of its own (uploads).
func (s *Server) HandleLimit(method, route string, limit int64, h httprouter.Handle) {
	seconds := httpSeconds.WithLabelValues(route, method)
	// Most answers are 200s: their counter is looked up once, when first
	// needed (a route never answered 200 shows no series).
	ok := sync.OnceValue(func() prometheus.Counter { return httpRequests.WithLabelValues(route, method, "200") })
	s.router.Handle(method, route, func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		start := time.Now()
		rid := r.Header.Get("X-Request-Id")
		if rid == "" || len(rid) > 128 {
			rid = newRequestID()
		}
		w.Header().Set("X-Request-Id", rid)
		if r.Body != nil && r.Body != http.NoBody {
			s.bodyDeadline(w, r, limit != MaxBodyBytes)
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r, ps)
		seconds.Observe(time.Since(start).Seconds())
		if sw.code == http.StatusOK {
			ok().Inc()
		} else {
			httpRequests.WithLabelValues(route, method, strconv.Itoa(sw.code)).Inc()
		}
	})
}

// bodyDeadline bounds the time the request's body may take: the whole body
// within BodyTimeout, or for an upload each read that makes progress.
func (s *Server) bodyDeadline(w http.ResponseWriter, r *http.Request, upload bool) {
	d := s.BodyTimeout
	if d <= 0 {
		d = DefaultBodyTimeout
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
		return // not a connection with deadlines (a test's recorder)
	}
	b := &timedBody{ReadCloser: r.Body, rc: rc}
	if upload {
		b.idle = d
	}
	r.Body = b
}

// errBodyTimeout marks a read of a request's body that passed the body
// deadline (ProblemOf answers 408), told apart from the timeouts of the
// server's own connections (a database's), which are 503s.
var errBodyTimeout = errors.New("the request body did not arrive in time")

// timedBody marks a read that passed the deadline, and for an upload
// (idle > 0) moves the deadline on after every read that returned data: an
// upload may take hours, but not stall for longer than idle.
type timedBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.idle > 0 {
		_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("%w: %w", errBodyTimeout, err)
	}
	return n, err
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

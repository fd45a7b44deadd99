// Package api is Keyshard's HTTP surface: the platform admin API, the
// per-tenant routes under /t/{tenant}, /healthz and /metrics.
package api

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/transfer"
)

// MaxBodyBytes bounds every request body; larger bodies answer 413.
const MaxBodyBytes = 1 << 20

// Server holds the engine and serves HTTP. Create it with fields set, then
// use Handler.
type Server struct {
	Engine     *engine.Engine
	AdminToken string // platform admin bearer token
	Logger     *slog.Logger
	// Auth serves the per-tenant end-user API; nil serves only /health.
	Auth *auth.Service
	// PublicURL is the server's external base URL (e.g. https://auth.example.com);
	// a tenant's token issuer is PublicURL/t/{slug}. Empty: taken from the request.
	PublicURL string
	// Transfer exports, imports and moves tenants; nil answers those
	// routes 501.
	Transfer *transfer.Service

	router *httprouter.Router
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.router == nil {
		s.router = httprouter.New()
		// Routes match the decoded path, where "%2f" is a separator: a
		// "fixed path" redirect would turn /t/acme%2f..%2fx/… into a
		// redirect to tenant x. A path that is not a route is a 404.
		s.router.RedirectFixedPath = false
		s.router.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeErrorCode(w, http.StatusNotFound, "not_found", "no such route")
		})
		s.router.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeErrorCode(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
		})
		s.router.PanicHandler = func(w http.ResponseWriter, r *http.Request, p any) {
			s.Logger.Error("handler panic", "panic", p, "path", r.URL.Path, "request_id", w.Header().Get("X-Request-Id"))
			writeErrorCode(w, http.StatusInternalServerError, "unexpected_failure", "internal error")
		}
		s.registerSystemRoutes()
		s.registerAdminRoutes()
		s.registerTenantRoutes()
		s.registerTransferRoutes()
	}
	return s.router
}

func (s *Server) registerSystemRoutes() {
	s.handle(http.MethodGet, "/healthz", func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	metrics := promhttp.Handler()
	s.handle(http.MethodGet, "/metrics", func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		metrics.ServeHTTP(w, r)
	})
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

// handle registers h on route with the common middleware: request id,
// body limit, metrics labelled by the route template (never by tenant).
func (s *Server) handle(method, route string, h httprouter.Handle) {
	s.handleLimit(method, route, MaxBodyBytes, h)
}

// handleLimit is handle with a body limit of its own (uploads).
func (s *Server) handleLimit(method, route string, limit int64, h httprouter.Handle) {
	seconds := httpSeconds.WithLabelValues(route, method)
	s.router.Handle(method, route, func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		start := time.Now()
		rid := r.Header.Get("X-Request-Id")
		if rid == "" || len(rid) > 128 {
			rid = newRequestID()
		}
		w.Header().Set("X-Request-Id", rid)
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r, ps)
		seconds.Observe(time.Since(start).Seconds())
		httpRequests.WithLabelValues(route, method, strconv.Itoa(sw.code)).Inc()
	})
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

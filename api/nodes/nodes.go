// Package nodes is the HTTP side of several nodes sharing a catalog: any
// node accepts any request and forwards a tenant's requests to the node
// that owns it (streaming both ways), with the client's address in a header
// that only another node can set; and GET /admin/nodes.
package nodes

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/cluster"
	"github.com/keyshard/keyshard/engine"
)

// Headers between nodes. A request carries them only when the node that
// forwarded it signed them with the key every node derives from the
// shared master key; any other request has them removed.
const (
	HeaderFrom   = "X-Keyshard-Forwarded-By"
	HeaderClient = "X-Keyshard-Client-Addr"
	HeaderSig    = "X-Keyshard-Forward-Sig"
)

var (
	forwarded = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "keyshard_forwarded_requests_total",
		Help: "Requests this node forwarded to a tenant's owner node, by outcome: ok, owner_unavailable, loop.",
	}, []string{"outcome"})
	forwardSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "keyshard_forward_duration_seconds",
		Help:    "Time of requests forwarded to the owner node, until the answer's headers.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
	})
)

// Forwarder wraps the API's handler on a node.
type Forwarder struct {
	Node   *cluster.Node
	Engine *engine.Engine
	// Key signs the headers between nodes (derived from the master key,
	// which every node shares to read the tenants' signing keys).
	Key []byte
	Log *slog.Logger

	proxy *httputil.ReverseProxy

	reloadMu   sync.Mutex
	lastReload time.Time
	seen       nonces // of node calls (internal.go)
}

// reloadAllowed rations the catalog reloads an unknown tenant may cause.
func (f *Forwarder) reloadAllowed() bool {
	f.reloadMu.Lock()
	defer f.reloadMu.Unlock()
	if time.Since(f.lastReload) < 100*time.Millisecond {
		return false
	}
	f.lastReload = time.Now()
	return true
}

type targetKey struct{}

// target is where a request is forwarded, and how long the owner's lease
// runs (the Retry-After if it does not answer).
type target struct {
	url       *url.URL
	leaseLeft time.Duration
	client    string // the client's address
}

// Wrap returns next behind the forwarder.
func (f *Forwarder) Wrap(next http.Handler) http.Handler {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.Proxy = nil // straight to the other node, never through an environment's proxy
	tr.DialContext = (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	// An owner that is paused or cut off answers nothing: a tenant's
	// request gets 503 node_unavailable then, not a wait without end. An
	// admin request (a move with its data, an export) may take longer.
	admin := tr.Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			tg := pr.In.Context().Value(targetKey{}).(target)
			pr.SetURL(tg.url)
			pr.Out.Host = pr.In.Host // the owner builds links from its own settings, never from Host
			// Set here, after the hop-by-hop headers (those a client names
			// in Connection too) were removed: a client cannot strip them.
			pr.Out.Header.Set(HeaderFrom, f.Node.Self())
			pr.Out.Header.Set(HeaderClient, tg.client)
			pr.Out.Header.Set(HeaderSig, f.signForward(f.Node.Self(), tg.client, pr.Out.Method, pr.Out.URL.RequestURI(), f.Node.CatalogNow()))
		},
		Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			if strings.HasPrefix(r.URL.Path, "/admin/") {
				return admin.RoundTrip(r)
			}
			return tr.RoundTrip(r)
		}),
		FlushInterval: -1, // stream: an export or an event stream is not held back
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			forwarded.WithLabelValues("owner_unavailable").Inc()
			f.Log.Warn("forward to owner node failed", "err", err, "path", r.URL.Path)
			// Until its lease lapses nobody else may serve the tenant.
			writeUnavailable(w, r.Context().Value(targetKey{}).(target).leaseLeft)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.serve(w, r, next)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// sign is an HMAC of the parts under the nodes' key.
func (f *Forwarder) sign(parts ...string) string {
	m := hmac.New(sha256.New, f.Key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// signForward is the signature of a forwarded request's headers: its time
// (unix seconds), then the HMAC of sender, client, time, method and URI,
// so that a header set seen on the wire cannot be replayed on another
// request or after a minute.
func (f *Forwarder) signForward(from, client, method, uri string, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return ts + "." + f.sign("keyshard-forward", from, client, ts, method, uri)
}

// forwardSigMaxAge bounds the age of a forwarded request's signature.
const forwardSigMaxAge = time.Minute

// checkForward verifies a forwarded request's signature.
func (f *Forwarder) checkForward(sig, from, client, method, uri string) bool {
	ts, _, ok := strings.Cut(sig, ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return false
	}
	if d := f.Node.CatalogNow().Sub(time.Unix(sec, 0)); d > forwardSigMaxAge || d < -forwardSigMaxAge {
		return false
	}
	return hmac.Equal([]byte(sig), []byte(f.signForward(from, client, method, uri, time.Unix(sec, 0))))
}

func (f *Forwarder) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	hop := false
	if sig := r.Header.Get(HeaderSig); sig != "" {
		from, client := r.Header.Get(HeaderFrom), r.Header.Get(HeaderClient)
		if net.ParseIP(client) != nil && f.checkForward(sig, from, client, r.Method, r.URL.RequestURI()) {
			r.RemoteAddr = net.JoinHostPort(client, "0")
			hop = true
		}
	}
	r.Header.Del(HeaderSig)
	r.Header.Del(HeaderFrom)
	r.Header.Del(HeaderClient)

	slug, ok := tenantOf(r.URL.Path)
	if !ok {
		next.ServeHTTP(w, r)
		return
	}
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/move") && strings.HasPrefix(r.URL.Path, "/admin/") {
		// A move to another node is a catalog change any node makes (the
		// owner may be the node that died); a move between backends runs
		// on the owner.
		// Read before the admin check, so bounded: 64 KiB within 10 s.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(10 * time.Second))
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		if err != nil || len(body) > 64<<10 {
			api.WriteJSON(w, http.StatusBadRequest, map[string]string{"code": "validation_failed", "message": "a move's body is a small JSON object that arrives at once"})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var m struct {
			Node string `json:"node"`
		}
		if json.Unmarshal(body, &m) == nil && m.Node != "" {
			// A tenant whose data is on its owner's disk moves from there.
			if t, err := f.Engine.Catalog.Resolve(r.Context(), slug); err != nil || cluster.Shared(t) || t.Node == f.Node.Self() {
				next.ServeHTTP(w, r)
				return
			}
		}
	}
	t, err := f.Engine.Catalog.Resolve(r.Context(), slug)
	if errors.Is(err, engine.ErrTenantNotFound) && f.reloadAllowed() {
		// Made a moment ago through another node, whose notification has
		// not arrived yet: read the catalog again (at most every 100 ms,
		// so that unknown names cannot make a node reload it in a loop).
		if rl, ok := f.Engine.Catalog.(interface{ Reload(context.Context) error }); ok && rl.Reload(r.Context()) == nil {
			t, err = f.Engine.Catalog.Resolve(r.Context(), slug)
		}
	}
	if err != nil || t.Node == "" || t.Node == f.Node.Self() {
		next.ServeHTTP(w, r)
		return
	}
	if hop {
		// One hop only: the node that forwarded it thinks this one owns
		// the tenant; one of the two has a stale catalog. Answer rather
		// than bounce it back.
		forwarded.WithLabelValues("loop").Inc()
		w.Header().Set("Retry-After", "1")
		api.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"code": "tenant_moving",
			"message": "the tenant is changing nodes, retry"})
		return
	}
	peer, ok := f.Node.Peer(r.Context(), t.Node)
	if !ok || peer.LeaseLeft <= 0 {
		// Its tenants wait until an operator (or --auto-failover) gives
		// them to a live node.
		forwarded.WithLabelValues("owner_unavailable").Inc()
		writeUnavailable(w, 5*time.Second)
		return
	}
	u, err := url.Parse(peer.Address)
	if err != nil {
		forwarded.WithLabelValues("owner_unavailable").Inc()
		writeUnavailable(w, 5*time.Second)
		return
	}
	out := r.WithContext(context.WithValue(r.Context(), targetKey{}, target{url: u, leaseLeft: peer.LeaseLeft, client: api.ClientOf(r).IP}))
	start := time.Now()
	f.proxy.ServeHTTP(&timing{ResponseWriter: w, start: start}, out)
	forwarded.WithLabelValues("ok").Inc()
}

// timing observes the time to the answer's headers.
type timing struct {
	http.ResponseWriter
	start time.Time
	done  bool
}

func (t *timing) WriteHeader(code int) {
	if !t.done {
		t.done = true
		forwardSeconds.Observe(time.Since(t.start).Seconds())
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *timing) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (t *timing) Unwrap() http.ResponseWriter { return t.ResponseWriter }

func writeUnavailable(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", itoa(int((retry+time.Second-1)/time.Second)))
	api.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"code": "node_unavailable",
		"message": "the node that serves this tenant is not answering, retry"})
}

func itoa(n int) string {
	if n < 1 {
		n = 1
	}
	b, _ := json.Marshal(n)
	return string(b)
}

// tenantOf returns the tenant a path names: /t/{slug}/… and
// /admin/tenants/{slug}[/…].
func tenantOf(path string) (string, bool) {
	var rest string
	switch {
	case strings.HasPrefix(path, "/t/"):
		rest = path[len("/t/"):]
	case strings.HasPrefix(path, "/admin/tenants/"):
		rest = path[len("/admin/tenants/"):]
	default:
		return "", false
	}
	slug, _, _ := strings.Cut(rest, "/")
	if slug == "" || (engine.ValidateSlug(slug) != nil && !engine.ValidTenantID(slug)) {
		return "", false
	}
	return slug, true
}

package nodes

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/transfer"
)

// HeaderNodeAuth authenticates a request of one node to another's
// /_node/ routes: the HMAC of the sender, method and path under the key
// every node derives from the master key.
const HeaderNodeAuth = "X-Keyshard-Node-Auth"

// HeaderNode names the node that sends such a request.
const HeaderNode = "X-Keyshard-Node"

// MaxStageBytes bounds a staged copy.
const MaxStageBytes = 64 << 30

// Headers of a node's call to another: the receiver's name, a nonce used
// once, and the SHA-256 of the body, all under the signature.
const (
	HeaderNodeTo    = "X-Keyshard-Node-To"
	HeaderNodeNonce = "X-Keyshard-Node-Nonce"
	HeaderBodySHA   = "X-Keyshard-Body-Sha256"
)

// nodeSig signs a node's call: dated by the catalog's clock, bound to the
// receiver, the nonce, the body's digest, the method and the URI.
func (f *Forwarder) nodeSig(from, to, nonce, bodySHA, method, uri string, at time.Time) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	return ts + "." + f.sign("node-internal", from, to, nonce, bodySHA, ts, method, uri)
}

// nonces remembers the nonces of node calls seen within a signature's
// validity, so that none is accepted twice.
type nonces struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (n *nonces) fresh(nonce string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	for k, at := range n.seen {
		if now.Sub(at) > 3*forwardSigMaxAge {
			delete(n.seen, k)
		}
	}
	if _, ok := n.seen[nonce]; ok || len(nonce) < 16 {
		return false
	}
	n.seen[nonce] = now
	return true
}

// checkNode verifies a node's call addressed to this node; the body's
// digest is checked by the caller (bodyChecked) once it has the body.
func (f *Forwarder) checkNode(r *http.Request) bool {
	from, to, nonce, sum, sig := r.Header.Get(HeaderNode), r.Header.Get(HeaderNodeTo), r.Header.Get(HeaderNodeNonce),
		r.Header.Get(HeaderBodySHA), r.Header.Get(HeaderNodeAuth)
	if from == "" || sig == "" || to != f.Node.Self() || len(sum) != 64 {
		return false
	}
	ts, _, ok := strings.Cut(sig, ".")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return false
	}
	now := f.Node.CatalogNow()
	if d := now.Sub(time.Unix(sec, 0)); d > forwardSigMaxAge || d < -forwardSigMaxAge {
		return false
	}
	if !hmac.Equal([]byte(sig), []byte(f.nodeSig(from, to, nonce, sum, r.Method, r.URL.RequestURI(), time.Unix(sec, 0)))) {
		return false
	}
	return f.seen.fresh(nonce, now)
}

// digestReader hashes what it reads and, at the end, fails unless the
// digest is want: a body that is not the signed one is refused.
type digestReader struct {
	r    io.Reader
	h    hash.Hash
	want string
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(d.h.Sum(nil)) != d.want {
		return n, engine.NewError(engine.KindUnauthenticated, "unauthorized", "the body is not the one signed")
	}
	return n, err
}

// RegisterInternal adds the routes other nodes use to move a tenant here,
// each refused without a node's signature.
func (f *Forwarder) RegisterInternal(srv *api.Server, in *transfer.Incoming) {
	auth := func(h httprouter.Handle) httprouter.Handle {
		return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
			if !f.checkNode(r) {
				srv.WriteError(w, r, engine.NewError(engine.KindUnauthenticated, "unauthorized", "only another node may call this"))
				return
			}
			r.Body = io.NopCloser(&digestReader{r: r.Body, h: sha256.New(), want: r.Header.Get(HeaderBodySHA)})
			h(w, r, ps)
		}
	}
	srv.HandleLimit(http.MethodPut, "/_node/tenants/:id/stage", MaxStageBytes, auth(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if err := in.Stage(r.Context(), ps.ByName("id"), r.Body); err != nil {
			srv.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.HandleLimit(http.MethodPost, "/_node/tenants/:id/replay", 256<<20, auth(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		raw, err := io.ReadAll(r.Body) // to its end: the digest is checked there
		if err != nil {
			srv.WriteError(w, r, err)
			return
		}
		var body []wireStmt
		if err := json.Unmarshal(raw, &body); err != nil {
			srv.WriteError(w, r, engine.Invalidf("statements: %v", err))
			return
		}
		stmts := make([]shard.Stmt, len(body))
		for i, ws := range body {
			st, err := ws.decode()
			if err != nil {
				srv.WriteError(w, r, err)
				return
			}
			stmts[i] = st
		}
		if err := in.Replay(r.Context(), ps.ByName("id"), stmts); err != nil {
			srv.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Handle(http.MethodPost, "/_node/tenants/:id/commit", auth(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		epoch, err := strconv.ParseInt(r.URL.Query().Get("epoch"), 10, 64)
		if err != nil || epoch < 1 {
			srv.WriteError(w, r, engine.Invalidf("epoch"))
			return
		}
		if err := in.Commit(r.Context(), ps.ByName("id"), epoch); err != nil {
			srv.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Handle(http.MethodGet, "/_node/tenants/:id/digests", auth(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		d, err := in.Digests(r.Context(), ps.ByName("id"))
		if err != nil {
			srv.WriteError(w, r, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, d)
	}))
	srv.Handle(http.MethodDelete, "/_node/tenants/:id/stage", auth(func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if err := in.Abort(r.Context(), ps.ByName("id")); err != nil {
			srv.WriteError(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

// wireStmt is a captured statement with typed arguments: JSON alone would
// turn an int64 into a float and bytes into a string.
type wireStmt struct {
	SQL     string    `json:"sql"`
	Args    []wireArg `json:"args"`
	Changed int64     `json:"changed"`
}

type wireArg struct {
	T string `json:"t"` // n(ull), i(nt), f(loat), s(tring), b(ytes)
	V string `json:"v,omitempty"`
}

func encodeStmt(st shard.Stmt) (wireStmt, error) {
	ws := wireStmt{SQL: st.SQL, Changed: st.Changed, Args: make([]wireArg, len(st.Args))}
	for i, a := range st.Args {
		var w wireArg
		// What the driver would bind: a Valuer's value, a pointer's target.
		if v, ok := a.(driver.Valuer); ok {
			var err error
			if a, err = v.Value(); err != nil {
				return ws, err
			}
		}
		if rv := reflect.ValueOf(a); a != nil && rv.Kind() == reflect.Pointer {
			if rv.IsNil() {
				a = nil
			} else {
				a = rv.Elem().Interface()
			}
		}
		switch v := a.(type) {
		case nil:
			w.T = "n"
		case int64:
			w.T, w.V = "i", strconv.FormatInt(v, 10)
		case int:
			w.T, w.V = "i", strconv.Itoa(v)
		case int32:
			w.T, w.V = "i", strconv.FormatInt(int64(v), 10)
		case bool:
			w.T, w.V = "i", "0"
			if v {
				w.V = "1"
			}
		case float64:
			w.T, w.V = "f", strconv.FormatFloat(v, 'g', -1, 64)
		case string:
			w.T, w.V = "s", v
		case []byte:
			if v == nil {
				w.T = "n" // bound as NULL, as the source bound it
			} else {
				w.T, w.V = "b", base64.StdEncoding.EncodeToString(v)
			}
		case time.Time:
			w.T, w.V = "s", v.Format(time.RFC3339Nano)
		default:
			return ws, fmt.Errorf("statement argument of type %T cannot be sent to another node", a)
		}
		ws.Args[i] = w
	}
	return ws, nil
}

func (ws wireStmt) decode() (shard.Stmt, error) {
	st := shard.Stmt{SQL: ws.SQL, Changed: ws.Changed, Args: make([]any, len(ws.Args))}
	for i, w := range ws.Args {
		switch w.T {
		case "n":
		case "i":
			n, err := strconv.ParseInt(w.V, 10, 64)
			if err != nil {
				return st, engine.Invalidf("argument %d: %v", i, err)
			}
			st.Args[i] = n
		case "f":
			x, err := strconv.ParseFloat(w.V, 64)
			if err != nil || math.IsNaN(x) {
				return st, engine.Invalidf("argument %d: bad float", i)
			}
			st.Args[i] = x
		case "s":
			st.Args[i] = w.V
		case "b":
			b, err := base64.StdEncoding.DecodeString(w.V)
			if err != nil {
				return st, engine.Invalidf("argument %d: %v", i, err)
			}
			st.Args[i] = b
		default:
			return st, engine.Invalidf("argument %d: unknown type %q", i, w.T)
		}
	}
	return st, nil
}

// Remote is another node as a transfer.RemoteNode, reached over HTTP.
type Remote struct {
	f       *Forwarder
	name    string
	address string
	client  *http.Client
}

var _ transfer.RemoteNode = (*Remote)(nil)

// Remote returns node name at address as a move's target.
func (f *Forwarder) Remote(name, address string) *Remote {
	tr := &http.Transport{
		Proxy:                 nil, // straight to the node, never through an environment's proxy
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 5 * time.Minute, // after the body: a stage's check, a digest of a large copy
		MaxIdleConnsPerHost:   4,
	}
	return &Remote{f: f, name: name, address: strings.TrimSuffix(address, "/"), client: &http.Client{Transport: tr}}
}

// Name is the node's name.
func (r *Remote) Name() string { return r.name }

func (r *Remote) call(ctx context.Context, method, path string, body io.Reader, size int64, sum string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.address+path, body)
	if err != nil {
		return err
	}
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	if sum == "" {
		sum = emptySHA
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	self := r.f.Node.Self()
	req.Header.Set(HeaderNode, self)
	req.Header.Set(HeaderNodeTo, r.name)
	req.Header.Set(HeaderNodeNonce, nonce)
	req.Header.Set(HeaderBodySHA, sum)
	req.Header.Set(HeaderNodeAuth, r.f.nodeSig(self, r.name, nonce, sum, method, path, r.f.Node.CatalogNow()))
	req.Header.Set("Content-Type", "application/json")
	res, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("node %s: %w: %w", r.name, err, engine.ErrUnavailable)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return fmt.Errorf("node %s: %s %s: %d %s", r.name, method, path, res.StatusCode, bytes.TrimSpace(msg))
	}
	if out != nil {
		return json.NewDecoder(res.Body).Decode(out)
	}
	return nil
}

var emptySHA = hex.EncodeToString(sha256.New().Sum(nil))

// Stage implements transfer.RemoteNode.
func (r *Remote) Stage(ctx context.Context, id string, file io.ReadSeeker, size int64) error {
	h := sha256.New()
	if _, err := io.Copy(h, file); err != nil {
		return err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return r.call(ctx, http.MethodPut, "/_node/tenants/"+id+"/stage", file, size, hex.EncodeToString(h.Sum(nil)), nil)
}

// Replay implements transfer.RemoteNode.
func (r *Remote) Replay(ctx context.Context, id string, stmts []shard.Stmt) error {
	wire := make([]wireStmt, len(stmts))
	for i, st := range stmts {
		ws, err := encodeStmt(st)
		if err != nil {
			return err
		}
		wire[i] = ws
	}
	b, err := json.Marshal(wire)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	return r.call(ctx, http.MethodPost, "/_node/tenants/"+id+"/replay", bytes.NewReader(b), int64(len(b)), hex.EncodeToString(sum[:]), nil)
}

// Commit implements transfer.RemoteNode.
func (r *Remote) Commit(ctx context.Context, id string, epoch int64) error {
	return r.call(ctx, http.MethodPost, "/_node/tenants/"+id+"/commit?epoch="+strconv.FormatInt(epoch, 10), nil, -1, "", nil)
}

// Digests implements transfer.RemoteNode.
func (r *Remote) Digests(ctx context.Context, id string) (map[string]transfer.Digest, error) {
	var d map[string]transfer.Digest
	err := r.call(ctx, http.MethodGet, "/_node/tenants/"+id+"/digests", nil, -1, "", &d)
	return d, err
}

// Abort implements transfer.RemoteNode.
func (r *Remote) Abort(ctx context.Context, id string) error {
	return r.call(ctx, http.MethodDelete, "/_node/tenants/"+id+"/stage", nil, -1, "", nil)
}

package nodes

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
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

// nodeSig signs a node's call as signForward signs a forwarded request
// (time, method and URI covered), in a namespace of its own.
func (f *Forwarder) nodeSig(from, method, uri string) string {
	return f.signForward("node-internal:"+from, "", method, uri, time.Now())
}

// RegisterInternal adds the routes other nodes use to move a tenant here,
// each refused without a node's signature.
func (f *Forwarder) RegisterInternal(srv *api.Server, in *transfer.Incoming) {
	auth := func(h httprouter.Handle) httprouter.Handle {
		return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
			from := r.Header.Get(HeaderNode)
			sig := r.Header.Get(HeaderNodeAuth)
			if from == "" || sig == "" || !f.checkForward(sig, "node-internal:"+from, "", r.Method, r.URL.RequestURI()) {
				srv.WriteError(w, r, engine.NewError(engine.KindUnauthenticated, "unauthorized", "only another node may call this"))
				return
			}
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
		var body []wireStmt
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
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
			w.T, w.V = "b", base64.StdEncoding.EncodeToString(v)
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
	return &Remote{f: f, name: name, address: strings.TrimSuffix(address, "/"), client: &http.Client{}}
}

// Name is the node's name.
func (r *Remote) Name() string { return r.name }

func (r *Remote) call(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, r.address+path, body)
	if err != nil {
		return err
	}
	if size >= 0 && body != nil {
		req.ContentLength = size
	}
	self := r.f.Node.Self()
	req.Header.Set(HeaderNode, self)
	req.Header.Set(HeaderNodeAuth, r.f.nodeSig(self, method, path))
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

// Stage implements transfer.RemoteNode.
func (r *Remote) Stage(ctx context.Context, id string, file io.Reader, size int64) error {
	return r.call(ctx, http.MethodPut, "/_node/tenants/"+id+"/stage", file, size, nil)
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
	return r.call(ctx, http.MethodPost, "/_node/tenants/"+id+"/replay", bytes.NewReader(b), int64(len(b)), nil)
}

// Commit implements transfer.RemoteNode.
func (r *Remote) Commit(ctx context.Context, id string, epoch int64) error {
	return r.call(ctx, http.MethodPost, "/_node/tenants/"+id+"/commit?epoch="+strconv.FormatInt(epoch, 10), nil, -1, nil)
}

// Digests implements transfer.RemoteNode.
func (r *Remote) Digests(ctx context.Context, id string) (map[string]transfer.Digest, error) {
	var d map[string]transfer.Digest
	err := r.call(ctx, http.MethodGet, "/_node/tenants/"+id+"/digests", nil, -1, &d)
	return d, err
}

// Abort implements transfer.RemoteNode.
func (r *Remote) Abort(ctx context.Context, id string) error {
	return r.call(ctx, http.MethodDelete, "/_node/tenants/"+id+"/stage", nil, -1, nil)
}

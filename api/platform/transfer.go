package platform

import (
	"net/http"
	"net/url"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/cluster"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/transfer"
)

// MaxImportBytes bounds the body of an import (an export file).
var MaxImportBytes int64 = 8 << 30

// registerTransferRoutes registers export, import and move, when the
// server has a transfer service.
func (a *API) registerTransferRoutes() {
	if a.transfer == nil {
		return
	}
	a.srv.Handle(http.MethodGet, "/admin/tenants/:tenant/export", a.admin(a.handleExportTenant))
	a.srv.Handle(http.MethodPost, "/admin/tenants/:tenant/move", a.admin(a.handleMoveTenant))
	a.srv.Handle(http.MethodGet, "/admin/tenants/:tenant/move", a.admin(a.handleMoveProgress))
	// POST /admin/tenants/import: httprouter cannot have "import" beside
	// the :tenant wildcard of /admin/tenants/:tenant/approve, so the
	// wildcard route takes it and refuses any other name.
	a.srv.HandleLimit(http.MethodPost, "/admin/tenants/:tenant", MaxImportBytes, a.admin(a.handleImportTenant))
}

// exportWriter sends the export's headers with its first byte, so that a
// failure before any byte is answered as a JSON error.
type exportWriter struct {
	w       http.ResponseWriter
	ctype   string
	name    string
	started bool
}

func (e *exportWriter) Write(p []byte) (int, error) {
	if !e.started {
		e.started = true
		h := e.w.Header()
		h.Set("Content-Type", e.ctype)
		h.Set("Content-Disposition", `attachment; filename="`+e.name+`"`)
		h.Set("Cache-Control", "no-store")
		e.w.WriteHeader(http.StatusOK)
	}
	return e.w.Write(p)
}

func (a *API) handleExportTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	svc := a.transfer
	q := r.URL.Query()
	o := transfer.ExportOptions{Format: q.Get("format")}
	if o.Format == "" {
		o.Format = transfer.FormatSQLite
	}
	var err error
	if o.IncludeSecrets, err = boolParam(q, "include_secrets"); err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	t, err := a.srv.Engine.Get(r.Context(), ps.ByName("tenant"))
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	ew := &exportWriter{w: w, ctype: "application/vnd.sqlite3", name: t.Slug + ".db"}
	if o.Format == transfer.FormatNDJSON {
		ew.ctype, ew.name = "application/x-ndjson", t.Slug+".ndjson"
	}
	if _, err := svc.Export(r.Context(), t.ID, ew, o); err != nil {
		if !ew.started {
			a.srv.WriteError(w, r, err)
			return
		}
		// Part of the file is out: cut the response short, so that the
		// client sees a truncated transfer (and an import refuses it).
		a.srv.Logger.Warn("export failed mid-stream", "tenant_id", t.ID, "err", err)
		panic(http.ErrAbortHandler)
	}
	a.logAction(r, "tenant exported", t.Slug, "tenant_id", t.ID, "format", o.Format, "include_secrets", o.IncludeSecrets)
}

func (a *API) handleImportTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if ps.ByName("tenant") != "import" {
		api.WriteJSON(w, http.StatusMethodNotAllowed, map[string]string{"code": "method_not_allowed", "message": "method not allowed on this route"})
		return
	}
	svc := a.transfer
	q := r.URL.Query()
	o := transfer.ImportOptions{Slug: q.Get("slug"), Name: q.Get("name"), Backend: q.Get("backend")}
	var err error
	if o.Approve, err = boolParam(q, "approve"); err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	res, err := svc.Import(r.Context(), r.Body, o)
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	if res.Tenant != nil && res.Tenant.Status == engine.StatusActive {
		// An export without secrets has no signing key: make one now.
		if err := a.ensureSigningKey(r.Context(), res.Tenant.ID); err != nil {
			a.srv.Logger.Warn("signing key not created at import; it will be at first use", "tenant_id", res.Tenant.ID, "err", err)
		}
	}
	if res.Tenant != nil {
		a.logAction(r, "tenant imported", res.Tenant.Slug, "tenant_id", res.Tenant.ID, "backend", res.Tenant.Backend, "format", res.Format, "status", res.Tenant.Status)
	}
	api.WriteJSON(w, http.StatusCreated, res)
}

type moveRequest struct {
	Backend  string `json:"backend"`
	Location string `json:"location"`
	// Node gives the tenant to another node (several nodes), without
	// copying: its storage must be where that node reaches it.
	Node string `json:"node"`
}

func (a *API) handleMoveTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	svc := a.transfer
	var req moveRequest
	if err := api.DecodeJSON(r, &req); err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	if req.Node != "" {
		if a.node == nil {
			a.srv.WriteError(w, r, engine.Invalidf("this server is not one of several nodes"))
			return
		}
		if req.Backend != "" || req.Location != "" {
			a.srv.WriteError(w, r, engine.Invalidf("a move names a node, or a backend and location, not both"))
			return
		}
		if t, err := a.srv.Engine.Get(r.Context(), ps.ByName("tenant")); err == nil && !cluster.Shared(t) && a.remote != nil && svc != nil {
			// On this node's disk: it goes with its data.
			to, err := a.remote(r.Context(), req.Node)
			if err != nil {
				a.srv.WriteError(w, r, err)
				return
			}
			res, err := svc.MoveToNode(r.Context(), t.ID, to)
			if err != nil {
				if res != nil && res.Tenant != nil {
					a.srv.Logger.Error("move to node not verified; old copy kept", "tenant_id", res.Tenant.ID, "err", err)
					api.WriteJSON(w, http.StatusOK, map[string]any{"tenant": res.Tenant, "result": res, "error": err.Error()})
					return
				}
				a.srv.WriteError(w, r, err)
				return
			}
			a.logAction(r, "tenant moved to node", res.Tenant.Slug, "tenant_id", res.Tenant.ID, "node", res.Tenant.Node, "fenced", res.Fenced)
			api.WriteJSON(w, http.StatusOK, map[string]any{"tenant": res.Tenant, "result": res})
			return
		}
		t, err := a.node.MoveTo(r.Context(), ps.ByName("tenant"), req.Node)
		if err != nil {
			a.srv.WriteError(w, r, err)
			return
		}
		a.logAction(r, "tenant moved to node", t.Slug, "tenant_id", t.ID, "node", t.Node, "epoch", t.Epoch)
		api.WriteJSON(w, http.StatusOK, map[string]any{"tenant": t})
		return
	}
	res, err := svc.Move(r.Context(), ps.ByName("tenant"), transfer.MoveOptions{Backend: req.Backend, Location: req.Location})
	if err != nil {
		if res != nil && res.Tenant != nil {
			// Moved, but the old copy could not be verified: it is kept.
			a.srv.Logger.Error("move not verified; old copy kept", "tenant_id", res.Tenant.ID, "err", err)
			api.WriteJSON(w, http.StatusOK, map[string]any{"result": res, "error": err.Error()})
			return
		}
		a.srv.WriteError(w, r, err)
		return
	}
	a.logAction(r, "tenant moved", res.Tenant.Slug, "tenant_id", res.Tenant.ID, "to", res.To.Backend, "fenced", res.Fenced)
	api.WriteJSON(w, http.StatusOK, res)
}

func (a *API) handleMoveProgress(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	svc := a.transfer
	t, err := a.srv.Engine.Get(r.Context(), ps.ByName("tenant"))
	if err != nil {
		a.srv.WriteError(w, r, err)
		return
	}
	p, ok := svc.MoveProgress(t.ID)
	api.WriteJSON(w, http.StatusOK, map[string]any{"moving": ok, "progress": p, "tenant": t})
}

// boolParam reads the query parameter name: true or 1, false or 0, or
// absent (false).
func boolParam(q url.Values, name string) (bool, error) {
	switch v := q.Get(name); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, engine.Invalidf("%s must be true or false, not %q", name, v)
	}
}

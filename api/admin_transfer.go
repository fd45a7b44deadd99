package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/transfer"
)

// MaxImportBytes bounds the body of an import (an export file).
var MaxImportBytes int64 = 8 << 30

func (s *Server) registerTransferRoutes() {
	s.handle(http.MethodGet, "/admin/tenants/:tenant/export", s.admin(s.handleExportTenant))
	s.handle(http.MethodPost, "/admin/tenants/:tenant/move", s.admin(s.handleMoveTenant))
	s.handle(http.MethodGet, "/admin/tenants/:tenant/move", s.admin(s.handleMoveProgress))
	// POST /admin/tenants/import: httprouter cannot have "import" beside
	// the :tenant wildcard of /admin/tenants/:tenant/approve, so the
	// wildcard route takes it and refuses any other name.
	s.handleLimit(http.MethodPost, "/admin/tenants/:tenant", MaxImportBytes, s.admin(s.handleImportTenant))
}

func (s *Server) transfer() (*transfer.Service, error) {
	if s.Transfer == nil {
		return nil, errorf(http.StatusNotImplemented, "not_implemented", "export, import and move are not configured on this server")
	}
	return s.Transfer, nil
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

func (s *Server) handleExportTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	svc, err := s.transfer()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	o := transfer.ExportOptions{Format: q.Get("format")}
	if o.Format == "" {
		o.Format = transfer.FormatSQLite
	}
	switch v := q.Get("include_secrets"); v {
	case "", "false", "0":
	case "true", "1":
		o.IncludeSecrets = true
	default:
		s.writeError(w, r, engine.Invalidf("include_secrets must be true or false, not %q", v))
		return
	}
	t, err := s.Engine.Get(r.Context(), ps.ByName("tenant"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ew := &exportWriter{w: w, ctype: "application/vnd.sqlite3", name: t.Slug + ".db"}
	if o.Format == transfer.FormatNDJSON {
		ew.ctype, ew.name = "application/x-ndjson", t.Slug+".ndjson"
	}
	if _, err := svc.Export(r.Context(), t.ID, ew, o); err != nil {
		if !ew.started {
			s.writeError(w, r, err)
			return
		}
		// Part of the file is out: cut the response short, so that the
		// client sees a truncated transfer (and an import refuses it).
		s.Logger.Warn("export failed mid-stream", "tenant_id", t.ID, "err", err)
		panic(http.ErrAbortHandler)
	}
}

func (s *Server) handleImportTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if ps.ByName("tenant") != "import" {
		writeErrorCode(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route")
		return
	}
	svc, err := s.transfer()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	res, err := svc.Import(r.Context(), r.Body, transfer.ImportOptions{Slug: q.Get("slug"), Name: q.Get("name"), Backend: q.Get("backend")})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErrorCode(w, http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("the import is larger than %d bytes", MaxImportBytes))
			return
		}
		s.writeError(w, r, err)
		return
	}
	if s.Auth != nil && res.Tenant != nil {
		// An export without secrets has no signing key: make one now.
		if err := s.ensureSigningKey(r.Context(), res.Tenant.ID); err != nil {
			s.Logger.Warn("signing key not created at import; it will be at first use", "tenant_id", res.Tenant.ID, "err", err)
		}
	}
	writeJSON(w, http.StatusCreated, res)
}

type moveRequest struct {
	Backend  string `json:"backend"`
	Location string `json:"location"`
}

func (s *Server) handleMoveTenant(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	svc, err := s.transfer()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req moveRequest
	if err := decodeJSON(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := svc.Move(r.Context(), ps.ByName("tenant"), transfer.MoveOptions{Backend: req.Backend, Location: req.Location})
	if err != nil {
		if res != nil && res.Tenant != nil {
			// Moved, but the old copy could not be verified: it is kept.
			s.Logger.Error("move not verified; old copy kept", "tenant_id", res.Tenant.ID, "err", err)
			writeJSON(w, http.StatusOK, map[string]any{"result": res, "error": err.Error()})
			return
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleMoveProgress(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	svc, err := s.transfer()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.Engine.Get(r.Context(), ps.ByName("tenant"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, ok := svc.MoveProgress(t.ID)
	writeJSON(w, http.StatusOK, map[string]any{"moving": ok, "progress": p, "tenant": t})
}

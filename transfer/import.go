package transfer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
)

// ImportOptions name the tenant an import creates.
type ImportOptions struct {
	// Slug of the new tenant; default the slug the file records.
	Slug string
	// Name of the new tenant; default the name the file records, or the slug.
	Name string
	// Backend of the new tenant; default the engine's default backend.
	Backend string
	// Approve makes the tenant active as soon as its data is in. Without
	// it the tenant follows the approval lifecycle like a requested one:
	// it waits, pending, for engine.ApproveTenant, which serves the
	// imported data.
	Approve bool
	// Progress, when set, is called as rows are copied.
	Progress func(Progress)
}

// ImportResult reports a finished import.
type ImportResult struct {
	Tenant       *engine.Tenant    `json:"tenant"`
	Format       string            `json:"format"`
	SchemaFrom   int               `json:"schema_version_in_file"`
	Tables       map[string]Digest `json:"tables"`
	SourceTenant *HeaderTenant     `json:"source_tenant,omitempty"`
}

// damagedf returns an error wrapping ErrDamaged (and so engine.ErrInvalid).
func damagedf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrDamaged)
}

var sqliteMagic = []byte("SQLite format 3\x00")

// Import creates a tenant from an export read from r, in either format
// (told apart by content). Everything is validated in a staging SQLite
// file first: the checksums, the schema version (an older one is migrated
// up; a newer one is refused), the tables and columns. Only then is the
// tenant created, its database filled and verified, and the tenant made
// active; on any failure nothing of it remains.
func (s *Service) Import(ctx context.Context, r io.Reader, o ImportOptions) (*ImportResult, error) {
	if o.Slug != "" {
		if err := engine.ValidateSlug(o.Slug); err != nil {
			return nil, err
		}
		if _, err := s.Engine.Get(ctx, o.Slug); err == nil {
			return nil, fmt.Errorf("slug %q is taken: %w", o.Slug, engine.ErrConflict)
		}
	}
	dir, err := os.MkdirTemp(s.tempDir(), "keyshard-import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "staging.db")
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(len(sqliteMagic))
	res := &ImportResult{}
	var h *Header
	switch {
	case bytes.Equal(head, sqliteMagic):
		res.Format = FormatSQLite
		h, res.SchemaFrom, err = stageSQLite(ctx, br, path)
	case len(bytes.TrimLeft(head, " \t\r\n")) > 0 && bytes.TrimLeft(head, " \t\r\n")[0] == '{':
		res.Format = FormatNDJSON
		h, res.SchemaFrom, err = stageNDJSON(ctx, br, path)
	case len(head) == 0:
		err = damagedf("the file is empty")
	default:
		err = damagedf("the file is neither a SQLite export nor an NDJSON export")
	}
	if err != nil {
		return nil, err
	}
	// Opening the staging file migrates it up to this binary's schema.
	files, err := s.fileStore()
	if err != nil {
		return nil, err
	}
	stage, err := files.OpenFile(ctx, path, true)
	if err != nil {
		if errors.Is(err, migrations.ErrSchemaTooNew) {
			return nil, fmt.Errorf("%w: %w", err, ErrDamaged)
		}
		return nil, fmt.Errorf("open the staged import: %w", err)
	}
	defer stage.Close()
	if h != nil && h.Digests != nil && res.SchemaFrom == SchemaVersion {
		if err := checkDigests(ctx, stage, h); err != nil {
			return nil, err
		}
	}
	if err := checkStoredJSON(ctx, stage); err != nil {
		return nil, err
	}
	// The fencing token belongs to the tenant's place in a catalog, not to
	// its data: the imported tenant starts unfenced.
	if err := stage.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`DELETE FROM fence`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO fence (id, epoch) VALUES (1, 0)`)
		return err
	}); err != nil {
		return nil, fmt.Errorf("reset the fencing token: %w", err)
	}
	if h != nil {
		res.SourceTenant = &h.Tenant
		if o.Slug == "" {
			o.Slug = h.Tenant.Slug
		}
		if o.Name == "" {
			o.Name = h.Tenant.Name
		}
	}
	if o.Slug == "" {
		return nil, engine.Invalidf("the file names no tenant: give the new tenant's slug")
	}
	if o.Name == "" {
		o.Name = o.Slug
	}
	// The tenant keeps its id when this server has no tenant with it (a
	// restore, a move between servers): its signing keys, sealed with the
	// master key for that id, keep working. A copy beside the original
	// gets a new id, and the keys it cannot unseal are left out; a new
	// one is made at first use.
	id := ""
	if h != nil && engine.ValidTenantID(h.Tenant.ID) {
		if _, err := s.Engine.Get(ctx, h.Tenant.ID); errors.Is(err, engine.ErrTenantNotFound) {
			id = h.Tenant.ID
		}
	}
	if id == "" {
		// A copy shares no live credential with its source: a refresh
		// token or the service key of the source opens nothing in it (users
		// sign in again with their passwords). Nor does it deliver again
		// the events its source had not delivered yet.
		if err := stage.Write(ctx, func(tx engine.Querier) error {
			for _, q := range []string{`DELETE FROM oauth_browser_sessions`, `DELETE FROM oauth_grants`, `DELETE FROM oauth_auth_requests`,
				`DELETE FROM oauth_device_codes`, `UPDATE oauth_clients SET secret_hash = ''`,
				`DELETE FROM one_time_tokens`, `DELETE FROM flow_states`, `DELETE FROM upstream_states`,
				`UPDATE identity_providers SET client_secret = NULL, enabled = 0`,
				`UPDATE webhook_endpoints SET enabled = 0, disabled_reason = 'imported as a copy: check the URL, then enable'`,
				`DELETE FROM refresh_tokens`, `DELETE FROM sessions`, `DELETE FROM outbox`, `DELETE FROM signing_keys`,
				`DELETE FROM settings WHERE "key" = 'service_key_sha256'`, `DELETE FROM settings WHERE "key" = 'smtp_pass'`} {
				if _, err := tx.Exec(q); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if id == "" {
		id = engine.NewTenantID()
	}
	// Registered before the row exists: a second import of the same id (a
	// restore) in this process is refused before it touches anything, and
	// the platform API refuses to delete the tenant while this one runs.
	if err := s.begin(id, &Progress{Tenant: o.Slug, Phase: "import"}); err != nil {
		return nil, err
	}
	defer s.end(id)
	t, err := s.createImporting(ctx, id, o.Slug, o.Name, o.Backend)
	if err != nil {
		return nil, err
	}
	res.Tenant = t
	if res.Tables, err = s.fill(ctx, t, stage, o.Approve, o.Progress); err != nil {
		if aerr := s.abandon(context.WithoutCancel(ctx), t); aerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the half-imported tenant: %w", aerr))
		}
		return nil, err
	}
	return res, nil
}

// abandon removes what a failed import made: its catalog row and its
// database, unless the row is no longer this import's. The tenant may have
// been deleted meanwhile (its database is then removed again, harmlessly)
// or deleted and imported anew under the same id by another process (the
// new tenant is then left alone; catalog.Update's created_at check already
// kept this import from changing it).
func (s *Service) abandon(ctx context.Context, t *engine.Tenant) error {
	cur, err := s.Engine.Get(ctx, t.ID)
	switch {
	case errors.Is(err, engine.ErrTenantNotFound):
	case err != nil:
		return err
	case cur.CreatedAt.UnixMicro() != t.CreatedAt.UnixMicro() || cur.Status != engine.StatusImporting:
		return nil
	default:
		if err := s.Engine.Catalog.Delete(ctx, t.ID); err != nil {
			return err
		}
	}
	st, err := s.storage(t.Backend)
	if err != nil {
		return err
	}
	return st.Destroy(ctx, t.Placement())
}

// createImporting records the tenant an import fills, in status importing
// (which nothing serves, approves or moves).
func (s *Service) createImporting(ctx context.Context, id, slug, name, backend string) (*engine.Tenant, error) {
	if err := engine.ValidateSlug(slug); err != nil {
		return nil, err
	}
	if err := engine.ValidateName(name); err != nil {
		return nil, err
	}
	if backend == "" {
		backend = s.Engine.DefaultBackend
	}
	if err := engine.ValidateBackend(backend); err != nil {
		return nil, err
	}
	if _, err := s.storage(backend); err != nil {
		return nil, err
	}
	t := &engine.Tenant{ID: id, Slug: slug, Name: name, Status: engine.StatusImporting, Backend: backend, Epoch: 1, Node: s.Engine.SelfNode()}
	if err := s.Engine.Catalog.Create(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

// fill copies the staged rows into the new tenant's database, verifies
// them, and makes the tenant pending with its data in place, or active when
// approve. On failure the caller abandons the tenant.
func (s *Service) fill(ctx context.Context, t *engine.Tenant, stage *shard.Shard, approve bool, progress func(Progress)) (_ map[string]Digest, err error) {
	st, err := s.storage(t.Backend)
	if err != nil {
		return nil, err
	}
	p := t.Placement()
	_ = st.Destroy(ctx, p) // nothing should be there; a crashed import may have left something
	if err := st.Create(ctx, p); err != nil {
		return nil, fmt.Errorf("create the tenant's database: %w", err)
	}
	dst, err := s.Backends.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	var rows int64
	c := &copier{src: stage, srcBackend: engine.BackendSQLite, dst: dst, progress: func(table string, n int64) {
		rows += n
		if progress != nil {
			progress(Progress{Tenant: t.Slug, Phase: "import", Table: table, Rows: rows})
		}
	}}
	_, err = c.round(ctx)
	var d map[string]Digest
	if err == nil {
		d, err = c.verifyIndex(ctx, t.Backend)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	t.Status, t.ImportedAt = engine.StatusPending, &now
	if approve {
		// Events the source had not delivered are delivered from here:
		// mark the tenant before it can be served (engine.WorkMarks). A
		// pending tenant is marked when it is approved.
		if marks, ok := s.Engine.Catalog.(engine.WorkMarks); ok && d["outbox"].Rows > 0 {
			if err := marks.MarkWork(ctx, t.ID, time.Now()); err != nil {
				return nil, err
			}
		}
		t.Status, t.ApprovedAt = engine.StatusActive, &now
	}
	if err := s.Engine.Catalog.Update(ctx, t, t.Epoch); err != nil {
		return nil, err
	}
	return d, nil
}

// checkDigests compares the staged tables with the digests the export
// recorded; a table the export left out must be empty.
func checkDigests(ctx context.Context, stage engine.Shard, h *Header) error {
	got, err := Digests(ctx, stage, engine.BackendSQLite)
	if err != nil {
		return err
	}
	for _, t := range Tables {
		want, ok := h.Digests[t.Name]
		if !ok {
			want = (&digester{}).digest()
		}
		if got[t.Name] != want {
			return damagedf("table %s: %d rows with checksum %s, the export recorded %d rows with checksum %s",
				t.Name, got[t.Name].Rows, got[t.Name].Sum, want.Rows, want.Sum)
		}
	}
	return nil
}

// stageSQLite spools a SQLite export to path and checks that it is an
// intact shard of a known schema version, and returns its header (nil for
// a plain shard file) and schema version.
// storedJSON lists the columns whose text the auth API passes through to
// responses and tokens as JSON objects: a row must hold a JSON object,
// null, or nothing.
var storedJSON = []struct{ table, column string }{
	{"users", "raw_app_meta_data"}, {"users", "raw_user_meta_data"}, {"identities", "identity_data"},
}

// checkStoredJSON refuses an import whose JSON columns hold anything else:
// served as is, such text would answer every read of the user with a 500.
func checkStoredJSON(ctx context.Context, stage engine.Shard) error {
	return stage.Read(engine.LongRead(ctx), func(q engine.Querier) error {
		for _, c := range storedJSON {
			var n int64
			var example string
			err := q.QueryRow(`SELECT count(*), COALESCE(MIN(id), '') FROM "`+c.table+`" WHERE NOT (
				"`+c.column+`" IS NULL OR trim("`+c.column+`", ' '||char(9, 10, 13)) = ''
				OR CASE WHEN json_valid("`+c.column+`") THEN json_type("`+c.column+`") IN ('object', 'null') ELSE 0 END)`).Scan(&n, &example)
			if err != nil {
				return err
			}
			if n > 0 {
				return damagedf("%d rows of %s have a %s that is not a JSON object (id %s, for one)", n, c.table, c.column, example)
			}
		}
		return nil
	})
}

func stageSQLite(ctx context.Context, r io.Reader, path string) (*Header, int, error) {
	if err := spool(r, path); err != nil {
		return nil, 0, err
	}
	db, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READWRITE|sqlite3.OPEN_NOFOLLOW)
	if err != nil {
		return nil, 0, damagedf("not a readable SQLite file: %v", err)
	}
	defer db.Close()
	var problems []string
	err = query(db, "PRAGMA integrity_check", func(st *sqlite3.Stmt) { problems = append(problems, st.ColumnText(0)) })
	if err != nil {
		return nil, 0, damagedf("the SQLite file is damaged: %v", err)
	}
	if len(problems) != 1 || problems[0] != "ok" {
		if len(problems) > 3 {
			problems = problems[:3]
		}
		return nil, 0, damagedf("the SQLite file is damaged: %v", problems)
	}
	var version int
	if err := query(db, "PRAGMA user_version", func(st *sqlite3.Stmt) { version = st.ColumnInt(0) }); err != nil {
		return nil, 0, damagedf("the SQLite file is damaged: %v", err)
	}
	latest, err := migrations.Latest(migrations.DialectSQLite)
	if err != nil {
		return nil, 0, err
	}
	if version > latest {
		return nil, version, fmt.Errorf("the file has schema version %d, this Keyshard knows up to %d: %w: %w", version, latest, migrations.ErrSchemaTooNew, ErrDamaged)
	}
	tables := map[string]bool{}
	err = query(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'", func(st *sqlite3.Stmt) {
		tables[st.ColumnText(0)] = true
	})
	if err != nil {
		return nil, 0, damagedf("the SQLite file is damaged: %v", err)
	}
	if version == 0 {
		return nil, 0, damagedf("the SQLite file is not a Keyshard shard (no schema version)")
	}
	// A shard has no triggers or views: a file from elsewhere must not
	// bring code that runs when its rows are read or changed.
	var extra []string
	err = query(db, "SELECT type || ' ' || name FROM sqlite_master WHERE type IN ('trigger', 'view')", func(st *sqlite3.Stmt) {
		extra = append(extra, st.ColumnText(0))
	})
	if err != nil {
		return nil, 0, damagedf("the SQLite file is damaged: %v", err)
	}
	if len(extra) > 0 {
		return nil, 0, damagedf("the SQLite file has %v, which a Keyshard shard does not have", extra)
	}
	known, err := schemaTables(version)
	if err != nil {
		return nil, 0, err
	}
	for name := range tables {
		if name != metaTable && known[name] == nil {
			return nil, 0, damagedf("the SQLite file has a table %q that a Keyshard shard of schema version %d does not have", name, version)
		}
	}
	for name := range known {
		if !tables[name] {
			return nil, 0, damagedf("the SQLite file is not a Keyshard shard: table %q is missing", name)
		}
	}
	var h *Header
	if tables[metaTable] {
		var raw string
		if err := query(db, "SELECT value FROM "+metaTable+" WHERE key = 'header'", func(st *sqlite3.Stmt) { raw = st.ColumnText(0) }); err != nil {
			return nil, 0, damagedf("the export header is unreadable: %v", err)
		}
		h = &Header{}
		if err := jsonStrict([]byte(raw), h); err != nil || h.Format != "keyshard-sqlite" {
			return nil, 0, damagedf("the export header is damaged")
		}
		if h.Version > 1 {
			return nil, 0, damagedf("the export format version %d is newer than this Keyshard knows (1)", h.Version)
		}
		if h.SchemaVersion != version {
			return nil, 0, damagedf("the export header says schema version %d, the file has %d", h.SchemaVersion, version)
		}
		if err := db.Exec("DROP TABLE " + metaTable); err != nil {
			return nil, 0, err
		}
	}
	return h, version, nil
}

// schemaTables returns the tables of a shard at a schema version, with
// their columns, by applying the migrations up to it to an empty database.
func schemaTables(version int) (map[string]map[string]bool, error) {
	ms, err := migrations.List(migrations.DialectSQLite)
	if err != nil {
		return nil, err
	}
	db, err := sqlite3.Open(":memory:")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for _, m := range ms[:version] {
		if err := db.Exec(m.SQL); err != nil {
			return nil, fmt.Errorf("migration %d: %w", m.Version, err)
		}
	}
	return tableColumns(db)
}

func tableColumns(db *sqlite3.Conn) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	var names []string
	err := query(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'", func(st *sqlite3.Stmt) {
		names = append(names, st.ColumnText(0))
	})
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		cols := map[string]bool{}
		if err := query(db, "SELECT name FROM pragma_table_info('"+n+"')", func(st *sqlite3.Stmt) { cols[st.ColumnText(0)] = true }); err != nil {
			return nil, err
		}
		out[n] = cols
	}
	return out, nil
}

// query runs a statement on a direct connection and calls fn per row.
func query(db *sqlite3.Conn, q string, fn func(*sqlite3.Stmt)) error {
	st, _, err := db.Prepare(q)
	if err != nil {
		return err
	}
	defer st.Close()
	for st.Step() {
		fn(st)
	}
	return st.Err()
}

// spool copies r into a new file at path and syncs it.
func spool(r io.Reader, path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		_ = f.Close()
		return fmt.Errorf("read the import: %w", err)
	}
	return f.Close()
}

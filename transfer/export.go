package transfer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
)

// Export formats.
const (
	FormatSQLite = "sqlite"
	FormatNDJSON = "ndjson"
)

// NDJSON format identification; see docs/export-format.md.
const (
	NDJSONFormat  = "keyshard-ndjson"
	NDJSONVersion = 1
)

// metaTable is the table an exported SQLite file carries its Header in.
const metaTable = "keyshard_export"

// ExportOptions choose an export's format and content.
type ExportOptions struct {
	Format         string // sqlite (default) or ndjson
	IncludeSecrets bool   // password hashes, signing keys (still encrypted), refresh token hashes, the service key hash
}

// Header describes an export: the first line of an NDJSON export, the
// keyshard_export table of a SQLite export.
type Header struct {
	Format         string            `json:"format"`  // keyshard-ndjson or keyshard-sqlite
	Version        int               `json:"version"` // of the format
	SchemaVersion  int               `json:"schema_version"`
	Tenant         HeaderTenant      `json:"tenant"`
	ExportedAt     time.Time         `json:"exported_at"`
	IncludeSecrets bool              `json:"include_secrets"`
	Tables         []HeaderTable     `json:"tables"`
	Digests        map[string]Digest `json:"checksums,omitempty"` // SQLite format: per table
}

// HeaderTenant is the exported tenant.
type HeaderTenant struct {
	ID      string `json:"id"`
	Slug    string `json:"slug"`
	Name    string `json:"name"`
	Backend string `json:"backend"`
}

// HeaderTable lists a table's columns in the order rows carry them.
type HeaderTable struct {
	Name    string         `json:"name"`
	Columns []HeaderColumn `json:"columns"`
}

// HeaderColumn is one column: name and type (integer, text, blob).
type HeaderColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Trailer is the last line of an NDJSON export.
type Trailer struct {
	End    bool              `json:"end"`
	Tables map[string]Digest `json:"tables"`
	// SHA256 is the hex SHA-256 of every byte of the file before this line.
	SHA256 string `json:"sha256"`
}

// rowLine is one row of an NDJSON export.
type rowLine struct {
	Table string            `json:"table"`
	Row   []json.RawMessage `json:"row"`
}

// exported returns the tables an export holds and filters a row: false
// drops it, and secret columns are emptied.
func exported(includeSecrets bool) ([]Table, func(t *Table, r Row) bool) {
	var ts []Table
	for _, t := range Tables {
		if t.Secret && !includeSecrets {
			continue
		}
		ts = append(ts, t)
	}
	return ts, func(t *Table, r Row) bool {
		if includeSecrets {
			return true
		}
		if t.Name == "settings" {
			if k, _ := r[0].(string); secretSettings[k] {
				return false
			}
		}
		for i, c := range t.Columns {
			if c.Secret && r[i] != nil {
				r[i] = emptyOf(c.Kind)
			}
		}
		return true
	}
}

func emptyOf(k Kind) any {
	switch k {
	case KindInt:
		return int64(0)
	case KindBlob:
		return []byte{}
	}
	return ""
}

func headerTables(ts []Table) []HeaderTable {
	out := make([]HeaderTable, len(ts))
	for i, t := range ts {
		out[i].Name = t.Name
		for _, c := range t.Columns {
			out[i].Columns = append(out[i].Columns, HeaderColumn{Name: c.Name, Type: c.Kind.String()})
		}
	}
	return out
}

// Export writes the tenant's data to w in the chosen format, from one
// consistent snapshot taken while writes continue, and returns the
// export's header (with per-table digests). Only an active or suspended
// tenant can be exported.
func (s *Service) Export(ctx context.Context, slugOrID string, w io.Writer, o ExportOptions) (*Header, error) {
	if o.Format == "" {
		o.Format = FormatSQLite
	}
	if o.Format != FormatSQLite && o.Format != FormatNDJSON {
		return nil, engine.Invalidf("unknown export format %q (want sqlite or ndjson)", o.Format)
	}
	t, err := s.Engine.Get(ctx, slugOrID)
	if err != nil {
		return nil, err
	}
	src, release, err := s.readShard(ctx, t)
	if err != nil {
		return nil, err
	}
	defer release()
	h := &Header{SchemaVersion: SchemaVersion, ExportedAt: time.Now().UTC().Truncate(time.Second),
		IncludeSecrets: o.IncludeSecrets, Tenant: HeaderTenant{ID: t.ID, Slug: t.Slug, Name: t.Name, Backend: t.Backend}}
	if o.Format == FormatNDJSON {
		return h, writeNDJSON(ctx, src, t.Backend, w, h)
	}
	return h, s.writeSQLite(ctx, src, t, w, h)
}

// readShard returns a shard to read the tenant from: its pinned shard when
// active; the database of a suspended tenant, or of an imported one waiting
// for approval, is opened outside the cache.
func (s *Service) readShard(ctx context.Context, t *engine.Tenant) (engine.Shard, func(), error) {
	switch t.Status {
	case engine.StatusActive:
		ts, err := s.Engine.Tenant(ctx, t.ID)
		if err != nil {
			return nil, nil, err
		}
		return ts, ts.Release, nil
	case engine.StatusSuspended, engine.StatusPending:
		if !t.HasDatabase() {
			break // requested, nothing created yet
		}
		sh, err := s.Backends.Open(ctx, t.Placement())
		if err != nil {
			return nil, nil, err
		}
		return sh, func() { _ = sh.Close() }, nil
	}
	return nil, nil, fmt.Errorf("tenant %s is %s: nothing to export: %w", t.Slug, t.Status, engine.ErrWrongStatus)
}

// writeNDJSON streams a snapshot of src as NDJSON.
func writeNDJSON(ctx context.Context, src engine.Shard, backend string, w io.Writer, h *Header) error {
	h.Format, h.Version = NDJSONFormat, NDJSONVersion
	tables, keep := exported(h.IncludeSecrets)
	h.Tables = headerTables(tables)
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 64<<10)
	line, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := bw.Write(append(line, '\n')); err != nil {
		return err
	}
	tr := Trailer{End: true, Tables: make(map[string]Digest)}
	err = Snapshot(ctx, src, backend, func(q engine.Querier) error {
		var buf, hb []byte
		for i := range tables {
			t := &tables[i]
			var d digester
			err := scanTable(ctx, q, t, true, func(r Row) error {
				if !keep(t, r) {
					return nil
				}
				var rh rowHash
				rh, hb = hashRow(hb, r)
				d.add(rh)
				buf = appendRowLine(buf[:0], t, r)
				_, err := bw.Write(buf)
				return err
			})
			if err != nil {
				return err
			}
			tr.Tables[t.Name] = d.digest()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	tr.SHA256 = hex.EncodeToString(sum.Sum(nil))
	line, err = json.Marshal(tr)
	if err != nil {
		return err
	}
	_, err = w.Write(append(line, '\n'))
	return err
}

// appendRowLine appends {"table":T,"row":[...]} and a newline.
func appendRowLine(b []byte, t *Table, r Row) []byte {
	b = append(b, `{"table":"`...)
	b = append(b, t.Name...)
	b = append(b, `","row":[`...)
	for i, v := range r {
		if i > 0 {
			b = append(b, ',')
		}
		switch x := v.(type) {
		case nil:
			b = append(b, "null"...)
		case int64:
			b = strconv.AppendInt(b, x, 10)
		case string:
			j, _ := json.Marshal(x)
			b = append(b, j...)
		case []byte:
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, x)
			b = append(b, '"')
		}
	}
	return append(b, "]}\n"...)
}

// writeSQLite writes a snapshot of src as a SQLite shard file to w: with
// the backend's own snapshot when its files are that format (VACUUM INTO),
// otherwise copied row by row from one read transaction into a new file.
// Secrets are then removed (secure_delete overwrites them) and the header
// added.
func (s *Service) writeSQLite(ctx context.Context, src engine.Shard, t *engine.Tenant, w io.Writer, h *Header) error {
	h.Format, h.Version = "keyshard-sqlite", 1
	dir, err := os.MkdirTemp(s.tempDir(), "keyshard-export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "export.db")
	files, err := s.fileStore()
	if err != nil {
		return err
	}
	own, snapshotted := s.Backends[t.Backend].(shard.FileStore)
	if snapshotted {
		if err := own.SnapshotFile(ctx, src, path); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
	}
	stage, err := files.OpenFile(ctx, path, false)
	if err != nil {
		return fmt.Errorf("open export file: %w", err)
	}
	defer stage.Close()
	if !snapshotted {
		c := &copier{src: src, srcBackend: t.Backend, dst: stage, noIndex: true}
		if _, err := c.round(ctx); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
	}
	tables, _ := exported(h.IncludeSecrets)
	h.Tables = headerTables(tables)
	if !h.IncludeSecrets {
		if err := scrub(ctx, stage); err != nil {
			return fmt.Errorf("remove secrets: %w", err)
		}
	}
	d, err := Digests(ctx, stage, engine.BackendSQLite)
	if err != nil {
		return err
	}
	h.Digests = make(map[string]Digest)
	for _, t := range tables {
		h.Digests[t.Name] = d[t.Name]
	}
	meta, err := json.Marshal(h)
	if err != nil {
		return err
	}
	err = stage.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`CREATE TABLE ` + metaTable + ` (key TEXT PRIMARY KEY, value TEXT NOT NULL)`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO `+metaTable+` (key, value) VALUES ('header', ?)`, string(meta))
		return err
	})
	if err != nil {
		return err
	}
	if !h.IncludeSecrets {
		// A fresh copy holds no freed page where a secret could linger.
		clean := filepath.Join(dir, "export-clean.db")
		err := stage.Read(engine.LongRead(ctx), func(q engine.Querier) error {
			_, err := q.Exec("VACUUM INTO ?", clean)
			return err
		})
		if err != nil {
			return err
		}
		path = clean
	}
	if err := stage.Close(); err != nil { // checkpoints the WAL into the file
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// scrub removes what an export without secrets must not hold; the caller
// then copies the file with VACUUM INTO so that no freed page remains.
func scrub(ctx context.Context, stage *shard.Shard) error {
	return stage.Write(ctx, func(tx engine.Querier) error {
		for _, t := range Tables {
			if t.Secret {
				if _, err := tx.Exec("DELETE FROM " + t.Name); err != nil {
					return err
				}
			}
		}
		for k := range secretSettings {
			if _, err := tx.Exec(`DELETE FROM settings WHERE "key" = ?`, k); err != nil {
				return err
			}
		}
		for _, t := range Tables {
			for _, c := range t.Columns {
				if c.Secret {
					if _, err := tx.Exec("UPDATE "+t.Name+" SET "+c.Name+" = ?", emptyOf(c.Kind)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

package transfer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/migrations"
)

// maxLine bounds one NDJSON line (a row with its JSON documents).
const maxLine = 16 << 20

// jsonStrict decodes one JSON value, refusing unknown fields and trailing data.
func jsonStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// line is any line after the header: a row, or the trailer.
type line struct {
	Table  string            `json:"table"`
	Row    []json.RawMessage `json:"row"`
	End    bool              `json:"end"`
	Tables map[string]Digest `json:"tables"`
	SHA256 string            `json:"sha256"`
}

// stagedTable is a table being loaded: its header columns, their kinds,
// the insert statement and the digest of the rows read.
type stagedTable struct {
	cols  []HeaderColumn
	kinds []Kind
	stmt  *sqlite3.Stmt
	d     digester
}

// stageNDJSON reads an NDJSON export into a new SQLite file at path with
// the file's schema version, checking every line, the per-table checksums
// and the file checksum, and returns its header and schema version.
func stageNDJSON(ctx context.Context, r *bufio.Reader, path string) (h *Header, version int, err error) {
	sum := sha256.New()
	next := func() ([]byte, error) {
		b, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			var long []byte
			long = append(long, b...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxLine {
				b, err = r.ReadSlice('\n')
				long = append(long, b...)
			}
			if len(long) > maxLine {
				return nil, damagedf("a line is longer than %d bytes", maxLine)
			}
			b = long
		}
		if errors.Is(err, io.EOF) {
			if len(b) == 0 {
				return nil, io.EOF
			}
			return nil, damagedf("the file is truncated (its last line is incomplete)")
		}
		return b, err
	}
	first, err := next()
	if errors.Is(err, io.EOF) {
		return nil, 0, damagedf("the file is empty")
	}
	if err != nil {
		return nil, 0, err
	}
	sum.Write(first)
	h = &Header{}
	if err := jsonStrict(first, h); err != nil {
		return nil, 0, damagedf("the first line is not an export header: %v", err)
	}
	if h.Format != NDJSONFormat {
		return nil, 0, damagedf("the file's format is %q, not %q", h.Format, NDJSONFormat)
	}
	if h.Version < 1 || h.Version > NDJSONVersion {
		return nil, 0, damagedf("the file has NDJSON format version %d; this Keyshard reads version %d", h.Version, NDJSONVersion)
	}
	latest, err := migrations.Latest(migrations.DialectSQLite)
	if err != nil {
		return nil, 0, err
	}
	version = h.SchemaVersion
	if version > latest {
		return nil, version, fmt.Errorf("the file has schema version %d, this Keyshard knows up to %d: %w: %w", version, latest, migrations.ErrSchemaTooNew, ErrDamaged)
	}
	if version < 1 {
		return nil, version, damagedf("the file has no schema version")
	}

	db, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READWRITE|sqlite3.OPEN_CREATE|sqlite3.OPEN_NOFOLLOW)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	ms, err := migrations.List(migrations.DialectSQLite)
	if err != nil {
		return nil, 0, err
	}
	for _, m := range ms[:version] {
		if err := db.Exec(m.SQL); err != nil {
			return nil, 0, fmt.Errorf("staging schema %d: %w", m.Version, err)
		}
	}
	if err := db.Exec(fmt.Sprintf("PRAGMA user_version=%d", version)); err != nil {
		return nil, 0, err
	}
	schema, err := tableColumns(db)
	if err != nil {
		return nil, 0, err
	}
	tables := map[string]*stagedTable{}
	defer func() {
		for _, t := range tables {
			_ = t.stmt.Close()
		}
	}()
	for _, ht := range h.Tables {
		cols, ok := schema[ht.Name]
		if !ok {
			return nil, 0, damagedf("the header lists a table %q that schema version %d does not have", ht.Name, version)
		}
		if tables[ht.Name] != nil {
			return nil, 0, damagedf("the header lists table %q twice", ht.Name)
		}
		st := &stagedTable{cols: ht.Columns}
		names := make([]string, len(ht.Columns))
		for i, c := range ht.Columns {
			if !cols[c.Name] {
				return nil, 0, damagedf("table %s has no column %q in schema version %d", ht.Name, c.Name, version)
			}
			k, ok := kindOf(c.Type)
			if !ok {
				return nil, 0, damagedf("column %s.%s has unknown type %q", ht.Name, c.Name, c.Type)
			}
			st.kinds = append(st.kinds, k)
			names[i] = c.Name
		}
		q := "INSERT INTO " + ht.Name + " (" + strings.Join(names, ", ") + ") VALUES (" +
			strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ") + ")"
		if st.stmt, _, err = db.Prepare(q); err != nil {
			return nil, 0, err
		}
		tables[ht.Name] = st
	}

	if err := db.Exec("BEGIN"); err != nil {
		return nil, 0, err
	}
	var tr *line
	row := make(Row, 0, 32)
	var hb []byte
	for n := 2; ; n++ {
		b, err := next()
		if errors.Is(err, io.EOF) {
			if tr != nil {
				break
			}
			return nil, 0, damagedf("the file is truncated (no trailer line)")
		}
		if err != nil {
			return nil, 0, err
		}
		if tr != nil {
			return nil, 0, damagedf("line %d: data after the trailer", n)
		}
		var l line
		if err := jsonStrict(b, &l); err != nil {
			return nil, 0, damagedf("line %d is not valid: %v", n, err)
		}
		if l.End {
			tr = &l
			continue
		}
		sum.Write(b)
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		st := tables[l.Table]
		if st == nil {
			if _, known := TableByName(l.Table); known {
				return nil, 0, damagedf("line %d: a row of table %q, which the header does not list", n, l.Table)
			}
			return nil, 0, damagedf("line %d: unknown table %q", n, l.Table)
		}
		if len(l.Row) != len(st.cols) {
			return nil, 0, damagedf("line %d: %d values, table %s has %d columns", n, len(l.Row), l.Table, len(st.cols))
		}
		row = row[:0]
		for i, raw := range l.Row {
			v, err := decodeJSONValue(st.kinds[i], raw)
			if err != nil {
				return nil, 0, damagedf("line %d: column %s: %v", n, st.cols[i].Name, err)
			}
			if err := bindValue(st.stmt, i+1, v); err != nil {
				return nil, 0, err
			}
			row = append(row, v)
		}
		if err := st.stmt.Exec(); err != nil {
			return nil, 0, damagedf("line %d: row refused: %v", n, err)
		}
		var rh rowHash
		rh, hb = hashRow(hb, row)
		st.d.add(rh)
	}
	if tr.SHA256 != hex.EncodeToString(sum.Sum(nil)) {
		return nil, 0, damagedf("the file checksum does not match its content")
	}
	for name, st := range tables {
		if got, want := st.d.digest(), tr.Tables[name]; got != want {
			return nil, 0, damagedf("table %s: %d rows with checksum %s, the trailer records %d rows with checksum %s", name, got.Rows, got.Sum, want.Rows, want.Sum)
		}
	}
	for name := range tr.Tables {
		if tables[name] == nil {
			return nil, 0, damagedf("the trailer lists table %q that the header does not", name)
		}
	}
	var bad int
	if err := query(db, "PRAGMA foreign_key_check", func(*sqlite3.Stmt) { bad++ }); err != nil {
		return nil, 0, err
	}
	if bad > 0 {
		return nil, 0, damagedf("%d rows refer to rows the file does not have", bad)
	}
	if err := db.Exec("COMMIT"); err != nil {
		return nil, 0, err
	}
	return h, version, nil
}

func kindOf(typ string) (Kind, bool) {
	switch typ {
	case "integer":
		return KindInt, true
	case "text":
		return KindText, true
	case "blob":
		return KindBlob, true
	}
	return 0, false
}

func decodeJSONValue(k Kind, raw json.RawMessage) (any, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	switch k {
	case KindInt:
		return strconv.ParseInt(string(raw), 10, 64)
	case KindText:
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case KindBlob:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return base64.StdEncoding.DecodeString(s)
	}
	return nil, fmt.Errorf("unknown kind")
}

func bindValue(st *sqlite3.Stmt, i int, v any) error {
	switch x := v.(type) {
	case nil:
		return st.BindNull(i)
	case int64:
		return st.BindInt64(i, x)
	case string:
		return st.BindText(i, x)
	case []byte:
		return st.BindBlob(i, x)
	}
	return fmt.Errorf("cannot bind %T", v)
}

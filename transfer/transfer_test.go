package transfer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard/sqlite"
	"github.com/keyshard/keyshard/transfer"
)

func (e *env) export(slug, format string, secrets bool) []byte {
	e.tb.Helper()
	var buf bytes.Buffer
	if _, err := e.Svc.Export(context.Background(), slug, &buf, transfer.ExportOptions{Format: format, IncludeSecrets: secrets}); err != nil {
		e.tb.Fatalf("export %s as %s: %v", slug, format, err)
	}
	return buf.Bytes()
}

func TestTables_MatchSchema(t *testing.T) {
	// The table list must describe the latest schema exactly.
	latest, err := migrations.Latest(sqlite.Dialect)
	if err != nil {
		t.Fatal(err)
	}
	if latest != transfer.SchemaVersion {
		t.Fatalf("schema version %d, transfer.Tables describe %d: update transfer/schema.go", latest, transfer.SchemaVersion)
	}
	e := newEnv(t)
	e.tenant("acme", engine.BackendSQLite)
	ts, err := e.App.Engine.Tenant(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Release()
	err = ts.Read(context.Background(), func(q engine.Querier) error {
		// pragma_table_list, not sqlite_master: a read may run on a writer
		// whose connection has the shard attached (shard/sqlite/hosts.go),
		// where sqlite_master is its empty main database's.
		rows, err := q.Query(`SELECT t.name, p.name FROM pragma_table_list t, pragma_table_info(t.name, t.schema) p
			WHERE t.type = 'table' AND t.schema != 'temp' AND t.name NOT LIKE 'sqlite_%' ORDER BY t.name, p.cid`)
		if err != nil {
			return err
		}
		defer rows.Close()
		got := map[string][]string{}
		for rows.Next() {
			var tbl, col string
			if err := rows.Scan(&tbl, &col); err != nil {
				return err
			}
			if !slices.Contains(transfer.NotCopied, tbl) {
				got[tbl] = append(got[tbl], col)
			}
		}
		want := map[string][]string{}
		for _, tb := range transfer.Tables {
			for _, c := range tb.Columns {
				want[tb.Name] = append(want[tb.Name], c.Name)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("schema %v\ntransfer.Tables %v", got, want)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestService_ExportImport(t *testing.T) {
	e := newEnv(t)
	e.tenant("acme", engine.BackendSQLite)
	other := e.tenant("other", engine.BackendSQLite)
	e.seed("acme", 150)
	e.seed("other", 50)
	want := e.digests("acme")
	for _, format := range []string{transfer.FormatSQLite, transfer.FormatNDJSON} {
		for _, backend := range e.backends() {
			t.Run(format+"/to="+backend, func(t *testing.T) {
				b := e.export("acme", format, true)
				// Nothing of another tenant.
				for _, s := range []string{"other.example", "other-user", other.ID, "kid-other"} {
					if contains(b, s) {
						t.Fatalf("export of acme contains %q of tenant other", s)
					}
				}
				slug := "copy-" + format + "-" + backend
				res, err := e.Svc.Import(context.Background(), bytes.NewReader(b), transfer.ImportOptions{Slug: slug, Backend: backend})
				if err != nil {
					t.Fatal(err)
				}
				// The import waits for approval with its data in place;
				// approval serves that data, it does not start afresh.
				if res.Format != format || res.Tenant.Status != engine.StatusPending || res.Tenant.ImportedAt == nil || res.Tenant.Backend != backend {
					t.Fatalf("import result %+v", res)
				}
				if _, err := e.App.Engine.Tenant(context.Background(), slug); !errors.Is(err, engine.ErrTenantPending) {
					t.Fatalf("the pending import is served: %v", err)
				}
				// Approval must not create the database again: on a server
				// backend, Create's failure path drops the namespace.
				st := e.App.Engine.Backends[backend]
				e.App.Engine.Backends[backend] = noCreate{st}
				tn, err := e.App.Engine.ApproveTenant(context.Background(), slug)
				e.App.Engine.Backends[backend] = st
				if err != nil || tn.Status != engine.StatusActive {
					t.Fatalf("approve the import: %+v %v", tn, err)
				}
				// A copy beside the original gets a new id: the signing
				// keys, sealed for the original's id, are left out.
				if res.Tenant.ID == res.SourceTenant.ID {
					t.Fatalf("the copy took the id of the original")
				}
				got := e.digests(slug)
				if got["signing_keys"].Rows != 0 {
					t.Fatalf("signing keys of another id were imported")
				}
				// Nor the events the original has yet to deliver, nor any
				// live credential of it: sessions, refresh tokens, the
				// service key (the other settings come along).
				for _, tb := range []string{"outbox", "sessions", "refresh_tokens"} {
					if got[tb].Rows != 0 {
						t.Fatalf("a copy took %d rows of the original's %s", got[tb].Rows, tb)
					}
				}
				if got["settings"].Rows != want["settings"].Rows-1 || e.count(slug, `SELECT count(*) FROM settings WHERE "key" = 'service_key_sha256'`) != 0 {
					t.Fatalf("the copy's settings: %v rows, want %v without the service key", got["settings"].Rows, want["settings"].Rows-1)
				}
				if w := copied(want); !equal(copied(got), w) {
					t.Fatalf("imported content differs:\n got %v\nwant %v", copied(got), w)
				}
				// And back out: the same export, byte for byte in NDJSON
				// apart from the header.
				if format == transfer.FormatNDJSON {
					again := e.export(slug, format, true)
					if a, b := rowLines(again), rowLines(e.export("acme", format, true)); !bytes.Equal(copiedLines(a), copiedLines(b)) {
						t.Fatalf("re-export differs")
					}
				}
			})
		}
		t.Run(format+"/WithoutSecrets", func(t *testing.T) {
			b := e.export("acme", format, false)
			for _, s := range []string{"$argon2id", "encrypted-private-acme", "deadbeef", "hash-acme-user"} {
				if contains(b, s) {
					t.Fatalf("export without secrets contains %q", s)
				}
			}
			if !contains(b, "user7@acme.example") {
				t.Fatalf("export without secrets lacks the users")
			}
			slug := "nosecrets-" + format
			if _, err := e.Svc.Import(context.Background(), bytes.NewReader(b), transfer.ImportOptions{Slug: slug, Approve: true}); err != nil {
				t.Fatal(err)
			}
			got := e.digests(slug)
			for _, tb := range []string{"identities", "audit_log"} {
				if got[tb] != want[tb] {
					t.Errorf("table %s: %v, want %v", tb, got[tb], want[tb])
				}
			}
			if got["refresh_tokens"].Rows != 0 || got["sessions"].Rows != 0 || got["signing_keys"].Rows != 0 || got["users"].Rows != want["users"].Rows {
				t.Errorf("without secrets: %v", got)
			}
			if n := e.count(slug, "SELECT count(*) FROM users WHERE encrypted_password != ''"); n != 0 {
				t.Errorf("%d users kept a password hash", n)
			}
			if n := e.count(slug, "SELECT count(*) FROM settings WHERE key = 'service_key_sha256'"); n != 0 {
				t.Errorf("the service key hash was exported")
			}
		})
	}
	for _, from := range e.backends()[1:] {
		t.Run("from="+from, func(t *testing.T) {
			slug := "on-" + from
			e.tenant(slug, from)
			e.seed(slug, 60)
			wantFrom := copied(e.digests(slug))
			for _, format := range []string{transfer.FormatSQLite, transfer.FormatNDJSON} {
				b := e.export(slug, format, true)
				if contains(b, "acme.example") {
					t.Fatalf("export of %s holds rows of acme", slug)
				}
				copySlug := "copy-" + slug + "-" + format
				if _, err := e.Svc.Import(context.Background(), bytes.NewReader(b), transfer.ImportOptions{Slug: copySlug, Backend: engine.BackendSQLite, Approve: true}); err != nil {
					t.Fatal(err)
				}
				if got := copied(e.digests(copySlug)); !equal(got, wantFrom) {
					t.Fatalf("%s export of a %s tenant, imported: %v, want %v", format, from, got, wantFrom)
				}
			}
		})
	}
	t.Run("Restore", func(t *testing.T) {
		// The original is gone: the import takes its id, slug and name
		// from the file, and its signing keys stay usable.
		for _, format := range []string{transfer.FormatSQLite, transfer.FormatNDJSON} {
			b := e.export("other", format, true)
			wantOther := e.digests("other")
			if err := e.App.Engine.DeleteTenant(context.Background(), "other"); err != nil {
				t.Fatal(err)
			}
			res, err := e.Svc.Import(context.Background(), bytes.NewReader(b), transfer.ImportOptions{Approve: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Tenant.Status != engine.StatusActive || res.Tenant.ApprovedAt == nil {
				t.Fatalf("approved at import, yet %+v", res.Tenant)
			}
			if res.Tenant.ID != other.ID || res.Tenant.Slug != "other" || res.Tenant.Name != other.Name {
				t.Fatalf("restored %+v, want the id, slug and name of %+v", res.Tenant, other)
			}
			if got := e.digests("other"); !equal(got, wantOther) {
				t.Fatalf("restored content differs:\n got %v\nwant %v", got, wantOther)
			}
		}
	})
	t.Run("SlugFromFile", func(t *testing.T) {
		b := e.export("acme", transfer.FormatNDJSON, true)
		_, err := e.Svc.Import(context.Background(), bytes.NewReader(b), transfer.ImportOptions{})
		if !errors.Is(err, engine.ErrConflict) {
			t.Fatalf("import under the taken slug acme: %v, want ErrConflict", err)
		}
	})
}

func without(m map[string]transfer.Digest, table string) map[string]transfer.Digest {
	out := map[string]transfer.Digest{}
	for k, v := range m {
		if k != table {
			out[k] = v
		}
	}
	return out
}

// withoutTable drops the row lines of a table from NDJSON lines.
func withoutTable(b []byte, table string) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(l, []byte(`{"table":"`+table+`"`)) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// copiedLines drops from NDJSON row lines what a copy does not take from
// its source (see copied).
func copiedLines(b []byte) []byte {
	for _, t := range []string{"signing_keys", "outbox", "refresh_tokens", "sessions"} {
		b = withoutTable(b, t)
	}
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(l, []byte(`"service_key_sha256"`)) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// rowLines drops the header and trailer lines of an NDJSON export.
func rowLines(b []byte) []byte {
	_, rest, _ := bytes.Cut(b, []byte("\n"))
	rest = bytes.TrimSuffix(rest, []byte("\n"))
	if i := bytes.LastIndexByte(rest, '\n'); i >= 0 {
		return rest[:i]
	}
	return nil
}

func TestService_Import_Damaged(t *testing.T) {
	e := newEnv(t)
	e.tenant("acme", engine.BackendSQLite)
	e.seed("acme", 40)
	nd := e.export("acme", transfer.FormatNDJSON, true)
	lite := e.export("acme", transfer.FormatSQLite, true)
	lines := strings.Split(strings.TrimSuffix(string(nd), "\n"), "\n")

	flip := func(b []byte, at int) []byte {
		c := bytes.Clone(b)
		c[at] ^= 0x20
		return c
	}
	// edited returns the SQLite export changed by sql.
	edited := func(sql string) []byte {
		p := filepath.Join(t.TempDir(), "x.db")
		if err := os.WriteFile(p, lite, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := sqlite3.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Exec(sql); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		b, _ := os.ReadFile(p)
		return b
	}
	withVersion := func(v int) []byte { return edited(fmt.Sprintf("PRAGMA user_version=%d", v)) }
	notShard := func() []byte {
		p := filepath.Join(t.TempDir(), "y.db")
		db, err := sqlite3.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('x')"); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		b, _ := os.ReadFile(p)
		return b
	}
	// A row line in the middle of the users rows.
	row := 3
	newer := strings.Replace(lines[0], fmt.Sprintf(`"schema_version":%d`, transfer.SchemaVersion), `"schema_version":99`, 1)
	cases := []struct {
		name, want string
		data       []byte
		// harmless: a flip that may land in unused bytes of a SQLite file
		// may also import, but then with the original content exactly.
		harmless bool
	}{
		{"Empty", "empty", nil, false},
		{"NotAnExport", "neither", []byte("hello, world\n"), false},
		{"NDJSON/Truncated", "truncated", nd[:len(nd)*2/3], false},
		{"NDJSON/TruncatedAtLine", "truncated", []byte(strings.Join(lines[:len(lines)-1], "\n") + "\n"), false},
		{"NDJSON/FlippedByte", "", flip(nd, len(nd)/2), false},
		{"NDJSON/WrongChecksum", "checksum", []byte(strings.Join(append(lines[:len(lines)-1],
			strings.Replace(lines[len(lines)-1], `"sha256":"`, `"sha256":"00`, 1)), "\n") + "\n"), false},
		{"NDJSON/RowChanged", "checksum", []byte(strings.Join(append(append(append([]string{}, lines[:row]...),
			strings.Replace(lines[row], "acme.example", "acme.exbmple", 1)), lines[row+1:]...), "\n") + "\n"), false},
		{"NDJSON/NewerSchema", "schema version 99", []byte(strings.Join(append([]string{newer}, lines[1:]...), "\n") + "\n"), false},
		{"NDJSON/UnknownTable", "unknown table", []byte(strings.Join(append(append([]string{}, lines[:row]...),
			append([]string{`{"table":"payments","row":["x"]}`}, lines[row:]...)...), "\n") + "\n"), false},
		{"SQLite/Truncated", "", lite[:len(lite)/2], false},
		// An email is in the users table and in its unique index.
		{"SQLite/FlippedByteFirst", "", flip(lite, bytes.Index(lite, []byte("user7@acme.example"))), true},
		{"SQLite/FlippedByteLast", "", flip(lite, bytes.LastIndex(lite, []byte("user7@acme.example"))), true},
		{"SQLite/FlippedPage", "", flip(lite, 4096+10), true},
		{"SQLite/RowChanged", "checksum", edited("UPDATE users SET email = 'evil@example.com' WHERE email = 'user7@acme.example'"), false},
		{"SQLite/RowDeleted", "checksum", edited("DELETE FROM audit_log WHERE id = 3"), false},
		{"SQLite/UnknownTable", "payments", edited("CREATE TABLE payments (id INTEGER PRIMARY KEY)"), false},
		{"SQLite/Trigger", "trigger", edited("CREATE TRIGGER t AFTER DELETE ON signing_keys BEGIN DELETE FROM users; END"), false},
		{"SQLite/NewerSchema", "schema version 99", withVersion(99), false},
		// A shard file without the export header (no checksums to catch it):
		// metadata the API would pass through must be JSON objects.
		{"SQLite/MetadataNotObject", "not a JSON object", edited("DROP TABLE keyshard_export; UPDATE users SET raw_user_meta_data = '[1]' WHERE email = 'user7@acme.example'"), false},
		{"SQLite/IdentityDataNotJSON", "not a JSON object", edited("DROP TABLE keyshard_export; UPDATE identities SET identity_data = '{oops' WHERE email = 'user7@acme.example'"), false},
		{"SQLite/NotAShard", "", notShard(), false},
	}
	before, _ := e.App.Engine.List(context.Background())
	want := e.digests("acme")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.Svc.Import(context.Background(), bytes.NewReader(c.data), transfer.ImportOptions{Slug: "imported", Approve: true})
			if err == nil && c.harmless {
				if got := copied(e.digests("imported")); !equal(got, copied(want)) {
					t.Fatalf("a damaged file was imported with altered content")
				}
				t.Logf("the flipped byte was in unused space: imported intact")
				if err := e.App.Engine.DeleteTenant(context.Background(), "imported"); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, engine.ErrInvalid) || !errors.Is(err, transfer.ErrDamaged) {
				t.Fatalf("import: %v, want ErrDamaged (an ErrInvalid)", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			t.Logf("refused: %v", err)
			if _, err := e.App.Engine.Get(context.Background(), "imported"); !errors.Is(err, engine.ErrTenantNotFound) {
				t.Fatalf("a tenant was created: %v", err)
			}
		})
	}
	after, _ := e.App.Engine.List(context.Background())
	if len(after) != len(before) {
		t.Fatalf("tenants before %d, after %d", len(before), len(after))
	}
	// No shard file was left behind: only acme's.
	var dbs []string
	_ = filepath.WalkDir(filepath.Join(e.Dir, "shards"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".db") {
			dbs = append(dbs, p)
		}
		return nil
	})
	if len(dbs) != 1 {
		t.Fatalf("shard files after refused imports: %v", dbs)
	}
}

func TestService_ImportRestore(t *testing.T) {
	// A tenant restored from its export (with secrets) on a server without
	// it keeps its id, so all of it comes back: signing keys, and the events
	// it had not delivered, which the background workers then find.
	e := newEnv(t)
	e.tenant("gone", engine.BackendSQLite)
	e.seed("gone", 30)
	want := e.digests("gone")
	if want["outbox"].Rows == 0 {
		t.Fatal("the fixture has no outbox rows")
	}
	for _, format := range []string{transfer.FormatSQLite, transfer.FormatNDJSON} {
		t.Run(format, func(t *testing.T) {
			b := e.export("gone", format, true)
			before, err := e.App.Engine.Get(context.Background(), "gone")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.App.Engine.DeleteTenant(context.Background(), "gone"); err != nil {
				t.Fatal(err)
			}
			res, err := e.Svc.Import(context.Background(), bytes.NewReader(b), transfer.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Tenant.ID != before.ID {
				t.Fatalf("restored under id %s, want %s", res.Tenant.ID, before.ID)
			}
			// Pending until approved; approval makes its events due.
			if _, err := e.App.Engine.ApproveTenant(context.Background(), "gone"); err != nil {
				t.Fatal(err)
			}
			if got := e.digests("gone"); !equal(got, want) {
				t.Fatalf("restored content differs:\n got %v\nwant %v", got, want)
			}
			due, err := e.App.Catalog.DueWork(context.Background(), time.Now(), 1000)
			if err != nil || !slices.Contains(due, before.ID) {
				t.Fatalf("the restored tenant with pending events is not marked: %v %v", due, err)
			}
		})
	}
}

// copied leaves out of a tenant's digests what a copy under a new id does
// not take from its source: the signing keys (sealed for the source's id)
// and the events the source has yet to deliver.
func copied(d map[string]transfer.Digest) map[string]transfer.Digest {
	for _, t := range []string{"signing_keys", "outbox", "refresh_tokens", "sessions", "settings"} {
		d = without(d, t)
	}
	return d
}

// TestService_ImportLeftImporting plays an import that a crash stopped
// half-way, on every backend: its tenant stays importing, is neither served
// nor approved, and deleting it drops what the import had written.
func TestService_ImportLeftImporting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, backend := range e.backends() {
		t.Run(backend, func(t *testing.T) {
			tn := &engine.Tenant{ID: engine.NewTenantID(), Slug: "half-" + backend, Name: "half", Status: engine.StatusImporting, Backend: backend}
			if err := e.App.Catalog.Create(ctx, tn); err != nil {
				t.Fatal(err)
			}
			st := e.App.Engine.Backends[backend]
			if err := st.Create(ctx, tn.Placement()); err != nil {
				t.Fatal(err)
			}
			if _, err := e.App.Engine.Tenant(ctx, tn.Slug); !errors.Is(err, engine.ErrTenantPending) {
				t.Fatalf("an importing tenant is served: %v", err)
			}
			if _, err := e.App.Engine.ApproveTenant(ctx, tn.Slug); !errors.Is(err, engine.ErrWrongStatus) {
				t.Fatalf("an importing tenant was approved: %v", err)
			}
			if _, err := e.Svc.Export(ctx, tn.Slug, io.Discard, transfer.ExportOptions{}); !errors.Is(err, engine.ErrWrongStatus) {
				t.Fatalf("an importing tenant was exported: %v", err)
			}
			if err := e.App.Engine.DeleteTenant(ctx, tn.Slug); err != nil {
				t.Fatal(err)
			}
			sh, err := e.App.Backends.Open(ctx, tn.Placement())
			if err == nil {
				sh.Close()
				t.Fatalf("the deleted half-import's database is still there")
			}
		})
	}
}

// noCreate is a backend on which creating a database fails.
type noCreate struct{ engine.Storage }

func (noCreate) Create(context.Context, engine.Placement) error {
	return errors.New("Create called on a backend that must not create")
}

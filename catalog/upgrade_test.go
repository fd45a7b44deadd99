package catalog_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/engine"
)

// A catalog made before imported_at existed gains the column when opened,
// keeps its tenants, and stores the import time from then on; on the
// catalog backend under test (KEYSHARD_TEST_CATALOG).
func TestOpen_AddsImportedAt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var db *sql.DB
	var err error
	var open func() (*catalog.Catalog, error)
	idType, textType, params := "TEXT", "TEXT", "?, ?, ?"
	table := "tenants"
	switch b := os.Getenv("KEYSHARD_TEST_CATALOG"); b {
	case "", "sqlite":
		db, err = sql.Open("sqlite3", "file:"+filepath.Join(dir, "catalog.db"))
		open = func() (*catalog.Catalog, error) { return catalog.OpenSQLite(ctx, dir) }
	case "postgres":
		dsn := os.Getenv("KEYSHARD_TEST_POSTGRES_DSN")
		if dsn == "" {
			t.Fatal("KEYSHARD_TEST_CATALOG=postgres needs KEYSHARD_TEST_POSTGRES_DSN")
		}
		db, err = sql.Open("pgx", dsn)
		table, params = "kt_upgrade_pg", "$1, $2, $3"
		open = func() (*catalog.Catalog, error) { return catalog.OpenServer(ctx, dsn, table) }
	case "mysql":
		dsn := os.Getenv("KEYSHARD_TEST_MYSQL_DSN")
		if dsn == "" {
			t.Fatal("KEYSHARD_TEST_CATALOG=mysql needs KEYSHARD_TEST_MYSQL_DSN")
		}
		db, err = sql.Open("mysql", dsn)
		table, idType, textType = "kt_upgrade_my", "VARCHAR(64)", "VARCHAR(255)"
		open = func() (*catalog.Catalog, error) { return catalog.OpenServer(ctx, "mysql://"+dsn, table) }
	default:
		t.Fatalf("KEYSHARD_TEST_CATALOG=%s", b)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if table != "tenants" {
		drop := func() {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + table + "_work")
			_, _ = db.Exec("DROP TABLE IF EXISTS " + table)
		}
		drop()
		t.Cleanup(drop)
	}
	// The schema as it was before imported_at.
	old := strings.NewReplacer("ID", idType, "TXT", textType, "tenants", table).Replace(`CREATE TABLE tenants (
    id ID PRIMARY KEY, slug TXT NOT NULL UNIQUE, name TXT NOT NULL, status TXT NOT NULL,
    backend TXT NOT NULL, location TXT NOT NULL DEFAULT '', epoch BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL, approved_at BIGINT, updated_at BIGINT NOT NULL)`)
	if strings.Contains(old, "VARCHAR") {
		old = strings.Replace(old, "location VARCHAR(255) NOT NULL DEFAULT ''", "location VARCHAR(1024) NOT NULL DEFAULT ''", 1)
	}
	if _, err := db.Exec(old); err != nil {
		t.Fatal(err)
	}
	id := engine.NewTenantID()
	now := time.Now().UnixMicro()
	if _, err := db.Exec(`INSERT INTO `+table+` (id, slug, name, status, backend, location, epoch, created_at, approved_at, updated_at)
		VALUES ('`+id+`', 'acme', 'Acme', 'active', 'sqlite', '', 1, `+params+`)`, now, now, now); err != nil {
		t.Fatal(err)
	}
	r, err := open()
	if err != nil {
		t.Fatalf("open the old catalog: %v", err)
	}
	acme, err := r.Resolve(ctx, "acme")
	if err != nil || acme.ID != id || acme.Status != engine.StatusActive || acme.ImportedAt != nil {
		t.Fatalf("the old catalog's tenant: %+v %v", acme, err)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	imp := &engine.Tenant{ID: engine.NewTenantID(), Slug: "copy", Name: "Copy", Status: engine.StatusPending, Backend: engine.BackendSQLite, ImportedAt: &at}
	if err := r.Create(ctx, imp); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// Opened again: the column is there, nothing is added twice.
	r, err = open()
	if err != nil {
		t.Fatalf("open the upgraded catalog: %v", err)
	}
	defer r.Close()
	got, err := r.Resolve(ctx, "copy")
	if err != nil || got.ImportedAt == nil || !got.ImportedAt.Equal(at) {
		t.Fatalf("imported_at after a reopen: %+v %v, want %v", got, err, at)
	}
}

// Processes that open a new catalog at once (a server and a tenant command,
// several servers on one server catalog) all open it.
func TestOpen_Concurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 6
	errs := make(chan error, n)
	cats := make(chan *catalog.Catalog, n)
	for i := 0; i < n; i++ {
		go func() {
			r, err := openCatalog(t, dir)
			errs <- err
			cats <- r
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Errorf("open %d: %v", i, err)
		}
	}
	for i := 0; i < n; i++ {
		if r := <-cats; r != nil {
			if i == 0 {
				if server := os.Getenv("KEYSHARD_TEST_CATALOG"); server != "" && server != "sqlite" {
					defer r.DropServerTable(context.Background())
				}
				defer r.Close()
			} else {
				r.Close()
			}
		}
	}
}

// Package catalog maps a tenant (by slug or id) to its placement: status,
// backend, location and epoch, kept in a catalog database and served from an
// in-memory cache that is updated whenever the catalog changes.
package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ncruces/go-sqlite3"
	_ "github.com/ncruces/go-sqlite3/driver" // database/sql driver "sqlite3"

	"github.com/keyshard/keyshard/engine"
)

// Catalog is the tenants with their placements, cached in memory. It implements
// engine.Catalog and is safe for concurrent use.
type Catalog struct {
	db       *sql.DB
	table    string              // tenants, or the table a server catalog was given
	rebind   func(string) string // '?' to the server's placeholders
	isUnique func(error) bool
	clock    func() time.Time // nil: time.Now; see SetClock
	work     workMarks        // tenants with background work due; see work.go
	dialect  string           // sqlite, postgres, mysql
	dsn      string           // a server catalog's, for Listen
	// notifyErr: the PostgreSQL trigger that notifies changes could not
	// be made; nodes poll (NotifyError).
	notifyErr error
	onReload  atomic.Pointer[func()] // see OnReload
	listening atomic.Bool            // Listen hears every change: Watch need not poll

	reloadMu sync.Mutex // one Reload at a time

	mu     sync.RWMutex // guards the fields below
	byID   map[string]*engine.Tenant
	bySlug map[string]*engine.Tenant
	gen    uint64 // bumped by every change made through r; see Reload
}

var _ engine.Catalog = (*Catalog)(nil)

const schema = `
CREATE TABLE IF NOT EXISTS tenants (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    backend      TEXT NOT NULL,
    location     TEXT NOT NULL DEFAULT '',
    epoch        INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    approved_at  INTEGER,
    updated_at   INTEGER NOT NULL,
    imported_at  INTEGER,
    node         TEXT NOT NULL DEFAULT ''
)`

// OpenSQLite opens (creating if needed) the catalog file catalog.db in
// dataDir and loads every tenant into the cache.
func OpenSQLite(ctx context.Context, dataDir string) (*Catalog, error) {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, "catalog.db")
	// In a "file:" URI, '?', '#' and '%' are not part of the file name:
	// escape them so that the catalog is always dataDir/catalog.db.
	dsn := "file:" + uriPath.Replace(path) + "?_pragma=busy_timeout(3000)&_pragma=journal_mode(wal)&_pragma=synchronous(full)&_pragma=foreign_keys(on)&_txlock=immediate"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	// A connection's journal_mode(wal) pragma answers "database is
	// locked" at once, without the busy timeout, while another process
	// creates the file: several processes opening a new catalog together
	// retry for a few seconds.
	for attempt := 0; ; attempt++ {
		_, err = db.ExecContext(ctx, schema)
		if err == nil || attempt >= 60 || !strings.Contains(err.Error(), "database is locked") {
			break
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("catalog schema: %w", err)
	}
	r := &Catalog{db: db, table: "tenants", dialect: "sqlite", rebind: func(q string) string { return q }, isUnique: isUniqueSQLite,
		work: workMarks{table: "tenant_work"}}
	if err := r.addColumns(ctx, "sqlite", "TEXT"); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := r.createWork(ctx, "TEXT", "sqlite"); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := r.Reload(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	return r, nil
}

// OnReload sets a function called after every Reload that read the
// catalog (another process's changes seen).
func (r *Catalog) OnReload(f func()) { r.onReload.Store(&f) }

// NotifyError says why changes are not notified (PostgreSQL catalog
// without its trigger), nil when they are or the catalog has no such thing.
func (r *Catalog) NotifyError() error { return r.notifyErr }

// SetClock sets the clock that stamps created_at and updated_at. Tests use
// it to play a node whose clock is behind; call it before using r.
func (r *Catalog) SetClock(now func() time.Time) { r.clock = now }

func (r *Catalog) now() time.Time {
	if r.clock != nil {
		return r.clock().UTC()
	}
	return time.Now().UTC()
}

// q returns query with the catalog's table and placeholders.
func (r *Catalog) q(query string) string {
	return r.rebind(strings.ReplaceAll(query, "tenants", r.table))
}

var uriPath = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// Close closes the catalog database.
func (r *Catalog) Close() error { return r.db.Close() }

const columns = `id, slug, name, status, backend, location, epoch, created_at, approved_at, updated_at, imported_at, node`

// columnExists counts the columns of the catalog table named by the second
// parameter; the first is the table.
var columnExists = map[string]string{
	"sqlite":   `SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`,
	"postgres": `SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ? AND table_schema = current_schema()`,
	"mysql":    `SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = ? AND table_schema = DATABASE()`,
}

// addColumns adds the columns a catalog made before them lacks
// (imported_at, node). Two processes may open an old catalog at once: the
// one whose ALTER fails finds the column the other added.
func (r *Catalog) addColumns(ctx context.Context, dialect, text string) error {
	for _, c := range []struct{ name, def string }{
		{"imported_at", "BIGINT"},
		{"node", text + " NOT NULL DEFAULT ''"},
	} {
		has := func() (bool, error) {
			var n int
			err := r.db.QueryRowContext(ctx, r.rebind(columnExists[dialect]), r.table, c.name).Scan(&n)
			return n > 0, err
		}
		ok, err := has()
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		if _, err := r.db.ExecContext(ctx, `ALTER TABLE `+r.table+` ADD COLUMN `+c.name+` `+c.def); err != nil {
			if ok, _ := has(); ok {
				continue
			}
			return fmt.Errorf("catalog: add %s: %w", c.name, err)
		}
	}
	return nil
}

func scanTenant(sc interface{ Scan(...any) error }) (*engine.Tenant, error) {
	var t engine.Tenant
	var status string
	var created, updated int64
	var approved, imported sql.NullInt64
	if err := sc.Scan(&t.ID, &t.Slug, &t.Name, &status, &t.Backend, &t.Location, &t.Epoch, &created, &approved, &updated, &imported, &t.Node); err != nil {
		return nil, err
	}
	t.Status = engine.Status(status)
	t.CreatedAt = time.UnixMicro(created).UTC()
	t.UpdatedAt = time.UnixMicro(updated).UTC()
	if approved.Valid {
		a := time.UnixMicro(approved.Int64).UTC()
		t.ApprovedAt = &a
	}
	if imported.Valid {
		i := time.UnixMicro(imported.Int64).UTC()
		t.ImportedAt = &i
	}
	return &t, nil
}

// Reload replaces the cache with the catalog's content, work marks
// included. A change made through r while Reload reads the catalog may be
// missing from what it read, so Reload then reads again rather than bring
// back an older state.
func (r *Catalog) Reload(ctx context.Context) error {
	// One at a time: a reload that read the catalog before a change must
	// not finish after one that read it after.
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	if err := r.loadWork(ctx); err != nil {
		return err
	}
	for {
		r.mu.RLock()
		gen := r.gen
		r.mu.RUnlock()
		byID, bySlug, err := r.load(ctx)
		if err != nil {
			return err
		}
		r.mu.Lock()
		if r.gen == gen {
			r.byID, r.bySlug = byID, bySlug
			r.gen++
			r.mu.Unlock()
			if f := r.onReload.Load(); f != nil {
				(*f)()
			}
			return nil
		}
		r.mu.Unlock()
	}
}

func (r *Catalog) load(ctx context.Context) (byID, bySlug map[string]*engine.Tenant, err error) {
	rows, err := r.db.QueryContext(ctx, r.q(`SELECT `+columns+` FROM tenants`))
	if err != nil {
		return nil, nil, fmt.Errorf("load catalog: %w", err)
	}
	defer rows.Close()
	byID = make(map[string]*engine.Tenant)
	bySlug = make(map[string]*engine.Tenant)
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("load catalog: %w", err)
		}
		byID[t.ID] = t
		bySlug[t.Slug] = t
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("load catalog: %w", err)
	}
	return byID, bySlug, nil
}

// Resolve returns a copy of the tenant with that slug or id, from the cache.
func (r *Catalog) Resolve(ctx context.Context, slugOrID string) (*engine.Tenant, error) {
	r.mu.RLock()
	t, ok := r.bySlug[slugOrID]
	if !ok {
		t, ok = r.byID[slugOrID]
	}
	r.mu.RUnlock()
	if !ok {
		return nil, engine.ErrTenantNotFound
	}
	c := *t
	return &c, nil
}

// List returns every tenant, ordered by slug.
func (r *Catalog) List(ctx context.Context) ([]*engine.Tenant, error) {
	rows, err := r.db.QueryContext(ctx, r.q(`SELECT `+columns+` FROM tenants ORDER BY slug`))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*engine.Tenant
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Create records a new tenant. Its created_at, to the microsecond as
// stored, names this incarnation of the id: see Update.
func (r *Catalog) Create(ctx context.Context, t *engine.Tenant) error {
	now := r.now().Truncate(time.Microsecond)
	t.CreatedAt, t.UpdatedAt = now, now
	if t.Epoch == 0 {
		t.Epoch = 1
	}
	_, err := r.db.ExecContext(ctx, r.q(`INSERT INTO tenants (`+columns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`),
		t.ID, t.Slug, t.Name, string(t.Status), t.Backend, t.Location, t.Epoch, now.UnixMicro(), nullTime(t.ApprovedAt), now.UnixMicro(), nullTime(t.ImportedAt), t.Node)
	if err != nil {
		if r.isUnique(err) {
			return fmt.Errorf("slug %q is taken: %w", t.Slug, engine.ErrConflict)
		}
		return fmt.Errorf("create tenant: %w", err)
	}
	r.put(t)
	return nil
}

// Update stores t's status, name, placement, approval and import times, provided
// the catalog still holds epoch wantEpoch for it (a compare-and-set that
// fences concurrent placement changes) and t.CreatedAt: a tenant deleted and
// made again under the same id (a restore) starts at epoch 1 again, and a
// change meant for the one before must not land on it.
func (r *Catalog) Update(ctx context.Context, t *engine.Tenant, wantEpoch int64) error {
	t.UpdatedAt = r.now().Truncate(time.Microsecond)
	res, err := r.db.ExecContext(ctx, r.q(`UPDATE tenants SET name=?, status=?, backend=?, location=?, epoch=?, approved_at=?, updated_at=?, imported_at=?, node=? WHERE id=? AND epoch=? AND created_at=?`),
		t.Name, string(t.Status), t.Backend, t.Location, t.Epoch, nullTime(t.ApprovedAt), t.UpdatedAt.UnixMicro(), nullTime(t.ImportedAt), t.Node, t.ID, wantEpoch, t.CreatedAt.UnixMicro())
	if err != nil {
		return fmt.Errorf("update tenant: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("tenant %s changed concurrently: %w", t.Slug, engine.ErrConflict)
	}
	r.put(t)
	return nil
}

// SetNode gives the tenant to node at epoch newEpoch, provided the catalog
// still holds wantEpoch and owner wantNode for it (and its created_at):
// only owner, epoch and updated_at change, so a suspend or rename made
// meanwhile stands. It returns the tenant as stored.
func (r *Catalog) SetNode(ctx context.Context, t *engine.Tenant, wantNode string, wantEpoch int64, node string, newEpoch int64) (*engine.Tenant, error) {
	now := r.now().Truncate(time.Microsecond)
	res, err := r.db.ExecContext(ctx, r.q(`UPDATE tenants SET node=?, epoch=?, updated_at=? WHERE id=? AND epoch=? AND node=? AND created_at=?`),
		node, newEpoch, now.UnixMicro(), t.ID, wantEpoch, wantNode, t.CreatedAt.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("update tenant: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, fmt.Errorf("tenant %s changed concurrently: %w", t.Slug, engine.ErrConflict)
	}
	// Done: the answer is built here, not read back (a failed read would
	// report a flip that happened as one that did not).
	cur := *t
	cur.Node, cur.Epoch, cur.UpdatedAt = node, newEpoch, now
	if fresh, err := r.Refresh(context.WithoutCancel(ctx), t.ID); err == nil && fresh.Epoch == newEpoch && fresh.Node == node {
		cur = *fresh
	} else {
		r.put(&cur)
	}
	return &cur, nil
}

// Refresh reads one tenant's row again into the cache and returns it;
// ErrTenantNotFound when it is gone (and forgotten).
func (r *Catalog) Refresh(ctx context.Context, id string) (*engine.Tenant, error) {
	t, err := scanTenant(r.db.QueryRowContext(ctx, r.q(`SELECT `+columns+` FROM tenants WHERE id=?`), id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		r.forget(id)
		return nil, engine.ErrTenantNotFound
	case err != nil:
		return nil, fmt.Errorf("read tenant: %w: %w", err, engine.ErrUnavailable)
	}
	r.put(t)
	c := *t
	return &c, nil
}

// Delete removes the tenant from the catalog.
func (r *Catalog) Delete(ctx context.Context, id string) error {
	res, err := r.db.ExecContext(ctx, r.q(`DELETE FROM tenants WHERE id=?`), id)
	if err != nil {
		return fmt.Errorf("delete tenant: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return engine.ErrTenantNotFound
	}
	// A deleted tenant's pending work goes with it.
	if err := r.ClearWork(ctx, id); err != nil {
		return err
	}
	r.forget(id)
	return nil
}

// forget removes a tenant from the cache.
func (r *Catalog) forget(id string) {
	r.mu.Lock()
	r.gen++
	if t, ok := r.byID[id]; ok {
		delete(r.bySlug, t.Slug)
		delete(r.byID, id)
	}
	r.mu.Unlock()
}

func (r *Catalog) put(t *engine.Tenant) {
	c := *t
	r.mu.Lock()
	r.gen++
	if old, ok := r.byID[c.ID]; ok && old.Slug != c.Slug {
		delete(r.bySlug, old.Slug)
	}
	r.byID[c.ID] = &c
	r.bySlug[c.Slug] = &c
	r.mu.Unlock()
}

func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func isUniqueSQLite(err error) bool {
	return errors.Is(err, sqlite3.CONSTRAINT_UNIQUE) || errors.Is(err, sqlite3.CONSTRAINT_PRIMARYKEY) ||
		strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// Watch reloads the cache whenever the catalog was changed by another
// process (the CLI, another node), checking every interval until ctx ends.
func (r *Catalog) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.listening.Load() {
			continue // notified of each change, row by row (Listen)
		}
		// Every change sets updated_at and a delete changes the count. The
		// sum (of residues, so that it cannot overflow) catches a change
		// stamped by a node whose clock is behind, which max would miss.
		var n, maxUpdated, sumUpdated, sumEpoch int64
		err := r.db.QueryRowContext(ctx, r.q(`SELECT count(*), coalesce(max(updated_at),0),
			coalesce(sum(updated_at % 1000000007),0), coalesce(sum(epoch),0) FROM tenants`)).Scan(&n, &maxUpdated, &sumUpdated, &sumEpoch)
		if err != nil {
			continue
		}
		sig := fmt.Sprintf("%d/%d/%d/%d", n, maxUpdated, sumUpdated, sumEpoch)
		if sig != last {
			if r.Reload(ctx) == nil {
				last = sig
			}
		}
	}
}

package catalog

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
)

var _ engine.WorkMarks = (*Catalog)(nil)

// workMarks is the catalog's table of tenants with background work due
// (engine.WorkMarks), with an in-memory copy so that marking a tenant that
// is already marked costs no query: every event-carrying write marks.
type workMarks struct {
	table       string // tenant_work, or <server table>_work
	upsertLower string // insert, or move an existing mark earlier
	upsertSet   string // insert, or set an existing mark

	mu  sync.Mutex       // guards the fields below
	due map[string]int64 // tenant id → due time, unix µs
	gen uint64           // bumped by every change; see loadWork
}

// workDDL returns the statements that create the marks table.
func workDDL(table, id string) []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + table + ` (tenant_id ` + id + ` PRIMARY KEY, due_at BIGINT NOT NULL)`,
		`CREATE INDEX ` + table + `_due_at ON ` + table + ` (due_at)`,
	}
}

// upserts returns the dialect's two upserts of a mark (tenant_id, due_at).
func upserts(table, dialect string) (lower, set string) {
	ins := `INSERT INTO ` + table + ` (tenant_id, due_at) VALUES (?, ?) `
	switch dialect {
	case "mysql":
		return ins + `ON DUPLICATE KEY UPDATE due_at = LEAST(due_at, VALUES(due_at))`,
			ins + `ON DUPLICATE KEY UPDATE due_at = VALUES(due_at)`
	case "postgres":
		return ins + `ON CONFLICT (tenant_id) DO UPDATE SET due_at = LEAST(` + table + `.due_at, excluded.due_at)`,
			ins + `ON CONFLICT (tenant_id) DO UPDATE SET due_at = excluded.due_at`
	}
	return ins + `ON CONFLICT (tenant_id) DO UPDATE SET due_at = min(due_at, excluded.due_at)`,
		ins + `ON CONFLICT (tenant_id) DO UPDATE SET due_at = excluded.due_at`
}

// createWork creates the marks table when missing; an index that exists
// already is not an error.
func (r *Catalog) createWork(ctx context.Context, id, dialect string) error {
	w := &r.work
	w.upsertLower, w.upsertSet = upserts(w.table, dialect)
	stmts := workDDL(w.table, id)
	if err := r.ddl(ctx, stmts[0]); err != nil {
		return fmt.Errorf("catalog work table: %w", err)
	}
	hasIndex := func() bool {
		var n int
		_ = r.db.QueryRowContext(ctx, r.rebind(indexExists[dialect]), w.table+"_due_at").Scan(&n)
		return n > 0
	}
	if !hasIndex() {
		// Another process opening the catalog may have made it meanwhile.
		if _, err := r.db.ExecContext(ctx, stmts[1]); err != nil && !hasIndex() {
			return fmt.Errorf("catalog work index: %w", err)
		}
	}
	return nil
}

// ddl runs a CREATE … IF NOT EXISTS statement. Processes opening a new
// catalog at once may all find the table missing, and PostgreSQL then
// fails all but one on its own catalog's unique index: run again, the
// statement finds the table.
func (r *Catalog) ddl(ctx context.Context, stmt string) error {
	_, err := r.db.ExecContext(ctx, stmt)
	for i := 0; err != nil && i < 3; i++ {
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(50<<i) * time.Millisecond):
		}
		_, err = r.db.ExecContext(ctx, stmt)
	}
	return err
}

var indexExists = map[string]string{
	"sqlite":   `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?`,
	"postgres": `SELECT count(*) FROM pg_indexes WHERE indexname = ? AND schemaname = current_schema()`,
	"mysql":    `SELECT count(*) FROM information_schema.statistics WHERE index_name = ? AND table_schema = DATABASE()`,
}

// loadWork replaces the in-memory marks with the table's. A mark changed
// while it read may be missing from or stale in what it read (a cleared
// mark kept in memory would make MarkWork skip a write it needs), so it
// then reads again.
func (r *Catalog) loadWork(ctx context.Context) error {
	for {
		r.work.mu.Lock()
		gen := r.work.gen
		r.work.mu.Unlock()
		due, err := r.readWork(ctx)
		if err != nil {
			return err
		}
		r.work.mu.Lock()
		if r.work.gen == gen {
			r.work.due = due
			r.work.mu.Unlock()
			return nil
		}
		r.work.mu.Unlock()
	}
}

func (r *Catalog) readWork(ctx context.Context) (map[string]int64, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT tenant_id, due_at FROM `+r.work.table)
	if err != nil {
		return nil, fmt.Errorf("load work marks: %w", err)
	}
	defer rows.Close()
	due := make(map[string]int64)
	for rows.Next() {
		var id string
		var at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("load work marks: %w", err)
		}
		due[id] = at
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load work marks: %w", err)
	}
	return due, nil
}

// MarkWork implements engine.WorkMarks.
func (r *Catalog) MarkWork(ctx context.Context, tenantID string, due time.Time) error {
	at := due.UnixMicro()
	w := &r.work
	w.mu.Lock()
	cur, ok := w.due[tenantID]
	w.mu.Unlock()
	if ok && cur <= at {
		return nil
	}
	if _, err := r.db.ExecContext(ctx, r.rebind(w.upsertLower), tenantID, at); err != nil {
		return fmt.Errorf("mark work of tenant %s: %w: %w", tenantID, err, engine.ErrUnavailable)
	}
	w.mu.Lock()
	if cur, ok := w.due[tenantID]; !ok || at < cur {
		w.due[tenantID] = at
	}
	w.gen++
	w.mu.Unlock()
	return nil
}

// SetWork implements engine.WorkMarks.
func (r *Catalog) SetWork(ctx context.Context, tenantID string, due time.Time) error {
	at := due.UnixMicro()
	if _, err := r.db.ExecContext(ctx, r.rebind(r.work.upsertSet), tenantID, at); err != nil {
		return fmt.Errorf("reschedule work of tenant %s: %w: %w", tenantID, err, engine.ErrUnavailable)
	}
	r.work.mu.Lock()
	r.work.due[tenantID] = at
	r.work.gen++
	r.work.mu.Unlock()
	return nil
}

// ClearWork implements engine.WorkMarks.
func (r *Catalog) ClearWork(ctx context.Context, tenantID string) error {
	if _, err := r.db.ExecContext(ctx, r.rebind(`DELETE FROM `+r.work.table+` WHERE tenant_id = ?`), tenantID); err != nil {
		return fmt.Errorf("clear work of tenant %s: %w: %w", tenantID, err, engine.ErrUnavailable)
	}
	r.work.mu.Lock()
	delete(r.work.due, tenantID)
	r.work.gen++
	r.work.mu.Unlock()
	return nil
}

// DueWork implements engine.WorkMarks. It reads the table, not the
// in-memory copy, so marks made by another process are seen too.
func (r *Catalog) DueWork(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := r.db.QueryContext(ctx, r.rebind(`SELECT tenant_id FROM `+r.work.table+` WHERE due_at <= ? ORDER BY due_at LIMIT ?`),
		now.UnixMicro(), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

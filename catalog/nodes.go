package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyshard/keyshard/engine"
)

// Node is a Keyshard server sharing this catalog with others: its name, the
// URL the others reach it at, and its lease, which it renews and which is
// stamped and judged by the catalog database's clock, never a node's.
type Node struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`
	Incarnation string    `json:"-"`
	StartedAt   time.Time `json:"started_at"`
	RenewedAt   time.Time `json:"renewed_at"`
	LeaseUntil  time.Time `json:"lease_until"`
	// Alive: the lease had not lapsed when the list was read.
	Alive bool `json:"alive"`
	// Tenants owned in the catalog; OpenShards as the node last reported.
	Tenants    int `json:"tenants"`
	OpenShards int `json:"open_shards"`
}

// ErrNodeTaken is returned by RenewNode when another live process holds the
// node's name.
var ErrNodeTaken = errors.New("another process holds this node name")

func (r *Catalog) nodesTable() string { return r.table + "_nodes" }

// dbNow is the catalog database's clock in microseconds since the epoch.
func (r *Catalog) dbNow() string {
	switch r.dialect {
	case "postgres":
		return `CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)`
	case "mysql":
		return `CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)`
	}
	return `CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)`
}

func (r *Catalog) createNodes(ctx context.Context) error {
	name, text := "TEXT", "TEXT"
	if r.dialect == "mysql" {
		name, text = "VARCHAR(64)", "VARCHAR(1024)"
	}
	if err := r.ddl(ctx, `CREATE TABLE IF NOT EXISTS `+r.nodesTable()+` (
    name         `+name+` PRIMARY KEY,
    address      `+text+` NOT NULL,
    incarnation  `+name+` NOT NULL,
    started_at   BIGINT NOT NULL,
    renewed_at   BIGINT NOT NULL,
    lease_until  BIGINT NOT NULL,
    open_shards  BIGINT NOT NULL DEFAULT 0
)`); err != nil {
		return fmt.Errorf("catalog nodes table: %w", err)
	}
	if r.dialect != "postgres" {
		return nil
	}
	// Every change of the tenants table, by any process, notifies the
	// channel named after it: the nodes' Listen reloads at once instead of
	// waiting for the next poll.
	// Without the trigger (PostgreSQL before 14, no right to create
	// functions) nodes poll: not a reason to refuse to start.
	if err := r.createNotify(ctx); err != nil {
		r.notifyErr = err
	}
	return nil
}

func (r *Catalog) createNotify(ctx context.Context) error {
	fn := r.table + "_notify"
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{
		// Processes opening the catalog at once would fail each other's
		// CREATE OR REPLACE ("tuple concurrently updated").
		`SELECT pg_advisory_xact_lock(hashtext('` + fn + `'))`,
		// The payload is the tenant's id: a node reads that row again, not
		// the whole catalog.
		`CREATE OR REPLACE FUNCTION ` + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN PERFORM pg_notify('` + r.table + `', OLD.id);
  ELSE PERFORM pg_notify('` + r.table + `', NEW.id); END IF;
  RETURN NULL;
END $$`,
		`CREATE OR REPLACE TRIGGER ` + fn + ` AFTER INSERT OR UPDATE OR DELETE ON ` + r.table + ` FOR EACH ROW EXECUTE FUNCTION ` + fn + `()`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("catalog notify trigger: %w", err)
		}
	}
	return tx.Commit()
}

// DBNow returns the catalog database's clock.
func (r *Catalog) DBNow(ctx context.Context) (time.Time, error) {
	var us int64
	if err := r.db.QueryRowContext(ctx, `SELECT `+r.dbNow()).Scan(&us); err != nil {
		return time.Time{}, err
	}
	return time.UnixMicro(us).UTC(), nil
}

// RenewNode records node name at address with a lease of d from the
// catalog's clock now, for the process incarnation. It fails with
// ErrNodeTaken while another incarnation's lease on the name has not
// lapsed: two processes never serve as one node.
//
// unclean reports that this renewal took the name over from another
// incarnation that did not end its lease itself (it crashed, or it is
// paused or cut off and may come back): the new one must move its tenants'
// epochs on before serving them, so that the old one's writes are fenced.
func (r *Catalog) RenewNode(ctx context.Context, name, address, incarnation string, d time.Duration, openShards int) (unclean bool, err error) {
	if r.dialect == "sqlite" {
		return false, engine.Invalidf("several nodes need the catalog on PostgreSQL or MySQL (--catalog)")
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("renew lease: %w: %w", err, engine.ErrUnavailable)
	}
	defer tx.Rollback()
	var inc string
	var until, now int64
	err = tx.QueryRowContext(ctx, r.rebind(`SELECT incarnation, lease_until, `+r.dbNow()+` FROM `+r.nodesTable()+` WHERE name = ? FOR UPDATE`), name).Scan(&inc, &until, &now)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, r.rebind(`INSERT INTO `+r.nodesTable()+` (name, address, incarnation, started_at, renewed_at, lease_until, open_shards)
			VALUES (?, ?, ?, `+r.dbNow()+`, `+r.dbNow()+`, `+r.dbNow()+` + ?, ?)`), name, address, incarnation, d.Microseconds(), openShards)
	case err != nil:
	case inc != incarnation && until > now:
		return false, fmt.Errorf("node %s: %w (its lease runs %s more)", name, ErrNodeTaken, time.Duration(until-now)*time.Microsecond)
	default:
		started := ""
		if inc != incarnation {
			started = `started_at = ` + r.dbNow() + `, `
			unclean = inc != ""
		}
		_, err = tx.ExecContext(ctx, r.rebind(`UPDATE `+r.nodesTable()+` SET address = ?, incarnation = ?, `+started+`renewed_at = `+r.dbNow()+`,
			lease_until = `+r.dbNow()+` + ?, open_shards = ? WHERE name = ?`), address, incarnation, d.Microseconds(), openShards, name)
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return false, fmt.Errorf("renew lease: %w: %w", err, engine.ErrUnavailable)
	}
	return unclean, nil
}

// ReleaseNode ends the lease of name held by incarnation at once (a clean
// stop): its tenants are reassignable without waiting.
func (r *Catalog) ReleaseNode(ctx context.Context, name, incarnation string) error {
	// incarnation '': ended cleanly (RenewNode's unclean).
	_, err := r.db.ExecContext(ctx, r.rebind(`UPDATE `+r.nodesTable()+` SET lease_until = `+r.dbNow()+`, incarnation = '' WHERE name = ? AND incarnation = ?`), name, incarnation)
	return err
}

// Nodes lists the nodes, with their leases judged by the catalog's clock
// now and the tenants each owns.
func (r *Catalog) Nodes(ctx context.Context) ([]Node, error) {
	if r.dialect == "sqlite" {
		return nil, nil
	}
	rows, err := r.db.QueryContext(ctx, `SELECT n.name, n.address, n.incarnation, n.started_at, n.renewed_at, n.lease_until, n.open_shards, `+r.dbNow()+`,
		(SELECT count(*) FROM `+r.table+` t WHERE t.node = n.name) FROM `+r.nodesTable()+` n ORDER BY n.name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w: %w", err, engine.ErrUnavailable)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var n Node
		var started, renewed, until, now int64
		if err := rows.Scan(&n.Name, &n.Address, &n.Incarnation, &started, &renewed, &until, &n.OpenShards, &now, &n.Tenants); err != nil {
			return nil, err
		}
		n.StartedAt, n.RenewedAt, n.LeaseUntil = time.UnixMicro(started).UTC(), time.UnixMicro(renewed).UTC(), time.UnixMicro(until).UTC()
		n.Alive = until > now
		out = append(out, n)
	}
	return out, rows.Err()
}

// Listen reloads the cache whenever the catalog's table changes, as
// PostgreSQL notifies it (a trigger on the table), until ctx ends; it
// reconnects after a failure. Elsewhere it returns at once: Watch's polling
// is all there is.
func (r *Catalog) Listen(ctx context.Context, onChange func()) {
	if r.dialect != "postgres" {
		return
	}
	for ctx.Err() == nil {
		r.listenOnce(ctx, onChange)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (r *Catalog) listenOnce(ctx context.Context, onChange func()) {
	conn, err := pgx.Connect(ctx, r.dsn)
	if err != nil {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+r.table); err != nil {
		return
	}
	// Changes made while not listening: read once now.
	_ = r.Reload(ctx)
	r.listening.Store(true)
	defer r.listening.Store(false)
	for {
		nt, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		if err := r.reloadTenant(ctx, nt.Payload); err == nil && onChange != nil {
			onChange()
		}
	}
}

// reloadTenant reads one tenant's row again (a notification's payload),
// or the whole catalog when the payload names none.
func (r *Catalog) reloadTenant(ctx context.Context, id string) error {
	if id == "" {
		return r.Reload(ctx)
	}
	if _, err := r.Refresh(ctx, id); err != nil && !errors.Is(err, engine.ErrTenantNotFound) {
		return err
	}
	if f := r.onReload.Load(); f != nil {
		(*f)()
	}
	return nil
}

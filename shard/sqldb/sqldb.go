// Package sqldb runs tenant shards on a database server reached through
// database/sql: PostgreSQL (a tenant is a schema) and MySQL/MariaDB (a tenant
// is a database). One connection pool serves every tenant of a server. A
// shard holds a pooled connection only while it uses it: the writer for one
// batch transaction, a reader for one Read. Before its first statement a
// connection is switched to the tenant's namespace, outside any transaction,
// so a rolled-back batch can never leave it pointing elsewhere.
//
// shard/postgres and shard/mysql supply a Dialect; this package does the rest
// the same way for both, as shard/sqlite does for files.
package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
)

// Dialect is what differs between the servers.
type Dialect struct {
	// Name is the backend and the migrations folder ("postgres", "mysql").
	Name string
	// FenceQuery reads the tenant's fencing token with a shared row lock
	// (shard.Options.FenceQuery).
	FenceQuery string
	// Rebind turns '?' placeholders into the server's; nil keeps them.
	Rebind func(query string) string
	// Use returns the statement that points a connection at namespace ns.
	Use func(ns string) string
	// Exists returns a query with one '?' (already rebound) that counts
	// namespaces named by its argument.
	Exists string
	// Create and Drop return the statements that create and drop ns.
	Create, Drop func(ns string) string
	// Translate maps a driver error to an engine error, keeping it wrapped.
	Translate func(error) error
	// ConnKey, if set, returns a comparable identity of the server session
	// under a database/sql driver connection, stable across checkouts, so
	// that a session already pointed at a namespace is not switched again.
	ConnKey func(driverConn any) any
}

// QuoteIdent quotes an identifier with double quotes (PostgreSQL, and MySQL
// under ANSI_QUOTES). Only validated tenant ids reach it; it still doubles
// embedded quotes.
func QuoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// Namespace is the schema or database of a tenant: "t_" and its id. It is
// never derived from a slug or other input.
func Namespace(tenantID string) (string, error) {
	if !engine.ValidTenantID(tenantID) {
		return "", engine.Invalidf("invalid tenant id")
	}
	return "t_" + tenantID, nil
}

// Server is one database server shared by all its tenants.
type Server struct {
	DB      *sql.DB
	Dialect Dialect
	// AcquireTimeout bounds the wait for a pooled connection and for the
	// server's locks (default 3 s); past it a write answers ErrBusy.
	AcquireTimeout time.Duration
	ShardOpts      shard.Options
	// OnClose, if set, runs after DB is closed (PostgreSQL closes its pgxpool).
	OnClose func()

	nsMu sync.Mutex
	ns   map[any]string // see usingNS
}

// Close closes the pool; every shard of this server must be closed first.
func (s *Server) Close() error {
	err := s.DB.Close()
	if s.OnClose != nil {
		s.OnClose()
	}
	return err
}

func (s *Server) timeout() time.Duration {
	if s.AcquireTimeout <= 0 {
		return 3 * time.Second
	}
	return s.AcquireTimeout
}

var _ shard.Storage = (*Server)(nil)

// Create creates the tenant's namespace with the current schema.
func (s *Server) Create(ctx context.Context, p engine.Placement) error {
	ns, err := Namespace(p.TenantID)
	if err != nil {
		return err
	}
	if _, err := s.DB.ExecContext(ctx, s.Dialect.Create(ns)); err != nil {
		return s.Dialect.Translate(err)
	}
	c := &Conns{srv: s, ns: ns}
	w, err := c.OpenWriter(ctx)
	if err != nil {
		// Nothing half-created stays behind.
		if _, derr := s.DB.ExecContext(context.WithoutCancel(ctx), s.Dialect.Drop(ns)); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop half-created %s: %w", ns, derr))
		}
		return err
	}
	return w.Close()
}

// Destroy drops the tenant's namespace and everything in it.
func (s *Server) Destroy(ctx context.Context, p engine.Placement) error {
	ns, err := Namespace(p.TenantID)
	if err != nil {
		return err
	}
	// Sessions pointing at the dropped namespace point at nothing now (MySQL)
	// or at whatever is created under that name next: switch them again.
	defer s.forgetNS()
	if _, err := s.DB.ExecContext(ctx, s.Dialect.Drop(ns)); err != nil {
		return fmt.Errorf("drop %s: %w", ns, s.Dialect.Translate(err))
	}
	return nil
}

// Open opens the shard of an existing tenant, migrating it if older. A
// namespace that does not exist is not created: a deleted tenant stays gone.
func (s *Server) Open(ctx context.Context, p engine.Placement) (*shard.Shard, error) {
	ns, err := Namespace(p.TenantID)
	if err != nil {
		return nil, err
	}
	var n int64
	if err := s.DB.QueryRowContext(ctx, s.Dialect.Exists, ns).Scan(&n); err != nil {
		return nil, fmt.Errorf("%w: %w", engine.ErrUnavailable, s.Dialect.Translate(err))
	}
	if n == 0 {
		return nil, fmt.Errorf("%s %s does not exist: %w", s.Dialect.Name, ns, engine.ErrUnavailable)
	}
	so := s.ShardOpts
	so.Epoch, so.TenantID, so.FenceQuery = p.Epoch, p.TenantID, s.Dialect.FenceQuery
	return shard.Open(ctx, &Conns{srv: s, ns: ns}, so)
}

// Conns opens the connections of one tenant. It implements shard.Conns.
type Conns struct {
	srv *Server
	ns  string
}

var _ shard.Conns = (*Conns)(nil)

// conn takes a pooled connection and points it at the tenant's namespace.
// The wait is bounded by the server's AcquireTimeout.
func (c *Conns) conn(ctx context.Context) (*sql.Conn, error) {
	return c.connWithin(ctx, c.srv.timeout())
}

// migrateWait bounds the wait for a connection when opening a shard: many
// tenants opening at once (a migration of all, a burst after a restart) queue
// behind slow DDL, and an open is not a request with a latency budget.
const migrateWait = time.Minute

func (c *Conns) connWithin(ctx context.Context, d time.Duration) (*sql.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	conn, err := c.srv.DB.Conn(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return nil, fmt.Errorf("no pooled %s connection within %v: %w", c.srv.Dialect.Name, d, engine.ErrBusy)
		}
		return nil, fmt.Errorf("%w: %w", engine.ErrUnavailable, c.srv.Dialect.Translate(err))
	}
	key := c.srv.connKey(conn)
	if key != nil && c.srv.usingNS(key) == c.ns {
		return conn, nil // already pointed at this tenant: save a round trip
	}
	if _, err := conn.ExecContext(ctx, c.srv.Dialect.Use(c.ns)); err != nil {
		c.srv.setNS(key, "") // state unknown: switch again next time
		_ = conn.Close()     // the next user switches it again before any statement
		return nil, fmt.Errorf("use %s: %w", c.ns, c.srv.Dialect.Translate(err))
	}
	c.srv.setNS(key, c.ns)
	return conn, nil
}

// connKey identifies the server session under a pooled connection, or nil
// when the dialect cannot tell (then every use switches namespace).
func (s *Server) connKey(conn *sql.Conn) any {
	if s.Dialect.ConnKey == nil {
		return nil
	}
	var key any
	_ = conn.Raw(func(dc any) error {
		key = s.Dialect.ConnKey(dc)
		return nil
	})
	return key
}

// The namespace each server session points at. Entries hold their session
// object, so a closed session's address is never reused for a new one while
// its entry exists; the map is emptied when it outgrows the pool (closed
// sessions accumulate) and whenever a namespace is dropped.
func (s *Server) usingNS(key any) string {
	s.nsMu.Lock()
	defer s.nsMu.Unlock()
	return s.ns[key]
}

// maxRemembered bounds the sessions whose namespace is remembered: a pool
// holds far fewer; the rest are closed sessions the map keeps alive.
const maxRemembered = 1024

func (s *Server) setNS(key any, ns string) {
	if key == nil {
		return
	}
	s.nsMu.Lock()
	defer s.nsMu.Unlock()
	if s.ns == nil || len(s.ns) > maxRemembered {
		s.ns = make(map[any]string)
	}
	if ns == "" {
		delete(s.ns, key)
		return
	}
	s.ns[key] = ns
}

func (s *Server) forgetNS() {
	s.nsMu.Lock()
	s.ns = nil
	s.nsMu.Unlock()
}

// OpenWriter returns the writer's connection and brings the schema up to date.
func (c *Conns) OpenWriter(ctx context.Context) (shard.WriteConn, error) {
	w := &writeConn{c: c}
	if _, err := migrations.Up(ctx, w, c.srv.Dialect.Name); err != nil {
		_ = w.Close()
		return nil, err
	}
	return w, nil
}

// OpenReader returns a read connection; it holds a pooled connection only
// between Acquire and Release.
func (c *Conns) OpenReader(ctx context.Context) (shard.ReadConn, error) {
	return &readConn{c: c}, nil
}

type readConn struct {
	c    *Conns
	conn *sql.Conn
	querier
}

var _ shard.ScopedReadConn = (*readConn)(nil)

func (r *readConn) Acquire(ctx context.Context) error {
	conn, err := r.c.conn(ctx)
	if err != nil {
		return err
	}
	r.conn = conn
	r.querier = querier{x: conn, d: &r.c.srv.Dialect}
	return nil
}

func (r *readConn) Release() {
	if r.conn != nil {
		_ = r.conn.Close()
		r.conn = nil
		r.querier = querier{}
	}
}

func (r *readConn) Close() error {
	r.Release()
	return nil
}

// writeConn holds a pooled connection from Begin to Commit or Rollback.
type writeConn struct {
	c    *Conns
	conn *sql.Conn
	tx   *sql.Tx
	querier
}

var _ shard.WriteConn = (*writeConn)(nil)

func (w *writeConn) Begin() error { return w.begin(w.c.srv.timeout()) }

func (w *writeConn) begin(wait time.Duration) error {
	if w.tx != nil {
		return errors.New("sqldb: transaction already open")
	}
	conn, err := w.c.connWithin(context.Background(), wait)
	if err != nil {
		return err
	}
	d := &w.c.srv.Dialect
	tx, err := conn.BeginTx(context.Background(), nil)
	if err != nil {
		_ = conn.Close()
		return d.Translate(err)
	}
	w.conn, w.tx = conn, tx
	w.querier = querier{x: tx, d: d}
	return nil
}

func (w *writeConn) end(commit bool) error {
	if w.tx == nil {
		return nil
	}
	var err error
	if commit {
		err = w.tx.Commit()
	} else {
		err = w.tx.Rollback()
		if errors.Is(err, sql.ErrTxDone) {
			err = nil
		}
	}
	_ = w.conn.Close()
	w.conn, w.tx, w.querier = nil, nil, querier{}
	return w.c.srv.Dialect.Translate(err)
}

func (w *writeConn) Savepoint() error        { return w.exec("SAVEPOINT op") }
func (w *writeConn) ReleaseSavepoint() error { return w.exec("RELEASE SAVEPOINT op") }
func (w *writeConn) RollbackSavepoint() error {
	if err := w.exec("ROLLBACK TO SAVEPOINT op"); err != nil {
		return err
	}
	return w.exec("RELEASE SAVEPOINT op")
}
func (w *writeConn) Commit() error   { return w.end(true) }
func (w *writeConn) Rollback() error { return w.end(false) }
func (w *writeConn) Close() error    { return w.Rollback() }

func (w *writeConn) exec(stmt string) error {
	if w.tx == nil {
		return errors.New("sqldb: no transaction open")
	}
	_, err := w.tx.Exec(stmt)
	return w.c.srv.Dialect.Translate(err)
}

// The schema version lives in a one-row table of the tenant's namespace,
// keyshard_schema, written in the same transaction as the migration where the
// server allows (PostgreSQL; MySQL commits DDL implicitly, so its scripts are
// written to run again after a crash half-way).
const versionTable = "keyshard_schema"

// Version implements migrations.Target.
func (w *writeConn) Version(ctx context.Context) (int, error) {
	conn, err := w.c.connWithin(ctx, migrateWait)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	d := &w.c.srv.Dialect
	if _, err := conn.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+versionTable+" (version BIGINT NOT NULL)"); err != nil {
		return 0, d.Translate(err)
	}
	var v sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT MAX(version) FROM "+versionTable).Scan(&v); err != nil {
		return 0, d.Translate(err)
	}
	return int(v.Int64), nil
}

// Apply implements migrations.Target.
func (w *writeConn) Apply(ctx context.Context, m migrations.Migration) (err error) {
	if err := w.begin(migrateWait); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = w.Rollback()
		}
	}()
	var cur sql.NullInt64
	if err := w.tx.QueryRowContext(ctx, "SELECT MAX(version) FROM "+versionTable).Scan(&cur); err != nil {
		return w.c.srv.Dialect.Translate(err)
	}
	if int(cur.Int64) >= m.Version {
		return w.Commit()
	}
	for _, stmt := range SplitStatements(m.SQL) {
		if _, err := w.tx.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", firstLine(stmt), w.c.srv.Dialect.Translate(err))
		}
	}
	if _, err := w.tx.ExecContext(ctx, "DELETE FROM "+versionTable); err != nil {
		return w.c.srv.Dialect.Translate(err)
	}
	if _, err := w.tx.ExecContext(ctx, w.c.srv.Dialect.rebind("INSERT INTO "+versionTable+" (version) VALUES (?)"), m.Version); err != nil {
		return w.c.srv.Dialect.Translate(err)
	}
	return w.Commit()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// SplitStatements splits a migration script into statements at semicolons
// that end a line, dropping comment lines. Migration scripts hold no
// procedural code, so that is enough.
func SplitStatements(script string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		if i := strings.Index(line, "--"); i >= 0 && !strings.Contains(line[:i], "'") {
			line = line[:i]
			t = strings.TrimSpace(line)
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			if s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

func (d *Dialect) rebind(q string) string {
	if d.Rebind == nil {
		return q
	}
	return d.Rebind(q)
}

// RaiseFence raises the tenant's fencing token to epoch (cluster.Fencer):
// the UPDATE waits for the write batches that read the older token under
// their shared row lock. A batch that still holds it after a second
// belongs to an owner that is paused or cut off: its session is ended
// (pg_terminate_backend; KILL on MySQL/MariaDB), so its transaction rolls
// back and it commits nothing, which lets a tenant leave a node stopped
// mid-batch.
func (s *Server) RaiseFence(ctx context.Context, p engine.Placement, epoch int64) error {
	ns, err := Namespace(p.TenantID)
	if err != nil {
		return err
	}
	conn, err := s.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", s.Dialect.Translate(err), engine.ErrUnavailable)
	}
	defer conn.Close()
	q := s.Dialect.rebind(`UPDATE ` + QuoteIdent(ns) + `.fence SET epoch = ? WHERE id = 1 AND epoch < ?`)
	self, blockers := `SELECT pg_backend_pid()`, []string{`SELECT pg_terminate_backend(b) FROM unnest(pg_blocking_pids($1)) AS b`}
	if s.Dialect.Name != "postgres" {
		self = `SELECT CONNECTION_ID()`
		blockers = []string{
			// MariaDB, MySQL 5.7
			`SELECT b.trx_mysql_thread_id FROM information_schema.INNODB_LOCK_WAITS w
			 JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
			 JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
			 WHERE r.trx_mysql_thread_id = ?`,
			// MySQL 8
			`SELECT blocking_pid FROM sys.innodb_lock_waits WHERE waiting_pid = ?`,
		}
	}
	var id int64
	if err := conn.QueryRowContext(ctx, self).Scan(&id); err != nil {
		return s.Dialect.Translate(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.ExecContext(ctx, q, epoch, epoch)
		done <- err
	}()
	select {
	case err := <-done:
		return s.Dialect.Translate(err)
	case <-time.After(time.Second):
	}
	if s.Dialect.Name == "postgres" {
		_, _ = s.DB.ExecContext(ctx, blockers[0], id)
	} else {
		for _, bq := range blockers {
			rows, err := s.DB.QueryContext(ctx, bq, id)
			if err != nil {
				continue
			}
			var ids []int64
			for rows.Next() {
				var b int64
				if rows.Scan(&b) == nil {
					ids = append(ids, b)
				}
			}
			_ = rows.Close()
			for _, b := range ids {
				_, _ = s.DB.ExecContext(ctx, "KILL "+strconv.FormatInt(b, 10))
			}
			break
		}
	}
	if err := <-done; err != nil {
		return s.Dialect.Translate(err)
	}
	return nil
}

// Package mysql places tenants on a MySQL or MariaDB server, one database per
// tenant ("t_" and the tenant id), all served by one connection pool. The
// shard machinery is shard's; connections come from shard/sqldb.
package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqldb"
)

// Dialect names this backend's migrations folder.
const Dialect = migrations.DialectMySQL

// Options configure the server connection.
type Options struct {
	// MaxConns bounds the pool shared by all tenants (default 32).
	MaxConns int
	// LockTimeout bounds the wait for a pooled connection and for row
	// locks (default 3 s, rounded up to whole seconds for InnoDB); past it
	// a write answers ErrBusy.
	LockTimeout time.Duration
}

// Open connects to the server at dsn (go-sql-driver format, e.g.
// root@tcp(127.0.0.1:3306)/test) and returns the backend.
func Open(ctx context.Context, dsn string, o Options, sopts shard.Options) (*sqldb.Server, error) {
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return nil, engine.Invalidf("mysql DSN: %v", err)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 32
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 3 * time.Second
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// ANSI_QUOTES: "key" is an identifier, as in SQLite and PostgreSQL.
	cfg.Params["sql_mode"] = "'STRICT_ALL_TABLES,ANSI_QUOTES,NO_ENGINE_SUBSTITUTION'"
	cfg.Params["innodb_lock_wait_timeout"] = strconv.Itoa(int((o.LockTimeout + time.Second - 1) / time.Second))
	cfg.Collation = "utf8mb4_bin"
	// One round trip per statement instead of prepare, execute, close.
	cfg.InterpolateParams = true
	cfg.ParseTime = false
	// Exec reports rows matched, as SQLite and PostgreSQL do, not only
	// rows whose values changed.
	cfg.ClientFoundRows = true
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		return nil, engine.Invalidf("mysql DSN: %v", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(o.MaxConns)
	db.SetMaxIdleConns(o.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql: %w: %w", Translate(err), engine.ErrUnavailable)
	}
	return &sqldb.Server{DB: db, Dialect: NewDialect(), AcquireTimeout: o.LockTimeout, ShardOpts: sopts}, nil
}

// NewDialect returns MySQL's dialect for sqldb.
func NewDialect() sqldb.Dialect {
	return sqldb.Dialect{
		Name:       Dialect,
		FenceQuery: `SELECT epoch FROM fence WHERE id = 1 LOCK IN SHARE MODE`,
		Use:        func(ns string) string { return "USE " + sqldb.QuoteIdent(ns) },
		Exists:     "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
		Create: func(ns string) string {
			return "CREATE DATABASE IF NOT EXISTS " + sqldb.QuoteIdent(ns) + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
		},
		Drop:      func(ns string) string { return "DROP DATABASE IF EXISTS " + sqldb.QuoteIdent(ns) },
		Translate: Translate,
		ConnKey:   func(dc any) any { return dc }, // one driver connection per session
	}
}

// Translate maps MySQL errors to engine errors, keeping the original.
func Translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, engine.ErrConflict) || errors.Is(err, engine.ErrBusy) || errors.Is(err, engine.ErrUnavailable) {
		return err
	}
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1062, 1586: // duplicate entry
			return fmt.Errorf("%w: %w", engine.ErrConflict, err)
		case 1205, 1213: // lock wait timeout, deadlock
			return fmt.Errorf("%w: %w", engine.ErrBusy, err)
		case 1040, 1049, 1053, 1114, 1021, 3024, 1927:
			// too many connections, unknown database, shutdown, table
			// full, disk full, query interrupted, connection killed
			return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
		}
		return err
	}
	var ne net.Error
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, gomysql.ErrInvalidConn) || errors.As(err, &ne) || errors.Is(err, sql.ErrConnDone) {
		return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
	}
	return err
}

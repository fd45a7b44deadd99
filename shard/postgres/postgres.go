// Package postgres places tenants in a PostgreSQL database, one schema per
// tenant ("t_" and the tenant id), all served by one pgxpool. The shard
// machinery (single writer with group commit, readers, deferred records) is
// shard's; connections come from shard/sqldb.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/migrations"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqldb"
)

// Dialect names this backend's migrations folder.
const Dialect = migrations.DialectPostgres

// Options configure the server connection.
type Options struct {
	// MaxConns bounds the pool shared by all tenants (default 32).
	MaxConns int32
	// LockTimeout bounds the wait for a pooled connection and for row and
	// table locks (default 3 s); past it a write answers ErrBusy.
	LockTimeout time.Duration
}

// Open connects to the server at dsn and returns the backend.
func Open(ctx context.Context, dsn string, o Options, sopts shard.Options) (*sqldb.Server, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, engine.Invalidf("postgres DSN: %v", err)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 32
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 3 * time.Second
	}
	cfg.MaxConns = o.MaxConns
	rp := cfg.ConnConfig.RuntimeParams
	rp["lock_timeout"] = strconv.FormatInt(o.LockTimeout.Milliseconds(), 10)
	if _, ok := rp["application_name"]; !ok {
		rp["application_name"] = "keyshard" // a DSN's own (a node's name) is kept
	}
	// Tenants' schemas are reached through search_path alone; nothing in
	// public is ever meant to be found by a tenant's query.
	rp["search_path"] = "pg_catalog"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w: %w", Translate(err), engine.ErrUnavailable)
	}
	db := stdlib.OpenDBFromPool(pool)
	return &sqldb.Server{DB: db, Dialect: NewDialect(), AcquireTimeout: o.LockTimeout, ShardOpts: sopts, OnClose: pool.Close}, nil
}

// NewDialect returns PostgreSQL's dialect for sqldb.
func NewDialect() sqldb.Dialect {
	return sqldb.Dialect{
		Name:       Dialect,
		Rebind:     Rebind,
		FenceQuery: `SELECT epoch FROM fence WHERE id = 1 FOR SHARE`,
		Use:        func(ns string) string { return "SET search_path TO " + sqldb.QuoteIdent(ns) },
		Exists:     "SELECT COUNT(*) FROM pg_catalog.pg_namespace WHERE nspname = $1",
		Create:     func(ns string) string { return "CREATE SCHEMA IF NOT EXISTS " + sqldb.QuoteIdent(ns) },
		Drop:       func(ns string) string { return "DROP SCHEMA IF EXISTS " + sqldb.QuoteIdent(ns) + " CASCADE" },
		Translate:  Translate,
		// database/sql over a pgxpool makes a new driver connection per
		// checkout; the pgx.Conn (the server session) underneath is stable.
		ConnKey: func(dc any) any {
			if c, ok := dc.(*stdlib.Conn); ok {
				return c.Conn()
			}
			return nil
		},
	}
}

var rebound sync.Map // query → rebound query

// Rebind turns '?' placeholders into $1, $2, ... outside quoted strings and
// identifiers.
func Rebind(q string) string {
	if v, ok := rebound.Load(q); ok {
		return v.(string)
	}
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	out := b.String()
	rebound.Store(q, out)
	return out
}

// Translate maps PostgreSQL errors to engine errors, keeping the original.
func Translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, engine.ErrConflict) || errors.Is(err, engine.ErrBusy) || errors.Is(err, engine.ErrUnavailable) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %w", engine.ErrConflict, err)
		case pe.Code == "40001", pe.Code == "40P01", pe.Code == "55P03", pe.Code == "57014":
			// serialization failure, deadlock, lock timeout, statement timeout
			return fmt.Errorf("%w: %w", engine.ErrBusy, err)
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57P"), pe.Code == "53300",
			pe.Code == "3F000", strings.HasPrefix(pe.Code, "53"):
			// connection exceptions, admin shutdown, too many connections,
			// missing schema, insufficient resources (disk full)
			return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
		}
		return err
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "driver: bad connection") {
		return fmt.Errorf("%w: %w", engine.ErrUnavailable, err)
	}
	return err
}

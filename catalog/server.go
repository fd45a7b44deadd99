package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard/postgres"
)

// DefaultServerTable is the catalog's table on a PostgreSQL or MySQL server,
// named so as not to collide with anything else in a shared database.
const DefaultServerTable = "keyshard_tenants"

var tableName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// OpenServer opens (creating its table if needed) a catalog kept on a
// database server, so that several Keyshard servers can share it:
// dsn is postgres://… (or postgresql://…) for PostgreSQL, and mysql:// then a
// go-sql-driver DSN (mysql://user:pass@tcp(host:3306)/db) for MySQL/MariaDB.
// table names the catalog table (DefaultServerTable when empty).
func OpenServer(ctx context.Context, dsn, table string) (*Catalog, error) {
	if table == "" {
		table = DefaultServerTable
	}
	if !tableName.MatchString(table) {
		return nil, engine.Invalidf("catalog table %q: want lower-case letters, digits and _", table)
	}
	r := &Catalog{table: table, work: workMarks{table: table + "_work"}, dsn: dsn}
	var ddl, idType, dialect string
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, engine.Invalidf("catalog DSN: %v", err)
		}
		r.db, r.rebind, r.isUnique = db, postgres.Rebind, isUniquePostgres
		ddl = serverSchema("TEXT", "TEXT", "TEXT NOT NULL DEFAULT ''")
		idType, dialect = "TEXT", "postgres"
	case strings.HasPrefix(dsn, "mysql://"):
		cfg, err := gomysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
		if err != nil {
			return nil, engine.Invalidf("catalog DSN: %v", err)
		}
		cfg.Collation = "utf8mb4_bin"
		cfg.ClientFoundRows = true // UPDATE's count is rows matched: the epoch CAS relies on it
		// UNIX_TIMESTAMP(NOW(6)), the leases' clock, converts through the
		// session's time zone: UTC, so that no DST change moves it.
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		cfg.Params["time_zone"] = "'+00:00'"
		conn, err := gomysql.NewConnector(cfg)
		if err != nil {
			return nil, engine.Invalidf("catalog DSN: %v", err)
		}
		r.db, r.rebind, r.isUnique = sql.OpenDB(conn), func(q string) string { return q }, isUniqueMySQL
		ddl = serverSchema("VARCHAR(64)", "VARCHAR(255)", "VARCHAR(1024) NOT NULL DEFAULT ''")
		idType, dialect = "VARCHAR(64)", "mysql"
	default:
		return nil, engine.Invalidf("catalog DSN must start with postgres://, postgresql:// or mysql://")
	}
	r.db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.ddl(pctx, strings.ReplaceAll(ddl, "tenants", table)); err != nil {
		_ = r.db.Close()
		return nil, fmt.Errorf("catalog schema: %w: %w", err, engine.ErrUnavailable)
	}
	r.dialect = dialect
	text := "TEXT"
	if dialect == "mysql" {
		text = "VARCHAR(255)"
	}
	if err := r.addColumns(pctx, dialect, text); err != nil {
		_ = r.db.Close()
		return nil, fmt.Errorf("%w: %w", err, engine.ErrUnavailable)
	}
	if err := r.createWork(pctx, idType, dialect); err != nil {
		_ = r.db.Close()
		return nil, fmt.Errorf("%w: %w", err, engine.ErrUnavailable)
	}
	if err := r.createNodes(pctx); err != nil {
		_ = r.db.Close()
		return nil, fmt.Errorf("%w: %w", err, engine.ErrUnavailable)
	}
	if err := r.Reload(ctx); err != nil {
		_ = r.db.Close()
		return nil, err
	}
	return r, nil
}

func serverSchema(id, text, location string) string {
	return `CREATE TABLE IF NOT EXISTS tenants (
    id           ` + id + ` PRIMARY KEY,
    slug         ` + text + ` NOT NULL UNIQUE,
    name         ` + text + ` NOT NULL,
    status       ` + text + ` NOT NULL,
    backend      ` + text + ` NOT NULL,
    location     ` + location + `,
    epoch        BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    approved_at  BIGINT,
    updated_at   BIGINT NOT NULL,
    imported_at  BIGINT,
    node         ` + text + ` NOT NULL DEFAULT ''
)`
}

func isUniquePostgres(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func isUniqueMySQL(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

// DropServerTable drops a server catalog's table; tests use it to clean up.
func (r *Catalog) DropServerTable(ctx context.Context) error {
	if _, err := r.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+r.work.table); err != nil {
		return err
	}
	if _, err := r.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+r.nodesTable()); err != nil {
		return err
	}
	if _, err := r.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+r.table); err != nil {
		return err
	}
	if r.dialect == "postgres" {
		_, err := r.db.ExecContext(ctx, "DROP FUNCTION IF EXISTS "+r.table+"_notify()")
		return err
	}
	return nil
}

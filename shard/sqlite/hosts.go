package sqlite

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/migrations"
)

// A shard's writer can run on a reused connection (Options.ReuseConnections).
//
// Opening a SQLite connection costs more than what a cold tenant then does
// with it: the driver makes a new instance of its module with fresh memory
// (its first touches are page faults), and SQLite sets up the connection;
// closing undoes it all. A benchmark of a cold tenant's whole visit (open,
// one read, one write, close: BenchmarkCache_Acquire/Cycle) spent about
// 2.8 ms of CPU, half of it in the kernel.
//
// So a closed writer's connection is kept, and the next shard's file is
// attached to it as the schema "shard": unqualified names resolve to it,
// since the connection's own main database is an empty in-memory one. The
// shard is detached when it closes: its statements are finalized first, and
// the querier that ran them forgets the connection, so that one kept past
// Close fails instead of reaching the next shard. A connection is kept only
// when nothing of the shard can outlive the detach: not after a panic (the
// shard discards it), not in a transaction, not with temporary objects
// (those would shadow the next shard's tables). The connection-level
// settings a shard could change are set again at each attach. The schema is
// still read from the file at each attach, as by a new connection. A small
// WAL is left in place at close rather than checkpointed, and the -wal and
// -shm files are never deleted at close (keepsWAL in sqlite.go). A kept
// connection holds the memory its largest batch needed.
//
// A read that runs on such a writer (a cold shard's reads do, when the
// writer is idle) sees the empty main database's sqlite_master, not the
// shard's: code that lists a shard's tables uses pragma_table_list (every
// schema's) or names the schema. No code of the server reads sqlite_master
// through a shard.
//
// The main database is capped at one page, so that a statement that would
// create something there (an unqualified CREATE, which resolves to main)
// fails instead of silently writing to memory; VACUUM and the pragmas that
// act on main when they name no schema are refused (pooledGuard). Migrations never run on a
// reused connection: a shard whose schema is not current is opened on a
// connection of its own, as before.

// shardSchema is the name a shard's file is attached as.
const shardSchema = "shard"

// maxIdleHosts bounds the connections kept for reuse. Each holds its
// module's memory at its high-water mark (the writer's page cache, a few MB).
const maxIdleHosts = 8

type hostPool struct {
	mu   sync.Mutex
	idle []*sqlite3.Conn
}

var hosts hostPool

// get returns an idle host connection, or a new one; reused says which.
func (p *hostPool) get() (db *sqlite3.Conn, reused bool, err error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		db := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return db, true, nil
	}
	p.mu.Unlock()
	// OPEN_URI: the shard is attached by a file: URI, whose mode says
	// whether it may be created. The flags (NOFOLLOW included) carry over
	// to every attached file.
	db, err = sqlite3.OpenFlags(":memory:", sqlite3.OPEN_READWRITE|sqlite3.OPEN_CREATE|sqlite3.OPEN_URI|sqlite3.OPEN_NOFOLLOW)
	if err != nil {
		return nil, false, translate(err)
	}
	// A shard's close checkpoints only when it chooses to (keepsWAL), and
	// never deletes the -wal and -shm files.
	if _, err := db.Config(sqlite3.DBCONFIG_NO_CKPT_ON_CLOSE, true); err != nil {
		_ = db.Close()
		return nil, false, translate(err)
	}
	return db, false, nil // attachWriter sets it up (hostBaseline) at each attach
}

// CloseIdleHosts closes the writer connections kept for reuse that no
// shard uses now, giving back the memory each holds; a shard opened later
// makes a new one. The server calls it once its shards are closed. Safe
// for concurrent use.
func CloseIdleHosts() {
	hosts.mu.Lock()
	idle := hosts.idle
	hosts.idle = nil
	hosts.mu.Unlock()
	for _, db := range idle {
		_ = db.Close()
	}
}

// hostBaseline sets again, at each attach, what a shard's statements could
// have changed on the connection.
const hostBaseline = "PRAGMA main.max_page_count=1; PRAGMA foreign_keys=on; PRAGMA query_only=0; PRAGMA recursive_triggers=0; PRAGMA wal_autocheckpoint=1000;"

// put keeps a host whose shard was detached, or closes it.
func (p *hostPool) put(db *sqlite3.Conn) {
	p.mu.Lock()
	if len(p.idle) < maxIdleHosts {
		p.idle = append(p.idle, db)
		db = nil
	}
	p.mu.Unlock()
	if db != nil {
		_ = db.Close()
	}
}

// fileURI is path as a file: URI for ATTACH, with the characters a URI
// gives a meaning to escaped.
func fileURI(path, mode string) string {
	var b strings.Builder
	b.WriteString("file:")
	for i := 0; i < len(path); i++ {
		switch ch := path[i]; ch {
		case '%', '?', '#':
			fmt.Fprintf(&b, "%%%02X", ch)
		default:
			b.WriteByte(ch)
		}
	}
	b.WriteString("?mode=")
	b.WriteString(mode)
	return b.String()
}

// attachWriter opens the shard's writer on a reused connection. It returns
// nil and no error when the shard's schema is not current (or the file is
// new): the caller then opens a connection of its own, which migrates.
func (c *Conns) attachWriter(ctx context.Context) (*writeConn, error) {
	latest, err := migrations.Latest(Dialect)
	if err != nil {
		return nil, err
	}
	db, reused, err := hosts.get()
	if err != nil {
		return nil, err
	}
	mode := "rwc"
	if c.opts.MustExist {
		mode = "rw"
	}
	if err := db.BusyTimeout(c.opts.BusyTimeout); err != nil {
		_ = db.Close()
		return nil, translate(err)
	}
	if err := db.Exec(c.connSyncPragmas()); err != nil {
		_ = db.Close()
		return nil, translate(err)
	}
	q := newQuerier(db)
	q.guard = pooledGuard
	if _, err := q.Exec("ATTACH DATABASE ? AS "+shardSchema, c.writerURI(mode)); err != nil {
		q.close()
		if db.GetAutocommit() {
			hosts.put(db)
		} else {
			_ = db.Close()
		}
		return nil, err
	}
	w := &writeConn{querier: q, schema: shardSchema, pooled: true,
		walPath: c.path + "-wal", walLimit: c.opts.WALLimit, keptLimit: c.opts.KeptWALLimit, busy: c.opts.BusyTimeout}
	err = db.Exec(hostBaseline + fmt.Sprintf(" PRAGMA %[1]s.cache_size=-%[2]d; PRAGMA %[1]s.journal_mode=wal; %[3]s",
		shardSchema, c.opts.WriterCacheKiB, c.syncPragmas(shardSchema)))
	if err != nil {
		_ = w.Close()
		return nil, translate(err)
	}
	v, err := w.Version(ctx)
	if err != nil || v != latest {
		cerr := w.Close()
		if err == nil {
			err = cerr
		}
		return nil, err
	}
	how := "new"
	if reused {
		how = "reused"
	}
	writerConns.WithLabelValues(how).Inc()
	return w, nil
}

// detach ends the shard's use of a reused connection and keeps the
// connection for the next shard, or closes it: when it is in a transaction,
// holds temporary objects, or cannot detach.
func (w *writeConn) detach() error {
	db := w.db
	w.querier.db = nil
	var temps int64 = -1
	if s, _, err := db.Prepare("SELECT count(*) FROM temp.sqlite_schema"); err == nil {
		if s.Step() {
			temps = s.ColumnInt64(0)
		}
		_ = s.Close()
	}
	if temps != 0 || !db.GetAutocommit() {
		return translate(db.Close())
	}
	if err := db.Exec("DETACH DATABASE " + shardSchema); err != nil {
		_ = db.Close()
		return translate(err)
	}
	hosts.put(db)
	return nil
}

// pooledGuard refuses, on a reused connection, the statements that would act
// on its empty main database instead of the shard's: VACUUM, and pragmas
// that name no schema, except those that look in every schema. It reads the
// statement's first words: a guard against mistakes in the server's own SQL
// (which never starts with a comment), not a parser.
func pooledGuard(query string) error {
	f := strings.Fields(strings.ToLower(query))
	if len(f) == 0 {
		return nil
	}
	switch f[0] {
	case "vacuum":
	case "pragma":
		if len(f) < 2 {
			break
		}
		name := strings.TrimRight(strings.SplitN(strings.SplitN(f[1], "=", 2)[0], "(", 2)[0], ";")
		if strings.HasPrefix(name, shardSchema+".") {
			return nil
		}
		switch name {
		case "quick_check", "integrity_check", "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list":
			return nil
		}
	default:
		return nil
	}
	return fmt.Errorf("sqlite: %q would act on the connection's empty main database, not the shard attached as %q: name the schema", query, shardSchema)
}

package sqlite

import (
	"errors"

	"github.com/ncruces/go-sqlite3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// storageErrors counts the driver errors that make a shard unavailable, by
// kind; never labelled by tenant (the logs name the tenant).
var storageErrors = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_sqlite_storage_errors_total",
	Help: "SQLite errors that made a shard unavailable, by kind: full, ioerr, corrupt, notadb, cantopen, readonly.",
}, []string{"kind"})

// seedFallbacks counts new shards made without their seed's rows (the
// in-memory copy could not be made, or the seed failed): the caller writes
// the rows after, so nothing is lost but the time CreateSeeded saves.
var seedFallbacks = promauto.NewCounter(prometheus.CounterOpts{
	Name: "keyshard_sqlite_seed_fallbacks_total",
	Help: "New SQLite shards made without their first rows (a tenant's signing key), which were then written after the creation.",
})

var storageErrorKinds = []struct {
	code sqlite3.ErrorCode
	kind string
}{
	{sqlite3.FULL, "full"}, {sqlite3.IOERR, "ioerr"}, {sqlite3.CORRUPT, "corrupt"},
	{sqlite3.NOTADB, "notadb"}, {sqlite3.CANTOPEN, "cantopen"}, {sqlite3.READONLY, "readonly"},
}

func init() {
	for _, k := range storageErrorKinds {
		storageErrors.WithLabelValues(k.kind)
	}
}

// countStorageError counts err under its kind.
func countStorageError(err error) {
	for _, k := range storageErrorKinds {
		if errors.Is(err, k.code) {
			storageErrors.WithLabelValues(k.kind).Inc()
			return
		}
	}
}

// walCheckpoints counts the checkpoints that bound a shard's WAL past its
// limit, by outcome (ok, busy: readers kept it, tried again later).
var walCheckpoints = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_sqlite_wal_bound_checkpoints_total",
	Help: "TRUNCATE checkpoints run because a shard's WAL passed its limit, by outcome (ok, busy).",
}, []string{"outcome"})

var walSweeps = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_sqlite_kept_wal_sweeps_total",
	Help: "Checkpoints of WALs that closed shards left, run once the shard stayed closed for a while, by outcome (ok; busy: the shard was open again or read, tried again later; gone: the file was removed or replaced; error).",
}, []string{"outcome"})

// keptWALsFound counts the WALs ScanKeptWALs found and noted: kept
// before the server started (a crash, or a stop whose sweep ran out of
// time), then swept as its own shards' are.
var keptWALsFound = promauto.NewCounter(prometheus.CounterOpts{
	Name: "keyshard_sqlite_kept_wals_found_total",
	Help: "WALs of closed SQLite shards found at the server's start (left by a crash, or by a stop whose sweep ran out of time) and noted for the sweep.",
})

// writerConns counts the connections shards' writers were opened on, by
// how: reused (a kept connection, the file attached), new (a kept one was
// wanted but none was idle: a new one made for reuse), own (a connection of
// the shard's own: reuse off, or a file that needed migrating).
var writerConns = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_sqlite_writer_connections_total",
	Help: "Connections SQLite shards' writers were opened on: reused (a kept connection, the shard's file attached to it), new (none was idle), own (a connection of the shard's own).",
}, []string{"how"})

func init() {
	for _, how := range []string{"reused", "new", "own"} {
		writerConns.WithLabelValues(how)
	}
}

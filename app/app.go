// Package app is the one place Keyshard is assembled: Open builds the
// storage engine (catalog, backends, shard cache) for the CLI's commands,
// and OpenServer builds everything `keyshard serve` runs on top of it (the
// hash pool, signing keys, auth flows, event recorder and background
// workers, export/import/move, and the HTTP API with every protocol).
// cmd/keyshard, the tests and the load generator's in-process server use it.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/secretfile"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/mysql"
	"github.com/keyshard/keyshard/shard/postgres"
	"github.com/keyshard/keyshard/shard/sqldb"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// Config is the storage configuration. Zero fields take defaults.
type Config struct {
	DataDir          string        // default ./data
	Synchronous      string        // FULL (default) or NORMAL
	InlineSync       bool          // FULL synced inside each commit, not pipelined (sqlite.Options.InlineSync)
	OwnConnections   bool          // every SQLite writer on a connection of its own (not sqlite.Options.ReuseConnections)
	KeptWALKiB       int           // largest WAL a closed SQLite shard keeps (sqlite.Options.KeptWALLimit): 0 default, negative none, at most MaxKeptWALKiB
	BusyTimeout      time.Duration // default 3s
	CacheCapacity    int           // shards kept open; default DefaultCacheCapacity
	MaxOpenShards    int           // hard limit incl. pinned; default 1.5×capacity
	QueueSize        int           // per-shard writer queue; default 1024
	DeferLimit       int           // per-shard buffer of fire-and-forget records; default 4096
	MaxBatch         int           // operations per transaction; default 512
	Readers          int           // read connections per shard; default 2
	DebounceInterval time.Duration // last-seen writes per user; default 5m
	CatalogPoll      time.Duration // how often to look for catalog changes made by other processes; default 1s

	// PostgresDSN and MySQLDSN enable those backends: a tenant is a schema
	// (PostgreSQL) or a database (MySQL/MariaDB) on that server. Empty: the
	// backend is not configured and tenants cannot be placed there.
	PostgresDSN, MySQLDSN string
	// ServerPool bounds each server backend's connection pool, shared by all
	// its tenants; default 32.
	ServerPool int
	// DefaultBackend places tenants created without a backend; default sqlite.
	DefaultBackend string
	// CatalogDSN keeps the catalog of tenants on a server (postgres://… or
	// mysql://…) so that several Keyshard servers can share it; empty: the
	// SQLite file catalog.db in DataDir.
	CatalogDSN string
	// Fenced: this process is one of several nodes: every shard's batches
	// check the tenant's fencing token (shard.Options.Fenced).
	Fenced bool
	// ScanKeptWALs: at start, find the WALs closed SQLite shards kept
	// before this process (a crash, a stop whose sweep ran out of time)
	// in every directory shards are placed in, and sweep them like this
	// process's own (sqlite.ScanKeptWALs). The server sets it; a
	// command's engine does not: its Close would checkpoint them all,
	// those of a server running beside it included.
	ScanKeptWALs bool
	// Node names this process when several nodes share the catalog
	// (OpenServer sets it): the scan for kept WALs skips the locations of
	// tenants another node serves, whose files are that node's to sweep.
	Node string
}

// MaxKeptWALKiB bounds Config.KeptWALKiB (1 GiB): a closed shard's WAL is
// read back whole at its next open.
const MaxKeptWALKiB = 1 << 20

// DefaultCacheCapacity: an idle shard (writer + 2 readers) holds ~1.4 MB
// RSS and ~9 file descriptors (README: "Sizing the shard cache"); 1000 open
// shards stay within the default ulimit -n of 20000 at 1.5× overshoot.
const DefaultCacheCapacity = 1000

// App is an open storage engine.
type App struct {
	Engine  *engine.Engine
	Catalog *catalog.Catalog
	Cache   *shard.Cache
	// Backends are the configured backends; Backends.Open opens a shard
	// outside the cache on whichever one its placement names.
	Backends shard.Backends
	SQLite   *sqlite.Backend
	// Postgres and MySQL are nil unless their DSN is configured.
	Postgres, MySQL *sqldb.Server

	// AfterShardsClosed, when set, runs in Close once every shard is
	// closed and before the catalog is (a node ends its lease there).
	AfterShardsClosed func() error

	stopPoll context.CancelFunc
	pollDone chan struct{}
}

// Open opens the catalog and prepares the backends; shards open on demand.
func Open(ctx context.Context, cfg Config) (*App, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.CacheCapacity <= 0 {
		cfg.CacheCapacity = DefaultCacheCapacity
	}
	if cfg.MaxOpenShards <= 0 {
		cfg.MaxOpenShards = cfg.CacheCapacity + cfg.CacheCapacity/2
	}
	if cfg.CatalogPoll <= 0 {
		cfg.CatalogPoll = time.Second
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	// A fenced shard tells when its tenant has moved to another node: the
	// catalog held here is stale, read it again.
	var cat *catalog.Catalog
	var cache atomic.Pointer[shard.Cache]
	reload := make(chan struct{}, 1)
	sopts := shard.Options{QueueSize: cfg.QueueSize, MaxBatch: cfg.MaxBatch, Readers: cfg.Readers,
		DeferLimit: cfg.DeferLimit, DebounceInterval: cfg.DebounceInterval, Fenced: cfg.Fenced,
		OnFenced: func(tenantID string, epoch int64) {
			select {
			case reload <- struct{}{}:
			default:
			}
			// Its shard here is fenced for good: close it, so that its
			// buffered records stop retrying and a later owner's epoch
			// opens a fresh one.
			if c := cache.Load(); c != nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_ = c.EvictStale(ctx, tenantID, epoch+1) // not a newer one opened since
				cancel()
			}
		}}
	if cfg.KeptWALKiB > MaxKeptWALKiB {
		return nil, engine.Invalidf("kept WAL limit %d KiB is over %d KiB", cfg.KeptWALKiB, MaxKeptWALKiB)
	}
	lite := &sqlite.Backend{DataDir: dir, Options: sqlite.Options{Synchronous: cfg.Synchronous, InlineSync: cfg.InlineSync, BusyTimeout: cfg.BusyTimeout,
		ReuseConnections: !cfg.OwnConnections, KeptWALLimit: int64(cfg.KeptWALKiB) << 10}, ShardOpts: sopts}
	if _, err := sqlite.NewConns("", lite.Options); err != nil {
		return nil, err // invalid synchronous setting
	}
	if cfg.DefaultBackend == "" {
		cfg.DefaultBackend = engine.BackendSQLite
	}
	if err := engine.ValidateBackend(cfg.DefaultBackend); err != nil {
		return nil, err
	}
	backends := shard.Backends{engine.BackendSQLite: lite}
	var pg, my *sqldb.Server
	closeServers := func() {
		for _, s := range []*sqldb.Server{pg, my} {
			if s != nil {
				_ = s.Close()
			}
		}
	}
	if cfg.PostgresDSN != "" {
		if pg, err = postgres.Open(ctx, cfg.PostgresDSN, postgres.Options{MaxConns: int32(cfg.ServerPool), LockTimeout: cfg.BusyTimeout}, sopts); err != nil {
			return nil, err
		}
		backends[engine.BackendPostgres] = pg
	}
	if cfg.MySQLDSN != "" {
		if my, err = mysql.Open(ctx, cfg.MySQLDSN, mysql.Options{MaxConns: cfg.ServerPool, LockTimeout: cfg.BusyTimeout}, sopts); err != nil {
			closeServers()
			return nil, err
		}
		backends[engine.BackendMySQL] = my
	}
	if _, ok := backends[cfg.DefaultBackend]; !ok {
		closeServers()
		return nil, engine.Invalidf("default backend %s is not configured (set its DSN)", cfg.DefaultBackend)
	}
	if cfg.CatalogDSN != "" {
		cat, err = catalog.OpenServer(ctx, cfg.CatalogDSN, "")
	} else {
		cat, err = catalog.OpenSQLite(ctx, dir)
	}
	if err != nil {
		closeServers()
		return nil, err
	}
	a := &App{
		Engine: &engine.Engine{
			Catalog:        cat,
			Backends:       backends.Storages(),
			DefaultBackend: cfg.DefaultBackend,
		},
		Catalog: cat, Backends: backends, SQLite: lite, Postgres: pg, MySQL: my,
	}
	a.Cache = shard.NewCache(cfg.CacheCapacity, cfg.MaxOpenShards, backends.Open)
	cache.Store(a.Cache)
	a.Engine.Shards = pool{a.Cache}
	pctx, cancel := context.WithCancel(context.Background())
	a.stopPoll = cancel
	a.pollDone = make(chan struct{}, 4)
	go func() {
		defer func() { a.pollDone <- struct{}{} }()
		cat.Watch(pctx, cfg.CatalogPoll)
	}()
	go func() {
		defer func() { a.pollDone <- struct{}{} }()
		cat.Listen(pctx, nil) // PostgreSQL: at once on every change
	}()
	go func() {
		defer func() { a.pollDone <- struct{}{} }()
		for {
			select {
			case <-pctx.Done():
				return
			case <-reload:
				_ = cat.Reload(pctx)
			}
		}
	}()
	go func() {
		// The WALs closed SQLite shards left (shard/sqlite sweep.go).
		defer func() { a.pollDone <- struct{}{} }()
		if cfg.ScanKeptWALs {
			// Off the start's path. A directory it could not read keeps
			// its WALs until their tenants' next visits, as before.
			_, _ = sqlite.ScanKeptWALs(pctx, func(ctx context.Context) []string { return a.sqliteDirs(ctx, cfg.Node) })
		}
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				sqlite.SweepKeptWALs(pctx, sqlite.SweepIdle)
			}
		}
	}()
	return a, nil
}

// stopSweepWorkers is how many kept WALs a stopping server checkpoints at
// once. On a 2-core machine (BenchmarkSweepKeptWALs) 4 took 0.99 ms a WAL
// against 1.91 ms for one at a time; 8 were no faster.
const stopSweepWorkers = 4

// StopSweepBound bounds the checkpoint of kept WALs in a Close: what is
// not checkpointed by then stays, for the next start to find.
const StopSweepBound = 30 * time.Second

// Close closes every shard, then the catalog, giving the checkpoint of the
// WALs closed shards kept at most StopSweepBound. Safe to call twice.
func (a *App) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), StopSweepBound)
	defer cancel()
	return a.CloseWithin(ctx)
}

// CloseWithin is Close whose checkpoint of kept WALs stops when ctx ends,
// so that a stop fits a deadline: closing the shards (their writers'
// last batches) and the catalog is never cut short.
func (a *App) CloseWithin(ctx context.Context) error {
	if a.stopPoll == nil {
		return nil
	}
	a.stopPoll()
	for i := 0; i < 4; i++ {
		<-a.pollDone
	}
	a.stopPoll = nil
	errs := []error{a.Engine.Close()}
	// The WALs the shards just closed kept, and those kept in the last
	// minutes, checkpointed: a stopped server's shard files are whole
	// (shard/sqlite sweep.go), unless ctx ends first. Several at once:
	// nothing else runs now, and a checkpoint spends about half its time
	// waiting for its syncs.
	sqlite.SweepKeptWALsWith(ctx, 0, stopSweepWorkers)
	sqlite.CloseIdleHosts() // the writer connections the shards left for reuse
	if a.AfterShardsClosed != nil {
		errs = append(errs, a.AfterShardsClosed())
	}
	errs = append(errs, a.Catalog.Close())
	for _, s := range []*sqldb.Server{a.Postgres, a.MySQL} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// sqliteDirs returns the directories the SQLite backend places shards in:
// its data directory, and the locations tenants were moved to, but not
// those of tenants a node other than node serves. Without the catalog's
// list, the data directory alone.
func (a *App) sqliteDirs(ctx context.Context, node string) []string {
	dirs := []string{a.SQLite.DataDir}
	ts, err := a.Catalog.List(ctx)
	if err != nil {
		return dirs
	}
	seen := map[string]bool{a.SQLite.DataDir: true}
	for _, t := range ts {
		if t.Backend == engine.BackendSQLite && t.Location != "" && !seen[t.Location] && (t.Node == "" || t.Node == node) {
			seen[t.Location] = true
			dirs = append(dirs, t.Location)
		}
	}
	return dirs
}

// pool adapts the shard cache to engine.ShardPool.
type pool struct{ *shard.Cache }

func (p pool) Acquire(ctx context.Context, pl engine.Placement) (engine.ShardHandle, error) {
	h, err := p.Cache.Acquire(ctx, pl)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// AdminToken returns the platform admin token: from env if set, else from
// the file admin-token in the data directory, generated (mode 0600) on
// first use. created reports that a new file was written.
func AdminToken(dataDir, env string) (token, path string, created bool, err error) {
	if env != "" {
		return env, "", false, nil
	}
	path = filepath.Join(dataDir, "admin-token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, path, false, nil
		}
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", false, err
	}
	token = hex.EncodeToString(b[:])
	created, err = secretfile.Create(path, []byte(token+"\n"))
	if err != nil {
		return "", "", false, err
	}
	if !created { // another process made it first: use theirs
		return AdminToken(dataDir, env)
	}
	return token, path, true, nil
}

// Command keyshard is the Keyshard server and its operator tools.
//
//	keyshard serve                       run the HTTP server
//	keyshard tenant create|approve|suspend|resume|delete|list|show|rotate-key
//	keyshard migrate --all               bring every shard's schema up to date
//	keyshard export|import|move          take a tenant out, bring one in, move one
//	keyshard bench                       load generator
//
// Every flag can also be set by an environment variable KEYSHARD_<FLAG>,
// upper-cased with dashes as underscores (--data → KEYSHARD_DATA).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/keyshard/keyshard/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "tenant":
		err = runTenant(os.Args[2:])
	case "migrate":
		err = runMigrate(os.Args[2:])
	case "export":
		err = runExport(os.Args[2:])
	case "import":
		err = runImport(os.Args[2:])
	case "move":
		err = runMove(os.Args[2:])
	case "bench":
		err = runBench(os.Args[2:])
	case "nodes":
		err = runNodes(os.Args[2:])
	case "drain":
		err = runDrain(os.Args[2:])
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "keyshard: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "keyshard:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: keyshard <command> [flags]

commands:
  serve     run the HTTP server (default 127.0.0.1:8080, data in ./data)
  tenant    create|approve|suspend|resume|delete|list|show|rotate-key tenants
  migrate   --all: bring every tenant shard's schema up to date
  export    SLUG -o FILE [--format sqlite|ndjson] [--include-secrets]
  import    FILE [--slug NEW] [--backend B] [--approve]: create a tenant from an export (pending unless --approve)
  move      SLUG --to sqlite|postgres|mysql [--to-dir DIR] (--url URL | --offline), or SLUG --to-node NODE
  nodes     list the nodes sharing --catalog: leases, tenants, open shards
  drain     NODE: move a node's tenants to the other nodes before maintenance
  bench     load a server (--url) or one it starts in-process: --workload, --concurrency, --rate

Run 'keyshard <command> -h' for a command's flags. Every flag may be set
by an environment variable: --data is KEYSHARD_DATA, --cache-capacity is
KEYSHARD_CACHE_CAPACITY, and so on.
`)
}

// storageFlags are the flags shared by every command that opens the engine.
type storageFlags struct {
	cfg app.Config
	fs  *flag.FlagSet
}

func (f *storageFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.cfg.DataDir, "data", "./data", "data directory: catalog, shards, admin token")
	fs.StringVar(&f.cfg.Synchronous, "synchronous", "FULL", "SQLite durability: FULL (an acknowledged write survives power loss) or NORMAL (survives a crash of the process)")
	fs.BoolVar(&f.cfg.InlineSync, "sqlite-inline-sync", false, "with --synchronous FULL, sync each commit on the shard's writer (the build before pipelined durability; for comparison): by default a separate goroutine syncs the WAL while the writer commits the next batch, and answers a write once its sync returned")
	fs.BoolVar(&f.cfg.OwnConnections, "sqlite-own-connections", false, "open every SQLite shard's writer on a connection of its own (the build before connection reuse; for comparison): by default a closed shard's writer connection is kept and the next shard's file is attached to it, which saves about 40 % of the CPU of a cold tenant's visit")
	fs.Func("sqlite-kept-wal-kib", "largest WAL, in KiB, a closed SQLite shard keeps in place for its next open instead of checkpointing it (default 256; 0: none, every close checkpoints). Disk held: up to this for each tenant closed in the last 5 minutes (a sweep checkpoints older ones); whatever the limit, every tenant once opened keeps a 32 KiB -shm and an emptied -wal", func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > app.MaxKeptWALKiB {
			return fmt.Errorf("want a number of KiB from 0 to %d, not %q", app.MaxKeptWALKiB, v)
		}
		if n == 0 {
			n = -1 // app.Config: none kept
		}
		f.cfg.KeptWALKiB = n
		return nil
	})
	fs.DurationVar(&f.cfg.BusyTimeout, "busy-timeout", 3*time.Second, "longest wait for a shard's database lock before answering busy")
	fs.IntVar(&f.cfg.CacheCapacity, "cache-capacity", app.DefaultCacheCapacity, "shards kept open (see README: sizing the shard cache)")
	fs.IntVar(&f.cfg.MaxOpenShards, "max-open-shards", 0, "hard limit of open shards, pinned ones included (default 1.5 × cache capacity)")
	fs.IntVar(&f.cfg.QueueSize, "queue-size", 1024, "writes queued per shard before answering overloaded")
	fs.IntVar(&f.cfg.MaxBatch, "max-batch", 512, "most writes committed in one transaction")
	fs.IntVar(&f.cfg.Readers, "readers", 2, "read connections per open shard")
	fs.DurationVar(&f.cfg.DebounceInterval, "debounce", 5*time.Minute, "least time between two last-seen writes of one user")
	fs.StringVar(&f.cfg.PostgresDSN, "postgres-dsn", "", "PostgreSQL server for tenants placed there, one schema each (e.g. postgres://user@host:5432/db)")
	fs.StringVar(&f.cfg.MySQLDSN, "mysql-dsn", "", "MySQL/MariaDB server for tenants placed there, one database each (e.g. user:pass@tcp(host:3306)/db)")
	fs.IntVar(&f.cfg.ServerPool, "server-pool", 32, "connections to each PostgreSQL/MySQL server, shared by all its tenants")
	fs.StringVar(&f.cfg.DefaultBackend, "default-backend", "sqlite", "backend of tenants created without one: sqlite, postgres or mysql")
	fs.StringVar(&f.cfg.CatalogDSN, "catalog", "", "keep the tenant catalog on a server shared by several Keyshard servers: postgres://… or mysql://user:pass@tcp(host:3306)/db (default: catalog.db in the data directory)")
}

// parse parses args, then fills every flag not given on the command line
// from its KEYSHARD_ environment variable.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "KEYSHARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// openApp opens the engine of a command that acts on a data directory. When
// none was named (--data, KEYSHARD_DATA) and the default ./data holds no
// catalog, it refuses rather than create one wherever it was run.
func openApp(f *storageFlags) (*app.App, error) {
	if f.cfg.CatalogDSN == "" && !f.dataGiven() {
		if _, err := os.Stat(filepath.Join(f.cfg.DataDir, "catalog.db")); err != nil {
			return nil, fmt.Errorf("no Keyshard data directory at %s (it has no catalog.db): give --data DIR (or KEYSHARD_DATA), or run this where keyshard serve keeps its data", f.cfg.DataDir)
		}
	}
	return app.Open(context.Background(), f.cfg)
}

// dataGiven reports whether the data directory was named on the command
// line or in the environment.
func (f *storageFlags) dataGiven() bool {
	if _, ok := os.LookupEnv("KEYSHARD_DATA"); ok {
		return true
	}
	given := false
	if f.fs != nil {
		f.fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == "data" })
	}
	return given
}

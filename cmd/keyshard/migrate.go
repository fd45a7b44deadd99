package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/keyshard/keyshard/engine"
)

// failureFile records the tenants whose migration failed, so that a later
// `migrate --all --retry-failed` resumes with just those.
const failureFile = "migrate-failures.json"

type migrateFailure struct {
	ID    string `json:"id"`
	Slug  string `json:"slug"`
	Error string `json:"error"`
}

func runMigrate(args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ExitOnError)
	var sf storageFlags
	sf.register(fs)
	all := fs.Bool("all", false, "migrate every approved tenant's shard")
	concurrency := fs.Int("concurrency", 4, "shards migrated at once")
	retry := fs.Bool("retry-failed", false, "migrate only the tenants the last run recorded as failed")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !*all {
		return errors.New("migrate: pass --all (shards are also migrated when they are opened)")
	}
	if *concurrency < 1 {
		*concurrency = 1
	}
	a, err := openApp(&sf)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx := context.Background()
	tenants, err := a.Engine.List(ctx)
	if err != nil {
		return err
	}
	failPath := filepath.Join(sf.cfg.DataDir, failureFile)
	if *retry {
		tenants, err = onlyFailed(failPath, tenants)
		if err != nil {
			return err
		}
	}
	var todo []*engine.Tenant
	for _, t := range tenants {
		// Tenants on a server this command was not given (--postgres-dsn,
		// --mysql-dsn) are migrated when a server opens them.
		if _, ok := a.Backends[t.Backend]; ok && t.HasDatabase() {
			todo = append(todo, t)
		}
	}
	bar := newBar(int64(len(todo)), "migrating shards", "shards", false, *quiet)
	var mu sync.Mutex
	var failures []migrateFailure
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(*concurrency)
	for _, t := range todo {
		g.Go(func() error {
			s, err := a.Backends.Open(gctx, t.Placement()) // opening migrates
			if err == nil {
				err = s.Close()
			}
			mu.Lock()
			if err != nil {
				failures = append(failures, migrateFailure{ID: t.ID, Slug: t.Slug, Error: err.Error()})
			}
			_ = bar.Add(1)
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if len(failures) == 0 {
		_ = os.Remove(failPath)
		fmt.Printf("migrated %d shards, 0 failed\n", len(todo))
		return nil
	}
	b, _ := json.MarshalIndent(failures, "", "  ")
	if err := os.WriteFile(failPath, b, 0o600); err != nil {
		return err
	}
	for _, f := range failures {
		fmt.Printf("FAILED %s (%s): %s\n", f.Slug, f.ID, f.Error)
	}
	return fmt.Errorf("migrated %d shards, %d failed (recorded in %s; rerun with --retry-failed)", len(todo)-len(failures), len(failures), failPath)
}

func onlyFailed(path string, tenants []*engine.Tenant) ([]*engine.Tenant, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fs []migrateFailure
	if err := json.Unmarshal(b, &fs); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	failed := map[string]bool{}
	for _, f := range fs {
		failed[f.ID] = true
	}
	var out []*engine.Tenant
	for _, t := range tenants {
		if failed[t.ID] {
			out = append(out, t)
		}
	}
	return out, nil
}

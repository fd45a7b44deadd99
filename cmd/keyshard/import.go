package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/schollz/progressbar/v3"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/transfer"
)

const importUsage = `usage: keyshard import FILE [--slug NEW] [--name NAME] [--backend sqlite|postgres|mysql] [--approve]

Creates a tenant from an export (sqlite or ndjson, told apart by content).
Like a requested tenant it is pending until approved ("keyshard tenant
approve", which serves the imported data); --approve makes it active at once. The file is checked whole first (checksums, schema version,
tables); an older schema is migrated up; a damaged or newer file is refused
and nothing is created. The slug, name and id default to the exported
tenant's (the id only if no tenant here has it). It acts on the data
directory directly; a running server sees the new tenant within a second.
`

func runImport(args []string) error {
	fs := flag.NewFlagSet("import", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, importUsage); fs.PrintDefaults() }
	var sf storageFlags
	sf.register(fs)
	slug := fs.String("slug", "", "slug of the new tenant (default: the exported tenant's)")
	name := fs.String("name", "", "name of the new tenant (default: the exported tenant's)")
	backend := fs.String("backend", "", "backend of the new tenant (default sqlite)")
	approve := fs.Bool("approve", false, "make the tenant active at once instead of pending approval")
	quiet := fs.Bool("quiet", false, "no progress bar")
	path, err := parseOneArg(fs, args)
	if err != nil {
		return fmt.Errorf("import: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	a, err := openApp(&sf)
	if err != nil {
		return err
	}
	defer a.Close()
	bar := newBar(st.Size(), "reading "+path, "", true, *quiet)
	r := progressbar.NewReader(f, bar)
	res, err := newTransfer(a).Import(context.Background(), &r, transfer.ImportOptions{Slug: *slug, Name: *name, Backend: *backend, Approve: *approve})
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	// An export without secrets has no signing key: make one now (for a
	// pending tenant, approval does).
	if res.Tenant.Status == engine.StatusActive {
		if err := ensureKey(a, sf.cfg.DataDir, res.Tenant.ID); err != nil {
			fmt.Fprintln(os.Stderr, "keyshard: warning:", err)
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

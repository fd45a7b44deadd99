package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/transfer"
)

const exportUsage = `usage: keyshard export SLUG -o FILE [--format sqlite|ndjson] [--include-secrets]

Writes a consistent snapshot of the tenant's data (taken while writes
continue) to FILE ("-" for standard output). Formats: sqlite (a shard file)
or ndjson (docs/export-format.md). Without --include-secrets the export has
no password hashes, signing keys, refresh token hashes or service key hash.
It reads the data directory directly and is safe while a server runs.
`

// parseOneArg parses flags around one positional argument (the flag
// package stops at the first argument: "export acme -o x" must work).
func parseOneArg(fs *flag.FlagSet, args []string) (string, error) {
	if err := parse(fs, args); err != nil {
		return "", err
	}
	arg := fs.Arg(0)
	if fs.NArg() > 1 {
		if err := parse(fs, fs.Args()[1:]); err != nil {
			return "", err
		}
		if fs.NArg() > 0 {
			return "", fmt.Errorf("unexpected arguments %q", fs.Args())
		}
	}
	if arg == "" {
		fs.Usage()
		return "", errors.New("missing argument")
	}
	return arg, nil
}

func newTransfer(a *app.App) *transfer.Service {
	return &transfer.Service{Engine: a.Engine, Backends: a.Backends}
}

func runExport(args []string) error {
	fs := flag.NewFlagSet("export", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, exportUsage); fs.PrintDefaults() }
	var sf storageFlags
	sf.register(fs)
	out := fs.String("o", "", `output file ("-" for standard output)`)
	format := fs.String("format", transfer.FormatSQLite, "sqlite or ndjson")
	secrets := fs.Bool("include-secrets", false, "include password hashes, signing keys (still encrypted), refresh token hashes and the service key hash")
	quiet := fs.Bool("quiet", false, "no progress bar")
	slug, err := parseOneArg(fs, args)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if *out == "" {
		return errors.New("export: -o FILE is required")
	}
	a, err := openApp(&sf)
	if err != nil {
		return err
	}
	defer a.Close()
	var w io.Writer
	var f *os.File
	tmp := ""
	if *out == "-" {
		w = os.Stdout
	} else {
		// Written beside the target and renamed at the end: a failed
		// export leaves no partial file under the name asked for.
		f, err = os.CreateTemp(filepath.Dir(*out), ".keyshard-export-*")
		if err != nil {
			return err
		}
		tmp = f.Name()
		defer os.Remove(tmp)
		defer f.Close()
		w = f
	}
	bar := newBar(-1, "exporting "+slug, "", true, *quiet || *out == "-")
	h, err := newTransfer(a).Export(context.Background(), slug, io.MultiWriter(w, bar), transfer.ExportOptions{Format: *format, IncludeSecrets: *secrets})
	_ = bar.Finish()
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, *out); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "exported tenant %s (%s, schema %d, secrets %v)\n", h.Tenant.Slug, *format, h.SchemaVersion, h.IncludeSecrets)
	return nil
}

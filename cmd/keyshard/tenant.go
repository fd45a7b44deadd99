package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
)

const tenantUsage = `usage: keyshard tenant <action> [flags] [slug]

actions:
  create --slug S [--name N] [--backend sqlite]   request a tenant (pending)
  approve SLUG     create its shard (an imported one has it), make it active
  suspend SLUG     refuse its requests, keep its data
  resume SLUG      make a suspended tenant active again
  delete SLUG      delete the tenant and its shard
  list             list tenants
  show SLUG        show one tenant as JSON
  rotate-key SLUG [--algorithm ES256|RS256|EdDSA|HS256] [--immediately]
                   publish a new signing key, which signs 10 minutes later (clients that
                   cached the JWKS see it first); --immediately signs with it at once
                   (a leaked key). The old key verifies until its tokens expire

These act on the data directory directly; a running server sees the change
within a second. Run delete only through the admin API while a server runs.
`

func runTenant(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, tenantUsage)
		return fmt.Errorf("tenant: missing action")
	}
	action := args[0]
	fs := flag.NewFlagSet("tenant "+action, flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, tenantUsage); fs.PrintDefaults() }
	var sf storageFlags
	sf.register(fs)
	slug := fs.String("slug", "", "tenant slug (create)")
	name := fs.String("name", "", "display name (create; default the slug)")
	backend := fs.String("backend", "", "backend (create; default sqlite)")
	var rot token.RotateOptions
	fs.StringVar(&rot.Algorithm, "algorithm", "", "rotate-key: the new key's algorithm, ES256 (default), RS256, EdDSA or HS256")
	fs.BoolVar(&rot.Immediately, "immediately", false, "rotate-key: sign with the new key at once, retiring the old one")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	target := fs.Arg(0)
	// The flag package stops at the slug: without this, the flags in
	// `tenant approve acme --data DIR` would be ignored and ./data used.
	if fs.NArg() > 1 {
		if err := parse(fs, fs.Args()[1:]); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return fmt.Errorf("tenant %s: unexpected arguments %q", action, fs.Args())
		}
	}
	if action == "create" && *slug == "" {
		*slug = target
	}
	a, err := openApp(&sf)
	if err != nil {
		return err
	}
	defer a.Close()
	ctx := context.Background()
	e := a.Engine
	var t *engine.Tenant
	switch action {
	case "create":
		if *name == "" {
			*name = *slug
		}
		t, err = e.CreateTenant(ctx, *slug, *name, *backend)
	case "approve":
		if t, err = e.ApproveTenant(ctx, target); err == nil {
			err = ensureKey(a, sf.cfg.DataDir, t.ID)
		}
	case "suspend":
		t, err = e.SuspendTenant(ctx, target)
	case "resume":
		t, err = e.ResumeTenant(ctx, target)
	case "show":
		t, err = e.Get(ctx, target)
	case "rotate-key":
		return rotateKey(a, sf.cfg.DataDir, target, rot)
	case "delete":
		if err = e.DeleteTenant(ctx, target); err == nil {
			fmt.Printf("deleted %s\n", target)
		}
		return err
	case "list":
		ts, err := e.List(ctx)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "SLUG\tID\tSTATUS\tBACKEND\tNAME")
		for _, t := range ts {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Slug, t.ID, t.Status, t.Backend, t.Name)
		}
		return w.Flush()
	default:
		fmt.Fprint(os.Stderr, tenantUsage)
		return fmt.Errorf("tenant: unknown action %q", action)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(t)
}

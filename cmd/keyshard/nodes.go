package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/cluster"
)

// openCatalogOnly opens the storage for a command that works on a shared
// catalog (nodes, drain, move --to-node).
func openShared(sf storageFlags, cmd string) (*app.App, error) {
	if sf.cfg.CatalogDSN == "" {
		return nil, fmt.Errorf("%s: several nodes share a catalog on a server: give --catalog postgres://… or mysql://…", cmd)
	}
	return app.Open(context.Background(), sf.cfg)
}

const nodesUsage = `usage: keyshard nodes --catalog DSN [--json]

Lists the nodes sharing the catalog: address, lease, whether it is alive
(by the catalog database's clock), tenants owned and shards open.
`

func runNodes(args []string) error {
	fs := flag.NewFlagSet("nodes", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, nodesUsage); fs.PrintDefaults() }
	var sf storageFlags
	sf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	a, err := openShared(sf, "nodes")
	if err != nil {
		return err
	}
	defer a.Close()
	list, err := a.Catalog.Nodes(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tALIVE\tLEASE UNTIL\tTENANTS\tOPEN SHARDS")
	for _, n := range list {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%d\t%d\n", n.Name, n.Address, n.Alive, n.LeaseUntil.Format(time.RFC3339Nano), n.Tenants, n.OpenShards)
	}
	return tw.Flush()
}

const drainUsage = `usage: keyshard drain NODE --catalog DSN [backend flags]

Moves every tenant of NODE to the other live nodes (each to the one with
the fewest tenants), so that NODE can be stopped for maintenance. Tenants
are given without copying: PostgreSQL and MySQL tenants (give their DSNs,
to fence the old owner). A SQLite tenant on NODE's disk is listed as not
moved: it moves with its data when NODE drains itself (POST
/admin/nodes/NODE/drain on NODE).
`

func runDrain(args []string) error {
	fs := flag.NewFlagSet("drain", flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, drainUsage); fs.PrintDefaults() }
	var sf storageFlags
	sf.register(fs)
	name, err := parseOneArg(fs, args)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	a, err := openShared(sf, "drain")
	if err != nil {
		return err
	}
	defer a.Close()
	res, err := cluster.Drain(context.Background(), a.Catalog, a.Engine.Backends, name, nil)
	if err != nil {
		return err
	}
	failed := 0
	for _, d := range res {
		if d.Error != "" {
			failed++
			fmt.Printf("%s: not moved: %s\n", d.Tenant, d.Error)
		} else {
			fmt.Printf("%s: moved to %s\n", d.Tenant, d.To)
		}
	}
	if failed > 0 {
		return fmt.Errorf("drain: %d of %d tenants were not moved", failed, len(res))
	}
	return nil
}

// moveToNode gives a tenant to another node through the shared catalog.
func moveToNode(sf storageFlags, slug, node string) error {
	a, err := openShared(sf, "move --to-node")
	if err != nil {
		return err
	}
	defer a.Close()
	t, err := cluster.Reassign(context.Background(), a.Catalog, a.Engine.Backends, slug, "", node)
	if err != nil {
		return err
	}
	if t == nil {
		return errors.New("move: nothing moved")
	}
	fmt.Printf("tenant %s is on node %s (epoch %d)\n", t.Slug, t.Node, t.Epoch)
	return nil
}

// moveToNodeRemote asks the node at base to move the tenant to node (a
// SQLite tenant goes with its data, run by its owner).
func moveToNodeRemote(dataDir, base, slug, node string) error {
	token, _, _, err := app.AdminToken(dataDir, os.Getenv("KEYSHARD_ADMIN_TOKEN"))
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{"node": node})
	req, err := http.NewRequest(http.MethodPost, base+"/admin/tenants/"+slug+"/move", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("move: %s: %s", res.Status, bytes.TrimSpace(out))
	}
	var r struct {
		Tenant struct {
			Slug  string `json:"slug"`
			Node  string `json:"node"`
			Epoch int64  `json:"epoch"`
		} `json:"tenant"`
		Result *struct {
			Fenced int64 `json:"fenced_ns"`
			Took   int64 `json:"took_ns"`
		} `json:"result"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return err
	}
	fmt.Printf("tenant %s is on node %s (epoch %d)", r.Tenant.Slug, r.Tenant.Node, r.Tenant.Epoch)
	if r.Result != nil {
		fmt.Printf(", moved with its data in %s, writes fenced %s", time.Duration(r.Result.Took).Round(time.Millisecond), time.Duration(r.Result.Fenced).Round(time.Microsecond))
	}
	fmt.Println()
	if r.Error != "" {
		return errors.New(r.Error)
	}
	return nil
}

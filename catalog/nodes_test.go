package catalog_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/engine"
)

func serverCatalog(t *testing.T) string {
	t.Helper()
	b := os.Getenv("KEYSHARD_TEST_CATALOG")
	if b == "" || b == "sqlite" {
		t.Skip("nodes need a server catalog: KEYSHARD_TEST_CATALOG=postgres|mysql")
	}
	return b
}

func TestNodes_LeasesByCatalogClock(t *testing.T) {
	serverCatalog(t)
	ctx := context.Background()
	r := mustOpen(t, t.TempDir())
	if unclean, err := r.RenewNode(ctx, "n1", "http://127.0.0.1:1", "inc-a", 400*time.Millisecond, 3); err != nil || unclean {
		t.Fatal(unclean, err)
	}
	// Another process under the same name is refused while the lease runs.
	if _, err := r.RenewNode(ctx, "n1", "http://127.0.0.1:2", "inc-b", time.Second, 0); !errors.Is(err, catalog.ErrNodeTaken) {
		t.Fatalf("a second incarnation renewed a live lease: %v", err)
	}
	tn := &engine.Tenant{ID: engine.NewTenantID(), Slug: "owned", Name: "o", Status: engine.StatusActive, Backend: "sqlite", Node: "n1"}
	if err := r.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	nodes, err := r.Nodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("Nodes: %+v, %v", nodes, err)
	}
	if n := nodes[0]; !n.Alive || n.Tenants != 1 || n.OpenShards != 3 || n.Address != "http://127.0.0.1:1" {
		t.Fatalf("node %+v; want alive, 1 tenant, 3 open shards", n)
	}
	if got, _ := r.Resolve(ctx, "owned"); got.Node != "n1" {
		t.Fatalf("tenant's node %q", got.Node)
	}
	time.Sleep(500 * time.Millisecond)
	nodes, _ = r.Nodes(ctx)
	if nodes[0].Alive {
		t.Fatalf("lease of 400 ms still alive after 500 ms: %+v", nodes[0])
	}
	// A lapsed lease may be taken by a new incarnation (a restart); the
	// old one did not end it itself: unclean.
	if unclean, err := r.RenewNode(ctx, "n1", "http://127.0.0.1:2", "inc-b", time.Second, 0); err != nil || !unclean {
		t.Fatalf("taking over a lapsed lease: unclean %v, %v", unclean, err)
	}
	if err := r.ReleaseNode(ctx, "n1", "inc-b"); err != nil {
		t.Fatal(err)
	}
	nodes, _ = r.Nodes(ctx)
	if nodes[0].Alive || nodes[0].Address != "http://127.0.0.1:2" {
		t.Fatalf("released node %+v; want not alive", nodes[0])
	}
	// After a clean end, the next incarnation has nothing to fence.
	if unclean, err := r.RenewNode(ctx, "n1", "http://127.0.0.1:3", "inc-c", time.Second, 0); err != nil || unclean {
		t.Fatalf("after a released lease: unclean %v, %v", unclean, err)
	}
}

func TestNodes_ListenSeesOtherProcessesChanges(t *testing.T) {
	if serverCatalog(t) != "postgres" {
		t.Skip("LISTEN/NOTIFY is PostgreSQL's")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	a := mustOpen(t, dir)
	b, err := openCatalog(t, dir) // the same table, another process's view
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	changed := make(chan struct{}, 16)
	go b.Listen(ctx, func() { changed <- struct{}{} })
	time.Sleep(300 * time.Millisecond) // LISTEN in place
	tn := &engine.Tenant{ID: engine.NewTenantID(), Slug: "heard", Name: "h", Status: engine.StatusActive, Backend: "sqlite"}
	if err := a.Create(ctx, tn); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		if _, err := b.Resolve(ctx, "heard"); err == nil {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("the other catalog did not see the new tenant within 5 s without polling")
		}
	}
}

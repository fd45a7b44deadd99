// Package cluster lets several Keyshard processes (nodes) share one catalog
// on PostgreSQL or MySQL: each node holds a lease in the catalog, renewed
// and judged by the catalog database's clock; each tenant has one owner
// node and an epoch; a node serves only the tenants it owns, and only
// while it can vouch for its lease. Ownership changes by a compare-and-set
// of the tenant's epoch in the catalog, after the tenant's fencing token
// (the shard's fence table, read by every write batch in its own
// transaction) has been raised to the new epoch, so that an old owner that
// was paused or cut off cannot commit once the tenant has moved. No
// consensus of our own: the catalog database's transactions and row locks
// decide. The HTTP side (forwarding to the owner) is api/nodes.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"sync"
	"time"

	"github.com/keyshard/keyshard/catalog"
	"github.com/keyshard/keyshard/engine"
)

// DefaultLease is a node's lease when Config.Lease is zero.
const DefaultLease = 10 * time.Second

// Fencer raises a tenant's fencing token in its database, from outside its
// shard (a backend's storage has it): the old owner's batches that read the
// older token have ended when it returns, and later ones fail.
type Fencer interface {
	RaiseFence(ctx context.Context, p engine.Placement, epoch int64) error
}

// Config is one node.
type Config struct {
	// Name is the node's name (lower-case letters, digits, '-'); Address
	// the base URL the other nodes reach it at.
	Name, Address string
	// Lease is how long a renewal holds (default DefaultLease); the node
	// renews every third of it.
	Lease time.Duration
	// AutoFailover: when another node's lease has lapsed, this node takes
	// over its tenants whose storage it reaches too (PostgreSQL and MySQL
	// tenants; see Shared).
	AutoFailover bool

	Catalog  *catalog.Catalog
	Storages map[string]engine.Storage
	// OpenShards counts the shards open here (reported with the lease);
	// EvictStale closes this node's shard of a tenant older than epoch.
	OpenShards func() int
	EvictStale func(ctx context.Context, tenantID string, epoch int64) error
	// HasLocal reports whether a SQLite tenant's file is on this node's
	// disk (a tenant without an owner is claimed only by such a node).
	HasLocal func(p engine.Placement) bool
	Log      *slog.Logger
}

var nodeName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidateName checks a node name.
func ValidateName(name string) error {
	if !nodeName.MatchString(name) {
		return engine.Invalidf("node name %q: want 1-63 lower-case letters, digits and '-'", name)
	}
	return nil
}

// Node is this process as one node. It implements engine.Ownership.
type Node struct {
	cfg         Config
	incarnation string

	mu         sync.RWMutex
	validUntil time.Time // the lease as this process can vouch for it (monotonic)
	nodes      map[string]catalog.Node
	skew       time.Duration // catalog clock minus local clock, at the last listing
	listedAt   time.Time     // of the last listing

	// reclaimBefore: set when this process took the name over uncleanly;
	// tenants it owned before are served only once reclaimed (reclaimed).
	reclaimBefore time.Time
	reclaimed     map[string]bool
	reclaiming    map[string]chan struct{}

	stop context.CancelFunc
	done chan struct{}
}

var _ engine.Ownership = (*Node)(nil)

// Start registers the node (it fails while another live process holds the
// name) and keeps its lease renewed until Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := ValidateName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Address == "" {
		return nil, engine.Invalidf("a node needs the address other nodes reach it at (--advertise)")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	n := &Node{cfg: cfg, incarnation: hex.EncodeToString(b[:]), done: make(chan struct{})}
	if err := n.renew(ctx); err != nil {
		return nil, err
	}
	if err := n.refresh(ctx); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	go n.loop(lctx)
	return n, nil
}

// Self is the node's name.
func (n *Node) Self() string { return n.cfg.Name }

// Lease is the node's lease duration.
func (n *Node) Lease() time.Duration { return n.cfg.Lease }

// Close stops renewing and ends the lease at once, so that the node's
// tenants can be reassigned without waiting for it to lapse. Call it once
// the node's shards are closed (their last writes flushed): a node taking
// a tenant over raises its fencing token.
func (n *Node) Close() error {
	if n.stop == nil {
		return nil
	}
	n.stop()
	<-n.done
	n.stop = nil
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.mu.Lock()
	n.validUntil = time.Time{}
	n.mu.Unlock()
	return n.cfg.Catalog.ReleaseNode(ctx, n.cfg.Name, n.incarnation)
}

func (n *Node) loop(ctx context.Context) {
	defer close(n.done)
	t := time.NewTicker(n.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, n.cfg.Lease/3)
		if err := n.renew(rctx); err != nil {
			n.cfg.Log.Warn("node lease not renewed", "node", n.cfg.Name, "err", err, "valid_for", n.LeaseLeft().Round(time.Millisecond))
		}
		if err := n.refresh(rctx); err != nil {
			n.cfg.Log.Warn("node list not read", "err", err)
		}
		cancel()
		if n.cfg.AutoFailover {
			n.failover(ctx)
		}
	}
}

// renew renews the lease. The lease counts, in the catalog, from when the
// catalog ran the statement; here, from before it was sent: this node
// stops vouching for it no later than the others see it lapse.
func (n *Node) renew(ctx context.Context) error {
	sent := time.Now()
	open := 0
	if n.cfg.OpenShards != nil {
		open = n.cfg.OpenShards()
	}
	unclean, err := n.cfg.Catalog.RenewNode(ctx, n.cfg.Name, n.cfg.Address, n.incarnation, n.cfg.Lease, open)
	if err != nil {
		return err
	}
	if unclean {
		// An earlier process of this name did not end its lease: it
		// crashed, or it is paused and may wake up with shards open at
		// the epochs this one would use. Every tenant of ours moves its
		// epoch on before we serve it (Own), which fences that process.
		n.mu.Lock()
		n.reclaimBefore = time.Now()
		n.reclaimed = map[string]bool{}
		n.mu.Unlock()
		n.cfg.Log.Warn("an earlier process of this node did not end its lease: each tenant's epoch moves on before it is served", "node", n.cfg.Name)
	}
	n.mu.Lock()
	if until := sent.Add(n.cfg.Lease); until.After(n.validUntil) {
		n.validUntil = until
	}
	n.mu.Unlock()
	return nil
}

// refresh reads the node list, and the catalog's clock to judge leases by.
func (n *Node) refresh(ctx context.Context) error {
	list, err := n.cfg.Catalog.Nodes(ctx)
	if err != nil {
		return err
	}
	before := time.Now()
	dbNow, err := n.cfg.Catalog.DBNow(ctx)
	if err != nil {
		return err
	}
	local := before.Add(time.Since(before) / 2)
	m := make(map[string]catalog.Node, len(list))
	for _, x := range list {
		m[x.Name] = x
	}
	n.mu.Lock()
	n.nodes, n.skew, n.listedAt = m, dbNow.Sub(local), time.Now()
	n.mu.Unlock()
	return nil
}

// CatalogNow estimates the catalog database's clock, the one every node
// shares (signatures between nodes are dated by it, not by local clocks).
func (n *Node) CatalogNow() time.Time {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return time.Now().Add(n.skew)
}

// LeaseLeft is how long this node can still vouch for its lease.
func (n *Node) LeaseLeft() time.Duration {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return time.Until(n.validUntil)
}

// Peer is another node as this one last read it.
type Peer struct {
	catalog.Node
	// LeaseLeft: how long its lease runs, by the catalog's clock as this
	// node estimates it; ≤ 0 when lapsed.
	LeaseLeft time.Duration
}

// Peer returns the node named name from the last listing; ok is false
// when it is unknown (the list is read again once).
func (n *Node) Peer(ctx context.Context, name string) (Peer, bool) {
	n.mu.RLock()
	x, ok := n.nodes[name]
	skew, listed := n.skew, n.listedAt
	n.mu.RUnlock()
	// Unknown, or lapsed in a listing more than a moment old (it may have
	// restarted since): read the list again.
	if !ok || (x.LeaseUntil.Sub(time.Now().Add(skew)) <= 0 && time.Since(listed) > 250*time.Millisecond) {
		if n.refresh(ctx) != nil {
			return Peer{}, false
		}
		n.mu.RLock()
		x, ok = n.nodes[name]
		skew = n.skew
		n.mu.RUnlock()
		if !ok {
			return Peer{}, false
		}
	}
	return Peer{Node: x, LeaseLeft: x.LeaseUntil.Sub(time.Now().Add(skew))}, true
}

// errLeaseLapsed: this node cannot vouch for its lease (the catalog did not
// answer its renewals): it serves none of its tenants until it can.
var errLeaseLapsed = &engine.Error{Kind: engine.KindUnavailable, Code: "node_unavailable",
	Message: "this node cannot reach the catalog to renew its lease, retry", RetryAfter: time.Second, Err: engine.ErrUnavailable}

// Own implements engine.Ownership: a tenant is served here when this node
// owns it and its lease is valid. A tenant without an owner (made before
// several nodes shared the catalog) is claimed by the first node to serve it.
func (n *Node) Own(ctx context.Context, t *engine.Tenant) (*engine.Tenant, error) {
	switch t.Node {
	case n.cfg.Name:
	case "":
		// Made before several nodes shared the catalog (or by the CLI):
		// claimed by the first node that serves it and reaches its data.
		if !Shared(t) && (n.cfg.HasLocal == nil || !n.cfg.HasLocal(t.Placement())) {
			return nil, engine.NewError(engine.KindUnavailable, "node_unavailable",
				"this tenant has no node and its file is not on this one: give it the node that has it (keyshard move --to-node)")
		}
		c, err := n.cfg.Catalog.SetNode(ctx, t, "", t.Epoch, n.cfg.Name, t.Epoch+1)
		if err != nil {
			if errors.Is(err, engine.ErrConflict) {
				return nil, engine.ErrNotOwner // someone else claimed it: ask again
			}
			return nil, err
		}
		n.cfg.Log.Info("tenant claimed", "tenant_id", t.ID, "node", n.cfg.Name, "epoch", c.Epoch)
		t = c
	default:
		// A shard of it left open here from when it was this node's would
		// be served again, at its old epoch, if the tenant came back.
		if n.cfg.EvictStale != nil {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = n.cfg.EvictStale(ctx, t.ID, math.MaxInt64)
			}()
		}
		return nil, engine.ErrNotOwner
	}
	if n.LeaseLeft() <= 0 {
		return nil, errLeaseLapsed
	}
	return n.reclaim(ctx, t)
}

// reclaim moves a tenant's epoch on once, when this process took the node's
// name over from one that did not end its lease.
func (n *Node) reclaim(ctx context.Context, t *engine.Tenant) (*engine.Tenant, error) {
	// Every request passes here: no exclusive lock unless there is work.
	n.mu.RLock()
	done := n.reclaimBefore.IsZero() || n.reclaimed[t.ID]
	n.mu.RUnlock()
	if done {
		return t, nil
	}
	for {
		n.mu.Lock()
		if n.reclaimBefore.IsZero() || n.reclaimed[t.ID] {
			n.mu.Unlock()
			return t, nil
		}
		if ch, busy := n.reclaiming[t.ID]; busy {
			n.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			now, err := n.cfg.Catalog.Resolve(ctx, t.ID)
			if err != nil {
				return nil, err
			}
			if now.Node != n.cfg.Name {
				return nil, engine.ErrNotOwner
			}
			t = now
			continue
		}
		if n.reclaiming == nil {
			n.reclaiming, n.reclaimed = map[string]chan struct{}{}, map[string]bool{}
		}
		ch := make(chan struct{})
		n.reclaiming[t.ID] = ch
		n.mu.Unlock()
		now, err := Reassign(ctx, n.cfg.Catalog, n.cfg.Storages, t.ID, n.cfg.Name, n.cfg.Name)
		n.mu.Lock()
		delete(n.reclaiming, t.ID)
		if err == nil {
			n.reclaimed[t.ID] = true
		}
		n.mu.Unlock()
		close(ch)
		if errors.Is(err, engine.ErrConflict) {
			return nil, engine.ErrNotOwner // it moved away meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("move the epoch on after an unclean restart: %w", err)
		}
		n.cfg.Log.Info("tenant reclaimed after an unclean restart", "tenant_id", t.ID, "epoch", now.Epoch)
		return now, nil
	}
}

// Sweep closes this node's shards of tenants it no longer owns (moved,
// deleted): a shard left open would be served again at its old epoch if
// the tenant came back (after a delete and a restore, epochs start over).
// Call it after the catalog was read again.
func (n *Node) Sweep(open []string) {
	if n.cfg.EvictStale == nil {
		return
	}
	for _, id := range open {
		t, err := n.cfg.Catalog.Resolve(context.Background(), id)
		if err == nil && t.Node == n.cfg.Name {
			continue
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = n.cfg.EvictStale(ctx, id, math.MaxInt64)
		}()
	}
}

// Nodes lists the nodes as the catalog has them now.
func (n *Node) Nodes(ctx context.Context) ([]catalog.Node, error) {
	return n.cfg.Catalog.Nodes(ctx)
}

// MoveTo gives the tenant to node target (see Reassign) and closes this
// node's shard of it if it had one.
func (n *Node) MoveTo(ctx context.Context, slugOrID, target string) (*engine.Tenant, error) {
	t, err := Reassign(ctx, n.cfg.Catalog, n.cfg.Storages, slugOrID, "", target)
	if err != nil {
		return nil, err
	}
	if n.cfg.EvictStale != nil {
		_ = n.cfg.EvictStale(context.WithoutCancel(ctx), t.ID, t.Epoch)
	}
	return t, nil
}

// Drain moves every tenant of node name to the other live nodes (Drain);
// withData moves a tenant whose data is on this node's disk.
func (n *Node) Drain(ctx context.Context, name string, withData func(ctx context.Context, t *engine.Tenant, to string) error) ([]Drained, error) {
	if name != n.cfg.Name {
		withData = nil
	}
	return Drain(ctx, n.cfg.Catalog, n.cfg.Storages, name, withData)
}

// failover takes over the tenants of nodes whose lease has lapsed, where
// this node reaches their storage.
func (n *Node) failover(ctx context.Context) {
	n.mu.RLock()
	var dead []string
	for name, x := range n.nodes {
		if name != n.cfg.Name && !x.Alive {
			dead = append(dead, name)
		}
	}
	n.mu.RUnlock()
	if len(dead) == 0 {
		return
	}
	ts, err := n.cfg.Catalog.List(ctx)
	if err != nil {
		return
	}
	for _, t := range ts {
		for _, d := range dead {
			if t.Node != d || !Shared(t) {
				continue
			}
			if _, err := Reassign(ctx, n.cfg.Catalog, n.cfg.Storages, t.ID, d, n.cfg.Name); err != nil {
				n.cfg.Log.Warn("failover: tenant not taken over", "tenant_id", t.ID, "from", d, "err", err)
			} else {
				n.cfg.Log.Warn("failover: tenant taken over from a node whose lease lapsed", "tenant_id", t.ID, "from", d)
			}
		}
	}
}

// Shared reports whether every node reaches t's storage: a PostgreSQL or
// MySQL tenant. A SQLite tenant is a file on its node's disk (SQLite's WAL
// is not safe over a network file system), which moves with its data.
func Shared(t *engine.Tenant) bool {
	return t.Backend != engine.BackendSQLite
}

// Reassign gives a tenant to node target without copying its data, which
// must be where target reaches it too (Shared), or, for a tenant that has
// no owner yet, be on target's disk (adoption). It raises the tenant's
// fencing token to the next epoch first (the old owner's batches that read
// the old token end before it returns; later ones fail), then flips owner
// and epoch in the catalog with a compare-and-set on both, so that two
// nodes failing over at once cannot take a tenant from each other. from,
// when not "", is the owner the caller expects. Target may be the current
// owner: the epoch then moves on alone (a restarted node making sure an
// earlier process of its name is fenced, or a move that raised the token
// and did not flip). A failure before the flip leaves the owner as it was.
func Reassign(ctx context.Context, cat *catalog.Catalog, storages map[string]engine.Storage, slugOrID, from, target string) (*engine.Tenant, error) {
	if err := ValidateName(target); err != nil {
		return nil, err
	}
	t, err := cat.Resolve(ctx, slugOrID)
	if err != nil {
		if err := cat.Reload(ctx); err != nil { // made a moment ago elsewhere?
			return nil, err
		}
		if t, err = cat.Resolve(ctx, slugOrID); err != nil {
			return nil, err
		}
	}
	if t, err = cat.Refresh(ctx, t.ID); err != nil { // the row as it is now
		return nil, err
	}
	if from != "" && t.Node != from {
		return nil, fmt.Errorf("tenant %s is on node %q now, not %q: %w", t.Slug, t.Node, from, engine.ErrConflict)
	}
	if t.Status == engine.StatusImporting {
		return nil, fmt.Errorf("tenant %s is being imported: %w", t.Slug, engine.ErrWrongStatus)
	}
	if !Shared(t) && t.Node != "" && t.Node != target {
		return nil, engine.NewError(engine.KindRefused, "not_implemented",
			fmt.Sprintf("tenant %s is a SQLite file on node %s's disk: it moves with its data, which node %s does (POST /admin/tenants/%s/move {\"node\":\"%s\"} through any node)", t.Slug, t.Node, t.Node, t.Slug, target))
	}
	nodes, err := cat.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	alive := false
	for _, x := range nodes {
		if x.Name == target {
			alive = x.Alive
		}
	}
	if !alive {
		return nil, engine.Invalidf("node %s is not registered or its lease has lapsed", target)
	}
	next := *t
	next.Node, next.Epoch = target, t.Epoch+1
	if t.HasDatabase() {
		f, ok := storages[t.Backend].(Fencer)
		if !ok {
			return nil, engine.Invalidf("the %s backend is not configured here: without it the old owner cannot be fenced (give --%s-dsn)", t.Backend, t.Backend)
		}
		if err := f.RaiseFence(ctx, next.Placement(), next.Epoch); err != nil {
			return nil, fmt.Errorf("raise the tenant's fencing token: %w", err)
		}
	}
	return cat.SetNode(ctx, t, t.Node, t.Epoch, target, next.Epoch)
}

// Drained is one tenant a drain moved, or could not.
type Drained struct {
	Tenant string `json:"tenant"`
	To     string `json:"to,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Drain moves every tenant of node name to the other live nodes, each to
// the one with the fewest tenants, so that name can be stopped. A tenant
// whose data is on name's own disk moves with withData, which only that
// node's process can run; without it such a tenant is reported not moved.
func Drain(ctx context.Context, cat *catalog.Catalog, storages map[string]engine.Storage, name string,
	withData func(ctx context.Context, t *engine.Tenant, to string) error) ([]Drained, error) {
	nodes, err := cat.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, x := range nodes {
		if x.Alive && x.Name != name {
			count[x.Name] = x.Tenants
		}
	}
	if len(count) == 0 {
		return nil, engine.Invalidf("no other live node to drain %s to", name)
	}
	ts, err := cat.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Drained
	for _, t := range ts {
		if t.Node != name {
			continue
		}
		to := ""
		for x, c := range count {
			if to == "" || c < count[to] || c == count[to] && x < to {
				to = x
			}
		}
		d := Drained{Tenant: t.Slug, To: to}
		var err error
		switch {
		case Shared(t):
			_, err = Reassign(ctx, cat, storages, t.ID, name, to)
		case withData != nil:
			err = withData(ctx, t, to)
		default:
			err = engine.Invalidf("its SQLite file is on node %s's disk: ask that node to drain itself (POST /admin/nodes/%s/drain on it)", name, name)
		}
		if err != nil {
			d.To, d.Error = "", err.Error()
		} else {
			count[to]++
		}
		out = append(out, d)
	}
	return out, nil
}

// Package engine is the storage engine seen from above, and the contracts
// everything else is written against: a tenant and its placement, the
// catalog of tenants, the shard pool and the backends' storage, the
// tenant-scoped Shard and Querier, the background Worker with the catalog's
// work marks, and the errors (sentinels, and Error with a kind and a stable
// code for what a client is told). It imports no other Keyshard package.
package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Catalog stores tenants and their placements. Implementations serve
// Resolve from memory; all methods are safe for concurrent use.
type Catalog interface {
	// Resolve returns a copy of the tenant with that slug or id, or
	// ErrTenantNotFound.
	Resolve(ctx context.Context, slugOrID string) (*Tenant, error)
	// List returns every tenant.
	List(ctx context.Context) ([]*Tenant, error)
	// Create records t; a taken slug returns ErrConflict.
	Create(ctx context.Context, t *Tenant) error
	// Update stores t if the catalog still holds wantEpoch for it, else
	// returns ErrConflict.
	Update(ctx context.Context, t *Tenant, wantEpoch int64) error
	// Delete removes the tenant; ErrTenantNotFound if absent.
	Delete(ctx context.Context, id string) error
}

// ShardHandle is an open shard pinned for one caller: it is not closed until
// Release. Release must be called exactly once.
type ShardHandle interface {
	Shard
	Release()
}

// ShardPool opens shards on demand and keeps them in a bounded cache.
type ShardPool interface {
	// Acquire returns the shard at p pinned; it returns ErrOverloaded when
	// too many shards are pinned to open another.
	Acquire(ctx context.Context, p Placement) (ShardHandle, error)
	// Evict closes the tenant's shard once unpinned and waits for it.
	Evict(ctx context.Context, tenantID string) error
	// Retire closes the tenant's shard like Evict, then runs destroy while
	// no caller can open the shard.
	Retire(ctx context.Context, tenantID string, destroy func() error) error
	// Close closes every shard.
	Close() error
}

// Storage creates and destroys tenants' databases on one backend.
type Storage interface {
	// Create creates the tenant's database at p with the current schema.
	Create(ctx context.Context, p Placement) error
	// Destroy deletes the tenant's database at p; the shard must be closed.
	Destroy(ctx context.Context, p Placement) error
}

// Seeder is a Storage that can create a tenant's database with rows of its
// first transaction in it from the start (a new tenant's first signing
// key), cheaper than opening the new database afterwards to write them.
type Seeder interface {
	// CreateSeeded is Create with seed's rows; seeded false when the
	// database was made without them (seed failed).
	CreateSeeded(ctx context.Context, p Placement, seed func(Querier) error) (seeded bool, err error)
}

// Ownership decides which tenants this process serves when several nodes
// share the catalog (package cluster implements it).
type Ownership interface {
	// Own returns the tenant to serve, t or t claimed for this node when it
	// had no owner; ErrNotOwner when another node owns it; an
	// unavailable error when this node cannot vouch for its lease.
	Own(ctx context.Context, t *Tenant) (*Tenant, error)
	// Self is this node's name: tenants created here are owned by it.
	Self() string
}

// Engine is the storage engine seen from above: tenants in a catalog, their
// shards in a pool, their databases on backends. Safe for concurrent use.
type Engine struct {
	Catalog        Catalog
	Shards         ShardPool
	Backends       map[string]Storage // by backend name
	DefaultBackend string
	// Owner, when set, restricts the tenants served to those this node
	// owns (several nodes sharing a catalog); nil serves every tenant.
	Owner Ownership

	lifecycle sync.Mutex // serializes tenant state changes
}

// CreateTenant requests a tenant: status pending, nothing created on disk.
// With several nodes it is owned by this one.
func (e *Engine) CreateTenant(ctx context.Context, slug, name, backend string) (*Tenant, error) {
	return e.CreateTenantOn(ctx, slug, name, backend, "")
}

// SelfNode is this node's name with several nodes, else "".
func (e *Engine) SelfNode() string {
	if e.Owner == nil {
		return ""
	}
	return e.Owner.Self()
}

// CreateTenantOn is CreateTenant owned by node (empty: this node).
func (e *Engine) CreateTenantOn(ctx context.Context, slug, name, backend, node string) (*Tenant, error) {
	if err := ValidateSlug(slug); err != nil {
		return nil, err
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if backend == "" {
		backend = e.DefaultBackend
	}
	if err := ValidateBackend(backend); err != nil {
		return nil, err
	}
	if _, ok := e.Backends[backend]; !ok {
		return nil, Invalidf("backend %q is not configured on this server", backend)
	}
	if node == "" {
		node = e.SelfNode()
	} else if e.Owner == nil {
		return nil, Invalidf("this server is not one of several nodes: a tenant's node cannot be chosen")
	}
	t := &Tenant{ID: NewTenantID(), Slug: slug, Name: name, Status: StatusPending, Backend: backend, Epoch: 1, Node: node}
	if err := e.Catalog.Create(ctx, t); err != nil {
		return nil, err
	}
	return t, nil
}

// Get returns the tenant with that slug or id.
func (e *Engine) Get(ctx context.Context, slugOrID string) (*Tenant, error) {
	return e.Catalog.Resolve(ctx, slugOrID)
}

// List returns every tenant.
func (e *Engine) List(ctx context.Context) ([]*Tenant, error) { return e.Catalog.List(ctx) }

// ErrWrongStatus is returned for a lifecycle step the tenant's status forbids.
var ErrWrongStatus = errors.New("tenant status does not allow this")

// ApproveTenant makes a pending tenant active. A requested tenant gets a
// new, empty database; an imported one (ImportedAt set) is served with the
// data its import put in place.
func (e *Engine) ApproveTenant(ctx context.Context, slugOrID string) (*Tenant, error) {
	t, _, err := e.ApproveTenantSeeded(ctx, slugOrID, nil)
	return t, err
}

// ApproveTenantSeeded is ApproveTenant whose new database, when its
// backend is a Seeder and seed is not nil, holds the rows seed(tenant id)
// writes (seeded true). Not for an imported tenant, whose data is there.
func (e *Engine) ApproveTenantSeeded(ctx context.Context, slugOrID string, seed func(tenantID string) func(Querier) error) (_ *Tenant, seeded bool, _ error) {
	t, err := e.transition(ctx, slugOrID, StatusPending, StatusActive, func(t *Tenant) error {
		st, ok := e.Backends[t.Backend]
		if !ok {
			return fmt.Errorf("backend %q not configured: %w", t.Backend, ErrUnavailable)
		}
		if sd, ok := st.(Seeder); ok && seed != nil && t.ImportedAt == nil {
			ok, err := sd.CreateSeeded(ctx, t.Placement(), seed(t.ID))
			if err != nil {
				return fmt.Errorf("create shard: %w", err)
			}
			seeded = ok
		} else if t.ImportedAt == nil {
			if err := st.Create(ctx, t.Placement()); err != nil {
				return fmt.Errorf("create shard: %w", err)
			}
		} else if marks, ok := e.Catalog.(WorkMarks); ok {
			// Events the import brought in and had not delivered are
			// due once it is active. Marked before it is, so that a
			// failure leaves it pending (WorkMarks' rule).
			if err := marks.MarkWork(ctx, t.ID, time.Now()); err != nil {
				return err
			}
		}
		now := time.Now().UTC()
		t.ApprovedAt = &now
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if marks, ok := e.Catalog.(WorkMarks); ok && t.ImportedAt != nil {
		// A worker round that saw the tenant still pending put its mark a
		// minute off: due now. Best effort; the mark above stands anyway.
		_ = marks.MarkWork(ctx, t.ID, time.Now())
	}
	return t, seeded, nil
}

// SuspendTenant refuses the tenant's requests from now on; its shard is
// flushed and closed, its data kept.
func (e *Engine) SuspendTenant(ctx context.Context, slugOrID string) (*Tenant, error) {
	t, err := e.transition(ctx, slugOrID, StatusActive, StatusSuspended, nil)
	if err != nil {
		return nil, err
	}
	return t, e.Shards.Evict(ctx, t.ID)
}

// ResumeTenant makes a suspended tenant active again. Background work it
// had pending, put off while it was suspended, is due at once.
func (e *Engine) ResumeTenant(ctx context.Context, slugOrID string) (*Tenant, error) {
	t, err := e.transition(ctx, slugOrID, StatusSuspended, StatusActive, nil)
	if err != nil {
		return nil, err
	}
	if marks, ok := e.Catalog.(WorkMarks); ok {
		// A tenant without pending work gets a mark it does not need: one
		// visit finds nothing and clears it.
		if err := marks.MarkWork(ctx, t.ID, time.Now()); err != nil {
			return t, err
		}
	}
	return t, nil
}

func (e *Engine) transition(ctx context.Context, slugOrID string, from, to Status, do func(*Tenant) error) (*Tenant, error) {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	t, err := e.Catalog.Resolve(ctx, slugOrID)
	if err != nil {
		return nil, err
	}
	if err := e.notNodes(t); err != nil {
		return nil, err
	}
	if t.Status != from {
		return nil, fmt.Errorf("tenant is %s, not %s: %w", t.Status, from, ErrWrongStatus)
	}
	if do != nil {
		if err := do(t); err != nil {
			return nil, err
		}
	}
	t.Status = to
	if err := e.Catalog.Update(ctx, t, t.Epoch); err != nil {
		return nil, err
	}
	return t, nil
}

// DeleteTenant removes the tenant from the catalog, closes its shard and
// deletes its database.
func (e *Engine) DeleteTenant(ctx context.Context, slugOrID string) error {
	e.lifecycle.Lock()
	defer e.lifecycle.Unlock()
	t, err := e.Catalog.Resolve(ctx, slugOrID)
	if err != nil {
		return err
	}
	if err := e.notNodes(t); err != nil {
		return err
	}
	if err := e.Catalog.Delete(ctx, t.ID); err != nil {
		return err
	}
	// A Tenant() call that resolved the tenant before the delete may still
	// try to open its shard: Retire keeps it from opening while the
	// database is destroyed, so no file is recreated.
	err = e.Shards.Retire(ctx, t.ID, func() error {
		st, ok := e.Backends[t.Backend]
		if !ok {
			return nil
		}
		if t.Status == StatusPending && t.ImportedAt == nil {
			return nil // nothing was created
		}
		// Active, suspended, imported and waiting for approval, or left
		// importing (by a crash, or an import still running, which then
		// fails and cleans up after itself).
		return st.Destroy(ctx, t.Placement())
	})
	if err != nil {
		return fmt.Errorf("delete shard of deleted tenant: %w", err)
	}
	return nil
}

// TenantShard is an active tenant with its shard pinned. Release it once.
type TenantShard struct {
	Tenant *Tenant
	ShardHandle
}

// Tenant resolves an active tenant and pins its shard. A pending or
// suspended tenant returns ErrTenantPending or ErrTenantSuspended; an
// unknown one ErrTenantNotFound.
func (e *Engine) Tenant(ctx context.Context, slugOrID string) (*TenantShard, error) {
	t, err := e.Catalog.Resolve(ctx, slugOrID)
	if err != nil {
		return nil, err
	}
	if err := t.Status.Err(); err != nil {
		return nil, err
	}
	if e.Owner != nil {
		if t, err = e.Owner.Own(ctx, t); err != nil {
			return nil, err
		}
	} else if t.Node != "" {
		// A process that is not a node (a serve without --node, a
		// command) on a shared catalog: the tenant's node serves it, and
		// a second writer here would not be fenced.
		return nil, ErrNotOwner
	}
	h, err := e.Shards.Acquire(ctx, t.Placement())
	if err != nil {
		// A delete since Resolve leaves no database to open: say so.
		if _, rerr := e.Catalog.Resolve(ctx, t.ID); errors.Is(rerr, ErrTenantNotFound) {
			return nil, ErrTenantNotFound
		}
		return nil, err
	}
	// The tenant may have been suspended, deleted or moved while we opened
	// its shard: the catalog is the truth. Eviction of a pinned shard waits
	// for this handle, so a tenant seen active here stays usable until
	// Release.
	now, err := e.Catalog.Resolve(ctx, t.ID)
	if err == nil {
		err = now.Status.Err()
	}
	if err == nil && (now.Epoch != t.Epoch || now.Node != t.Node) {
		err = fmt.Errorf("tenant placement changed: %w", ErrUnavailable)
	}
	if err != nil {
		h.Release()
		if errors.Is(err, ErrTenantNotFound) || errors.Is(err, ErrTenantSuspended) {
			_ = e.Shards.Evict(ctx, t.ID) // do not keep a shard open for it
		}
		return nil, err
	}
	return &TenantShard{Tenant: t, ShardHandle: h}, nil
}

// notNodes refuses a tenant owned by a node when this process is not one
// (a command on a shared catalog): its database is that node's to change.
func (e *Engine) notNodes(t *Tenant) error {
	if e.Owner == nil && t.Node != "" {
		return &Error{Kind: KindConflict, Code: "tenant_on_node",
			Message: fmt.Sprintf("tenant %s belongs to node %s: change it through a node's admin API", t.Slug, t.Node)}
	}
	return nil
}

// Close closes every shard.
func (e *Engine) Close() error { return e.Shards.Close() }

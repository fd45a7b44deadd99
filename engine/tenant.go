package engine

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"
	"time"
)

// Status is a tenant's lifecycle state.
type Status string

// Tenant statuses.
const (
	StatusPending   Status = "pending"
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
	// StatusImporting: an import is filling the tenant's database. It
	// becomes pending (or active, when the import was approved at once);
	// one left importing by a crash can only be deleted.
	StatusImporting Status = "importing"
)

// Backend names.
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
	BackendMySQL    = "mysql"
)

// Tenant is an organization: one shard, found by id or slug.
type Tenant struct {
	ID         string     `json:"id"`
	Slug       string     `json:"slug"`
	Name       string     `json:"name"`
	Status     Status     `json:"status"`
	Backend    string     `json:"backend"`
	Location   string     `json:"location"`
	Epoch      int64      `json:"epoch"`
	CreatedAt  time.Time  `json:"created_at"`
	ApprovedAt *time.Time `json:"approved_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	// ImportedAt is when an import finished filling the tenant's database.
	// A pending tenant with it set has its data in place: approval serves
	// that data instead of creating an empty database.
	ImportedAt *time.Time `json:"imported_at"`
	// Node is the node that serves the tenant when several nodes share
	// the catalog; empty when one server has it all.
	Node string `json:"node,omitempty"`
}

// Placement says where a tenant's shard lives. Epoch changes whenever the
// placement does, so a stale writer can be fenced.
type Placement struct {
	TenantID string `json:"tenant_id"`
	Backend  string `json:"backend"`
	Location string `json:"location"`
	Epoch    int64  `json:"epoch"`
}

// HasDatabase reports whether t's database exists whole: it was approved
// (active or suspended), or imported and waits for approval. A requested
// tenant has none yet; an importing one has part of one.
func (t *Tenant) HasDatabase() bool {
	switch t.Status {
	case StatusActive, StatusSuspended:
		return true
	case StatusPending:
		return t.ImportedAt != nil
	}
	return false
}

// Placement returns where t's shard lives.
func (t *Tenant) Placement() Placement {
	return Placement{TenantID: t.ID, Backend: t.Backend, Location: t.Location, Epoch: t.Epoch}
}

// idEncoding is lower-case base32 without padding: URL-safe, path-safe and
// case-insensitive-filesystem-safe.
var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// IDLength is the length of a tenant id (16 random bytes, base32).
const IDLength = 26

// NewTenantID returns a random tenant id of IDLength characters from [a-z2-7].
func NewTenantID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return idEncoding.EncodeToString(b[:])
}

// ValidTenantID reports whether id has the form NewTenantID produces. Only a
// valid id may become part of a path or an identifier.
func ValidTenantID(id string) bool {
	if len(id) != IDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// MaxSlugLength is the longest slug accepted (a DNS label).
const MaxSlugLength = 63

// ValidateSlug returns nil when s is 1–63 characters of lower-case ASCII
// letters, digits and hyphens, not starting or ending with a hyphen;
// otherwise an error wrapping ErrInvalid that says why.
func ValidateSlug(s string) error {
	switch {
	case s == "":
		return Invalidf("slug is empty")
	case len(s) > MaxSlugLength:
		return Invalidf("slug is longer than %d characters", MaxSlugLength)
	case s[0] == '-' || s[len(s)-1] == '-':
		return Invalidf("slug must not start or end with a hyphen")
	case ValidTenantID(s):
		// Tenants are found by slug or id: a slug shaped like an id could
		// shadow another tenant's id.
		return Invalidf("slug must not have the form of a tenant id (26 characters of a-z and 2-7)")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return Invalidf("slug may contain only lower-case letters, digits and hyphens")
		}
	}
	return nil
}

// ValidateBackend returns nil for a known backend name.
func ValidateBackend(b string) error {
	switch b {
	case BackendSQLite, BackendPostgres, BackendMySQL:
		return nil
	}
	return Invalidf("unknown backend %q (want sqlite, postgres or mysql)", b)
}

// ValidateName checks a tenant's display name.
func ValidateName(n string) error {
	if strings.TrimSpace(n) == "" {
		return Invalidf("name is empty")
	}
	if len(n) > 200 {
		return Invalidf("name is longer than 200 bytes")
	}
	return nil
}

// ErrStatus returns the error for using a tenant in status s, or nil for active.
func (s Status) Err() error {
	switch s {
	case StatusActive:
		return nil
	case StatusSuspended:
		return ErrTenantSuspended
	case StatusPending, StatusImporting:
		return ErrTenantPending
	}
	return fmt.Errorf("tenant status %q: %w", s, ErrUnavailable)
}

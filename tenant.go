package herd

import (
	"context"
	"strings"
	"time"
)

// Tenant is one customer. Creating a tenant also creates the root node of its
// tree; a grant on the root node covers the whole tenant.
type Tenant struct {
	ID         int64     `json:"id,string"`
	Name       string    `json:"name"`
	RootNodeID int64     `json:"root_node_id,string"`
	CreatedAt  time.Time `json:"created_at"`
	// Version counts the changes of its name (see CheckVersion).
	Version int64 `json:"version"`
}

// Validate reports whether the tenant can be created.
func (t *Tenant) Validate() error {
	t.Name = strings.TrimSpace(t.Name)
	return checkRequiredText("name", t.Name, MaxNameLen)
}

// TenantService manages tenants. Only a super-admin may create tenants.
type TenantService interface {
	// CreateTenant creates a tenant and its root node and sets t.ID,
	// t.RootNodeID and t.CreatedAt. Returns EFORBIDDEN unless the actor is a
	// super-admin, EINVALID on a bad name.
	CreateTenant(ctx context.Context, t *Tenant) error

	// FindTenantByID returns ENOTFOUND when the tenant does not exist or the
	// actor belongs to another tenant.
	FindTenantByID(ctx context.Context, id int64) (*Tenant, error)

	// UpdateTenant renames a tenant and returns it as it now is. Returns
	// EFORBIDDEN unless the actor is a super-admin, EINVALID for a bad
	// name, EPRECONDITION for a stale u.IfVersion.
	UpdateTenant(ctx context.Context, id int64, u TenantUpdate) (*Tenant, error)
}

package herd

import (
	"context"
	"sort"
	"time"
)

// Role is what a grant allows on the nodes under it. Roles are ordered:
// an operator can do what a viewer can, an admin what an operator can.
type Role string

// Roles, weakest first.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

// Rank orders roles; an unknown role ranks 0, below every real role.
func (r Role) Rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.Rank() > 0 }

// MaxGrantsPerUser bounds the grants of one user. Access is meant to be
// granted on a few nodes high in the tree; a user who would need more should
// be granted a node above them. The bound keeps every scoped query within
// MaxQueryParams: two parameters per covering path.
const MaxGrantsPerUser = 100

// Grant gives a user a role on a node and everything under it.
type Grant struct {
	ID        int64     `json:"id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	UserID    int64     `json:"user_id,string"`
	NodeID    int64     `json:"node_id,string"`
	Role      Role      `json:"role"`
	Path      string    `json:"path"`
	CreatedAt time.Time `json:"created_at"`
}

// Validate reports whether the grant's own fields are acceptable.
func (g *Grant) Validate() error {
	if g.UserID == 0 {
		return Errorf(EINVALID, "user_id is required")
	} else if g.NodeID == 0 {
		return Errorf(EINVALID, "node_id is required")
	} else if !g.Role.Valid() {
		return Errorf(EINVALID, "role must be viewer, operator or admin, not %q", g.Role)
	}
	return nil
}

// GrantService manages grants. A grant or revoke writes the grant row and its
// event and nothing else: no device row is touched.
type GrantService interface {
	// CreateGrant returns EFORBIDDEN unless the actor is an admin of the node,
	// ENOTFOUND when the user or node is not in the actor's tenant.
	CreateGrant(ctx context.Context, g *Grant) error
	// DeleteGrant returns ENOTFOUND when the grant's node is not visible
	// to the actor (outside its grants or in another tenant), so that the
	// answer is the same as for a grant that does not exist, and EFORBIDDEN
	// when the actor sees the node but is not an admin of it.
	DeleteGrant(ctx context.Context, id int64) error
	// FindGrantsByUser lists a user's grants. A user may list their own;
	// otherwise the actor must be an admin of the tenant's root.
	FindGrantsByUser(ctx context.Context, userID int64) ([]*Grant, error)
}

// Scope is the set of subtrees an actor may see for some minimum role: a
// tenant and the minimal covering set of node paths. It is what a scoped
// query carries to the database, whatever the number of devices under it.
type Scope struct {
	TenantID int64
	Paths    []string
}

// Empty reports whether the scope covers nothing.
func (s Scope) Empty() bool { return len(s.Paths) == 0 }

// Covers reports whether path lies under one of the scope's paths.
func (s Scope) Covers(path string) bool {
	for _, p := range s.Paths {
		if PathUnder(path, p) {
			return true
		}
	}
	return false
}

// CoveringPaths returns the minimal covering set of the given paths: a path
// under another path in the set adds nothing and is dropped. The result is
// sorted, so equal inputs give equal scopes.
func CoveringPaths(paths []string) []string {
	sorted := append([]string(nil), paths...)
	sort.Strings(sorted)
	out := sorted[:0]
	for _, p := range sorted {
		// In sorted order an ancestor comes right before its descendants,
		// so comparing with the last kept path is enough.
		if len(out) > 0 && PathUnder(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// ResolveScope returns the scope of the grants that carry at least role min.
// Roles are filtered before collapsing, so a viewer grant on a region does not
// hide an operator grant on one of its sites.
func ResolveScope(tenantID int64, grants []*Grant, min Role) Scope {
	paths := make([]string, 0, len(grants))
	for _, g := range grants {
		if g.Role.Rank() >= min.Rank() {
			paths = append(paths, g.Path)
		}
	}
	return Scope{TenantID: tenantID, Paths: CoveringPaths(paths)}
}

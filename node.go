package herd

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Node is a place in a tenant's tree (org, region, site, or any depth).
// Path is the materialized path of ids from the root down to and including
// the node itself, "/1/7/12/": it makes "under node N" a byte-range
// comparison that a plain B-tree index serves.
type Node struct {
	ID        int64     `json:"id,string"`
	TenantID  int64     `json:"tenant_id,string"`
	ParentID  int64     `json:"parent_id,string,omitempty"`
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	Path      string    `json:"path"`
	CreatedAt time.Time `json:"created_at"`
	// Version counts the changes of its name and kind (see CheckVersion).
	Version int64 `json:"version"`
	// Ancestors is the breadcrumb of GET /v1/nodes/{id}: the node's
	// ancestors, root first, by id and name only, which is all a caller
	// granted this node (and not them) may know of them. Empty elsewhere.
	Ancestors []NodeRef `json:"ancestors,omitempty"`
}

// Validate reports whether the node's own fields are acceptable. The parent
// and path are checked by the store.
func (n *Node) Validate() error {
	n.Name = strings.TrimSpace(n.Name)
	n.Kind = strings.TrimSpace(n.Kind)
	if err := checkRequiredText("name", n.Name, MaxNameLen); err != nil {
		return err
	}
	return checkRequiredText("kind", n.Kind, MaxKindLen)
}

// ChildPath returns the path of a child with the given id under parentPath.
func ChildPath(parentPath string, id int64) string {
	if parentPath == "" {
		parentPath = "/"
	}
	return parentPath + strconv.FormatInt(id, 10) + "/"
}

// PathUpperBound returns the exclusive upper bound of the byte range holding
// path and every path under it: the trailing "/" becomes "0", the next byte.
// So "under /7/12/" is path >= "/7/12/" AND path < "/7/120".
func PathUpperBound(path string) string {
	return path[:len(path)-1] + "0"
}

// PathUnder reports whether path equals ancestor or lies under it.
func PathUnder(path, ancestor string) bool {
	return strings.HasPrefix(path, ancestor)
}

// PathIDs returns the node ids of a path, root first.
func PathIDs(path string) ([]int64, error) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	ids := make([]int64, 0, len(parts))
	for _, p := range parts {
		if p == "" {
			continue
		}
		id, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, Errorf(EINVALID, "malformed path %q", path)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// NodeService manages the node tree.
type NodeService interface {
	// CreateNode creates n under n.ParentID (the tenant's root node when it
	// is zero) and sets ID, Path and CreatedAt. Returns ENOTFOUND when the
	// parent is not visible to the actor, EFORBIDDEN when the actor is not an
	// admin of the parent.
	CreateNode(ctx context.Context, n *Node) error

	// FindNodeByID returns the node with its Ancestors; ENOTFOUND when the
	// node does not exist or lies outside the actor's grants (an ancestor
	// of the actor's grants is outside them).
	FindNodeByID(ctx context.Context, id int64) (*Node, error)

	// MoveNode moves the subtree rooted at id under parentID; the paths of
	// every node and device in the subtree follow. Returns EINVALID for a move
	// into its own subtree or of a root node, EFORBIDDEN when the actor is
	// not an admin of both the node and the new parent.
	MoveNode(ctx context.Context, id, parentID int64) (*Node, error)

	// UpdateNode changes a node's name or kind and returns it as it now
	// is. Returns ENOTFOUND outside the actor's grants, EFORBIDDEN without
	// the admin role on the node, EINVALID for a bad value, EPRECONDITION
	// for a stale u.IfVersion.
	UpdateNode(ctx context.Context, id int64, u NodeUpdate) (*Node, error)
}

package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

// NodeService implements herd.NodeService.
type NodeService struct{ db *DB }

var _ herd.NodeService = (*NodeService)(nil)

// NewNodeService returns a NodeService on db.
func NewNodeService(db *DB) *NodeService { return &NodeService{db: db} }

// CreateNode creates a node under its parent.
func (s *NodeService) CreateNode(ctx context.Context, n *herd.Node) (err error) {
	defer wrapOp("sqldb.CreateNode", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := n.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if n.ParentID == 0 {
		if n.TenantID == 0 {
			return herd.Errorf(herd.EINVALID, "tenant_id or parent_id is required")
		} else if !a.SeesTenant(n.TenantID) {
			return herd.Errorf(herd.ENOTFOUND, "tenant %d not found", n.TenantID)
		}
		t, err := tx.findTenant(ctx, n.TenantID)
		if err != nil {
			return err
		}
		n.ParentID = t.RootNodeID
	}
	parent, err := tx.findNode(ctx, a, n.ParentID)
	if err != nil {
		return err
	} else if n.TenantID != 0 && n.TenantID != parent.TenantID {
		return herd.Errorf(herd.EINVALID, "parent %d belongs to another tenant", parent.ID)
	} else if !a.Allows(parent.TenantID, parent.Path, herd.RoleAdmin) {
		return herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", parent.ID)
	}
	n.TenantID = parent.TenantID
	if err := tx.insertNode(ctx, n, parent.Path); err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, n.TenantID, newEvent(herd.EventNodeCreated, herd.EventSubjectNode, n.ID, n.Path, n)); err != nil {
		return err
	}
	return tx.Commit()
}

// insertNode inserts n under the node at parentPath ("/" for a root) and sets
// its id, path and creation time.
func (tx *Tx) insertNode(ctx context.Context, n *herd.Node, parentPath string) (err error) {
	var parent any
	if n.ParentID != 0 {
		parent = n.ParentID
	}
	// The path holds the node's own id, known only after the insert.
	if n.ID, err = tx.insertID(ctx, `INSERT INTO nodes (tenant_id, parent_id, kind, name, name_fold, path, created_at) VALUES (?, ?, ?, ?, ?, '', ?)`,
		n.TenantID, parent, n.Kind, n.Name, herd.FoldText(n.Name), tx.now.UnixMilli()); err != nil {
		return err
	}
	n.Path, n.CreatedAt, n.Version = herd.ChildPath(parentPath, n.ID), tx.now, 1
	_, err = tx.ExecContext(ctx, `UPDATE nodes SET path = ? WHERE id = ?`, n.Path, n.ID)
	return err
}

// FindNodeByID returns a node within the actor's grants.
func (s *NodeService) FindNodeByID(ctx context.Context, id int64) (_ *herd.Node, err error) {
	defer wrapOp("sqldb.FindNodeByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Node, error) {
		n, err := tx.findNode(ctx, a, id)
		if err != nil {
			return nil, err
		}
		n.Ancestors, err = tx.nodeAncestors(ctx, n)
		return n, err
	})
}

// findNode returns the node if the actor may see it (viewer or more on it
// or an ancestor) and ENOTFOUND otherwise, so that ids outside a caller's
// grants reveal nothing, not even their existence. In a write it reads the
// node again under the tenant's tree lock, so its path stays current until
// the write commits.
func (tx *Tx) findNode(ctx context.Context, a *herd.Actor, id int64) (*herd.Node, error) {
	n, err := tx.readNode(ctx, a, id)
	if err != nil {
		return nil, err
	} else if locked, err := tx.lockTenantTree(ctx, n.TenantID); err != nil {
		return nil, err
	} else if locked {
		return tx.readNode(ctx, a, id)
	}
	return n, nil
}

func (tx *Tx) readNode(ctx context.Context, a *herd.Actor, id int64) (*herd.Node, error) {
	var n herd.Node
	var parent sql.NullInt64
	var created int64
	cond, args := tenantCond(a, "tenant_id")
	err := tx.QueryRowContext(ctx, `SELECT id, tenant_id, parent_id, kind, name, path, created_at, version FROM nodes WHERE id = ?`+cond, append([]any{id}, args...)...).
		Scan(&n.ID, &n.TenantID, &parent, &n.Kind, &n.Name, &n.Path, &created, &n.Version)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.Allows(n.TenantID, n.Path, herd.RoleViewer)) {
		return nil, herd.Errorf(herd.ENOTFOUND, "node %d not found", id)
	} else if err != nil {
		return nil, err
	}
	n.ParentID, n.CreatedAt = parent.Int64, msToTime(created)
	return &n, nil
}

// MoveNode moves a subtree. Every node and device path under it is
// rewritten in the same transaction, so no reader ever sees half a move.
func (s *NodeService) MoveNode(ctx context.Context, id, parentID int64) (_ *herd.Node, err error) {
	defer wrapOp("sqldb.MoveNode", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	n, err := tx.findNode(ctx, a, id)
	if err != nil {
		return nil, err
	}
	parent, err := tx.findNode(ctx, a, parentID)
	if err != nil {
		return nil, err
	}
	switch {
	case n.ParentID == 0:
		return nil, herd.Errorf(herd.EINVALID, "node %d is a tenant root and cannot move", n.ID)
	case parent.TenantID != n.TenantID:
		return nil, herd.Errorf(herd.ENOTFOUND, "node %d not found", parentID)
	case herd.PathUnder(parent.Path, n.Path):
		return nil, herd.Errorf(herd.EINVALID, "node %d cannot move under itself or its own subtree", n.ID)
	case !a.Allows(n.TenantID, n.Path, herd.RoleAdmin):
		return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
	case !a.Allows(parent.TenantID, parent.Path, herd.RoleAdmin):
		return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", parent.ID)
	}
	if n.ParentID == parent.ID {
		return n, nil
	}
	oldPath, newPath := n.Path, herd.ChildPath(parent.Path, n.ID)
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return nil, err
	}
	repath := func(table, set string, args ...any) error {
		args = append(args, newPath, len(oldPath)+1, n.TenantID, oldPath, herd.PathUpperBound(oldPath))
		_, err := tx.ExecContext(ctx, `UPDATE `+table+` SET `+set+`path = ? || substr(path, ?) WHERE tenant_id = ? AND path >= ? AND path < ?`, args...)
		return err
	}
	if err := repath("nodes", ""); err != nil {
		return nil, err
	} else if err := repath("devices", "rev = ?, ", rev); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE nodes SET parent_id = ? WHERE id = ? AND tenant_id = ?`, parent.ID, n.ID, n.TenantID); err != nil {
		return nil, err
	}
	// The subtree's devices leave the old ancestors and join the new ones.
	var count int64
	if err := tx.QueryRowContext(ctx, `SELECT device_count FROM nodes WHERE id = ? AND tenant_id = ?`, n.ID, n.TenantID).Scan(&count); err != nil {
		return nil, err
	}
	oldParentPath := oldPath[:len(oldPath)-len(herd.ChildPath("/", n.ID))+1]
	if err := tx.adjustDeviceCounts(ctx, oldParentPath, -count); err != nil {
		return nil, err
	} else if err := tx.adjustDeviceCounts(ctx, parent.Path, count); err != nil {
		return nil, err
	}
	n.ParentID, n.Path = parent.ID, newPath
	ev := newEvent(herd.EventNodeMoved, herd.EventSubjectNode, n.ID, n.Path, map[string]any{"node": n, "old_path": oldPath})
	if err := tx.appendEvents(ctx, n.TenantID, ev); err != nil {
		return nil, err
	}
	return n, tx.Commit()
}

package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

// GrantService implements herd.GrantService.
type GrantService struct{ db *DB }

var _ herd.GrantService = (*GrantService)(nil)

// NewGrantService returns a GrantService on db.
func NewGrantService(db *DB) *GrantService { return &GrantService{db: db} }

// CreateGrant gives a user a role on a node. Nothing but the grant row and
// its event is written.
func (s *GrantService) CreateGrant(ctx context.Context, g *herd.Grant) (err error) {
	defer wrapOp("sqldb.CreateGrant", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := g.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	u, err := tx.findUser(ctx, a, g.UserID)
	if err != nil {
		return err
	}
	n, err := tx.findNode(ctx, a, g.NodeID)
	if err != nil {
		return err
	} else if n.TenantID != u.TenantID {
		return herd.Errorf(herd.ENOTFOUND, "node %d not found", g.NodeID)
	} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
		return herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
	}
	// Concurrent grants to one user are serialised by the tenant lock that
	// findNode took (PostgreSQL) or by the single writer (SQLite).
	var held int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM grants WHERE user_id = ? AND tenant_id = ?`, u.ID, u.TenantID).Scan(&held); err != nil {
		return err
	} else if held >= herd.MaxGrantsPerUser {
		return herd.Errorf(herd.EINVALID, "user %d already holds %d grants, the most a user may hold: grant a node above them instead", u.ID, held)
	}
	g.TenantID, g.Path, g.CreatedAt = n.TenantID, n.Path, tx.now
	if g.ID, err = tx.insertID(ctx, `INSERT INTO grants (tenant_id, user_id, node_id, role, created_at) VALUES (?, ?, ?, ?, ?)`,
		g.TenantID, g.UserID, g.NodeID, string(g.Role), tx.now.UnixMilli()); err != nil {
		return formatError(err, "the user already has a grant on this node; delete it first to change the role")
	}
	if err := tx.appendEvents(ctx, g.TenantID, newEvent(herd.EventGrantCreated, herd.EventSubjectGrant, g.ID, g.Path, g)); err != nil {
		return err
	}
	return tx.Commit()
}

// DeleteGrant revokes a grant.
func (s *GrantService) DeleteGrant(ctx context.Context, id int64) (err error) {
	defer wrapOp("sqldb.DeleteGrant", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	g, err := tx.findGrant(ctx, a, id)
	// A grant is seen by those who see its node, as the node is: outside
	// that it is not found, so that the answer tells nothing of its node.
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.Allows(g.TenantID, g.Path, herd.RoleViewer)) {
		return herd.Errorf(herd.ENOTFOUND, "grant %d not found", id)
	} else if err != nil {
		return err
	} else if !a.Allows(g.TenantID, g.Path, herd.RoleAdmin) {
		return herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", g.NodeID)
	}
	if g.Role == herd.RoleAdmin {
		if _, err := tx.lockTenantTree(ctx, g.TenantID); err != nil {
			return err
		} else if err := tx.keepRootAdmin(ctx, a, g.TenantID, 0, g.ID); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM grants WHERE id = ? AND tenant_id = ?`, id, g.TenantID); err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, g.TenantID, newEvent(herd.EventGrantDeleted, herd.EventSubjectGrant, g.ID, g.Path, g)); err != nil {
		return err
	}
	return tx.Commit()
}

// FindGrantsByUser lists a user's grants with their nodes' current paths.
func (s *GrantService) FindGrantsByUser(ctx context.Context, userID int64) (_ []*herd.Grant, err error) {
	defer wrapOp("sqldb.FindGrantsByUser", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) ([]*herd.Grant, error) {
		u, err := tx.findUser(ctx, a, userID)
		if err != nil {
			return nil, err
		}
		if a.Super || a.UserID != u.ID {
			if err := tx.requireTenantAdmin(ctx, a, u.TenantID); err != nil {
				return nil, err
			}
		}
		return tx.findGrants(ctx, u.TenantID, userID)
	})
}

const grantSelect = `SELECT g.id, g.tenant_id, g.user_id, g.node_id, g.role, n.path, g.created_at FROM grants g JOIN nodes n ON n.id = g.node_id AND n.tenant_id = g.tenant_id`

func scanGrant(r rowScanner) (*herd.Grant, error) {
	var g herd.Grant
	var role string
	var created int64
	if err := r.Scan(&g.ID, &g.TenantID, &g.UserID, &g.NodeID, &role, &g.Path, &created); err != nil {
		return nil, err
	}
	g.Role, g.CreatedAt = herd.Role(role), msToTime(created)
	return &g, nil
}

func (tx *Tx) findGrant(ctx context.Context, a *herd.Actor, id int64) (*herd.Grant, error) {
	cond, args := tenantCond(a, "g.tenant_id")
	return scanGrant(tx.QueryRowContext(ctx, grantSelect+` WHERE g.id = ?`+cond, append([]any{id}, args...)...))
}

func (tx *Tx) findGrants(ctx context.Context, tenantID, userID int64) ([]*herd.Grant, error) {
	rows, err := tx.QueryContext(ctx, grantSelect+` WHERE g.user_id = ? AND g.tenant_id = ? ORDER BY g.id`, userID, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	grants := []*herd.Grant{}
	for rows.Next() {
		g, err := scanGrant(rows)
		if err != nil {
			return nil, err
		}
		grants = append(grants, g)
	}
	return grants, rows.Err()
}

package sqldb

import (
	"context"
	"database/sql"
	"errors"

	"github.com/herd-iot/herd"
)

// TenantService implements herd.TenantService.
type TenantService struct{ db *DB }

var _ herd.TenantService = (*TenantService)(nil)

// NewTenantService returns a TenantService on db.
func NewTenantService(db *DB) *TenantService { return &TenantService{db: db} }

// CreateTenant creates the tenant, its root node and the event.
func (s *TenantService) CreateTenant(ctx context.Context, t *herd.Tenant) (err error) {
	defer wrapOp("sqldb.CreateTenant", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if !a.Super {
		return herd.Errorf(herd.EFORBIDDEN, "only a super-admin may create tenants")
	} else if err := t.Validate(); err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if t.ID, err = tx.insertID(ctx, `INSERT INTO tenants (name, created_at) VALUES (?, ?)`, t.Name, tx.now.UnixMilli()); err != nil {
		return err
	}
	t.CreatedAt, t.Version = tx.now, 1
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_cursors (tenant_id) VALUES (?)`, t.ID); err != nil {
		return err
	}
	root := &herd.Node{TenantID: t.ID, Kind: "tenant", Name: t.Name}
	if err := tx.insertNode(ctx, root, "/"); err != nil {
		return err
	}
	t.RootNodeID = root.ID
	if _, err := tx.ExecContext(ctx, `UPDATE tenants SET root_node_id = ? WHERE id = ?`, root.ID, t.ID); err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, t.ID,
		newEvent(herd.EventTenantCreated, herd.EventSubjectTenant, t.ID, root.Path, t),
		newEvent(herd.EventNodeCreated, herd.EventSubjectNode, root.ID, root.Path, root),
	); err != nil {
		return err
	}
	return tx.Commit()
}

// FindTenantByID returns a tenant the actor belongs to.
func (s *TenantService) FindTenantByID(ctx context.Context, id int64) (_ *herd.Tenant, err error) {
	defer wrapOp("sqldb.FindTenantByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Tenant, error) {
		if !a.SeesTenant(id) {
			return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", id)
		}
		return tx.findTenant(ctx, id)
	})
}

func (tx *Tx) findTenant(ctx context.Context, id int64) (*herd.Tenant, error) {
	var t herd.Tenant
	var created int64
	err := tx.QueryRowContext(ctx, `SELECT id, name, root_node_id, created_at, version FROM tenants WHERE id = ?`, id).Scan(&t.ID, &t.Name, &t.RootNodeID, &created, &t.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", id)
	} else if err != nil {
		return nil, err
	}
	t.CreatedAt = msToTime(created)
	return &t, nil
}

// tenantCond is the condition that keeps a lookup by id inside the actor's
// tenant, " AND col = ?" with its argument, and nothing for a super-admin.
// Every lookup for a user states its tenant in the SQL: a row of another
// tenant is never read, whatever the checks in Go make of it afterwards.
func tenantCond(a *herd.Actor, col string) (string, []any) {
	if a.Super {
		return "", nil
	}
	return " AND " + col + " = ?", []any{a.TenantID}
}

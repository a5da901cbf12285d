package sqldb

import (
	"context"
	"database/sql"
	"slices"

	"github.com/herd-iot/herd"
)

// The updates (PATCH) of tenants, nodes, users and devices. Each reads the
// object with the actor's rights in a write transaction, checks the version
// the caller asked for, applies and validates the change in Go, then writes
// it with "AND version = ?" (so a writer that got in between is a
// precondition failure, never a lost update, whatever the dialect's locks)
// and appends the *.updated event in the same transaction. An update that
// changes nothing writes nothing: no version, no event.

// updateEvent is the payload of a *.updated event: the object as it now
// is under its subject type's name, the names of the fields that changed
// and their values before.
func updateEvent(subject string, obj any, changed []string, old map[string]any) map[string]any {
	return map[string]any{subject: obj, "changed": changed, "old": old}
}

// oldValues picks the changed fields' earlier values from all of them.
func oldValues(changed []string, all map[string]any) map[string]any {
	old := make(map[string]any, len(changed))
	for _, f := range changed {
		old[f] = all[f]
	}
	return old
}

// commitUpdate writes an update's event, the object as it is now with the
// fields changed and their values before, and commits.
func (tx *Tx) commitUpdate(ctx context.Context, tenantID int64, evType, subjectType string, id int64, path, kind string, obj any, changed []string, before map[string]any) error {
	ev := newEvent(evType, subjectType, id, path, updateEvent(kind, obj, changed, oldValues(changed, before)))
	if err := tx.appendEvents(ctx, tenantID, ev); err != nil {
		return err
	}
	return tx.Commit()
}

// updateRow runs an update guarded by the version read, and reports a
// writer that changed the row since as EPRECONDITION.
func (tx *Tx) updateRow(ctx context.Context, kind string, id, version int64, q string, args ...any) error {
	res, err := tx.ExecContext(ctx, q, append(args, version)...)
	if err != nil {
		return err
	}
	return checkOneRow(res, kind, id, version)
}

func checkOneRow(res sql.Result, kind string, id, version int64) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	} else if n != 1 {
		return herd.Errorf(herd.EPRECONDITION, "%s %d changed while it was being updated (it was at version %d): read it again and repeat the change if it still stands", kind, id, version)
	}
	return nil
}

// UpdateDevice implements herd.DeviceService. It needs the admin role on
// the device, as a move or a delete does. The row takes a new rev, so that
// every state cache reads the new name, model and labels.
func (s *DeviceService) UpdateDevice(ctx context.Context, id int64, u herd.DeviceUpdate) (_ *herd.Device, err error) {
	defer wrapOp("sqldb.UpdateDevice", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	d, err := tx.findDevice(ctx, a, id, herd.RoleAdmin)
	if err != nil {
		return nil, err
	} else if err := herd.CheckVersion("device", d.ID, d.Version, u.IfVersion); err != nil {
		return nil, err
	}
	oldLabels := d.Labels
	before := map[string]any{"name": d.Name, "model": d.Model, "labels": oldLabels}
	changed, err := u.Apply(d)
	if err != nil {
		return nil, err
	} else if len(changed) == 0 {
		return d, tx.Commit()
	}
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return nil, err
	}
	if err := tx.updateRow(ctx, "device", d.ID, d.Version, `UPDATE devices SET name = ?, model = ?, version = version + 1, rev = ? WHERE id = ? AND tenant_id = ? AND version = ?`,
		d.Name, d.Model, rev, d.ID, d.TenantID); err != nil {
		return nil, err
	}
	if slices.Contains(changed, "labels") {
		if err := tx.replaceLabels(ctx, d, oldLabels); err != nil {
			return nil, err
		}
	}
	if err := tx.updateSearch(ctx, d); err != nil {
		return nil, err
	}
	d.Version++
	if err := tx.commitUpdate(ctx, d.TenantID, herd.EventDeviceUpdated, herd.EventSubjectDevice, d.ID, d.Path, "device", d, changed, before); err != nil {
		return nil, err
	}
	return d, nil
}

// UpdateNode implements herd.NodeService. It needs the admin role on the
// node, as a move does; a tenant's root node is renamed like any other
// (the tenant's own name is the tenant's).
func (s *NodeService) UpdateNode(ctx context.Context, id int64, u herd.NodeUpdate) (_ *herd.Node, err error) {
	defer wrapOp("sqldb.UpdateNode", &err)
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
	} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
		return nil, herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required", n.ID)
	} else if err := herd.CheckVersion("node", n.ID, n.Version, u.IfVersion); err != nil {
		return nil, err
	}
	before := map[string]any{"name": n.Name, "kind": n.Kind}
	changed, err := u.Apply(n)
	if err != nil {
		return nil, err
	} else if len(changed) == 0 {
		return n, tx.Commit()
	}
	if err := tx.updateRow(ctx, "node", n.ID, n.Version, `UPDATE nodes SET name = ?, name_fold = ?, kind = ?, version = version + 1 WHERE id = ? AND tenant_id = ? AND version = ?`,
		n.Name, herd.FoldText(n.Name), n.Kind, n.ID, n.TenantID); err != nil {
		return nil, err
	}
	n.Version++
	if err := tx.commitUpdate(ctx, n.TenantID, herd.EventNodeUpdated, herd.EventSubjectNode, n.ID, n.Path, "node", n, changed, before); err != nil {
		return nil, err
	}
	return n, nil
}

// UpdateUser implements herd.UserService. It needs what creating the user
// needs: an admin of the tenant's root node, or a super-admin. Disabling
// takes effect on the user's next request: Authenticate reads the flag
// with the token, on every call.
func (s *UserService) UpdateUser(ctx context.Context, id int64, u herd.UserUpdate) (_ *herd.User, err error) {
	defer wrapOp("sqldb.UpdateUser", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	usr, err := tx.findUser(ctx, a, id)
	if err != nil {
		return nil, err
	}
	// Read again under the tenant's lock, as devices and nodes are: two
	// updates without If-Match then go one after the other, the second
	// from the first's version, instead of the second failing its
	// version check on PostgreSQL.
	if _, err := tx.lockTenantTree(ctx, usr.TenantID); err != nil {
		return nil, err
	}
	if usr, err = tx.findUser(ctx, a, id); err != nil {
		return nil, err
	} else if err := tx.requireTenantAdmin(ctx, a, usr.TenantID); err != nil {
		return nil, err
	} else if err := herd.CheckVersion("user", usr.ID, usr.Version, u.IfVersion); err != nil {
		return nil, err
	}
	before := map[string]any{"name": usr.Name, "disabled": usr.Disabled}
	wasDisabled := usr.Disabled
	changed, err := u.Apply(usr)
	if err != nil {
		return nil, err
	} else if len(changed) == 0 {
		return usr, tx.Commit()
	} else if usr.Disabled && !wasDisabled {
		if err := tx.keepRootAdmin(ctx, a, usr.TenantID, usr.ID, 0); err != nil {
			return nil, err
		}
	}
	if err := tx.updateRow(ctx, "user", usr.ID, usr.Version, `UPDATE users SET name = ?, disabled = ?, version = version + 1 WHERE id = ? AND tenant_id = ? AND version = ?`,
		usr.Name, usr.Disabled, usr.ID, usr.TenantID); err != nil {
		return nil, err
	}
	usr.Version++
	// A disabled user's sessions end now (their tokens only pause: an
	// incident may be over tomorrow, a session should not come back).
	if usr.Disabled && !wasDisabled {
		if err := tx.endSessions(ctx, usr.TenantID, usr.ID); err != nil {
			return nil, err
		}
	}
	if before["name"] != usr.Name {
		if err := tx.moveLogin(ctx, usr); err != nil {
			return nil, err
		}
	}
	root, err := tx.rootPath(ctx, usr.TenantID)
	if err != nil {
		return nil, err
	}
	if err := tx.commitUpdate(ctx, usr.TenantID, herd.EventUserUpdated, herd.EventSubjectUser, usr.ID, root, "user", usr, changed, before); err != nil {
		return nil, err
	}
	return usr, nil
}

// UpdateTenant implements herd.TenantService: a super-admin's, as creating
// a tenant is.
func (s *TenantService) UpdateTenant(ctx context.Context, id int64, u herd.TenantUpdate) (_ *herd.Tenant, err error) {
	defer wrapOp("sqldb.UpdateTenant", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	} else if !a.SeesTenant(id) {
		return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", id)
	} else if !a.Super {
		return nil, herd.Errorf(herd.EFORBIDDEN, "only a super-admin may change a tenant")
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	// Under the tenant's lock (see UpdateUser).
	if _, err := tx.lockTenantTree(ctx, id); err != nil {
		return nil, err
	}
	t, err := tx.findTenant(ctx, id)
	if err != nil {
		return nil, err
	} else if err := herd.CheckVersion("tenant", t.ID, t.Version, u.IfVersion); err != nil {
		return nil, err
	}
	before := map[string]any{"name": t.Name}
	changed, err := u.Apply(t)
	if err != nil {
		return nil, err
	} else if len(changed) == 0 {
		return t, tx.Commit()
	}
	if err := tx.updateRow(ctx, "tenant", t.ID, t.Version, `UPDATE tenants SET name = ?, version = version + 1 WHERE id = ? AND version = ?`, t.Name, t.ID); err != nil {
		return nil, err
	}
	t.Version++
	if err := tx.commitUpdate(ctx, t.ID, herd.EventTenantUpdated, herd.EventSubjectTenant, t.ID, herd.ChildPath("/", t.RootNodeID), "tenant", t, changed, before); err != nil {
		return nil, err
	}
	return t, nil
}

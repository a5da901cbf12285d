package sqldb

import (
	"context"
	"fmt"

	"github.com/herd-iot/herd"
)

// keepRootAdmin refuses (409) to disable a user, or revoke a grant, when
// that would leave the tenant with no enabled user holding admin on its
// root node: no one but a super-admin could then add users, grant or
// enable anyone again (Azure AD and AWS Organizations refuse to remove the
// last global administrator for the same reason). userID is the user to
// disable, or grantID the grant to revoke (the other zero). A super-admin
// is let through: it is the way back, and may mean to lock a tenant out.
// The caller holds the tenant's lock, so that two admins disabling each
// other go one after the other and the second is refused.
func (tx *Tx) keepRootAdmin(ctx context.Context, a *herd.Actor, tenantID, userID, grantID int64) error {
	if a.Super {
		return nil
	}
	// The root admins the change leaves, and whether it removes one.
	var left, removed int
	err := tx.QueryRowContext(ctx, `SELECT
			COALESCE(SUM(CASE WHEN u.id <> ? AND g.id <> ? THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN u.id = ? OR g.id = ? THEN 1 ELSE 0 END), 0)
		FROM grants g
		JOIN users u ON u.id = g.user_id AND u.tenant_id = g.tenant_id
		JOIN tenants t ON t.id = g.tenant_id AND t.root_node_id = g.node_id
		WHERE g.tenant_id = ? AND g.role = ? AND u.disabled = ?`,
		userID, grantID, userID, grantID, tenantID, string(herd.RoleAdmin), false).Scan(&left, &removed)
	if err != nil {
		return fmt.Errorf("count the tenant's root admins: %w", err)
	}
	if removed > 0 && left == 0 {
		what := fmt.Sprintf("disabling user %d", userID)
		if grantID != 0 {
			what = fmt.Sprintf("revoking grant %d", grantID)
		}
		return herd.Errorf(herd.ECONFLICT, "%s would leave tenant %d without an enabled admin of its root node; make another user admin of the root first", what, tenantID)
	}
	return nil
}

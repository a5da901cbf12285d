package sqldb_test

import (
	"context"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestGrantService(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		north := f.mustNode(t, ten.RootNodeID, "north")
		south := f.mustNode(t, ten.RootNodeID, "south")
		t.Run("OK", func(t *testing.T) {
			u, secret := f.mustUser(t, ten.ID, "hal")
			g := &herd.Grant{UserID: u.ID, NodeID: north.ID, Role: herd.RoleViewer}
			mustOK(t, f.Grants.CreateGrant(f.super, g))
			if g.ID == 0 || g.TenantID != ten.ID || g.Path != north.Path || g.CreatedAt.IsZero() {
				t.Fatalf("got %+v", g)
			}
			g2 := f.mustGrant(t, u.ID, south.ID, herd.RoleAdmin)
			// The user lists their own grants.
			gs, err := f.Grants.FindGrantsByUser(f.as(t, secret), u.ID)
			mustOK(t, err)
			if len(gs) != 2 || *gs[0] != *g || gs[1].ID != g2.ID || gs[1].Role != herd.RoleAdmin {
				t.Fatalf("grants %+v", gs)
			}
			mustOK(t, f.Grants.DeleteGrant(f.super, g.ID))
			gs, err = f.Grants.FindGrantsByUser(f.super, u.ID)
			mustOK(t, err)
			if len(gs) != 1 || gs[0].ID != g2.ID {
				t.Fatalf("grants after delete %+v", gs)
			}
			wantCode(t, f.Grants.DeleteGrant(f.super, g.ID), herd.ENOTFOUND)
			// The role can change by delete and create.
			f.mustGrant(t, u.ID, north.ID, herd.RoleOperator)
		})
		t.Run("OKNodeAdminGrants", func(t *testing.T) {
			admin, asecret := f.mustUser(t, ten.ID, "north admin")
			f.mustGrant(t, admin.ID, north.ID, herd.RoleAdmin)
			u, _ := f.mustUser(t, ten.ID, "ivy")
			site := f.mustNode(t, north.ID, "n1")
			g := &herd.Grant{UserID: u.ID, NodeID: site.ID, Role: herd.RoleViewer}
			mustOK(t, f.Grants.CreateGrant(f.as(t, asecret), g))
			mustOK(t, f.Grants.DeleteGrant(f.as(t, asecret), g.ID))
		})
		t.Run("ErrTooManyGrants", func(t *testing.T) {
			// The most grants a user may hold is the most covering paths a
			// scoped query carries; the query still runs at the bound.
			u, secret := f.mustUser(t, ten.ID, "many")
			var last *herd.Node
			for i := 0; i < herd.MaxGrantsPerUser; i++ {
				last = f.mustNode(t, south.ID, "s")
				f.mustGrant(t, u.ID, last.ID, herd.RoleViewer)
			}
			f.mustDevices(t, last.ID, 3)
			extra := f.mustNode(t, south.ID, "one too many")
			wantCode(t, f.Grants.CreateGrant(f.super, &herd.Grant{UserID: u.ID, NodeID: extra.ID, Role: herd.RoleViewer}), herd.EINVALID)
			q := herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "key", Op: herd.OpIn, Values: make([]any, herd.MaxInValues)}, {Field: "name", Op: herd.OpIn, Values: make([]any, herd.MaxInValues)}}}
			for i := range q.Filters[0].Values {
				q.Filters[0].Values[i], q.Filters[1].Values[i] = "k", "n"
			}
			if _, err := f.Devices.QueryDevices(f.as(t, secret), q); err != nil {
				t.Fatalf("query at %d grants and %d filter values: %v", herd.MaxGrantsPerUser, herd.MaxFilterValues, err)
			}
			page, err := f.Devices.QueryDevices(f.as(t, secret), herd.DeviceQuery{})
			mustOK(t, err)
			if page.Count != 3 {
				t.Fatalf("count %d, want 3", page.Count)
			}
		})
		t.Run("ErrConflict", func(t *testing.T) {
			u, _ := f.mustUser(t, ten.ID, "jo")
			f.mustGrant(t, u.ID, north.ID, herd.RoleViewer)
			wantCode(t, f.Grants.CreateGrant(f.super, &herd.Grant{UserID: u.ID, NodeID: north.ID, Role: herd.RoleAdmin}), herd.ECONFLICT)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			u, _ := f.mustUser(t, ten.ID, "kim")
			for _, g := range []*herd.Grant{
				{UserID: u.ID, NodeID: north.ID, Role: "owner"},
				{UserID: u.ID, Role: herd.RoleViewer},
				{NodeID: north.ID, Role: herd.RoleViewer},
			} {
				wantCode(t, f.Grants.CreateGrant(f.super, g), herd.EINVALID)
			}
		})
		t.Run("ErrNotFound", func(t *testing.T) {
			u, _ := f.mustUser(t, ten.ID, "lu")
			wantCode(t, f.Grants.CreateGrant(f.super, &herd.Grant{UserID: 1 << 40, NodeID: north.ID, Role: herd.RoleViewer}), herd.ENOTFOUND)
			wantCode(t, f.Grants.CreateGrant(f.super, &herd.Grant{UserID: u.ID, NodeID: 1 << 40, Role: herd.RoleViewer}), herd.ENOTFOUND)
			wantCode(t, f.Grants.DeleteGrant(f.super, 1<<40), herd.ENOTFOUND)
			_, err := f.Grants.FindGrantsByUser(f.super, 1<<40)
			wantCode(t, err, herd.ENOTFOUND)
			// A node of another tenant is not found for the user's tenant,
			// even for the super-admin.
			other := f.mustTenant(t, "other")
			wantCode(t, f.Grants.CreateGrant(f.super, &herd.Grant{UserID: u.ID, NodeID: other.RootNodeID, Role: herd.RoleViewer}), herd.ENOTFOUND)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			op, osecret := f.mustUser(t, ten.ID, "operator")
			f.mustGrant(t, op.ID, north.ID, herd.RoleOperator)
			u, _ := f.mustUser(t, ten.ID, "max")
			ctx := f.as(t, osecret)
			wantCode(t, f.Grants.CreateGrant(ctx, &herd.Grant{UserID: u.ID, NodeID: north.ID, Role: herd.RoleViewer}), herd.EFORBIDDEN)
			// Granting oneself more is no way out.
			wantCode(t, f.Grants.CreateGrant(ctx, &herd.Grant{UserID: op.ID, NodeID: south.ID, Role: herd.RoleAdmin}), herd.ENOTFOUND)
			g := f.mustGrant(t, u.ID, north.ID, herd.RoleViewer)
			wantCode(t, f.Grants.DeleteGrant(ctx, g.ID), herd.EFORBIDDEN)
			// Another user's grants are for tenant admins only.
			_, err := f.Grants.FindGrantsByUser(ctx, u.ID)
			wantCode(t, err, herd.EFORBIDDEN)
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			wantCode(t, f.Grants.CreateGrant(context.Background(), &herd.Grant{UserID: 1, NodeID: 1, Role: herd.RoleViewer}), herd.EUNAUTHORIZED)
			wantCode(t, f.Grants.DeleteGrant(context.Background(), 1), herd.EUNAUTHORIZED)
		})
	})
}

package sqldb_test

import (
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestTenantIsolation: every id of tenant B, used by an admin of all of
// tenant A, is not found, by every service; and A's scoped query never
// returns B's devices, whatever the filters.
func TestTenantIsolation(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		a := f.mustTenant(t, "a")
		b := f.mustTenant(t, "b")
		aSite := f.mustNode(t, a.RootNodeID, "a site")
		aDevs := f.mustDevices(t, aSite.ID, 3)
		admin, secret := f.mustUser(t, a.ID, "a admin")
		f.mustGrant(t, admin.ID, a.RootNodeID, herd.RoleAdmin)
		ctx := f.as(t, secret)

		bSite := f.mustNode(t, b.RootNodeID, "b site")
		bDevs := f.mustDevices(t, bSite.ID, 3)
		bUser, bSecret := f.mustUser(t, b.ID, "b user")
		bGrant := f.mustGrant(t, bUser.ID, bSite.ID, herd.RoleViewer)
		bActor, err := f.Users.Authenticate(t.Context(), bSecret)
		mustOK(t, err)
		bBefore := f.state(t, b.ID)

		t.Run("ErrNotFound", func(t *testing.T) {
			for name, err := range map[string]error{
				"FindTenantByID":      errOf(f.Tenants.FindTenantByID(ctx, b.ID)),
				"FindNodeByID":        errOf(f.Nodes.FindNodeByID(ctx, bSite.ID)),
				"FindNodeByID root":   errOf(f.Nodes.FindNodeByID(ctx, b.RootNodeID)),
				"CreateNode parent":   f.Nodes.CreateNode(ctx, &herd.Node{ParentID: bSite.ID, Kind: "k", Name: "n"}),
				"CreateNode tenant":   f.Nodes.CreateNode(ctx, &herd.Node{TenantID: b.ID, Kind: "k", Name: "n"}),
				"MoveNode B node":     errOf(f.Nodes.MoveNode(ctx, bSite.ID, b.RootNodeID)),
				"MoveNode into B":     errOf(f.Nodes.MoveNode(ctx, aSite.ID, bSite.ID)),
				"CreateDevices":       f.Devices.CreateDevices(ctx, []*herd.Device{{NodeID: bSite.ID, Key: nextKey("x")}}),
				"FindDeviceByID":      errOf(f.Devices.FindDeviceByID(ctx, bDevs[0].ID)),
				"MoveDevice B device": errOf(f.Devices.MoveDevice(ctx, bDevs[0].ID, aSite.ID)),
				"MoveDevice into B":   errOf(f.Devices.MoveDevice(ctx, aDevs[0].ID, bSite.ID)),
				"DeleteDevice":        f.Devices.DeleteDevice(ctx, bDevs[0].ID),
				"QueryDevices tenant": errOf(f.Devices.QueryDevices(ctx, herd.DeviceQuery{TenantID: b.ID, Sort: herd.DeviceSort{Field: "id"}})),
				"CreateUser":          f.Users.CreateUser(ctx, &herd.User{TenantID: b.ID, Name: "spy"}),
				"FindUserByID":        errOf(f.Users.FindUserByID(ctx, bUser.ID)),
				"CreateToken":         errOf(f.Users.CreateToken(ctx, bUser.ID)),
				"DeleteToken":         f.Users.DeleteToken(ctx, bActor.TokenID),
				"CreateGrant B user":  f.Grants.CreateGrant(ctx, &herd.Grant{UserID: bUser.ID, NodeID: aSite.ID, Role: herd.RoleViewer}),
				"CreateGrant B node":  f.Grants.CreateGrant(ctx, &herd.Grant{UserID: admin.ID, NodeID: bSite.ID, Role: herd.RoleViewer}),
				"DeleteGrant":         f.Grants.DeleteGrant(ctx, bGrant.ID),
				"FindGrantsByUser":    errOf(f.Grants.FindGrantsByUser(ctx, bUser.ID)),
			} {
				if code := herd.ErrorCode(err); code != herd.ENOTFOUND {
					t.Errorf("%s: got %s (%v), want %s", name, code, err, herd.ENOTFOUND)
				}
			}
			// Nothing of B changed, and B's token still works.
			f.wantUnchanged(t, b.ID, bBefore)
			if _, err := f.Users.Authenticate(t.Context(), bSecret); err != nil {
				t.Fatalf("B's token: %v", err)
			}
		})
		t.Run("OKQueryNeverReturnsOtherTenant", func(t *testing.T) {
			bIDs := map[int64]bool{}
			for _, d := range bDevs {
				bIDs[d.ID] = true
			}
			for _, q := range []herd.DeviceQuery{
				{Sort: herd.DeviceSort{Field: "id"}},
				{TenantID: a.ID, Sort: herd.DeviceSort{Field: "name", Desc: true}},
				{Filters: []herd.DeviceFilter{{Field: "node_id", Op: "eq", Values: []any{bSite.ID}}}, Sort: herd.DeviceSort{Field: "id"}},
				{Filters: []herd.DeviceFilter{{Field: "path", Op: "prefix", Values: []any{"/"}}}, Sort: herd.DeviceSort{Field: "path"}},
				{Filters: []herd.DeviceFilter{{Field: "id", Op: "in", Values: []any{bDevs[0].ID, bDevs[1].ID, aDevs[0].ID}}}, Sort: herd.DeviceSort{Field: "id"}},
				{Filters: []herd.DeviceFilter{{Field: "key", Op: "eq", Values: []any{bDevs[2].Key}}}, Sort: herd.DeviceSort{Field: "key", Desc: true}},
			} {
				q.Limit = 2
				items, count := f.walk(t, ctx, q)
				for _, d := range items {
					if bIDs[d.ID] || d.TenantID != a.ID {
						t.Fatalf("query %+v returned device %d of tenant %d", q, d.ID, d.TenantID)
					}
				}
				if count != int64(len(items)) {
					t.Fatalf("query %+v: count %d for %d items", q, count, len(items))
				}
			}
			// And A's devices are there, so the queries above did run.
			items, _ := f.walk(t, ctx, herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}, Limit: 10})
			if len(items) != len(aDevs) {
				t.Fatalf("A sees %d devices, want %d", len(items), len(aDevs))
			}
		})
	})
}

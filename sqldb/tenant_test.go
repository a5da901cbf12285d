package sqldb_test

import (
	"context"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestTenantService_CreateTenant(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		t.Run("OK", func(t *testing.T) {
			ten := &herd.Tenant{Name: "  acme  "}
			mustOK(t, f.Tenants.CreateTenant(f.super, ten))
			if ten.ID == 0 || ten.RootNodeID == 0 || ten.Name != "acme" || ten.CreatedAt.IsZero() {
				t.Fatalf("got %+v", ten)
			}
			got, err := f.Tenants.FindTenantByID(f.super, ten.ID)
			mustOK(t, err)
			if got.ID != ten.ID || got.Name != "acme" || got.RootNodeID != ten.RootNodeID || !got.CreatedAt.Equal(ten.CreatedAt) {
				t.Fatalf("found %+v, created %+v", got, ten)
			}
			// The root node is made with the tenant.
			root, err := f.Nodes.FindNodeByID(f.super, ten.RootNodeID)
			mustOK(t, err)
			if root.TenantID != ten.ID || root.ParentID != 0 || root.Path != herd.ChildPath("/", root.ID) || root.Kind != "tenant" || root.Name != "acme" {
				t.Fatalf("root node %+v", root)
			}
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			wantCode(t, f.Tenants.CreateTenant(context.Background(), &herd.Tenant{Name: "x"}), herd.EUNAUTHORIZED)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			// Only a super-admin creates tenants; even a tenant admin may not.
			ten := f.mustTenant(t, "other")
			u, secret := f.mustUser(t, ten.ID, "admin")
			f.mustGrant(t, u.ID, ten.RootNodeID, herd.RoleAdmin)
			wantCode(t, f.Tenants.CreateTenant(f.as(t, secret), &herd.Tenant{Name: "mine"}), herd.EFORBIDDEN)
		})
		t.Run("ErrNameRequired", func(t *testing.T) {
			wantCode(t, f.Tenants.CreateTenant(f.super, &herd.Tenant{Name: " "}), herd.EINVALID)
		})
		t.Run("ErrNameTooLong", func(t *testing.T) {
			wantCode(t, f.Tenants.CreateTenant(f.super, &herd.Tenant{Name: strings.Repeat("x", 201)}), herd.EINVALID)
		})
	})
}

func TestTenantService_FindTenantByID(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		a := f.mustTenant(t, "a")
		b := f.mustTenant(t, "b")
		_, secret := f.mustUser(t, a.ID, "viewer")
		t.Run("OK", func(t *testing.T) {
			// A user with no grants still sees their own tenant.
			got, err := f.Tenants.FindTenantByID(f.as(t, secret), a.ID)
			mustOK(t, err)
			if got.ID != a.ID {
				t.Fatalf("got tenant %d", got.ID)
			}
		})
		t.Run("ErrNotFound", func(t *testing.T) {
			_, err := f.Tenants.FindTenantByID(f.super, b.ID+1000)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrOtherTenant", func(t *testing.T) {
			_, err := f.Tenants.FindTenantByID(f.as(t, secret), b.ID)
			wantCode(t, err, herd.ENOTFOUND)
		})
	})
}

package sqldb_test

import (
	"sync"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestUpdate_UnconditionalRace: updates of users and tenants without
// If-Match, racing, go one after the other; none is a 412 (on PostgreSQL
// they once read without the tenant's lock and failed their version check).
func TestUpdate_UnconditionalRace(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		admin, adminSecret := f.mustUser(t, ten.ID, "tenant admin")
		f.mustGrant(t, admin.ID, ten.RootNodeID, herd.RoleAdmin)
		u, _ := f.mustUser(t, ten.ID, "ana")
		asAdmin := f.as(t, adminSecret)
		for round := 0; round < 20; round++ {
			const editors = 4
			errs := make([]error, editors*2)
			var wg sync.WaitGroup
			for i := range editors {
				wg.Go(func() {
					_, errs[i] = f.Users.UpdateUser(asAdmin, u.ID, herd.UserUpdate{Name: new("n" + string(rune('a'+i+round)))})
				})
				wg.Go(func() {
					_, errs[editors+i] = f.Tenants.UpdateTenant(f.super, ten.ID, herd.TenantUpdate{Name: new("t" + string(rune('a'+i+round)))})
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("round %d editor %d (no If-Match): %v", round, i, err)
				}
			}
		}
	})
}

// TestFindChildren_ManyChildren: a page of more children than one
// statement's parameters, some with devices (counted in the database), is
// answered with every child and its counts.
func TestFindChildren_ManyChildren(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		lists := sqldb.NewListService(db)
		var withDevice []*herd.Node
		for i := 0; i < 550; i++ {
			n := f.mustNode(t, ten.RootNodeID, "child")
			if i%2 == 0 {
				f.mustDevices(t, n.ID, 1)
				withDevice = append(withDevice, n)
			}
		}
		page, err := lists.FindChildren(f.super, ten.RootNodeID, herd.ListParams{Limit: 1000})
		if err != nil {
			t.Fatalf("550 children, limit 1000: %v", err)
		}
		var devices int64
		for _, c := range page.Items {
			devices += c.DeviceCount
		}
		if len(page.Items) != 550 || devices != int64(len(withDevice)) || page.NextCursor != "" {
			t.Fatalf("%d children with %d devices (cursor %q), want 550 with %d", len(page.Items), devices, page.NextCursor, len(withDevice))
		}
	})
}

// TestFindUserByID_AsTheList: a user is read by id by whoever may list
// them, and is not found by anyone else (a viewer of another node).
func TestFindUserByID_AsTheList(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		a := f.mustNode(t, ten.RootNodeID, "a")
		b := f.mustNode(t, ten.RootNodeID, "b")
		v, vs := f.mustUser(t, ten.ID, "viewer of a")
		f.mustGrant(t, v.ID, a.ID, herd.RoleViewer)
		other, _ := f.mustUser(t, ten.ID, "secret admin of b")
		f.mustGrant(t, other.ID, b.ID, herd.RoleAdmin)
		_, err := f.Users.FindUserByID(f.as(t, vs), other.ID)
		wantCode(t, err, herd.ENOTFOUND)
		if got, err := f.Users.FindUserByID(f.as(t, vs), v.ID); err != nil || got.ID != v.ID {
			t.Fatalf("the viewer reading themself: %v", err)
		}
		adminB, as := f.mustUser(t, ten.ID, "admin of b")
		f.mustGrant(t, adminB.ID, b.ID, herd.RoleAdmin)
		if got, err := f.Users.FindUserByID(f.as(t, as), other.ID); err != nil || got.ID != other.ID {
			t.Fatalf("an admin of b reading a user granted on b: %v", err)
		}
		_, err = f.Users.FindUserByID(f.as(t, as), v.ID)
		wantCode(t, err, herd.ENOTFOUND)
	})
}

package sqldb_test

import (
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

func TestSmoke(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := testutil.SuperContext()
		ten := &herd.Tenant{Name: "acme"}
		if err := sqldb.NewTenantService(db).CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		ns := sqldb.NewNodeService(db)
		region := &herd.Node{TenantID: ten.ID, Kind: "region", Name: "north"}
		if err := ns.CreateNode(ctx, region); err != nil {
			t.Fatal(err)
		}
		site := &herd.Node{ParentID: region.ID, Kind: "site", Name: "s1"}
		if err := ns.CreateNode(ctx, site); err != nil {
			t.Fatal(err)
		}
		t.Log(region.Path, site.Path)
		var ds []*herd.Device
		for i := 0; i < 120; i++ {
			temp := float64(i)
			d := &herd.Device{NodeID: site.ID, Key: "dev" + string(rune('a'+i%26)) + string(rune('a'+i/26))}
			if i%3 != 0 {
				d.Temperature = &temp
			}
			ds = append(ds, d)
		}
		dsvc := sqldb.NewDeviceService(db)
		if err := dsvc.CreateDevices(ctx, ds); err != nil {
			t.Fatal(err)
		}
		for _, sort := range []string{"temperature", "-temperature", "name", "-id"} {
			s, _ := herd.ParseDeviceSort(sort)
			q := herd.DeviceQuery{TenantID: ten.ID, Sort: s, Limit: 7}
			seen := map[int64]bool{}
			for {
				p, err := dsvc.QueryDevices(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range p.Items {
					if seen[d.ID] {
						t.Fatalf("dup %d", d.ID)
					}
					seen[d.ID] = true
				}
				if p.Count != 120 {
					t.Fatalf("count %d", p.Count)
				}
				if p.NextCursor == "" {
					break
				}
				c, err := q.DecodeCursor(p.NextCursor)
				if err != nil {
					t.Fatal(err)
				}
				q.After = c
			}
			if len(seen) != 120 {
				t.Fatalf("%s: saw %d", sort, len(seen))
			}
		}
	})
}

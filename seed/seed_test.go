package seed_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/seed"
	"github.com/herd-iot/herd/sqldb"
)

func TestParseShape(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []int
		ok   bool
	}{
		{"5x20x100", []int{5, 20, 100}, true},
		{"7", []int{7}, true},
		{"5x0", nil, false},
		{"5x-1", nil, false},
		{"ax2", nil, false},
		{"", nil, false},
		{"1000x1000x2", nil, false}, // over a million leaves
		{"1x1x1x1x1x1x1x1x1", nil, false},
	} {
		got, err := seed.ParseShape(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseShape(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && len(got) != len(tt.want) {
			t.Errorf("ParseShape(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRun(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := testutil.SuperContext()
		// Above BulkRebuildRows, so the index drop and rebuild path runs.
		db.BulkRebuildRows = 1000
		const n = 2400 + 37
		fleet, err := seed.Run(ctx, seed.Config{Tenant: "seeded", Devices: n, Shape: []int{2, 3, 4}, Seed: 7},
			sqldb.NewTenantService(db), sqldb.NewNodeService(db), db, nil)
		if err != nil {
			t.Fatal(err)
		}
		if fleet.Devices != n {
			t.Fatalf("devices = %d, want %d", fleet.Devices, n)
		}
		if got := len(fleet.Leaves()); got != 24 {
			t.Fatalf("leaves = %d, want 24", got)
		}
		devices := sqldb.NewDeviceService(db)

		// The whole tenant through the scoped query: the counts the planner
		// reads and the rebuilt indexes must agree with the rows.
		page, err := devices.QueryDevices(ctx, herd.DeviceQuery{TenantID: fleet.Tenant.ID, Sort: herd.DeviceSort{Field: "name"}, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if page.Count != n || page.CountCapped || len(page.Items) != 10 {
			t.Fatalf("page: %d items, count %d capped %v", len(page.Items), page.Count, page.CountCapped)
		}
		// A leaf holds n/24 devices, give or take one.
		viewer := leafViewer(t, db, fleet.Tenant.ID, fleet.Leaves()[5].ID)
		page, err = devices.QueryDevices(viewer, herd.DeviceQuery{Sort: herd.DeviceSort{Field: "temperature", Desc: true}, Limit: 500})
		if err != nil {
			t.Fatal(err)
		}
		if page.Count < n/24 || page.Count > n/24+1 {
			t.Fatalf("leaf count = %d, want about %d", page.Count, n/24)
		}
		statuses := map[string]int{}
		for _, d := range page.Items {
			statuses[d.Status]++
			if d.Path != fleet.Leaves()[5].Path {
				t.Fatalf("device %d has path %s, want %s", d.ID, d.Path, fleet.Leaves()[5].Path)
			}
		}
		if statuses[herd.StatusOK] < len(page.Items)/2 || statuses[herd.StatusOK] == len(page.Items) {
			t.Fatalf("implausible status mix: %v", statuses)
		}
		// The loaded labels and search index: the leaf's page, read with
		// its labels, against a ring filter and a search of a name's
		// word, counted by hand.
		betas, pumps := 0, 0
		for _, d := range page.Items {
			if d.Labels["ring"] == "" || d.Labels["floor"] == "" {
				t.Fatalf("device %d has labels %v: the load lost them", d.ID, d.Labels)
			}
			if d.Labels["ring"] == "beta" {
				betas++
			}
			if strings.Contains(d.Name, "pump") {
				pumps++
			}
		}
		for _, tt := range []struct {
			q    herd.DeviceQuery
			want int
		}{
			{herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "label.ring", Op: herd.OpEq, Values: []any{"beta"}}}, Limit: 500}, betas},
			{herd.DeviceQuery{Search: []string{"PUMP"}, Limit: 500}, pumps},
			{herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains, Values: []any{"Pump"}}}, Limit: 500}, pumps},
		} {
			p, err := devices.QueryDevices(viewer, tt.q)
			if err != nil {
				t.Fatal(err)
			} else if p.Count != int64(tt.want) || tt.want == 0 {
				t.Fatalf("%+v: count %d, want %d (and more than none)", tt.q, p.Count, tt.want)
			}
		}

		events, err := sqldb.NewOutboxService(db).OutboxEvents(ctx, fleet.Tenant.ID, 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		seeded := 0
		for i, e := range events {
			if e.Seq != int64(i+1) {
				t.Fatalf("event %d has seq %d: the sequence has a gap", i, e.Seq)
			}
			if e.Type == herd.EventDevicesSeeded {
				seeded++
			}
		}
		if seeded != 1 {
			t.Fatalf("%d %s events, want 1", seeded, herd.EventDevicesSeeded)
		}
	})
}

func TestRunDuplicateKeyWritesNothing(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := testutil.SuperContext()
		tenants := sqldb.NewTenantService(db)
		ten := &herd.Tenant{Name: "dup"}
		if err := tenants.CreateTenant(ctx, ten); err != nil {
			t.Fatal(err)
		}
		root, err := sqldb.NewNodeService(db).FindNodeByID(ctx, ten.RootNodeID)
		if err != nil {
			t.Fatal(err)
		}
		db.BulkRebuildRows = 100
		for _, size := range []int64{10, 500} {
			i := int64(0)
			next := func() *herd.Device {
				if i == size {
					return nil
				}
				i++
				key := fmt.Sprintf("dev-%d", i)
				if i == size {
					key = "dev-1" // the last device repeats the first key
				}
				return &herd.Device{TenantID: ten.ID, NodeID: root.ID, Path: root.Path, Key: key, Name: key}
			}
			if _, err := db.BulkLoadDevices(context.Background(), ten.ID, size, next, nil); err == nil {
				t.Fatalf("size %d: duplicate keys loaded", size)
			}
			page, err := sqldb.NewDeviceService(db).QueryDevices(ctx, herd.DeviceQuery{TenantID: ten.ID, Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			if page.Count != 0 {
				t.Fatalf("size %d: %d devices left behind by a failed load", size, page.Count)
			}
		}
	})
}

func leafViewer(t *testing.T, db *sqldb.DB, tenantID, nodeID int64) context.Context {
	t.Helper()
	ctx := testutil.SuperContext()
	users := sqldb.NewUserService(db)
	u := &herd.User{TenantID: tenantID, Name: "leaf viewer"}
	if err := users.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := sqldb.NewGrantService(db).CreateGrant(ctx, &herd.Grant{UserID: u.ID, NodeID: nodeID, Role: herd.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	tok, err := users.CreateToken(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	a, err := users.Authenticate(ctx, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	return herd.NewContextWithActor(context.Background(), a)
}

package sqldb_test

import (
	"slices"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestMigration0023: the nodes, devices and labels stored before the
// search index are folded and indexed by the migration's Go step, so that
// contains and q find them (through the database's plans and through the
// trigram index) exactly as rows written after it.
func TestMigration0023(t *testing.T) {
	t.Parallel()
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			dsn, raw := storeAt(t, d, "0022_device_labels.sql")
			for _, q := range []string{
				`INSERT INTO tenants (id, name, root_node_id, event_seq, created_at) VALUES (1, 'old', 1, 0, 0)`,
				`INSERT INTO outbox_cursors (tenant_id) VALUES (1)`,
				`INSERT INTO nodes (id, tenant_id, parent_id, kind, name, path, device_count, created_at) VALUES (1, 1, NULL, 'tenant', 'old', '/1/', 3, 0)`,
				`INSERT INTO nodes (id, tenant_id, parent_id, kind, name, path, device_count, created_at) VALUES (2, 1, 1, 'site', 'OSLO Straße', '/1/2/', 2, 0)`,
				`INSERT INTO devices (id, tenant_id, node_id, path, key, name, model, firmware, status, created_at, rev) VALUES (1, 1, 2, '/1/2/', 'mig-0023-d1', 'Boiler ONE', 'TH-200', 'V1.2', '', 0, 1)`,
				`INSERT INTO devices (id, tenant_id, node_id, path, key, name, model, firmware, status, created_at, rev) VALUES (2, 1, 2, '/1/2/', 'mig-0023-d2', 'pump', '', '', '', 0, 1)`,
				`INSERT INTO devices (id, tenant_id, node_id, path, key, name, model, firmware, status, created_at, rev) VALUES (3, 1, 1, '/1/', 'mig-0023-d3', 'pump', '', '', '', 0, 1)`,
				`INSERT INTO device_labels (tenant_id, device_id, key, value) VALUES (1, 2, 'ring', 'CANARY')`,
				`INSERT INTO device_labels (tenant_id, device_id, key, value) VALUES (1, 3, 'ring', 'beta')`,
			} {
				if _, err := raw.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if d == sqldb.Postgres {
				for tbl, last := range map[string]int{"tenants": 1, "nodes": 2, "devices": 3} {
					if _, err := raw.Exec(`SELECT setval(pg_get_serial_sequence('`+tbl+`', 'id'), $1)`, last); err != nil {
						t.Fatal(err)
					}
				}
			}
			raw.Close()
			db := sqldb.NewDB(dsn)
			db.StateCache.MinTenantDevices = 0 // the database's answer
			db.SetSearchIndexFrom(1)           // and the trigram index's
			if err := db.Open(); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			t.Cleanup(func() { db.Close() })
			svc := sqldb.NewDeviceService(db)
			ctx := testutil.SuperContext()
			for _, tt := range []struct {
				filter, q string
				want      []int64
			}{
				{"name:contains:BOILER", "", []int64{1}},
				{"model:contains:th-2", "", []int64{1}},
				{"firmware:contains:v1.", "", []int64{1}},
				{"label.ring:contains:canary", "", []int64{2}},
				{"", "strasse", []int64{1, 2}}, // the node's name
				{"", "oslo pump", []int64{2}},
				{"", "canary", []int64{2}},
				{"", "pump", []int64{2, 3}},
			} {
				v := map[string][]string{"tenant_id": {"1"}}
				if tt.filter != "" {
					v["filter"] = []string{tt.filter}
				}
				if tt.q != "" {
					v["q"] = []string{tt.q}
				}
				q, err := herd.ParseDeviceQuery(v)
				mustOK(t, err)
				page, err := svc.QueryDevices(ctx, q)
				mustOK(t, err)
				var got []int64
				for _, d := range page.Items {
					got = append(got, d.ID)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("filter %q q %q: %v, want %v", tt.filter, tt.q, got, tt.want)
				}
			}
		})
	}
}

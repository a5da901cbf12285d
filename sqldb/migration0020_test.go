package sqldb_test

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestMigration0020: the tenants, nodes, users and devices stored before
// versions existed are at version 1 after it, users enabled (their tokens
// still work), and the first update takes each to version 2.
func TestMigration0020(t *testing.T) {
	t.Parallel()
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			dsn, raw := storeAt(t, d, "0019_device_rollups.sql")
			secret := sqldb.NewTokenSecret()
			sum := sha256.Sum256([]byte(secret))
			for _, q := range []string{
				`INSERT INTO tenants (id, name, root_node_id, event_seq, created_at) VALUES (1, 'old', 1, 0, 0)`,
				`INSERT INTO outbox_cursors (tenant_id) VALUES (1)`,
				`INSERT INTO nodes (id, tenant_id, parent_id, kind, name, path, device_count, created_at) VALUES (1, 1, NULL, 'tenant', 'old', '/1/', 1, 0)`,
				`INSERT INTO devices (id, tenant_id, node_id, path, key, name, status, created_at, rev) VALUES (1, 1, 1, '/1/', 'mig-0020-d1', 'd1', '', 0, 1)`,
				`INSERT INTO users (id, tenant_id, name, created_at) VALUES (1, 1, 'u', 0)`,
				`INSERT INTO tokens (id, tenant_id, user_id, hash, created_at) VALUES (1, 1, 1, '` + hex.EncodeToString(sum[:]) + `', 0)`,
				`INSERT INTO grants (id, tenant_id, user_id, node_id, role, created_at) VALUES (1, 1, 1, 1, 'admin', 0)`,
			} {
				if _, err := raw.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if d == sqldb.Postgres {
				for _, tbl := range []string{"tenants", "nodes", "devices", "users", "tokens", "grants"} {
					if _, err := raw.Exec(`SELECT setval(pg_get_serial_sequence('` + tbl + `', 'id'), 1)`); err != nil {
						t.Fatal(err)
					}
				}
			}
			raw.Close()
			db := sqldb.NewDB(dsn)
			if err := db.Open(); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			t.Cleanup(func() { db.Close() })
			f := newFixture(db)
			ctx := testutil.SuperContext()
			ten, err := f.Tenants.FindTenantByID(ctx, 1)
			mustOK(t, err)
			n, err := f.Nodes.FindNodeByID(ctx, 1)
			mustOK(t, err)
			u, err := f.Users.FindUserByID(ctx, 1)
			mustOK(t, err)
			dev, err := f.Devices.FindDeviceByID(ctx, 1)
			mustOK(t, err)
			if ten.Version != 1 || n.Version != 1 || u.Version != 1 || u.Disabled || dev.Version != 1 {
				t.Fatalf("after the migration: tenant %+v, node %+v, user %+v, device %+v; want version 1 and enabled", ten, n, u, dev)
			}
			as := f.as(t, secret)
			got, err := f.Devices.UpdateDevice(as, 1, herd.DeviceUpdate{Name: new("renamed"), IfVersion: 1})
			mustOK(t, err)
			if got.Version != 2 {
				t.Fatalf("updated %+v", got)
			}
		})
	}
}

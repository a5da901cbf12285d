package sqldb_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// storeAt returns the DSN of a store migrated up to and including the
// migration named last, and a raw connection to it.
func storeAt(t *testing.T, d sqldb.Dialect, last string) (string, *sql.DB) {
	t.Helper()
	dsn, driver, open := filepath.Join(t.TempDir(), "herd.db"), "sqlite", ""
	open = "file:" + dsn + "?_pragma=foreign_keys(1)"
	if d == sqldb.Postgres {
		dsn = testutil.PostgresSchemaDSN(t)
		driver, open = "pgx", dsn
	}
	raw, err := sql.Open(driver, open)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetMaxOpenConns(1)
	if _, err := raw.Exec(`CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("migrations", string(d), "*.sql"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	for _, f := range files {
		if filepath.Base(f) > last {
			break
		}
		buf, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.Exec(string(buf)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := "migrations/" + string(d) + "/" + filepath.Base(f)
		if _, err := raw.Exec(`INSERT INTO schema_migrations (name, applied_at) VALUES ('` + name + `', 0)`); err != nil {
			t.Fatal(err)
		}
	}
	return dsn, raw
}

// sqliteSchema returns the indexes of the store (name and SQL) and the
// columns of each table.
func sqliteSchema(t *testing.T, db *sql.DB) (map[string]string, map[string][]string) {
	t.Helper()
	indexes, columns := map[string]string{}, map[string][]string{}
	rows, err := db.Query(`SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name <> 'schema_migrations'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var typ, name, tbl, q string
		if err := rows.Scan(&typ, &name, &tbl, &q); err != nil {
			t.Fatal(err)
		}
		switch typ {
		case "index", "trigger":
			// Triggers (0023's, which keep the search index) go with the
			// indexes: what a later migration adds is its own to test.
			indexes[name] = tbl + ": " + q
		case "table":
			tables = append(tables, name)
		default:
			t.Errorf("%s %s: the store has none", typ, name)
		}
	}
	rows.Close()
	for _, tbl := range tables {
		cols, err := db.Query(`SELECT name, type, "notnull", COALESCE(dflt_value, ''), pk FROM pragma_table_info(?)`, tbl)
		if err != nil {
			t.Fatal(err)
		}
		for cols.Next() {
			var name, typ, dflt string
			var notNull, pk int
			if err := cols.Scan(&name, &typ, &notNull, &dflt, &pk); err != nil {
				t.Fatal(err)
			}
			columns[tbl] = append(columns[tbl], strings.Join([]string{name, typ, dflt, string(rune('0' + notNull)), string(rune('0' + pk))}, " "))
		}
		cols.Close()
	}
	return indexes, columns
}

// TestMigration0010: building SQLite's tables again with AUTOINCREMENT
// keeps every row, index, column and foreign key; the counters start past
// every id the store still remembers (a deleted device's id in its
// commands, a deleted token's, an event id a consumer processed), so no
// id goes out twice; commands of devices that are gone, or whose id
// another device took, are dropped, and the rest follow their device.
func TestMigration0010(t *testing.T) {
	t.Parallel()
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			dsn, raw := storeAt(t, d, "0009_id_samples.sql")
			secret := sqldb.NewTokenSecret()
			sum := sha256.Sum256([]byte(secret))
			devSecret := sqldb.NewTokenSecret()
			devSum := sha256.Sum256([]byte(devSecret))
			for _, q := range []string{
				`INSERT INTO tenants (id, name, root_node_id, event_seq, created_at) VALUES (1, 'old', 1, 3, 0)`,
				`INSERT INTO outbox_cursors (tenant_id) VALUES (1)`,
				`INSERT INTO nodes (id, tenant_id, parent_id, kind, name, path, device_count, created_at) VALUES (1, 1, NULL, 'tenant', 'old', '/1/', 2, 0)`,
				`INSERT INTO nodes (id, tenant_id, parent_id, kind, name, path, device_count, created_at) VALUES (2, 1, 1, 'site', 'site', '/1/2/', 2, 0)`,
				`INSERT INTO devices (id, tenant_id, node_id, path, key, name, created_at, rev, reading_ts) VALUES (1, 1, 2, '/1/2/', 'd1', 'd1', 0, 1, 5)`,
				`INSERT INTO devices (id, tenant_id, node_id, path, key, name, created_at, rev) VALUES (3, 1, 2, '/1/2/', 'd3', 'd3', 0, 1)`,
				`INSERT INTO device_credentials (device_id, tenant_id, hash, created_at) VALUES (1, 1, '` + hex.EncodeToString(devSum[:]) + `', 0)`,
				`INSERT INTO device_tombstones (tenant_id, device_id, rev, deleted_at) VALUES (1, 2, 1, 0)`,
				`INSERT INTO users (id, tenant_id, name, created_at) VALUES (1, 1, 'u', 0)`,
				`INSERT INTO tokens (id, tenant_id, user_id, hash, created_at) VALUES (1, 1, 1, '` + hex.EncodeToString(sum[:]) + `', 0)`,
				`INSERT INTO admin_tokens (id, hash, created_at) VALUES (1, 'h', 0)`,
				`INSERT INTO grants (id, tenant_id, user_id, node_id, role, created_at) VALUES (1, 1, 1, 2, 'operator', 0)`,
				`INSERT INTO events (id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at) VALUES (1, 1, 1, 'device.created', 'device', 1, '/1/2/', '{}', 0)`,
				`INSERT INTO events (id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at) VALUES (2, 1, 2, 'grant.deleted', 'grant', 6, '/1/2/', '{}', 0)`,
				`INSERT INTO events (id, tenant_id, seq, type, subject_type, subject_id, path, payload, created_at) VALUES (3, 1, 3, 'user.created', 'user', 1, '/1/', '{}', 0)`,
				`INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ('webhooks', 50, 0)`,
				`INSERT INTO webhooks (id, tenant_id, node_id, url, event_types, secret, status, created_at) VALUES (1, 1, 2, 'https://example.com/h', '["*"]', 's', 'active', 0)`,
				`INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_type, status, next_at, created_at, retry_from) VALUES (1, 1, 1, 'device.created', 'delivered', 0, 0, 0)`,
				`INSERT INTO readings (device_id, ts, tenant_id, received_at, temperature) VALUES (1, 5, 1, 5, 21.5)`,
				// The live command; one whose device is gone (id 7, sent with
				// token 4, both deleted since); one whose device id 1 was
				// another device's (key d0) before SQLite gave it out again.
				`INSERT INTO commands (id, tenant_id, device_id, device_key, path, name, args, ttl_s, status, token_id, created_at, expires_at) VALUES (1, 1, 3, 'd3', '/1/2/', 'reboot', '{}', 60, 'pending', 1, 0, 9000000000000)`,
				`INSERT INTO commands (id, tenant_id, device_id, device_key, path, name, args, ttl_s, status, token_id, created_at, expires_at) VALUES (2, 1, 7, 'd7', '/1/2/', 'unlock', '{"pin":"4711"}', 60, 'pending', 4, 0, 9000000000000)`,
				`INSERT INTO commands (id, tenant_id, device_id, device_key, path, name, args, ttl_s, status, token_id, created_at, expires_at) VALUES (3, 1, 1, 'd0', '/1/2/', 'unlock', '{"pin":"1234"}', 60, 'pending', 1, 0, 9000000000000)`,
			} {
				if _, err := raw.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			if d == sqldb.Postgres {
				// Rows written with their ids leave the identities behind;
				// herd never writes one, and its identities stand at the
				// largest id they gave, deleted or not.
				for tbl, last := range map[string]int{"tenants": 1, "nodes": 2, "devices": 7, "users": 1, "tokens": 4, "grants": 6, "events": 50, "webhooks": 1, "webhook_deliveries": 1, "commands": 3} {
					if _, err := raw.Exec(fmt.Sprintf(`SELECT setval(pg_get_serial_sequence('%s', 'id'), %d)`, tbl, last)); err != nil {
						t.Fatal(err)
					}
				}
			}
			var beforeIdx map[string]string
			var beforeCols map[string][]string
			if d == sqldb.SQLite {
				beforeIdx, beforeCols = sqliteSchema(t, raw)
			}
			counts := func() map[string]int {
				out := map[string]int{}
				for _, tbl := range []string{"tenants", "nodes", "devices", "device_credentials", "device_tombstones", "users", "tokens", "admin_tokens", "grants", "events", "processed_events", "webhooks", "webhook_deliveries", "readings", "commands", "outbox_cursors"} {
					var n int
					if err := raw.QueryRow(`SELECT COUNT(*) FROM ` + tbl).Scan(&n); err != nil {
						t.Fatal(err)
					}
					out[tbl] = n
				}
				return out
			}
			before := counts()
			raw.Close()

			db := sqldb.NewDB(dsn)
			if err := db.Open(); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			t.Cleanup(func() { db.Close() })
			raw = db.SQL()
			after := counts()
			before["commands"] = 1 // the two left by other devices are gone
			if !reflect.DeepEqual(after, before) {
				t.Fatalf("rows after the migration %v, want %v", after, before)
			}
			if d == sqldb.SQLite {
				afterIdx, afterCols := sqliteSchema(t, raw)
				// Open runs the later migrations too; what they add is
				// theirs to test, so only what 0009 had is compared.
				for k := range afterIdx {
					if _, ok := beforeIdx[k]; !ok {
						delete(afterIdx, k)
					}
				}
				for k := range afterCols {
					if _, ok := beforeCols[k]; !ok {
						delete(afterCols, k)
					}
				}
				if !reflect.DeepEqual(afterIdx, beforeIdx) {
					t.Errorf("indexes after the migration:\n%v\nwant\n%v", afterIdx, beforeIdx)
				}
				beforeCols["commands"] = slicesDelete(beforeCols["commands"], "path TEXT  1 0")
				// 0012 puts the tenant first in the keys' primary key.
				keys := []string{"tenant_id INTEGER  1 1"}
				for _, c := range beforeCols["idempotency_keys"] {
					keys = append(keys, strings.NewReplacer("scope TEXT  1 1", "scope TEXT  1 2", "key TEXT  1 2", "key TEXT  1 3").Replace(c))
				}
				beforeCols["idempotency_keys"] = keys
				// 0020 adds the versions, and whether a user is disabled.
				for _, tbl := range []string{"tenants", "nodes", "users", "devices"} {
					beforeCols[tbl] = append(beforeCols[tbl], "version BIGINT 1 1 0")
				}
				beforeCols["users"] = append(beforeCols["users"], "disabled BOOLEAN false 1 0")
				// 0023 adds the folded name search matches.
				beforeCols["nodes"] = append(beforeCols["nodes"], "name_fold TEXT '' 1 0")
				// 0025 marks sessions among the tokens, and when they end.
				beforeCols["tokens"] = append(beforeCols["tokens"], "session BOOLEAN false 1 0", "expires_at BIGINT  0 0")
				if !reflect.DeepEqual(afterCols, beforeCols) {
					t.Errorf("columns after the migration:\n%v\nwant\n%v", afterCols, beforeCols)
				}
				if rows, err := raw.Query(`PRAGMA foreign_key_check`); err != nil {
					t.Fatal(err)
				} else if rows.Next() {
					t.Error("a foreign key is broken")
					rows.Close()
				} else {
					rows.Close()
				}
			}

			ctx := context.Background()
			f := newFixture(db)
			cmds := sqldb.NewCommandService(db)
			c, err := cmds.FindCommandByID(f.super, 1)
			mustOK(t, err)
			if c.DeviceID != 3 || c.Path != "/1/2/" || c.Name != "reboot" {
				t.Fatalf("the live command after the migration: %+v", c)
			}
			for _, id := range []int64{2, 3} {
				if _, err := cmds.FindCommandByID(f.super, id); herd.ErrorCode(err) != herd.ENOTFOUND {
					t.Fatalf("command %d of another device: %v", id, err)
				}
			}
			a, err := f.Users.Authenticate(ctx, secret)
			mustOK(t, err)
			if a.TokenID != 1 || len(a.Grants) != 1 || a.Grants[0].Path != "/1/2/" || a.Grants[0].Role != herd.RoleOperator {
				t.Fatalf("the token's actor after the migration: %+v", a)
			}
			if id, err := sqldb.NewCredentialService(db).AuthenticateDevice(ctx, "d1", devSecret); err != nil || id.DeviceID != 1 {
				t.Fatalf("device d1's credential after the migration: %+v, %v", id, err)
			}

			// New rows get ids past every id the store remembered.
			dev := &herd.Device{NodeID: 2, Key: nextKey("new")}
			mustOK(t, f.Devices.CreateDevices(f.super, []*herd.Device{dev}))
			if dev.ID <= 7 {
				t.Fatalf("new device id %d: device 7 is remembered by its command", dev.ID)
			}
			tok, err := f.Users.CreateToken(f.super, 1)
			mustOK(t, err)
			if tok.ID <= 4 {
				t.Fatalf("new token id %d: token 4 is remembered by its command", tok.ID)
			}
			g := &herd.Grant{UserID: 1, NodeID: 1, Role: herd.RoleViewer}
			mustOK(t, f.Grants.CreateGrant(f.super, g))
			if g.ID <= 6 {
				t.Fatalf("new grant id %d: grant 6 is remembered by its event", g.ID)
			}
			evs, err := sqldb.NewOutboxService(db).OutboxEvents(ctx, 1, 3, 100)
			mustOK(t, err)
			if len(evs) == 0 || evs[0].ID <= 50 {
				t.Fatalf("new events %+v: event 50 is remembered by a consumer", evs)
			}

			// Foreign keys hold again on the writer: a device's commands go
			// with it.
			mustOK(t, f.Devices.DeleteDevice(f.super, 3))
			var n int
			if err := raw.QueryRow(`SELECT COUNT(*) FROM commands WHERE device_id = 3`).Scan(&n); err != nil || n != 0 {
				t.Fatalf("%d commands of the deleted device 3 (%v)", n, err)
			}
			if _, err := raw.Exec(`INSERT INTO grants (tenant_id, user_id, node_id, role, created_at) VALUES (1, 1, 999, 'viewer', 0)`); err == nil {
				t.Fatal("a grant on a node that is not there was stored")
			}
		})
	}
}

func slicesDelete(s []string, v string) []string {
	var out []string
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

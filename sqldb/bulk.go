package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// DefaultBulkRebuildRows is the load size from which BulkLoadDevices drops
// the device sort indexes and rebuilds them after the load: building a
// B-tree from sorted rows is many times faster than a million random inserts
// into each of them.
const DefaultBulkRebuildRows = 50000

// BulkLoadDevices loads devices of one tenant as fast as the engine allows,
// for seeding demo and benchmark fleets: COPY on PostgreSQL, prepared
// multi-row inserts on SQLite. Each device must carry its TenantID, NodeID
// and Path. next returns nil when there are no more; expected is the number
// the caller will yield (it decides whether indexes are rebuilt), progress is
// called now and then with the phase ("devices", then "indexes") and how far
// it is.
//
// The whole load is one transaction, index drops and rebuilds included (DDL
// is transactional on both engines): a load that fails or is killed leaves
// the store as it was. It writes one devices.seeded event for the load, not
// one event per device; seeding is a bulk import, not a stream of changes.
func (db *DB) BulkLoadDevices(ctx context.Context, tenantID int64, expected int64, next func() *herd.Device, progress func(phase string, done, total int64)) (int64, error) {
	conn, err := db.wdb.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	rebuild := expected >= db.BulkRebuildRows
	perPath := map[string]int64{}
	inner := next
	next = func() *herd.Device {
		d := inner()
		if d != nil {
			perPath[d.Path]++
		}
		return d
	}
	var n int64
	err = conn.Raw(func(driverConn any) error {
		if db.dialect == Postgres {
			n, err = db.bulkPostgres(ctx, driverConn.(*stdlib.Conn).Conn(), tenantID, expected, rebuild, next, progress, perPath)
			return err
		}
		return nil
	})
	if err != nil || db.dialect == Postgres {
		return n, err
	}
	return db.bulkSQLite(ctx, conn, tenantID, expected, rebuild, next, progress, perPath)
}

// keptDuringLoad are the device indexes a bulk load keeps: generated keys,
// ids and paths arrive in ascending order, so these grow at their right edge
// cheaply, and the unique key index rejects a duplicate key as it comes.
var keptDuringLoad = map[string]bool{"devices_key": true, "devices_tenant_path": true, "devices_tenant_id": true}

// deviceIndexes returns the names and definitions of the secondary indexes
// of the devices table that a bulk load drops and recreates, exactly as the
// migrations made them.
func deviceIndexes(ctx context.Context, query func(ctx context.Context, q string) ([][2]string, error), dialect Dialect) ([][2]string, error) {
	var all [][2]string
	var err error
	if dialect == Postgres {
		all, err = query(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'devices'
			AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'devices'::regclass)`)
	} else {
		all, err = query(ctx, `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'devices' AND sql IS NOT NULL`)
	}
	var out [][2]string
	for _, ix := range all {
		if !keptDuringLoad[ix[0]] {
			out = append(out, ix)
		}
	}
	return out, err
}

func (db *DB) bulkPostgres(ctx context.Context, conn *pgx.Conn, tenantID, expected int64, rebuild bool, next func() *herd.Device, progress func(string, int64, int64), perPath map[string]int64) (int64, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	var indexes [][2]string
	if rebuild {
		indexes, err = deviceIndexes(ctx, func(ctx context.Context, q string) ([][2]string, error) {
			rows, err := tx.Query(ctx, q)
			if err != nil {
				return nil, err
			}
			return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
				var s [2]string
				return s, r.Scan(&s[0], &s[1])
			})
		}, Postgres)
		if err != nil {
			return 0, fmt.Errorf("list device indexes: %w", err)
		}
		for _, ix := range indexes {
			if _, err := tx.Exec(ctx, `DROP INDEX `+pgx.Identifier{ix[0]}.Sanitize()); err != nil {
				return 0, err
			}
		}
	}
	var n int64
	src := pgx.CopyFromFunc(func() ([]any, error) {
		d := next()
		if d == nil {
			return nil, nil
		}
		if d.CreatedAt.IsZero() {
			d.CreatedAt = db.Now()
		}
		n++
		if n%20000 == 0 {
			progress("devices", n, max(n, expected))
		}
		return deviceArgs(d), nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"devices"}, insertColumns, src); err != nil {
		return 0, fmt.Errorf("copy devices: %w", err)
	}
	progress("devices", n, n)
	if len(indexes) > 0 {
		if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '512MB'`); err != nil {
			return 0, err
		}
		for i, ix := range indexes {
			progress("indexes", int64(i), int64(len(indexes)))
			if _, err := tx.Exec(ctx, ix[1]); err != nil {
				return 0, fmt.Errorf("rebuild %s: %w", ix[0], err)
			}
		}
		progress("indexes", int64(len(indexes)), int64(len(indexes)))
	}
	if err := db.bulkEvent(ctx, func(q string, args ...any) (int64, error) {
		var v int64
		err := tx.QueryRow(ctx, db.rebind(q), args...).Scan(&v)
		return v, err
	}, func(q string, args ...any) error {
		_, err := tx.Exec(ctx, db.rebind(q), args...)
		return err
	}, tenantID, n, perPath); err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	// VACUUM sets the visibility map, without which no index-only scan
	// (the capped counts) avoids the heap; ANALYZE tells the planner about
	// the new rows.
	_, err = conn.Exec(ctx, `VACUUM (ANALYZE) devices`)
	return n, err
}

func (db *DB) bulkSQLite(ctx context.Context, conn *sql.Conn, tenantID, expected int64, rebuild bool, next func() *herd.Device, progress func(string, int64, int64), perPath map[string]int64) (int64, error) {
	// A page cache of 1 GiB for the load keeps every index B-tree in memory
	// while rows go in; it is given back when the load ends.
	if _, err := conn.ExecContext(ctx, `PRAGMA cache_size = -1048576`); err != nil {
		return 0, err
	}
	defer conn.ExecContext(context.Background(), `PRAGMA cache_size = -65536`)
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var indexes [][2]string
	if rebuild {
		indexes, err = deviceIndexes(ctx, func(ctx context.Context, q string) ([][2]string, error) {
			rows, err := tx.QueryContext(ctx, q)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var out [][2]string
			for rows.Next() {
				var s [2]string
				if err := rows.Scan(&s[0], &s[1]); err != nil {
					return nil, err
				}
				out = append(out, s)
			}
			return out, rows.Err()
		}, SQLite)
		if err != nil {
			return 0, fmt.Errorf("list device indexes: %w", err)
		}
		for _, ix := range indexes {
			if _, err := tx.ExecContext(ctx, `DROP INDEX "`+ix[0]+`"`); err != nil {
				return 0, err
			}
		}
	}
	cols := len(insertColumns)
	const perStmt = 20
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	full, err := tx.PrepareContext(ctx, "INSERT INTO devices ("+strings.Join(insertColumns, ", ")+") VALUES "+strings.TrimSuffix(strings.Repeat(row+",", perStmt), ","))
	if err != nil {
		return 0, err
	}
	defer full.Close()
	var n int64
	batch := make([]any, 0, perStmt*cols)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		var err error
		if len(batch) == perStmt*cols {
			_, err = full.ExecContext(ctx, batch...)
		} else {
			rows := len(batch) / cols
			_, err = tx.ExecContext(ctx, "INSERT INTO devices ("+strings.Join(insertColumns, ", ")+") VALUES "+strings.TrimSuffix(strings.Repeat(row+",", rows), ","), batch...)
		}
		batch = batch[:0]
		return formatError(err, "a device key is already taken")
	}
	now := db.Now()
	for d := next(); d != nil; d = next() {
		if d.CreatedAt.IsZero() {
			d.CreatedAt = now
		}
		batch = append(batch, deviceArgs(d)...)
		n++
		if len(batch) == perStmt*cols {
			if err := flush(); err != nil {
				return 0, err
			}
		}
		if n%20000 == 0 {
			progress("devices", n, max(n, expected))
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	progress("devices", n, n)
	if len(indexes) > 0 {
		// A second sorter thread nearly halves each index build.
		if _, err := tx.ExecContext(ctx, `PRAGMA threads = 2`); err != nil {
			return 0, err
		}
	}
	for i, ix := range indexes {
		progress("indexes", int64(i), int64(len(indexes)))
		if _, err := tx.ExecContext(ctx, ix[1]); err != nil {
			return 0, fmt.Errorf("rebuild %s: %w", ix[0], err)
		}
	}
	if len(indexes) > 0 {
		progress("indexes", int64(len(indexes)), int64(len(indexes)))
	}
	if err := db.bulkEvent(ctx, func(q string, args ...any) (int64, error) {
		var v int64
		err := tx.QueryRowContext(ctx, q, args...).Scan(&v)
		return v, err
	}, func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	}, tenantID, n, perPath); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	_, err = conn.ExecContext(ctx, `ANALYZE`)
	return n, err
}

// bulkEvent adds the loaded devices to the subtree counts of their nodes
// and writes the one devices.seeded event of a bulk load, with the tenant's
// next sequence number, through the load's own transaction.
func (db *DB) bulkEvent(ctx context.Context, queryInt func(q string, args ...any) (int64, error), exec func(q string, args ...any) error, tenantID, n int64, perPath map[string]int64) error {
	perNode := map[int64]int64{}
	for path, c := range perPath {
		ids, err := herd.PathIDs(path)
		if err != nil {
			return err
		}
		for _, id := range ids {
			perNode[id] += c
		}
	}
	for id, c := range perNode {
		if err := exec(`UPDATE nodes SET device_count = device_count + ? WHERE id = ? AND tenant_id = ?`, c, id, tenantID); err != nil {
			return fmt.Errorf("count devices: %w", err)
		}
	}
	seq, err := queryInt(`UPDATE tenants SET event_seq = event_seq + 1 WHERE id = ? RETURNING event_seq`, tenantID)
	if err != nil {
		return fmt.Errorf("advance event sequence: %w", err)
	}
	var root int64
	if root, err = queryInt(`SELECT root_node_id FROM tenants WHERE id = ?`, tenantID); err != nil {
		return err
	}
	ev := newEvent(herd.EventDevicesSeeded, herd.EventSubjectTenant, tenantID, herd.ChildPath("/", root), map[string]any{"devices": n})
	return exec(`INSERT INTO events (tenant_id, seq, type, subject_type, subject_id, path, payload, created_at) VALUES (?,?,?,?,?,?,?,?)`,
		tenantID, seq, ev.Type, ev.SubjectType, ev.SubjectID, ev.Path, string(ev.Payload), time.Now().UnixMilli())
}

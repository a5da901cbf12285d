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
// called now and then with the phase ("devices", "indexes", then "search") and how far
// it is.
//
// The whole load is one transaction, index drops and rebuilds included (DDL
// is transactional on both engines): a load that fails or is killed leaves
// the store as it was. It writes one devices.seeded event for the load, not
// one event per device; seeding is a bulk import, not a stream of changes.
func (db *DB) BulkLoadDevices(ctx context.Context, tenantID int64, expected int64, next func() *herd.Device, progress func(phase string, done, total int64)) (_ int64, err error) {
	defer wrapOp("sqldb.BulkLoadDevices", &err)
	if progress == nil {
		progress = func(string, int64, int64) {}
	}
	conn, err := db.wdb.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if db.dialect == SQLite {
		// A page cache of 1 GiB for the load keeps every index B-tree in
		// memory while rows go in; it is given back when the load ends.
		if _, err := conn.ExecContext(ctx, `PRAGMA cache_size = -1048576`); err != nil {
			return 0, err
		}
		defer conn.ExecContext(context.Background(), `PRAGMA cache_size = -65536`)
	}
	sqlTx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	tx := &Tx{tx: sqlTx, db: db, now: db.Now().UTC().Truncate(time.Millisecond), write: true}
	defer tx.Rollback()

	var indexes [][2]string
	if expected >= db.BulkRebuildRows {
		if indexes, err = tx.dropDeviceIndexes(ctx); err != nil {
			return 0, err
		}
	}
	rev, err := tx.deviceRev(ctx)
	if err != nil {
		return 0, err
	}
	perPath := map[string]int64{}
	var n int64
	// The rows go in without ids coming back; labels follow them once the
	// search index reads them back, found by key.
	labels := map[string]map[string]string{}
	var labelErr error
	loaded := func() *herd.Device {
		d := next()
		if d == nil {
			return nil
		}
		if len(d.Labels) > 0 {
			if err := herd.CheckLabels(d.Labels); err != nil && labelErr == nil {
				labelErr = fmt.Errorf("device %q: %w", d.Key, err)
			}
			labels[d.Key] = d.Labels
		}
		if d.CreatedAt.IsZero() {
			d.CreatedAt = tx.now
		}
		perPath[d.Path]++
		if n++; n%20000 == 0 {
			progress("devices", n, max(n, expected))
		}
		return d
	}
	if db.dialect == Postgres {
		err = tx.copyDevices(ctx, conn, rev, loaded)
	} else {
		err = tx.insertDeviceStream(ctx, rev, loaded)
	}
	if err == nil {
		err = labelErr
	}
	if err != nil {
		return 0, err
	}
	progress("devices", n, n)

	if len(indexes) > 0 {
		// More sort memory for PostgreSQL's index builds; a second sorter
		// thread nearly halves each of SQLite's.
		prep := `PRAGMA threads = 2`
		if db.dialect == Postgres {
			prep = `SET LOCAL maintenance_work_mem = '512MB'`
		}
		if _, err := tx.ExecContext(ctx, prep); err != nil {
			return 0, err
		}
		for i, ix := range indexes {
			progress("indexes", int64(i), int64(len(indexes)))
			if _, err := tx.ExecContext(ctx, ix[1]); err != nil {
				return 0, fmt.Errorf("rebuild %s: %w", ix[0], err)
			}
		}
		progress("indexes", int64(len(indexes)), int64(len(indexes)))
	}
	// The labels and the search index, from the rows as loaded (their ids
	// are the database's), read back a chunk at a time.
	labelsOf := func(d *herd.Device) map[string]string {
		if l := labels[d.Key]; l != nil {
			return l
		}
		return map[string]string{}
	}
	if err := tx.indexDevicesForSearch(ctx, "d.tenant_id = ? AND d.rev = ?", []any{tenantID, rev}, labelsOf, func(done int64) {
		if done%20000 == 0 || done == n {
			progress("search", done, n)
		}
	}); err != nil {
		return 0, fmt.Errorf("index for search: %w", err)
	}
	for path, c := range perPath {
		if err := tx.adjustDeviceCounts(ctx, path, c); err != nil {
			return 0, fmt.Errorf("count devices: %w", err)
		}
	}
	root, err := tx.rootPath(ctx, tenantID)
	if err != nil {
		return 0, err
	}
	if err := tx.appendEvents(ctx, tenantID, newEvent(herd.EventDevicesSeeded, herd.EventSubjectTenant, tenantID, root, map[string]any{"devices": n})); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	// PostgreSQL: VACUUM sets the visibility map, without which no
	// index-only scan (the capped counts) avoids the heap. Both: ANALYZE
	// tells the planner about the new rows, of the labels and the search
	// index too: without their statistics PostgreSQL read a page's labels
	// by a scan of the tenant's (400 ms for 50 devices of 1,000,000) until
	// autovacuum came by.
	stats := `ANALYZE`
	if db.dialect == Postgres {
		stats = `VACUUM (ANALYZE) devices, device_labels, device_search`
	}
	_, err = conn.ExecContext(ctx, stats)
	return n, err
}

// keptDuringLoad are the device indexes a bulk load keeps: generated keys,
// ids and paths arrive in ascending order, so these grow at their right edge
// cheaply, and the unique key index rejects a duplicate key as it comes.
var keptDuringLoad = map[string]bool{"devices_key": true, "devices_tenant_path": true, "devices_tenant_id": true}

// dropDeviceIndexes drops the secondary indexes of the devices table that a
// bulk load rebuilds, and returns their names and definitions so that they
// are made again exactly as the migrations made them.
func (tx *Tx) dropDeviceIndexes(ctx context.Context) ([][2]string, error) {
	q := `SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'devices' AND sql IS NOT NULL`
	if tx.db.dialect == Postgres {
		q = `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'devices'
			AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'devices'::regclass)`
	}
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("list device indexes: %w", err)
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var ix [2]string
		if err := rows.Scan(&ix[0], &ix[1]); err != nil {
			return nil, err
		}
		if !keptDuringLoad[ix[0]] {
			out = append(out, ix)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	for _, ix := range out {
		if _, err := tx.ExecContext(ctx, `DROP INDEX "`+ix[0]+`"`); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// copyDevices streams devices into PostgreSQL with COPY. database/sql has
// no COPY, so it runs on the pgx connection underneath conn, inside the
// transaction tx has open on that same connection.
func (tx *Tx) copyDevices(ctx context.Context, conn *sql.Conn, rev int64, next func() *herd.Device) error {
	return conn.Raw(func(driverConn any) error {
		src := pgx.CopyFromFunc(func() ([]any, error) {
			if d := next(); d != nil {
				return append(deviceArgs(d), rev), nil
			}
			return nil, nil
		})
		_, err := driverConn.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"devices"}, insertColumns, src)
		return formatError(err, "a device key is already taken")
	})
}

// insertDeviceStream writes devices into SQLite with a prepared statement
// of 20 rows at a time.
func (tx *Tx) insertDeviceStream(ctx context.Context, rev int64, next func() *herd.Device) error {
	const perStmt = 20
	cols := len(insertColumns)
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	insert := func(rows int) string {
		return "INSERT INTO devices (" + strings.Join(insertColumns, ", ") + ") VALUES " + strings.TrimSuffix(strings.Repeat(row+",", rows), ",")
	}
	full, err := tx.tx.PrepareContext(ctx, insert(perStmt))
	if err != nil {
		return err
	}
	defer full.Close()
	batch := make([]any, 0, perStmt*cols)
	for d := next(); d != nil; d = next() {
		if batch = append(append(batch, deviceArgs(d)...), rev); len(batch) == perStmt*cols {
			if _, err := full.ExecContext(ctx, batch...); err != nil {
				return formatError(err, "a device key is already taken")
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		_, err = tx.ExecContext(ctx, insert(len(batch)/cols), batch...)
	}
	return formatError(err, "a device key is already taken")
}

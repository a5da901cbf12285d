package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// HistoryBytes is what the history takes on disk: the readings with their
// indexes (every partition on PostgreSQL), and the rollups with theirs.
// On SQLite it reads dbstat, which visits every page: for benchmarks and
// tools, not for a request.
func (db *DB) HistoryBytes(ctx context.Context) (readings, rollups int64, err error) {
	defer wrapOp("sqldb.HistoryBytes", &err)
	pool := db.readPool()
	if db.dialect == Postgres {
		ps, err := db.partitions(ctx, pool)
		if err != nil {
			return 0, 0, err
		}
		for _, p := range ps {
			readings += p.bytes
		}
		// The table's own relation is empty when partitioned; its
		// partitions hold the rows. The rollups are one table.
		if err := pool.QueryRowContext(ctx, `SELECT pg_total_relation_size(to_regclass('reading_rollups'))`).Scan(&rollups); err != nil {
			return 0, 0, fmt.Errorf("rollup bytes: %w", err)
		}
		return readings, rollups, nil
	}
	if readings, err = db.readingsBytesSQLite(ctx); err != nil {
		return 0, 0, err
	}
	var u sql.NullInt64
	if err := pool.QueryRowContext(ctx, `SELECT SUM(pgsize) FROM dbstat('main', 1) WHERE name IN ('reading_rollups', 'reading_rollups_res_bucket')`).Scan(&u); err != nil {
		return 0, 0, fmt.Errorf("rollup bytes: %w", err)
	}
	return readings, u.Int64, nil
}

// readingsBytesSQLite is what the readings and their indexes take in a
// SQLite store, from dbstat.
func (db *DB) readingsBytesSQLite(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	if err := db.readPool().QueryRowContext(ctx, `SELECT SUM(pgsize) FROM dbstat('main', 1) WHERE name IN ('readings', 'readings_ts_device', 'readings_device_ts')`).Scan(&n); err != nil {
		return 0, fmt.Errorf("readings bytes: %w", err)
	}
	return n.Int64, nil
}

// CountRollups counts a tenant's rollup rows of one resolution with buckets
// in [from, to): what an aggregate of the whole tenant over that range reads.
func (db *DB) CountRollups(ctx context.Context, tenantID, res int64, from, to time.Time) (n int64, err error) {
	defer wrapOp("sqldb.CountRollups", &err)
	err = db.readPool().QueryRowContext(ctx, db.rebind(`SELECT COUNT(*) FROM reading_rollups WHERE tenant_id = ? AND res = ? AND bucket >= ? AND bucket < ?`),
		tenantID, res, from.UnixMilli(), to.UnixMilli()).Scan(&n)
	return n, err
}

package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The telemetry history's retention. Readings are kept for the readings
// retention, and so are the minute rollups, which serve only ranges that
// raw readings could serve too; the hourly rollups are kept for the
// (longer) rollup retention, so that a year's aggregate stays answerable
// after its readings are gone.
const (
	DefaultReadingsRetention = 30 * 24 * time.Hour
	DefaultRollupRetention   = 400 * 24 * time.Hour

	// retentionResMinute and retentionResHour are reading_rollups.res (migration 0017).
	retentionResMinute = int64(time.Minute / time.Millisecond)
	retentionResHour   = int64(time.Hour / time.Millisecond)

	// SQLiteDeleteChunk is the most readings one delete of SQLite's
	// retention removes. Each chunk is its own transaction on the single
	// writer, so an ingest commit (and the PUBACKs waiting on it) waits for
	// at most one chunk. Measured (TestRetention_SQLiteChunkTiming, 1,000
	// devices): a median of 2-4 ms at 200 rows, 11 ms at 500, 15-16 ms at
	// 1,000 and 25-50 ms at 5,000, each row costing an entry on its
	// device's page of readings_device_ts; so 200 (docs/history.md,
	// "Retention").
	SQLiteDeleteChunk = 200
	// rollupDeleteChunk is the same bound for reading_rollups rows on
	// SQLite (a rollup row, with its sketch, is about the size of a
	// reading, and has no second index but reading_rollups_res_bucket).
	rollupDeleteChunk = 200
)

// retentionMetrics are the figures of the history's size and pruning.
type retentionMetrics struct {
	rows       prometheus.Gauge
	bytes      prometheus.Gauge
	oldest     prometheus.Gauge
	partitions prometheus.Gauge
	prune      *prometheus.HistogramVec
	pruned     *prometheus.CounterVec
	chunk      prometheus.Histogram
}

func newRetentionMetrics() retentionMetrics {
	return retentionMetrics{
		rows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_readings_rows",
			Help: "Readings held, estimated: on PostgreSQL the planner's row counts (reltuples) summed over the partitions; on SQLite the span of the row ids (max - min + 1). Set by each retention run.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_readings_bytes",
			Help: "Bytes the readings take with their indexes: on PostgreSQL pg_total_relation_size summed over the partitions; on SQLite the pages of readings and its indexes (dbstat). Set by each retention run.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_readings_oldest_timestamp_seconds",
			Help: "The ts of the oldest reading held, unix seconds; 0 when there is none. Set by each retention run.",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_readings_partitions",
			Help: "Partitions of readings on PostgreSQL (days, the legacy table and the default); 0 on SQLite.",
		}),
		prune: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_store_retention_prune_duration_seconds",
			Help: "Time of one retention step: partitions (created ahead, on PostgreSQL), readings (old partitions dropped and old rows deleted) and rollups.",
			// From 1 ms to about 9 min.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}, []string{"step"}),
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_store_retention_pruned_total",
			Help: "What the retention removed: rows of readings deleted, partitions of readings dropped (PostgreSQL), rows of reading_rollups deleted, rows of device_rollups and device_rollup_stale deleted.",
		}, []string{"what"}),
		chunk: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herd_store_retention_chunk_seconds",
			Help: "Time of one chunked delete of the retention on SQLite: how long it held the one writer, and so the longest it delayed an ingest commit.",
			// From 100 µs to about 1.6 s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
		}),
	}
}

func (m *retentionMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rows, m.bytes, m.oldest, m.partitions, m.prune, m.pruned, m.chunk}
}

// sqlExecer is a connection, pool or transaction a step writes through.
type sqlExecer interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}

// PruneReadings applies the retention to the telemetry history, by the
// DB's clock: readings older than readingsRetention go, with the minute
// rollups of that age; hourly rollups older than rollupRetention go. On
// PostgreSQL it first creates the partitions ahead (EnsurePartitions),
// then drops the day partitions wholly past the retention and deletes the
// old rows of the legacy and default partitions in chunks; a day that
// straddles the cut goes whole the next day, so readings stay up to a day
// longer than the retention. On SQLite it deletes old rows in chunks of
// SQLiteDeleteChunk, one transaction each. Every step is idempotent and
// several processes may run it at once (on PostgreSQL one works, the
// others skip). It refreshes the history's metrics as it ends.
func (db *DB) PruneReadings(ctx context.Context, readingsRetention, rollupRetention time.Duration) (err error) {
	defer wrapOp("sqldb.PruneReadings", &err)
	now := db.Now()
	cut := now.Add(-readingsRetention).UnixMilli()
	hourCut := now.Add(-rollupRetention).UnixMilli()
	m := &db.metrics.retention
	step := func(name string, fn func() error) error {
		start := time.Now()
		err := fn()
		m.prune.WithLabelValues(name).Observe(time.Since(start).Seconds())
		return err
	}
	rollups := func(w sqlExecer) error {
		return step("rollups", func() error {
			for _, r := range []struct{ res, cut int64 }{{retentionResMinute, cut}, {retentionResHour, hourCut}} {
				n, err := db.deleteRollups(ctx, w, r.res, r.cut)
				m.pruned.WithLabelValues("rollup_rows").Add(float64(n))
				if err != nil {
					return err
				}
			}
			// The per-device rollups go with the readings, which on
			// PostgreSQL stay up to a day past the cut: no older than the
			// oldest one left.
			var oldest sql.NullInt64
			if err := db.readPool().QueryRowContext(ctx, `SELECT MIN(ts) FROM readings`).Scan(&oldest); err != nil {
				return fmt.Errorf("oldest reading: %w", err)
			}
			devCut := cut
			if oldest.Valid {
				devCut = min(cut, oldest.Int64)
			}
			n, err := db.deleteDeviceRollups(ctx, w, devCut)
			m.pruned.WithLabelValues("device_rollup_rows").Add(float64(n))
			if err != nil {
				return err
			}
			// The bucket the cut falls in lost some readings (SQLite
			// deletes to the millisecond): the span starts after it, so
			// that reads take it from the readings left until the refresh,
			// going back, computes it again.
			start := ceilDiv(devCut, DeviceRollupBucket) * DeviceRollupBucket
			if _, err := w.ExecContext(ctx, db.rebind(`UPDATE device_rollup_span SET lo = ?, hi = CASE WHEN hi < ? THEN ? ELSE hi END WHERE id = 1 AND lo < ?`),
				start, start, start, start); err != nil {
				return fmt.Errorf("move the device rollups' span past the retention: %w", err)
			}
			return nil
		})
	}
	switch db.dialect {
	case Postgres:
		err = db.withPartitionLock(ctx, func(conn *sql.Conn) error {
			if err := step("partitions", func() error { return db.ensurePartitions(ctx, conn) }); err != nil {
				return err
			}
			if err := step("readings", func() error {
				dropped, deleted, err := db.prunePartitions(ctx, conn, cut)
				m.pruned.WithLabelValues("partitions").Add(float64(dropped))
				m.pruned.WithLabelValues("reading_rows").Add(float64(deleted))
				return err
			}); err != nil {
				return err
			}
			return rollups(conn)
		})
	default:
		err = step("readings", func() error {
			n, err := db.deleteReadingsSQLite(ctx, cut)
			m.pruned.WithLabelValues("reading_rows").Add(float64(n))
			return err
		})
		if err == nil {
			err = rollups(db.wdb)
		}
	}
	if err != nil {
		return err
	}
	return db.refreshRetentionMetrics(ctx)
}

// deleteReadingsSQLite deletes the readings before cut, oldest first, in
// chunks of SQLiteDeleteChunk. Each chunk is one statement in its own
// transaction on the writer connection, found by the (ts, device_id)
// index; between chunks the writer is free, and a group commit of ingest
// waiting for it goes first (database/sql hands the connection to
// whoever waits).
func (db *DB) deleteReadingsSQLite(ctx context.Context, cut int64) (int64, error) {
	const q = `DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE ts < ? ORDER BY ts LIMIT ?)`
	return db.deleteChunksSQLite(ctx, "readings", q, SQLiteDeleteChunk, cut)
}

func (db *DB) deleteChunksSQLite(ctx context.Context, what, q string, chunk int, args ...any) (int64, error) {
	args = append(args, chunk)
	var total int64
	for {
		start := time.Now()
		res, err := db.wdb.ExecContext(ctx, q, args...)
		db.metrics.retention.chunk.Observe(time.Since(start).Seconds())
		if err != nil {
			return total, fmt.Errorf("delete from %s: %w", what, err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < int64(chunk) {
			return total, nil
		}
	}
}

// deleteRollups deletes the rollups of resolution res whose bucket starts
// before cut, in chunks found by reading_rollups_res_bucket (on
// PostgreSQL of pgDeleteChunk: a delete there takes row locks only, and the
// ingest's upserts of current buckets never meet it).
func (db *DB) deleteRollups(ctx context.Context, w sqlExecer, res, cut int64) (int64, error) {
	return db.deleteOldBuckets(ctx, w, "reading_rollups", rollupKeyColumns, "res = ? AND bucket < ?", res, cut)
}

// deleteDeviceRollups deletes the per-device rollups, and the marks of
// stale ones, whose bucket ends at or before cut: they go with the
// readings they were computed from (device_rollups_bucket and
// device_rollup_stale_bucket find them). The bucket cut falls in stays,
// outside the span (PruneReadings), until the refresh computes it again.
func (db *DB) deleteDeviceRollups(ctx context.Context, w sqlExecer, cut int64) (int64, error) {
	last := cut - DeviceRollupBucket
	n, err := db.deleteOldBuckets(ctx, w, "device_rollups", "device_id, bucket", "bucket <= ?", last)
	if err != nil {
		return n, err
	}
	m, err := db.deleteOldBuckets(ctx, w, "device_rollup_stale", "device_id, bucket", "bucket <= ?", last)
	return n + m, err
}

// deleteOldBuckets deletes the rows of table that cond matches, oldest
// bucket first, a chunk a statement: rollupDeleteChunk on SQLite, each in
// its own transaction on the writer, pgDeleteChunk on PostgreSQL.
func (db *DB) deleteOldBuckets(ctx context.Context, w sqlExecer, table, key, cond string, args ...any) (int64, error) {
	q := db.rebind(`DELETE FROM ` + table + ` WHERE (` + key + `) IN (
		SELECT ` + key + ` FROM ` + table + ` WHERE ` + cond + ` ORDER BY bucket LIMIT ?)`)
	if db.dialect == SQLite {
		return db.deleteChunksSQLite(ctx, table, q, rollupDeleteChunk, args...)
	}
	var total int64
	for {
		r, err := w.ExecContext(ctx, q, append(args, pgDeleteChunk)...)
		if err != nil {
			return total, fmt.Errorf("delete from %s: %w", table, err)
		}
		n, _ := r.RowsAffected()
		total += n
		if n < pgDeleteChunk {
			return total, nil
		}
	}
}

// refreshRetentionMetrics sets the gauges of the history's size from cheap
// figures (see their help).
func (db *DB) refreshRetentionMetrics(ctx context.Context) error {
	m := &db.metrics.retention
	pool := db.readPool()
	var oldest sql.NullInt64
	if err := pool.QueryRowContext(ctx, `SELECT MIN(ts) FROM readings`).Scan(&oldest); err != nil {
		return fmt.Errorf("oldest reading: %w", err)
	}
	m.oldest.Set(float64(oldest.Int64) / 1000)
	if db.dialect == Postgres {
		ps, err := db.partitions(ctx, pool)
		if err != nil {
			return err
		}
		var rows float64
		var bytes int64
		for _, p := range ps {
			rows += p.rows
			bytes += p.bytes
		}
		m.rows.Set(rows)
		m.bytes.Set(float64(bytes))
		m.partitions.Set(float64(len(ps)))
		return nil
	}
	var span sql.NullInt64
	if err := pool.QueryRowContext(ctx, `SELECT MAX(id) - MIN(id) + 1 FROM readings`).Scan(&span); err != nil {
		return fmt.Errorf("readings held: %w", err)
	}
	// dbstat in aggregate mode gives one row per table or index; it still
	// visits their pages, on a reader, hourly.
	bytes, err := db.readingsBytesSQLite(ctx)
	if err != nil {
		return err
	}
	m.rows.Set(float64(span.Int64))
	m.bytes.Set(float64(bytes))
	return nil
}

package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The refresh of the per-device rollups (device_rollup.go): buckets
// computed whole from the readings, forwards as they age past
// GraceDeviceRollups and backwards to the oldest reading, and the buckets
// late readings made stale computed again. Every step is idempotent (an
// upsert of what the readings say), and the span moves only once a
// bucket's rows are written, so a crash or a cancel costs only the bucket
// in progress.

const (
	// refreshScanRows is how many readings one read of a bucket's scan
	// takes, on the read pool: short statements, so a SQLite reader never
	// holds a snapshot (and the WAL) for long.
	refreshScanRows = 5000
	// refreshWriteRows is how many rollup rows one write transaction of the
	// refresh upserts: on SQLite it holds the one writer, and an ingest
	// commit waits for it, for a few milliseconds.
	refreshWriteRows = 500
	// refreshStaleBuckets is how many stale buckets one step computes
	// again (each a range of one device's readings) and writes in one
	// transaction.
	refreshStaleBuckets = 200
)

// numericSelect selects the numeric reading fields as numbers, in
// herd.NumericReadingFields order.
var numericSelect = func() string {
	var cols []string
	for _, f := range projectionFields[:numericFields] {
		if f.typ == "BIGINT" {
			cols = append(cols, "CAST("+f.col+" AS DOUBLE PRECISION)")
		} else {
			cols = append(cols, f.col)
		}
	}
	return strings.Join(cols, ", ")
}()

// numericRow is the numeric fields of a reading as numericSelect reads them.
type numericRow [numericFields]sql.NullFloat64

func (r *numericRow) dest(to []any) []any {
	for i := range r {
		to = append(to, &r[i])
	}
	return to
}

func (s *deviceStats) addRow(ts int64, r *numericRow) {
	for i := range r {
		if r[i].Valid {
			s[i].add(ts, r[i].Float64)
		}
	}
}

// RefreshDeviceRollups does a bounded step of the refresh: some stale
// buckets computed again, then one bucket forwards or, once the span
// reaches the clock, one backwards. It reports whether more is left; herd
// serve calls it again at once while there is, and every
// GraceDeviceRollups/10 otherwise. Several processes may run it: on
// PostgreSQL one works and the others skip.
func (db *DB) RefreshDeviceRollups(ctx context.Context) (more bool, err error) {
	defer wrapOp("sqldb.RefreshDeviceRollups", &err)
	if db.NoRollups {
		return false, nil
	}
	db.refreshMu.Lock()
	defer db.refreshMu.Unlock()
	if db.dialect == Postgres {
		err = db.withAdvisoryLock(ctx, "herd device rollups", func() error {
			more, err = db.refreshStep(ctx)
			return err
		})
		return more, err
	}
	return db.refreshStep(ctx)
}

func (db *DB) refreshStep(ctx context.Context) (bool, error) {
	n, err := db.refreshStale(ctx)
	if err != nil {
		return false, err
	}
	more := n == refreshStaleBuckets
	now := db.Now()
	// The newest bucket the refresh may compute ends at target.
	target := floorDiv(now.Add(-GraceDeviceRollups).UnixMilli(), DeviceRollupBucket) * DeviceRollupBucket
	lo, hi, ok, err := db.deviceRollupSpan(ctx)
	if err != nil {
		return false, err
	}
	if ok {
		db.metrics.deviceRollupLag.Set(float64(now.UnixMilli()-hi) / 1000)
	}
	if !ok {
		// The first run: an empty span at the clock, which the steps
		// below widen each way.
		if _, err := db.wdb.ExecContext(ctx, db.rebind(`UPDATE device_rollup_span SET lo = ?, hi = ? WHERE id = 1 AND hi IS NULL`), target, target); err != nil {
			return false, fmt.Errorf("start the device rollups' span: %w", err)
		}
		return true, nil
	}
	if hi < target {
		// Forwards: the next bucket with readings (the empty ones before
		// it have nothing to compute), or straight to target.
		next, err := db.firstReadingFrom(ctx, hi)
		if err != nil {
			return false, err
		}
		b := floorDiv(next.Int64, DeviceRollupBucket) * DeviceRollupBucket
		if !next.Valid || b >= target {
			return more, db.moveSpan(ctx, "hi", hi, target)
		}
		if err := db.computeBucket(ctx, b, "hi", hi, b+DeviceRollupBucket); err != nil {
			return false, err
		}
		return true, nil
	}
	// Backwards: the bucket of the newest reading before lo.
	prev, err := db.lastReadingBefore(ctx, lo)
	if err != nil || !prev.Valid {
		return more, err
	}
	b := floorDiv(prev.Int64, DeviceRollupBucket) * DeviceRollupBucket
	if err := db.computeBucket(ctx, b, "lo", lo, b); err != nil {
		return false, err
	}
	return true, nil
}

// deviceRollupSpan reads [lo, hi), ok false before the first run.
func (db *DB) deviceRollupSpan(ctx context.Context) (lo, hi int64, ok bool, err error) {
	var l, h sql.NullInt64
	if err := db.wdb.QueryRowContext(ctx, `SELECT lo, hi FROM device_rollup_span WHERE id = 1`).Scan(&l, &h); err != nil {
		return 0, 0, false, fmt.Errorf("read the device rollups' span: %w", err)
	}
	return l.Int64, h.Int64, l.Valid && h.Valid, nil
}

func (db *DB) firstReadingFrom(ctx context.Context, ts int64) (sql.NullInt64, error) {
	var v sql.NullInt64
	err := db.readPool().QueryRowContext(ctx, db.rebind(`SELECT MIN(ts) FROM readings WHERE ts >= ?`), ts).Scan(&v)
	if err != nil {
		return v, fmt.Errorf("first reading from %d: %w", ts, err)
	}
	return v, nil
}

func (db *DB) lastReadingBefore(ctx context.Context, ts int64) (sql.NullInt64, error) {
	var v sql.NullInt64
	err := db.readPool().QueryRowContext(ctx, db.rebind(`SELECT MAX(ts) FROM readings WHERE ts < ?`), ts).Scan(&v)
	if err != nil {
		return v, fmt.Errorf("last reading before %d: %w", ts, err)
	}
	return v, nil
}

// moveSpan sets one end of the span, from old to to (only the refresh
// moves it, under its locks; the old value guards against a second writer
// all the same).
func (db *DB) moveSpan(ctx context.Context, end string, old, to int64) error {
	return db.moveSpanIn(ctx, db.wdb, end, old, to)
}

func (db *DB) moveSpanIn(ctx context.Context, w retentionExecer, end string, old, to int64) error {
	q := db.rebind(`UPDATE device_rollup_span SET ` + end + ` = ? WHERE id = 1 AND ` + end + ` = ?`)
	if _, err := w.ExecContext(ctx, q, to, old); err != nil {
		return fmt.Errorf("move the device rollups' span: %w", err)
	}
	return nil
}

// deviceRollup is a rollup row to write.
type deviceRollup struct {
	deviceID, tenantID int64
	stats              deviceStats
}

// computeBucket computes bucket b for every device from its readings, and
// then moves the span's end from old to to, with the last rows.
func (db *DB) computeBucket(ctx context.Context, b int64, end string, old, to int64) error {
	rows, err := db.scanBucket(ctx, b)
	if err != nil {
		return err
	}
	for {
		chunk := rows[:min(refreshWriteRows, len(rows))]
		rows = rows[len(chunk):]
		tx, err := db.wdb.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := db.writeDeviceRollups(ctx, tx, b, chunk); err != nil {
			tx.Rollback()
			return err
		}
		if len(rows) == 0 {
			if err := db.moveSpanIn(ctx, tx, end, old, to); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("commit device rollups: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
	}
}

// scanBucket reads every reading of bucket b in (ts, device_id) order, a
// page at a time, and folds them by device.
func (db *DB) scanBucket(ctx context.Context, b int64) ([]*deviceRollup, error) {
	q := db.rebind(`SELECT ts, device_id, tenant_id, ` + numericSelect + ` FROM readings
		WHERE ts >= ? AND ts < ? AND (ts > ? OR (ts = ? AND device_id > ?)) ORDER BY ts, device_id LIMIT ` + strconv.Itoa(refreshScanRows))
	byDevice := map[int64]*deviceRollup{}
	var out []*deviceRollup
	afterTS, afterID := b-1, int64(0)
	for {
		rs, err := db.readPool().QueryContext(ctx, q, b, b+DeviceRollupBucket, afterTS, afterTS, afterID)
		if err != nil {
			return nil, fmt.Errorf("read bucket %d: %w", b, err)
		}
		n := 0
		var ts, dev, tenant int64
		var r numericRow
		dest := r.dest([]any{&ts, &dev, &tenant})
		for rs.Next() {
			if err := rs.Scan(dest...); err != nil {
				rs.Close()
				return nil, fmt.Errorf("read bucket %d: %w", b, err)
			}
			n++
			afterTS, afterID = ts, dev
			d := byDevice[dev]
			if d == nil {
				d = &deviceRollup{deviceID: dev, tenantID: tenant}
				byDevice[dev] = d
				out = append(out, d)
			}
			d.stats.addRow(ts, &r)
		}
		if err := rs.Close(); err != nil {
			return nil, err
		}
		if err := rs.Err(); err != nil {
			return nil, fmt.Errorf("read bucket %d: %w", b, err)
		}
		if n < refreshScanRows {
			return out, nil
		}
	}
}

// writeDeviceRollups upserts rows of bucket b.
func (db *DB) writeDeviceRollups(ctx context.Context, w retentionExecer, b int64, rows []*deviceRollup) error {
	if len(rows) == 0 {
		return nil
	}
	q := db.rebind(`INSERT INTO device_rollups (device_id, bucket, tenant_id, stats) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", len(rows)), ",") +
		` ON CONFLICT (device_id, bucket) DO UPDATE SET tenant_id = excluded.tenant_id, stats = excluded.stats`)
	args := make([]any, 0, 4*len(rows))
	for _, r := range rows {
		args = append(args, r.deviceID, b, r.tenantID, r.stats.encode(nil))
	}
	if _, err := w.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("write device rollups: %w", err)
	}
	return nil
}

// refreshStale computes again up to refreshStaleBuckets stale buckets:
// it reads their marks and then their readings, on the read pool, and in
// one write transaction upserts their rows and takes away each mark whose
// seq is still the one it read. A reading committed meanwhile marked its
// bucket again (seq + 1), or waited for this transaction to take the mark
// and then made a new one; either way the mark stays, and the next step
// computes the bucket again. A bucket outside the span loses its mark
// only: the span's own steps compute it whole, from readings committed
// before the mark was.
func (db *DB) refreshStale(ctx context.Context) (int, error) {
	marks, err := db.readStaleMarks(ctx)
	if err != nil || len(marks) == 0 {
		return 0, err
	}
	lo, hi, ok, err := db.deviceRollupSpan(ctx)
	if err != nil {
		return 0, err
	}
	pool := db.readPool()
	q := db.rebind(`SELECT ts, ` + numericSelect + ` FROM readings WHERE tenant_id = ? AND device_id = ? AND ts >= ? AND ts < ?`)
	rollups := make([]*deviceRollup, len(marks))
	for i, m := range marks {
		if !ok || m.bucket < lo || m.bucket >= hi {
			continue
		}
		d := &deviceRollup{deviceID: m.deviceID, tenantID: m.tenantID}
		rs, err := pool.QueryContext(ctx, q, m.tenantID, m.deviceID, m.bucket, m.bucket+DeviceRollupBucket)
		if err != nil {
			return 0, fmt.Errorf("read a stale device rollup's readings: %w", err)
		}
		var ts int64
		var r numericRow
		dest := r.dest([]any{&ts})
		for rs.Next() {
			if err := rs.Scan(dest...); err != nil {
				rs.Close()
				return 0, fmt.Errorf("read a stale device rollup's readings: %w", err)
			}
			d.stats.addRow(ts, &r)
		}
		if err := rs.Close(); err != nil {
			return 0, err
		}
		if err := rs.Err(); err != nil {
			return 0, fmt.Errorf("read a stale device rollup's readings: %w", err)
		}
		rollups[i] = d
	}
	tx, err := db.wdb.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	del := db.rebind(`DELETE FROM device_rollup_stale WHERE device_id = ? AND bucket = ? AND seq = ?`)
	for i, m := range marks {
		if d := rollups[i]; d != nil {
			if err := db.writeDeviceRollups(ctx, tx, m.bucket, []*deviceRollup{d}); err != nil {
				return 0, err
			}
		}
		if _, err := tx.ExecContext(ctx, del, m.deviceID, m.bucket, m.seq); err != nil {
			return 0, fmt.Errorf("take a stale device rollup's mark: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit device rollups: %w", err)
	}
	return len(marks), nil
}

// readStaleMarks reads up to refreshStaleBuckets marks, in key order.
func (db *DB) readStaleMarks(ctx context.Context) ([]staleBucket, error) {
	rs, err := db.readPool().QueryContext(ctx, `SELECT device_id, bucket, tenant_id, seq FROM device_rollup_stale ORDER BY device_id, bucket LIMIT `+strconv.Itoa(refreshStaleBuckets))
	if err != nil {
		return nil, fmt.Errorf("read stale device rollups: %w", err)
	}
	defer rs.Close()
	var out []staleBucket
	for rs.Next() {
		var m staleBucket
		if err := rs.Scan(&m.deviceID, &m.bucket, &m.tenantID, &m.seq); err != nil {
			return nil, fmt.Errorf("read stale device rollups: %w", err)
		}
		out = append(out, m)
	}
	return out, rs.Err()
}

// RunDeviceRollups refreshes the per-device rollups until ctx ends: at
// once while there is work, then every GraceDeviceRollups/10. Failures
// are logged and tried again at the next tick.
func (db *DB) RunDeviceRollups(ctx context.Context) {
	if db.NoRollups {
		return
	}
	idle := GraceDeviceRollups / 10
	for {
		more, err := db.RefreshDeviceRollups(ctx)
		if err != nil && ctx.Err() == nil {
			db.Logger.Warn("refreshing the per-device rollups failed; the next run tries again", "err", err)
		}
		wait := idle
		if more && err == nil {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

package sqldb

import (
	"context"
	"database/sql"
	"errors"
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
	// refreshScanSlice is the span of readings one read of a bucket's scan
	// takes (a range of the readings' (ts, device_id) key): short
	// statements, so a SQLite reader never holds a snapshot (and the WAL)
	// for long, and no statement reads what another one did.
	refreshScanSlice = int64(time.Minute / time.Millisecond)
	// refreshWriteRows is how many rollup rows one write transaction of the
	// refresh upserts: on SQLite it holds the one writer, and an ingest
	// commit waits for it, for a few milliseconds.
	refreshWriteRows = 500
	// refreshStaleBuckets is how many stale buckets one step computes
	// again (each a range of one device's readings) and writes in one
	// transaction.
	refreshStaleBuckets = 200
)

// numericExprs are the numeric reading fields as numbers, in
// herd.NumericReadingFields order, and numericSelect selects them.
var numericExprs = func() []string {
	var cols []string
	for _, f := range projectionFields[:numericFields] {
		if f.typ == "BIGINT" {
			cols = append(cols, "CAST("+f.col+" AS DOUBLE PRECISION)")
		} else {
			cols = append(cols, f.col)
		}
	}
	return cols
}()

var numericSelect = strings.Join(numericExprs, ", ")

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

// refreshConn is where a refresh step reads and writes: on PostgreSQL the
// connection holding the refresh's advisory lock, for everything, so that
// a step whose lock is gone (its connection with it) can neither read nor
// write; on SQLite the readers' pool to read and the writer to write.
type refreshConn interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// refresher is one step of the refresh.
type refresher struct {
	db          *DB
	read, write refreshConn
}

// errSpanMoved says the span was not where the step read it: another
// refresh moved it (on PostgreSQL only after this one lost its lock). The
// step's transaction is rolled back and the next step starts again.
var errSpanMoved = errors.New("the device rollups' span moved under the refresh")

// ErrRefreshElsewhere says another session holds the refresh's lock
// (PostgreSQL): this step did nothing, and the other one does the work.
var ErrRefreshElsewhere = errors.New("the per-device rollups are refreshed by another session")

// RefreshDeviceRollups does a bounded step of the refresh: some stale
// buckets computed again, then one bucket forwards or, once the span
// reaches the clock, one backwards. It reports whether more is left; herd
// serve calls it again at once while there is, and every
// GraceDeviceRollups/10 otherwise. Several processes may run it: on
// PostgreSQL one works and the others skip. It runs with --rollups off
// too: the rollups then stay as they were, and reads take the readings.
func (db *DB) RefreshDeviceRollups(ctx context.Context) (more bool, err error) {
	defer wrapOp("sqldb.RefreshDeviceRollups", &err)
	if db.NoRollups {
		return false, nil
	}
	db.refreshMu.Lock()
	defer db.refreshMu.Unlock()
	if db.dialect == Postgres {
		ran, err := db.withAdvisoryLock(ctx, "herd device rollups", func(conn *sql.Conn) error {
			more, err = (&refresher{db: db, read: conn, write: conn}).step(ctx)
			return err
		})
		if err == nil && !ran {
			return false, ErrRefreshElsewhere
		}
		return more, err
	}
	return (&refresher{db: db, read: db.rdb, write: db.wdb}).step(ctx)
}

func (r *refresher) step(ctx context.Context) (bool, error) {
	db := r.db
	// Only this step moves the span (under the refresh's locks), so one
	// read of it serves the whole step.
	lo, hi, ok, err := r.span(ctx)
	if err != nil {
		return false, err
	}
	more, err := r.refreshStale(ctx, lo, hi, ok)
	if err != nil {
		return false, err
	}
	now := db.Now()
	// The newest bucket the refresh may compute ends at target.
	target := floorDiv(now.Add(-GraceDeviceRollups).UnixMilli(), DeviceRollupBucket) * DeviceRollupBucket
	if !ok {
		// The first run: an empty span at the clock, which the steps
		// below widen each way.
		if _, err := r.write.ExecContext(ctx, db.rebind(`UPDATE device_rollup_span SET lo = ?, hi = ? WHERE id = 1 AND hi IS NULL`), target, target); err != nil {
			return false, fmt.Errorf("start the device rollups' span: %w", err)
		}
		return true, nil
	}
	// Only the process that refreshes sets the gauge.
	db.metrics.deviceRollupLag.Set(float64(now.UnixMilli()-hi) / 1000)
	if hi > target+staleSlack.Milliseconds() {
		// The span ends past this clock by more than clocks may disagree:
		// a clock ran ahead when it moved, and the buckets it claimed
		// past the real time were never computed (the empty ones it
		// skipped have readings now). Which ones is not known, so it
		// starts again from lo, and reads take the readings meanwhile. A
		// smaller lead is a skew the argument at staleAfter allows: the
		// clock catches up.
		db.Logger.Warn("the per-device rollups' span ends past the clock; they are computed again from the start of the span", "hi", msToTime(hi), "target", msToTime(target))
		return true, r.moveSpan(ctx, r.write, "hi", hi, lo)
	}
	if hi < target {
		// Forwards: the next bucket with readings (the empty ones before
		// it have nothing to compute), or straight to target.
		next, err := r.edgeReading(ctx, `SELECT MIN(ts) FROM readings WHERE ts >= ?`, hi)
		if err != nil {
			return false, err
		}
		b := floorDiv(next.Int64, DeviceRollupBucket) * DeviceRollupBucket
		if !next.Valid || b >= target {
			return more, r.moveSpan(ctx, r.write, "hi", hi, target)
		}
		return true, r.computeBucket(ctx, b, "hi", hi, b+DeviceRollupBucket)
	}
	// Backwards: the bucket of the newest reading before lo.
	prev, err := r.edgeReading(ctx, `SELECT MAX(ts) FROM readings WHERE ts < ?`, lo)
	if err != nil || !prev.Valid {
		return more, err
	}
	b := floorDiv(prev.Int64, DeviceRollupBucket) * DeviceRollupBucket
	return true, r.computeBucket(ctx, b, "lo", lo, b)
}

// span reads [lo, hi), ok false before the first run.
func (r *refresher) span(ctx context.Context) (lo, hi int64, ok bool, err error) {
	var l, h sql.NullInt64
	if err := r.read.QueryRowContext(ctx, `SELECT lo, hi FROM device_rollup_span WHERE id = 1`).Scan(&l, &h); err != nil {
		return 0, 0, false, fmt.Errorf("read the device rollups' span: %w", err)
	}
	return l.Int64, h.Int64, l.Valid && h.Valid, nil
}

// edgeReading runs a MIN or MAX of ts over the readings of every tenant:
// the refresh computes buckets for all of them at once.
func (r *refresher) edgeReading(ctx context.Context, q string, ts int64) (sql.NullInt64, error) {
	var v sql.NullInt64
	if err := r.read.QueryRowContext(ctx, r.db.rebind(q), ts).Scan(&v); err != nil {
		return v, fmt.Errorf("find the readings next to %d: %w", ts, err)
	}
	return v, nil
}

// moveSpan sets one end of the span from old to to, or fails with
// errSpanMoved if it is not at old.
func (r *refresher) moveSpan(ctx context.Context, w sqlExecer, end string, old, to int64) error {
	q := r.db.rebind(`UPDATE device_rollup_span SET ` + end + ` = ? WHERE id = 1 AND ` + end + ` = ?`)
	res, err := w.ExecContext(ctx, q, to, old)
	if err != nil {
		return fmt.Errorf("move the device rollups' span: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return fmt.Errorf("move the device rollups' %s from %d: %w", end, old, errSpanMoved)
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
func (r *refresher) computeBucket(ctx context.Context, b int64, end string, old, to int64) error {
	rows, err := r.scanBucket(ctx, b)
	if err != nil {
		return err
	}
	for {
		chunk := rows[:min(refreshWriteRows, len(rows))]
		rows = rows[len(chunk):]
		tx, err := r.write.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := r.db.writeDeviceRollups(ctx, tx, b, chunk); err != nil {
			tx.Rollback()
			return err
		}
		if len(rows) == 0 {
			if err := r.moveSpan(ctx, tx, end, old, to); err != nil {
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

// scanBucket reads every reading of bucket b (of every tenant: the
// refresh is the system's, and each row keeps its tenant_id), a slice of refreshScanSlice
// at a time (each one range of the (ts, device_id) key, in no order: the
// fold needs none), and folds them by device.
func (r *refresher) scanBucket(ctx context.Context, b int64) ([]*deviceRollup, error) {
	q := r.db.rebind(`SELECT ts, device_id, tenant_id, ` + numericSelect + ` FROM readings WHERE ts >= ? AND ts < ?`)
	byDevice := map[int64]*deviceRollup{}
	var out []*deviceRollup
	for lo := b; lo < b+DeviceRollupBucket; lo += refreshScanSlice {
		rs, err := r.read.QueryContext(ctx, q, lo, lo+refreshScanSlice)
		if err != nil {
			return nil, fmt.Errorf("read bucket %d: %w", b, err)
		}
		var ts, dev, tenant int64
		var row numericRow
		dest := row.dest([]any{&ts, &dev, &tenant})
		for rs.Next() {
			if err := rs.Scan(dest...); err != nil {
				rs.Close()
				return nil, fmt.Errorf("read bucket %d: %w", b, err)
			}
			d := byDevice[dev]
			if d == nil {
				d = &deviceRollup{deviceID: dev, tenantID: tenant}
				byDevice[dev] = d
				out = append(out, d)
			}
			d.stats.addRow(ts, &row)
		}
		err = rs.Err()
		if cerr := rs.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("read bucket %d: %w", b, err)
		}
	}
	return out, nil
}

// writeDeviceRollups upserts rows of bucket b.
func (db *DB) writeDeviceRollups(ctx context.Context, w sqlExecer, b int64, rows []*deviceRollup) error {
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

// refreshStale computes again up to refreshStaleBuckets stale buckets,
// going on from where the previous step stopped (so that marks made again
// and again cannot hold the others back): it reads their marks and then
// their readings, and in one write transaction takes each mark away if its
// seq is still the one it read, and only then writes its row. A reading
// committed meanwhile marked its bucket again (seq + 1), or waited for
// this transaction to take the mark and then made a new one; either way
// the mark stays and a later step computes the bucket again, and the row
// this step computed (perhaps without that reading) is not written. A
// bucket outside the span loses its mark only: the span's own steps
// compute it whole, from readings committed before the mark was. It
// reports whether it stopped short of the end of the marks.
func (r *refresher) refreshStale(ctx context.Context, lo, hi int64, ok bool) (more bool, err error) {
	db := r.db
	marks, err := r.readStaleMarks(ctx)
	if err != nil {
		return false, err
	}
	if len(marks) < refreshStaleBuckets {
		// The end of the marks: the next step starts from the first,
		// at once if this one did not.
		wrapped := db.staleFrom != staleBucket{}
		db.staleFrom = staleBucket{}
		if len(marks) == 0 {
			return wrapped, nil
		}
		defer func() { more = more || wrapped }()
	}
	q := db.rebind(`SELECT ts, ` + numericSelect + ` FROM readings WHERE tenant_id = ? AND device_id = ? AND ts >= ? AND ts < ?`)
	rollups := make([]*deviceRollup, len(marks))
	for i, m := range marks {
		if !ok || m.bucket < lo || m.bucket >= hi {
			continue
		}
		if rollups[i], err = r.readDeviceBucket(ctx, q, m); err != nil {
			return false, err
		}
	}
	tx, err := r.write.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	del := db.rebind(`DELETE FROM device_rollup_stale WHERE tenant_id = ? AND device_id = ? AND bucket = ? AND seq = ?`)
	taken := 0
	for i, m := range marks {
		res, err := tx.ExecContext(ctx, del, m.tenantID, m.deviceID, m.bucket, m.seq)
		if err != nil {
			return false, fmt.Errorf("take a stale device rollup's mark: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return false, fmt.Errorf("take a stale device rollup's mark: %w", err)
		}
		taken += int(n)
		if d := rollups[i]; d != nil && n == 1 {
			if err := db.writeDeviceRollups(ctx, tx, m.bucket, []*deviceRollup{d}); err != nil {
				return false, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit device rollups: %w", err)
	}
	if len(marks) == refreshStaleBuckets {
		// More to come; but a page of marks made again and again, none
		// taken, waits for the next tick rather than spin.
		db.staleFrom = marks[len(marks)-1]
		return taken > 0, nil
	}
	return false, nil
}

// readDeviceBucket computes one device's bucket from its readings.
func (r *refresher) readDeviceBucket(ctx context.Context, q string, m staleBucket) (*deviceRollup, error) {
	d := &deviceRollup{deviceID: m.deviceID, tenantID: m.tenantID}
	rs, err := r.read.QueryContext(ctx, q, m.tenantID, m.deviceID, m.bucket, m.bucket+DeviceRollupBucket)
	if err != nil {
		return nil, fmt.Errorf("read a stale device rollup's readings: %w", err)
	}
	defer rs.Close()
	var ts int64
	var row numericRow
	dest := row.dest([]any{&ts})
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read a stale device rollup's readings: %w", err)
		}
		d.stats.addRow(ts, &row)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read a stale device rollup's readings: %w", err)
	}
	return d, nil
}

// readStaleMarks reads up to refreshStaleBuckets marks after db.staleFrom,
// in key order (marks of every tenant: the refresh is the system's).
func (r *refresher) readStaleMarks(ctx context.Context) ([]staleBucket, error) {
	from := r.db.staleFrom
	rs, err := r.read.QueryContext(ctx, r.db.rebind(`SELECT device_id, bucket, tenant_id, seq FROM device_rollup_stale
		WHERE device_id > ? OR (device_id = ? AND bucket > ?) ORDER BY device_id, bucket LIMIT `+strconv.Itoa(refreshStaleBuckets)),
		from.deviceID, from.deviceID, from.bucket)
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
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read stale device rollups: %w", err)
	}
	return out, nil
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
		if err != nil && ctx.Err() == nil && !errors.Is(err, ErrRefreshElsewhere) {
			db.Logger.Warn("refreshing the per-device rollups failed; the next run tries again", "err", err)
		}
		wait := idle
		if more && err == nil { // (another session's refresh waits the idle tick too)
			wait = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// exportChunk is how many readings one statement of an export reads. Each
// chunk is its own short read transaction, so an export of a billion
// readings never holds a snapshot (PostgreSQL's xmin, SQLite's WAL
// checkpoint) for the minutes it takes, and the chunk's rows are handed on
// before the next is read. Tests set it smaller (SetExportChunk).
var exportChunk = 5000

// exportSelect reads the readings of a chunk with their devices' keys. The
// scope and filters apply to the devices table inside the semi-join, where
// whereScope and whereFilters may name its columns unqualified (readings
// has columns of the same names: tenant_id, status, firmware, the numeric
// fields). It is a condition the database evaluates, never a list of ids.
// The key comes from a lookup by primary key per row rather than a join:
// given a join, SQLite puts devices in the outer loop and sorts every
// remaining reading of the scope for each chunk. The lookup needs no
// tenant condition of its own: the semi-join has already kept only the
// readings of the tenant's devices.
const exportSelect = `SELECT r.device_id, (SELECT d.key FROM devices d WHERE d.id = r.device_id),
 r.ts, r.received_at, r.temperature, r.humidity, r.pressure, r.voltage,
 r.current, r.power, r.battery, r.rssi, r.uptime_s, r.error_count, r.status, r.firmware, r.extra
 FROM readings r
 WHERE r.tenant_id = ? AND `

// ExportReadings calls each for every reading of the devices in the
// caller's scope (narrowed to q.NodeID's subtree) that match q.Filters,
// with ts in [q.From, q.To), in (ts, device_id) order, until each returns
// an error, which is returned.
//
// The scope is resolved once, at the start. Devices are matched as they are
// when each chunk is read: by their node now, not the node they were under
// when they reported, so a device moved into the scope brings its whole
// history with it and one moved out takes its history away, and a device
// deleted during the export stops appearing. Readings are walked along the
// (ts, device_id) key, so the cost is that of the tenant's readings in the
// range, whatever the scope's share of them.
func (s *HistoryService) ExportReadings(ctx context.Context, q herd.ExportQuery, each func(*herd.ExportReading) error) (err error) {
	defer wrapOp("sqldb.ExportReadings", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	}
	// Normalize checks the filters against the allow-lists whoever built
	// the query; its sort and limit do not apply here.
	dq := herd.DeviceQuery{TenantID: q.TenantID, Filters: q.Filters}
	if err := dq.Normalize(); err != nil {
		return err
	}
	if !q.From.Before(q.To) {
		return herd.Errorf(herd.EINVALID, "from (%s) must come before to (%s)", q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
	}
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return err
	}
	scope, err := tx.historyScope(ctx, a, q.TenantID, q.NodeID)
	tx.Rollback()
	if err != nil {
		return err
	} else if scope.Empty() {
		return nil // a user with no grants: nothing to export
	}

	// The scope's devices, as a condition on the devices table.
	var sb strings.Builder
	sb.WriteString(" AND r.device_id IN (SELECT id FROM devices WHERE ")
	devArgs := whereScope(&sb, scope)
	devArgs = whereFilters(&sb, q.Filters, devArgs)
	sb.WriteString(")")
	inScope := sb.String()
	if s.db.dialect == Postgres {
		// A lookup of each reading's device by its key, as a scalar
		// subquery (a SubPlan, which the planner does not turn into a
		// join): without statistics it ran the IN list, and an EXISTS
		// too, as a nested loop over the whole scope for every reading,
		// a second a chunk at 5,000 devices against 23 ms this way.
		// Unqualified names inside resolve to devices first.
		var eb strings.Builder
		eb.WriteString(" AND (SELECT 1 FROM devices WHERE devices.id = r.device_id AND ")
		whereScope(&eb, scope)
		whereFilters(&eb, q.Filters, nil)
		eb.WriteString(") = 1")
		inScope = eb.String()
	}
	if s.db.dialect == SQLite {
		// Keeps SQLite on the (ts, device_id) index, which gives the
		// order: with the IN term on readings_device_ts it would read
		// every remaining reading of the scope and sort them, per chunk.
		inScope = strings.Replace(inScope, " AND r.device_id IN", " AND +r.device_id IN", 1)
	}

	// A reading at ts (whole ms) is in [from, to) when ts >= ceil(from)
	// and ts < ceil(to).
	from, to := ceilMilli(q.From), ceilMilli(q.To)
	var afterTS, afterID int64
	first := true
	for {
		var keyset string
		args := []any{scope.TenantID}
		if first {
			keyset = "r.ts >= ?"
			args = append(args, from)
		} else {
			keyset = "(r.ts, r.device_id) > (?, ?)"
			args = append(args, afterTS, afterID)
		}
		args = append(args, to)
		args = append(args, devArgs...)
		args = append(args, exportChunk)
		stmt := exportSelect + keyset + " AND r.ts < ?" + inScope + " ORDER BY r.ts, r.device_id LIMIT ?"
		chunk, err := s.exportChunk(ctx, stmt, args)
		if err != nil {
			return err
		}
		for _, r := range chunk {
			if err := each(r); err != nil {
				return err
			}
		}
		if len(chunk) < exportChunk {
			return nil
		}
		last := chunk[len(chunk)-1]
		afterTS, afterID, first = last.TS.UnixMilli(), last.DeviceID, false
	}
}

// exportChunk reads one chunk in its own read transaction, and ends the
// transaction before the rows are handed on: a slow consumer (a client
// on a slow link) holds no snapshot.
func (s *HistoryService) exportChunk(ctx context.Context, stmt string, args []any) ([]*herd.ExportReading, error) {
	tx, err := s.db.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if s.db.dialect == Postgres {
		// The walk along the key is the plan wanted (see ExportReadings).
		// Without statistics (a table just loaded, before autovacuum's
		// analyze) PostgreSQL instead scans each device's readings and
		// sorts every remaining reading of the scope, for every chunk:
		// 230 ms against 8 ms a chunk at 432,000 readings. Refusing it the
		// sort for this one transaction leaves only the walk.
		if _, err := tx.ExecContext(ctx, `SET LOCAL enable_sort = off`); err != nil {
			return nil, err
		}
	}
	rows, err := tx.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]*herd.ExportReading, 0, min(exportChunk, 1024))
	for rows.Next() {
		r, err := scanExportReading(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, rows.Close()
}

func scanExportReading(rows *sql.Rows) (*herd.ExportReading, error) {
	var (
		r                     herd.ExportReading
		ts, received          int64
		temp, hum, pres, volt sql.NullFloat64
		cur, pow, batt        sql.NullFloat64
		rssi, up, errs        sql.NullInt64
		status, fw, extra     sql.NullString
	)
	if err := rows.Scan(&r.DeviceID, &r.Key, &ts, &received, &temp, &hum, &pres, &volt, &cur, &pow, &batt,
		&rssi, &up, &errs, &status, &fw, &extra); err != nil {
		return nil, err
	}
	r.TS, r.ReceivedAt = time.UnixMilli(ts).UTC(), time.UnixMilli(received).UTC()
	f := func(v sql.NullFloat64) *float64 {
		if !v.Valid {
			return nil
		}
		return &v.Float64
	}
	i := func(v sql.NullInt64) *int64 {
		if !v.Valid {
			return nil
		}
		return &v.Int64
	}
	str := func(v sql.NullString) *string {
		if !v.Valid {
			return nil
		}
		return &v.String
	}
	r.Temperature, r.Humidity, r.Pressure, r.Voltage = f(temp), f(hum), f(pres), f(volt)
	r.Current, r.Power, r.Battery = f(cur), f(pow), f(batt)
	r.RSSI, r.UptimeS, r.ErrorCount = i(rssi), i(up), i(errs)
	r.Status, r.Firmware = str(status), str(fw)
	if extra.Valid {
		r.Extra = json.RawMessage(extra.String)
	}
	return &r, nil
}

// ceilMilli is the first whole millisecond at or after t.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

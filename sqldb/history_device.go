package sqldb

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// One device's history: a range of its readings in time order, raw a page
// at a time or one point per step. Both are authorised as GET
// /v1/devices/{id} is (findDevice: ENOTFOUND outside the caller's grants),
// and every statement carries the device's tenant_id and device_id, so the
// range is read through readings_device_ts (migration 0017).

// readingField is one field a history read selects: a typed column or a
// number among the extras.
type readingField struct {
	name    string // the API name: "temperature" or "extra.co2"
	col     string // the typed column, or "" for an extra
	key     string // the extra's key
	integer bool   // a BIGINT column
	text    bool   // status or firmware
}

// historyFields resolves the API names of fields, checked again for a
// caller in process (a repeated name counts once); none means every typed
// field.
func historyFields(fields []string) ([]readingField, error) {
	if len(fields) == 0 {
		fields = append(append([]string{}, herd.NumericReadingFields...), herd.TextReadingFields...)
	}
	out := make([]readingField, 0, len(fields))
	seen := map[string]bool{}
	for _, name := range fields {
		if err := herd.ParseReadingField(name); err != nil {
			return nil, err
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		f := readingField{name: name}
		if k, ok := herd.ExtraKey(name); ok {
			f.key = k
		} else {
			f.col = name
			switch name {
			case "rssi", "uptime_s", "error_count":
				f.integer = true
			case "status", "firmware":
				f.text = true
			}
		}
		out = append(out, f)
	}
	return out, nil
}

// numberExpr is the SQL of a field as a number (NULL where a reading lacks
// it) and its arguments. An extra's key travels as a bound parameter (a
// JSON path on SQLite, a key on PostgreSQL), never inside the statement;
// a value that is not a JSON number is NULL, so aggregates ignore it.
func (tx *Tx) numberExpr(f readingField) (string, []any) {
	switch {
	case f.col != "" && f.integer:
		return "CAST(" + f.col + " AS DOUBLE PRECISION)", nil
	case f.col != "":
		return f.col, nil
	case tx.db.dialect == Postgres:
		return `(CASE WHEN jsonb_typeof(extra::jsonb -> CAST(? AS TEXT)) = 'number' THEN CAST(extra::jsonb ->> CAST(? AS TEXT) AS DOUBLE PRECISION) END)`, []any{f.key, f.key}
	default:
		path := `$."` + f.key + `"`
		return `(CASE WHEN json_type(extra, ?) IN ('integer', 'real') THEN CAST(json_extract(extra, ?) AS DOUBLE PRECISION) END)`, []any{path, path}
	}
}

// hasExpr is the SQL condition that a reading carries field f.
func (tx *Tx) hasExpr(f readingField) (string, []any) {
	switch {
	case f.col != "":
		return f.col + " IS NOT NULL", nil
	case tx.db.dialect == Postgres:
		return `(extra::jsonb -> CAST(? AS TEXT)) IS NOT NULL`, []any{f.key}
	default:
		return `json_type(extra, ?) IS NOT NULL`, []any{`$."` + f.key + `"`}
	}
}

// DeviceReadings returns a page of one device's raw readings in
// [q.From, q.To), oldest first. With q.Fields it returns those fields of
// the readings that carry at least one of them (extras narrowed to the
// keys asked for); without, every reading with all it carries. NextCursor
// is set when more readings follow.
func (s *HistoryService) DeviceReadings(ctx context.Context, q herd.ReadingsQuery) (_ *herd.ReadingsPage, err error) {
	defer wrapOp("sqldb.DeviceReadings", &err)
	if q.Step != 0 {
		return nil, herd.Errorf(herd.EINVALID, "a stepped query is answered by DeviceSeries")
	}
	limit := q.Limit
	if limit == 0 {
		limit = herd.DefaultReadingsLimit
	} else if limit < 1 || limit > herd.MaxReadingsLimit {
		return nil, herd.Errorf(herd.EINVALIDLIMIT, "limit %d must be from 1 to %d", limit, herd.MaxReadingsLimit)
	}
	fields, err := historyFields(q.Fields)
	if err != nil {
		return nil, err
	}
	after := int64(-1 << 63)
	if q.Cursor != "" {
		if after, err = herd.DecodeReadingsCursor(s.db.cursorKey, q.DeviceID, q.Cursor); err != nil {
			return nil, err
		}
	}
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ReadingsPage, error) {
		d, err := tx.findDevice(ctx, a, q.DeviceID, herd.RoleViewer)
		if err != nil {
			return nil, err
		}
		return tx.deviceReadings(ctx, d, q, fields, after, limit)
	})
}

func (tx *Tx) deviceReadings(ctx context.Context, d *herd.Device, q herd.ReadingsQuery, fields []readingField, after int64, limit int) (*herd.ReadingsPage, error) {
	allFields := len(q.Fields) == 0
	var cols []string
	var keys []string // the extras asked for
	for _, f := range fields {
		if f.col != "" {
			cols = append(cols, f.col)
		} else {
			keys = append(keys, f.key)
		}
	}
	withExtra := allFields || len(keys) > 0
	sel := "ts, received_at"
	for _, c := range cols {
		sel += ", " + c
	}
	if withExtra {
		sel += ", extra"
	}
	where := `tenant_id = ? AND device_id = ? AND ts >= ? AND ts < ? AND ts > ?`
	args := []any{d.TenantID, d.ID, q.From.UnixMilli(), q.To.UnixMilli(), after}
	if !allFields {
		var conds []string
		for _, f := range fields {
			c, a := tx.hasExpr(f)
			conds = append(conds, c)
			args = append(args, a...)
		}
		where += ` AND (` + strings.Join(conds, " OR ") + `)`
	}
	args = append(args, limit+1)
	rows, err := tx.QueryContext(ctx, `SELECT `+sel+` FROM readings WHERE `+where+` ORDER BY ts LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	page := &herd.ReadingsPage{Items: []*herd.HistoryReading{}}
	var last int64
	extraBytes := 0
	sc := newReadingScanner(cols, withExtra, allFields, keys)
	for rows.Next() {
		// A page ends at its limit, or once its extras reach
		// MaxPageExtraBytes: a device's extras may be up to the telemetry
		// limit each, and 10,000 of them would be a page of gigabytes.
		if len(page.Items) == limit || extraBytes >= MaxPageExtraBytes {
			page.NextCursor = herd.EncodeReadingsCursor(tx.db.cursorKey, d.ID, last)
			break
		}
		r, ts, err := sc.scan(rows)
		if err != nil {
			return nil, err
		}
		last = ts
		extraBytes += len(r.Extra)
		page.Items = append(page.Items, r)
	}
	return page, rows.Err()
}

// MaxPageExtraBytes bounds the extras of one page of raw readings; past it
// the page ends early with a next_cursor, as at its limit.
const MaxPageExtraBytes = 16 << 20

// DeviceSeries returns one device's readings in [q.From, q.To) one point
// per step and field: step k covers [From+k*Step, From+(k+1)*Step), the
// last one ends at To, and a point's ts is its step's start. Steps
// without a value of the field are left out. With q.Fields a series per
// field asked for (maybe with no points); without, one per typed numeric
// field with a value in the range.
func (s *HistoryService) DeviceSeries(ctx context.Context, q herd.ReadingsQuery) (_ *herd.SeriesResult, err error) {
	defer wrapOp("sqldb.DeviceSeries", &err)
	if q.Step <= 0 || q.Step%time.Millisecond != 0 {
		return nil, herd.Errorf(herd.EINVALID, "step %s must be a positive whole number of milliseconds", q.Step)
	}
	if !herd.ValidDeviceAgg(q.Agg) {
		return nil, herd.Errorf(herd.EINVALID, "agg %q is not one of avg, min, max, last, count, sum", q.Agg)
	}
	if !q.From.Before(q.To) {
		return nil, herd.Errorf(herd.EINVALID, "from must come before to")
	}
	if err := herd.CheckSteps(q.From, q.To, q.Step); err != nil {
		return nil, err
	}
	names := q.Fields
	if len(names) == 0 {
		names = herd.NumericReadingFields
	}
	fields, err := historyFields(names)
	if err != nil {
		return nil, err
	}
	for _, f := range fields {
		if f.text {
			return nil, herd.Errorf(herd.EINVALID, "fields: %s is text and cannot be aggregated over steps", f.name)
		}
	}
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.SeriesResult, error) {
		d, err := tx.findDevice(ctx, a, q.DeviceID, herd.RoleViewer)
		if err != nil {
			return nil, err
		}
		var series []herd.Series
		ok := false
		if !s.db.NoRollups {
			if series, ok, err = tx.seriesFromRollups(ctx, d, q, fields); err != nil {
				return nil, err
			}
		}
		switch {
		case ok:
		case q.Agg == herd.AggLast:
			series, err = tx.seriesLast(ctx, d, q, fields)
		default:
			series, err = tx.seriesGrouped(ctx, d, q, fields)
		}
		if err != nil {
			return nil, err
		}
		if len(q.Fields) == 0 {
			// Every field: only those the device sent in the range.
			kept := series[:0]
			for _, sr := range series {
				if len(sr.Points) > 0 {
					kept = append(kept, sr)
				}
			}
			series = kept
		}
		return &herd.SeriesResult{From: q.From, To: q.To, Step: herd.FormatStep(q.Step), Agg: q.Agg, Series: series}, nil
	})
}

// stepArgs are the range of a series in unix ms and its step in ms.
func stepArgs(q herd.ReadingsQuery) (from, to, step int64) {
	return q.From.UnixMilli(), q.To.UnixMilli(), q.Step.Milliseconds()
}

// seriesGrouped computes avg, min, max, count or sum of every field in one
// pass: GROUP BY the step number (ts - from) / step, an integer division
// of non-negative numbers on both engines.
func (tx *Tx) seriesGrouped(ctx context.Context, d *herd.Device, q herd.ReadingsQuery, fields []readingField) ([]herd.Series, error) {
	from, to, step := stepArgs(q)
	fn := map[string]string{herd.AggAvg: "AVG", herd.AggMin: "MIN", herd.AggMax: "MAX", herd.AggSum: "SUM", herd.AggCount: "COUNT"}[q.Agg]
	sel := "(ts - ?) / ? AS k"
	args := []any{from, step}
	for _, f := range fields {
		e, a := tx.numberExpr(f)
		sel += ", COUNT(" + e + ")"
		args = append(args, a...)
		if q.Agg != herd.AggCount {
			sel += ", CAST(" + fn + "(" + e + ") AS DOUBLE PRECISION)"
			args = append(args, a...)
		}
	}
	args = append(args, d.TenantID, d.ID, from, to)
	rows, err := tx.QueryContext(ctx, `SELECT `+sel+` FROM readings WHERE tenant_id = ? AND device_id = ? AND ts >= ? AND ts < ? GROUP BY k ORDER BY k`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	series := make([]herd.Series, len(fields))
	for i, f := range fields {
		series[i] = herd.Series{Field: f.name, Points: []herd.Point{}}
	}
	counts := make([]int64, len(fields))
	values := make([]sql.NullFloat64, len(fields))
	dest := []any{new(int64)}
	for i := range fields {
		dest = append(dest, &counts[i])
		if q.Agg != herd.AggCount {
			dest = append(dest, &values[i])
		}
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		ts := from + *dest[0].(*int64)*step
		for i := range fields {
			if counts[i] == 0 {
				continue
			}
			v := float64(counts[i])
			if q.Agg != herd.AggCount {
				v = values[i].Float64
			}
			series[i].Points = append(series[i].Points, herd.Point{TS: ts, Value: v})
		}
	}
	return series, rows.Err()
}

// seriesLast computes agg=last: per field, the value of the newest reading
// in each step that carries the field, one statement per field (ranked by
// ts within each step).
func (tx *Tx) seriesLast(ctx context.Context, d *herd.Device, q herd.ReadingsQuery, fields []readingField) ([]herd.Series, error) {
	from, to, step := stepArgs(q)
	series := make([]herd.Series, len(fields))
	for i, f := range fields {
		series[i] = herd.Series{Field: f.name, Points: []herd.Point{}}
		e, ea := tx.numberExpr(f)
		// Arguments in the order the statement binds them.
		args := append([]any{from, step}, ea...)
		args = append(args, from, step, d.TenantID, d.ID, from, to)
		args = append(args, ea...)
		rows, err := tx.QueryContext(ctx, `SELECT k, v FROM (SELECT (ts - ?) / ? AS k, `+e+` AS v,
			ROW_NUMBER() OVER (PARTITION BY (ts - ?) / ? ORDER BY ts DESC) AS rn
			FROM readings WHERE tenant_id = ? AND device_id = ? AND ts >= ? AND ts < ? AND `+e+` IS NOT NULL) last
			WHERE rn = 1 ORDER BY k`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k int64
			var v float64
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
				return nil, err
			}
			series[i].Points = append(series[i].Points, herd.Point{TS: from + k*step, Value: v})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return series, nil
}

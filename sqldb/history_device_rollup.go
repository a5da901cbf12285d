package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/herd-iot/herd"
)

// One device's stepped read from its per-device rollups (device_rollup.go):
// each step's whole quarter hours inside the refreshed span come from
// device_rollups, unless a late reading made them stale; the rest of the
// step (its unaligned edges, the newest minutes the refresh has not
// reached, stale buckets) from the readings. The two are folded here, per
// step and field, into what the readings alone would give (sums in another
// order: equal to within rounding).

// rollupMinShare is the share of a range the rollups must serve for the
// read to use them: below it (a step of an hour from an odd minute, say)
// the edges are most of the readings and one pass over the range is
// cheaper than the rollups and many short ranges.
const rollupMinShare = 0.5

// rawRangesPerStatement bounds the ranges of readings one statement reads
// (each its own index range, OR'd).
const rawRangesPerStatement = 32

// msRange is [lo, hi) in unix milliseconds.
type msRange struct{ lo, hi int64 }

// seriesFromRollups answers a stepped read of typed numeric fields from the
// rollups; ok is false when it cannot (an extra among the fields, no span
// yet, or too little of the range served), and the caller reads the
// readings.
func (tx *Tx) seriesFromRollups(ctx context.Context, d *herd.Device, q herd.ReadingsQuery, fields []readingField) (_ []herd.Series, ok bool, err error) {
	idx := make([]int, len(fields))
	for i, f := range fields {
		idx[i] = -1
		for j, name := range herd.NumericReadingFields {
			if f.col == name {
				idx[i] = j
			}
		}
		if idx[i] < 0 {
			return nil, false, nil
		}
	}
	var l, h sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT lo, hi FROM device_rollup_span WHERE id = 1`).Scan(&l, &h); err != nil {
		return nil, false, fmt.Errorf("read the device rollups' span: %w", err)
	}
	if !l.Valid || !h.Valid {
		return nil, false, nil
	}
	// Never past what the refresh may have computed by this clock: a span
	// that ran ahead with a clock set wrong is moved back at its next
	// step, and meanwhile its end is not believed.
	hi := min(h.Int64, floorDiv(tx.db.Now().Add(-GraceDeviceRollups).UnixMilli(), DeviceRollupBucket)*DeviceRollupBucket)
	from, to, step := stepArgs(q)
	// Per step, its whole buckets within the span: one range of buckets.
	steps := int((to - from + step - 1) / step)
	served := make([]msRange, steps)
	var servedMS int64
	for k := range served {
		s, e := from+int64(k)*step, min(from+int64(k+1)*step, to)
		lo := ceilDiv(max(s, l.Int64), DeviceRollupBucket) * DeviceRollupBucket
		hi := floorDiv(min(e, hi), DeviceRollupBucket) * DeviceRollupBucket
		if lo < hi {
			served[k] = msRange{lo, hi}
			servedMS += hi - lo
		}
	}
	if float64(servedMS) < rollupMinShare*float64(to-from) {
		return nil, false, nil
	}
	stale, err := tx.staleBuckets(ctx, d, from, to)
	if err != nil {
		return nil, false, err
	}
	// The readings to read: every step's unserved edges, and the stale
	// buckets, adjacent ranges joined.
	var raw []msRange
	add := func(r msRange) {
		if r.lo >= r.hi {
			return
		}
		if n := len(raw); n > 0 && raw[n-1].hi >= r.lo {
			raw[n-1].hi = max(raw[n-1].hi, r.hi)
			return
		}
		raw = append(raw, r)
	}
	si := 0
	for k, sv := range served {
		s, e := from+int64(k)*step, min(from+int64(k+1)*step, to)
		if sv.lo >= sv.hi {
			add(msRange{s, e})
			continue
		}
		add(msRange{s, sv.lo})
		for si < len(stale) && stale[si] < sv.lo {
			si++
		}
		for ; si < len(stale) && stale[si] < sv.hi; si++ {
			add(msRange{stale[si], stale[si] + DeviceRollupBucket})
		}
		add(msRange{sv.hi, e})
	}

	acc := make([][]deviceField, steps)
	for k := range acc {
		acc[k] = make([]deviceField, len(fields))
	}
	if err := tx.foldDeviceRollups(ctx, d, from, step, served, stale, idx, acc); err != nil {
		return nil, false, err
	}
	if err := tx.foldRawRanges(ctx, d, from, step, q.Agg, raw, idx, acc); err != nil {
		return nil, false, err
	}
	series := make([]herd.Series, len(fields))
	for i, f := range fields {
		series[i] = herd.Series{Field: f.name, Points: []herd.Point{}}
		for k := range acc {
			if a := &acc[k][i]; a.n > 0 {
				series[i].Points = append(series[i].Points, herd.Point{TS: from + int64(k)*step, Value: a.value(q.Agg)})
			}
		}
	}
	return series, true, nil
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }

// staleBuckets returns the device's stale buckets starting in [from, to),
// in order.
func (tx *Tx) staleBuckets(ctx context.Context, d *herd.Device, from, to int64) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT bucket FROM device_rollup_stale WHERE tenant_id = ? AND device_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket`,
		d.TenantID, d.ID, from, to)
	if err != nil {
		return nil, fmt.Errorf("read stale device rollups: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var b int64
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("read stale device rollups: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read stale device rollups: %w", err)
	}
	return out, nil
}

// foldDeviceRollups adds the served, fresh rollups of the range to their
// steps.
func (tx *Tx) foldDeviceRollups(ctx context.Context, d *herd.Device, from, step int64, served []msRange, stale []int64, idx []int, acc [][]deviceField) error {
	rows, err := tx.QueryContext(ctx, `SELECT bucket, stats FROM device_rollups WHERE tenant_id = ? AND device_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket`,
		d.TenantID, d.ID, from, from+int64(len(served))*step)
	if err != nil {
		return fmt.Errorf("read device rollups: %w", err)
	}
	defer rows.Close()
	var b int64
	var buf []byte
	var st deviceStats
	si := 0
	for rows.Next() {
		if err := rows.Scan(&b, &buf); err != nil {
			return fmt.Errorf("read device rollups: %w", err)
		}
		k := (b - from) / step
		if k >= int64(len(served)) || b < served[k].lo || b >= served[k].hi {
			continue
		}
		for si < len(stale) && stale[si] < b {
			si++
		}
		if si < len(stale) && stale[si] == b {
			continue
		}
		if err := decodeDeviceStats(&st, buf); err != nil {
			return err
		}
		for i, j := range idx {
			acc[k][i].merge(st[j])
		}
	}
	return rows.Err()
}

// foldRawRanges adds the readings of the ranges to their steps, a few
// ranges a statement: grouped by step in SQL (count, sum, min and max of
// each field), or for agg=last each reading folded here.
func (tx *Tx) foldRawRanges(ctx context.Context, d *herd.Device, from, step int64, agg string, ranges []msRange, idx []int, acc [][]deviceField) error {
	var sel string
	if agg == herd.AggLast {
		sel = `ts, ` + numericSelect
	} else {
		sel = `(ts - ?) / ?`
		for _, j := range idx {
			e := numericExprs[j]
			sel += ", COUNT(" + e + "), SUM(" + e + "), MIN(" + e + "), MAX(" + e + ")"
		}
	}
	for len(ranges) > 0 {
		chunk := ranges[:min(rawRangesPerStatement, len(ranges))]
		ranges = ranges[len(chunk):]
		conds := make([]string, len(chunk))
		var args []any
		if agg != herd.AggLast {
			args = append(args, from, step)
		}
		args = append(args, d.TenantID)
		for i, r := range chunk {
			conds[i] = "(device_id = ? AND ts >= ? AND ts < ?)"
			args = append(args, d.ID, r.lo, r.hi)
		}
		q := `SELECT ` + sel + ` FROM readings WHERE tenant_id = ? AND (` + strings.Join(conds, " OR ") + `)`
		if agg != herd.AggLast {
			q += ` GROUP BY 1`
		}
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("read readings: %w", err)
		}
		if agg == herd.AggLast {
			err = foldLastRows(rows, from, step, idx, acc)
		} else {
			err = foldGroupedRows(rows, idx, acc)
		}
		rows.Close()
		if err != nil {
			return fmt.Errorf("read readings: %w", err)
		}
	}
	return nil
}

func foldLastRows(rows *sql.Rows, from, step int64, idx []int, acc [][]deviceField) error {
	var ts int64
	var r numericRow
	dest := r.dest([]any{&ts})
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		k := (ts - from) / step
		for i, j := range idx {
			if r[j].Valid {
				acc[k][i].add(ts, r[j].Float64)
			}
		}
	}
	return rows.Err()
}

func foldGroupedRows(rows *sql.Rows, idx []int, acc [][]deviceField) error {
	var k int64
	n := make([]int64, len(idx))
	v := make([][3]sql.NullFloat64, len(idx))
	dest := []any{&k}
	for i := range idx {
		dest = append(dest, &n[i], &v[i][0], &v[i][1], &v[i][2])
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		for i := range idx {
			if n[i] > 0 {
				acc[k][i].merge(deviceField{n: n[i], sum: v[i][0].Float64, min: v[i][1].Float64, max: v[i][2].Float64})
			}
		}
	}
	return rows.Err()
}

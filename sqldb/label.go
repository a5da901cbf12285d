package sqldb

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/herd-iot/herd"
)

// Device labels live in device_labels, a row a label (migration 0022).
// Reads fetch the labels of the devices they return in one statement by
// the ids of those devices — a page, never a scope — and the label filters
// and sort read a device's value of a key by the primary key (see
// whereLabel). The (tenant_id, key, value, device_id) index serves finding
// devices by a label without a scope to start from.

// insertLabels writes the labels of new devices, whose ids are set, in
// multi-row statements under the parameter guard (on PostgreSQL in one,
// insertLabelsArrays).
func (tx *Tx) insertLabels(ctx context.Context, ds []*herd.Device) error {
	if tx.db.dialect == Postgres {
		return tx.insertLabelsArrays(ctx, ds)
	}
	var args []any
	n := 0
	per := herd.MaxQueryParams / 5
	flush := func() error {
		if n == 0 {
			return nil
		}
		q := `INSERT INTO device_labels (tenant_id, device_id, key, value, value_fold) VALUES ` + strings.TrimSuffix(strings.Repeat("(?,?,?,?,?),", n), ",")
		_, err := tx.execChunk(ctx, n == per, q, args...)
		args, n = args[:0], 0
		return err
	}
	for _, d := range ds {
		for _, k := range slices.Sorted(maps.Keys(d.Labels)) {
			args = append(args, d.TenantID, d.ID, k, d.Labels[k], valueFold(d.Labels[k]))
			if n++; n == per {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// replaceLabels makes the stored labels of a device the given ones: it
// deletes the keys that went and upserts the rest, one statement each.
func (tx *Tx) replaceLabels(ctx context.Context, d *herd.Device, old map[string]string) error {
	var gone []any
	for k := range old {
		if _, ok := d.Labels[k]; !ok {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		q := `DELETE FROM device_labels WHERE tenant_id = ? AND device_id = ? AND key IN (` + strings.TrimSuffix(strings.Repeat("?,", len(gone)), ",") + `)`
		if _, err := tx.ExecContext(ctx, q, append([]any{d.TenantID, d.ID}, gone...)...); err != nil {
			return err
		}
	}
	var set []string
	for k, v := range d.Labels {
		if ov, ok := old[k]; !ok || ov != v {
			set = append(set, k)
		}
	}
	if len(set) == 0 {
		return nil
	}
	slices.Sort(set)
	args := make([]any, 0, 5*len(set))
	for _, k := range set {
		args = append(args, d.TenantID, d.ID, k, d.Labels[k], valueFold(d.Labels[k]))
	}
	q := `INSERT INTO device_labels (tenant_id, device_id, key, value, value_fold) VALUES ` + strings.TrimSuffix(strings.Repeat("(?,?,?,?,?),", len(set)), ",") +
		` ON CONFLICT (device_id, key) DO UPDATE SET value = excluded.value, value_fold = excluded.value_fold`
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}

// pageLabelsSQL starts the statement that reads the labels of a page.
const pageLabelsSQL = `SELECT device_id, key, value FROM device_labels WHERE tenant_id = ? AND device_id IN (`

// attachLabels sets the labels of devices of one tenant read without them
// ({} for a device with none), by the ids of those devices.
func (tx *Tx) attachLabels(ctx context.Context, tenantID int64, ds []*herd.Device) error {
	if len(ds) == 0 {
		return nil
	}
	byID := make(map[int64]*herd.Device, len(ds))
	for _, d := range ds {
		d.Labels = map[string]string{}
		byID[d.ID] = d
	}
	ids := slices.Sorted(maps.Keys(byID))
	per := herd.MaxQueryParams - 1
	for start := 0; start < len(ids); start += per {
		chunk := ids[start:min(start+per, len(ids))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, tenantID)
		for _, id := range chunk {
			args = append(args, id)
		}
		err := tx.scanLabels(ctx, pageLabelsSQL+strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+`)`, args,
			func(id int64, k, v string) {
				if d := byID[id]; d != nil {
					d.Labels[k] = v
				}
			})
		if err != nil {
			return err
		}
	}
	return nil
}

// scanLabels runs a query of (device_id, key, value) rows and hands each
// to fn.
func (tx *Tx) scanLabels(ctx context.Context, q string, args []any, fn func(id int64, k, v string)) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		var k, v string
		if err := rows.Scan(&id, &k, &v); err != nil {
			rows.Close()
			return err
		}
		fn(id, k, v)
	}
	return errors.Join(rows.Err(), rows.Close())
}

// whereLabel appends a filter on a label: the device's value of the key,
// read by a scalar subquery on device_labels' primary key (device_id, key)
// within the device's tenant, compared with the filter's values. A scalar
// subquery is a lookup per row the filters test, in every engine and
// whatever the planner's statistics: PostgreSQL runs it as a SubPlan, never
// as a join it might plan as a nested loop over the whole table (which an
// EXISTS semi-join without statistics became: minutes for a 50,000-device
// tenant). Large scopes, where a lookup per row adds up, go to the state
// cache. eq and in need the key with that value, ne keeps a device without
// the key (see herd.OpExists), exists compares the lookup with NULL. The
// key is bound like the values.
func whereLabel(b *strings.Builder, key string, f herd.DeviceFilter, args []any) []any {
	b.WriteString(" AND " + labelValueSQL)
	args = append(args, key)
	switch f.Op {
	case herd.OpEq:
		b.WriteString(" = ?")
		args = append(args, f.Values[0])
	case herd.OpNe:
		b.WriteString(" IS DISTINCT FROM ?")
		args = append(args, f.Values[0])
	case herd.OpIn:
		b.WriteString(" IN (" + strings.TrimSuffix(strings.Repeat("?,", len(f.Values)), ",") + ")")
		args = append(args, f.Values...)
	case herd.OpExists:
		if f.Values[0].(bool) {
			b.WriteString(" IS NOT NULL")
		} else {
			b.WriteString(" IS NULL")
		}
	default:
		panic("sqldb: unvalidated label operator " + f.Op)
	}
	return args
}

// labelValueSQL is the value of the label whose key is bound, of the
// devices row, or NULL when it does not have the key.
const labelValueSQL = `(SELECT l.value FROM device_labels l WHERE l.device_id = devices.id AND l.key = ? AND l.tenant_id = devices.tenant_id)`

// labelSortSQL returns the page statement of a sort on a label: the
// scope's matching rows with their label value (a primary-key lookup per
// row), ordered by it with the devices without the key last in either
// direction, after the keyset position. No index yields this order, so the
// scope is read and sorted, as for the unindexed readings; a large scope
// goes to the state cache (see cacheFor).
func labelSortSQL(key string, q herd.DeviceQuery, where string, args []any, limit int) (string, []any) {
	dir, cmp := "ASC", ">"
	if q.Sort.Desc {
		dir, cmp = "DESC", "<"
	}
	out := append([]any{key}, args...)
	keyset := ""
	if c := q.After; c != nil && c.Null {
		keyset = ` WHERE lsort IS NULL AND id ` + cmp + ` ?`
		out = append(out, c.ID)
	} else if c != nil {
		keyset = ` WHERE (lsort IS NULL OR lsort ` + cmp + ` ? OR (lsort = ? AND id ` + cmp + ` ?))`
		out = append(out, c.Value, c.Value, c.ID)
	}
	return `SELECT ` + deviceColumns + ` FROM (SELECT ` + deviceColumns + `, ` + labelValueSQL + ` AS lsort FROM devices WHERE ` + where + `) s` +
		keyset + ` ORDER BY CASE WHEN lsort IS NULL THEN 1 ELSE 0 END, lsort ` + dir + `, id ` + dir + ` LIMIT ?`, append(out, limit)
}

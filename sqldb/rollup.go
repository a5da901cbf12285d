package sqldb

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/herd-iot/herd"
)

// Rollups: per tenant, node, model, firmware, numeric field and minute or
// hour, the count, sum, min, max and a DDSketch of the values of the
// readings committed (migration 0017). Ingest keeps them in the transaction
// that commits the readings, from the readings it actually inserted, so a
// reading a device sends again after a lost PUBACK counts once, as it is
// stored once.

// Rollup resolutions: the bucket widths in milliseconds.
const (
	RollupMinute = int64(60_000)
	RollupHour   = int64(3_600_000)
)

// SketchRelativeAccuracy is the DDSketch's guarantee: a quantile it returns
// is within this fraction of the true value at that rank.
const SketchRelativeAccuracy = 0.01

// sketchMaxBins bounds a sketch's bins per sign. At 1% accuracy 2,048 bins
// span values over a ratio of about 10^17, so no reading collapses in
// practice; the bound keeps a pathological field from growing rows.
const sketchMaxBins = 2048

// sketchMapping is the index mapping of every stored sketch. It is left out
// of the encoding, so changing it means re-encoding every rollup.
var sketchMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(SketchRelativeAccuracy)
	if err != nil {
		panic(err)
	}
	return m
}()

func init() {
	// numericValue reads herd.NumericReadingFields through projectionFields
	// by index: the two lists must agree.
	for i, f := range herd.NumericReadingFields {
		if projectionFields[i].col != f {
			panic("sqldb: projectionFields and herd.NumericReadingFields disagree at " + f)
		}
	}
}

func newSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(sketchMapping,
		store.NewCollapsingLowestDenseStore(sketchMaxBins), store.NewCollapsingLowestDenseStore(sketchMaxBins))
}

// decodeSketchInto merges an encoded sketch into s.
func decodeSketchInto(s *ddsketch.DDSketch, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if err := s.DecodeAndMergeWith(b); err != nil {
		return fmt.Errorf("decode rollup sketch: %w", err)
	}
	return nil
}

// rollupKey is the primary key of a rollup row.
type rollupKey struct {
	tenantID        int64
	field           string
	res, bucket     int64
	nodeID          int64
	model, firmware string
}

func compareRollupKeys(a, b rollupKey) int {
	return cmp.Or(cmp.Compare(a.tenantID, b.tenantID), cmp.Compare(a.field, b.field), cmp.Compare(a.res, b.res),
		cmp.Compare(a.bucket, b.bucket), cmp.Compare(a.nodeID, b.nodeID), cmp.Compare(a.model, b.model), cmp.Compare(a.firmware, b.firmware))
}

// rollupAcc accumulates one rollup row.
type rollupAcc struct {
	n             int64
	sum, min, max float64
	sketch        *ddsketch.DDSketch
}

func (a *rollupAcc) add(v float64) {
	if a.n == 0 || v < a.min {
		a.min = v
	}
	if a.n == 0 || v > a.max {
		a.max = v
	}
	a.n++
	a.sum += v
	// Readings are finite (ParseTelemetry refuses anything else) and the
	// mapping takes every finite float, so Add cannot fail here.
	_ = a.sketch.Add(v)
}

// merge adds a stored row's figures.
func (a *rollupAcc) merge(n int64, sum, lo, hi float64) {
	if a.n == 0 || lo < a.min {
		a.min = lo
	}
	if a.n == 0 || hi > a.max {
		a.max = hi
	}
	a.n += n
	a.sum += sum
}

// numericValue returns a reading's value of a numeric field, by the field's
// index in herd.NumericReadingFields (which follow projectionFields' order).
func numericValue(r *herd.Reading, i int) (float64, bool) {
	f := projectionFields[i]
	if r.Has&f.bit == 0 {
		return 0, false
	}
	switch v := f.value(r).(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	}
	return 0, false
}

// rollupDevice is what a rollup keeps of the device a reading came from.
type rollupDevice struct {
	nodeID          int64
	model, firmware string
}

// applyRollups adds the inserted readings to their rollups: it reads the
// devices' node, model and firmware (after the batch's projection updates,
// so a firmware reported in the batch counts), folds the readings into one
// accumulator per rollup row, and merges those into the stored rows.
func (tx *Tx) applyRollups(ctx context.Context, items []herd.IngestItem, inserted []int) error {
	if len(inserted) == 0 {
		return nil
	}
	devices, err := tx.rollupDevices(ctx, items, inserted)
	if err != nil {
		return err
	}
	accs := map[rollupKey]*rollupAcc{}
	for _, i := range inserted {
		it := &items[i]
		d, ok := devices[it.DeviceID]
		if !ok {
			continue // deleted in the meantime: its readings go with it
		}
		for fi, field := range herd.NumericReadingFields {
			v, ok := numericValue(&it.Reading, fi)
			if !ok {
				continue
			}
			for _, res := range [...]int64{RollupMinute, RollupHour} {
				k := rollupKey{tenantID: it.TenantID, field: field, res: res, bucket: floorDiv(it.Reading.TS, res) * res,
					nodeID: d.nodeID, model: d.model, firmware: d.firmware}
				a := accs[k]
				if a == nil {
					a = &rollupAcc{sketch: newSketch()}
					accs[k] = a
				}
				a.add(v)
			}
		}
	}
	if len(accs) == 0 {
		return nil
	}
	keys := make([]rollupKey, 0, len(accs))
	for k := range accs {
		keys = append(keys, k)
	}
	// One order for every writer: two PostgreSQL transactions that lock
	// the same rows lock them in the same order and cannot deadlock.
	slices.SortFunc(keys, compareRollupKeys)
	return tx.mergeRollups(ctx, keys, accs)
}

// floorDiv divides rounding towards minus infinity, so that a bucket
// always starts at or before its readings.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// rollupDevices reads the node, model and firmware of the batch's devices
// that have inserted readings, tenant by tenant.
func (tx *Tx) rollupDevices(ctx context.Context, items []herd.IngestItem, inserted []int) (map[int64]rollupDevice, error) {
	byTenant := map[int64][]int64{}
	seen := map[int64]bool{}
	for _, i := range inserted {
		it := &items[i]
		if !seen[it.DeviceID] {
			seen[it.DeviceID] = true
			byTenant[it.TenantID] = append(byTenant[it.TenantID], it.DeviceID)
		}
	}
	out := make(map[int64]rollupDevice, len(seen))
	per := herd.MaxQueryParams - 1
	for tenant, ids := range byTenant {
		for len(ids) > 0 {
			chunk := ids[:min(per, len(ids))]
			ids = ids[len(chunk):]
			args := make([]any, 0, len(chunk)+1)
			args = append(args, tenant)
			for _, id := range chunk {
				args = append(args, id)
			}
			q := tx.memoText("rollup-devices/"+strconv.Itoa(len(chunk)), func() string {
				return `SELECT id, node_id, model, firmware FROM devices WHERE tenant_id = ? AND id IN (` +
					strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",") + `)`
			})
			rows, err := tx.queryCached(ctx, q, args...)
			if err != nil {
				return nil, fmt.Errorf("read devices for rollups: %w", err)
			}
			for rows.Next() {
				var id int64
				var d rollupDevice
				if err := rows.Scan(&id, &d.nodeID, &d.model, &d.firmware); err != nil {
					rows.Close()
					return nil, fmt.Errorf("read devices for rollups: %w", err)
				}
				out[id] = d
			}
			if err := rows.Close(); err != nil {
				return nil, err
			}
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// rollupKeyColumns are the key columns of reading_rollups, in key order.
const rollupKeyColumns = "tenant_id, field, res, bucket, node_id, model, firmware"

// keyArgs appends a key's values in rollupKeyColumns order.
func keyArgs(args []any, k rollupKey) []any {
	return append(args, k.tenantID, k.field, k.res, k.bucket, k.nodeID, k.model, k.firmware)
}

// mergeRollups merges the accumulators into their stored rows. A sketch
// cannot be merged in SQL, so the rows are read, merged here and written
// back. On PostgreSQL several processes may ingest at once: the missing rows
// are inserted first (empty) and all of them locked with FOR UPDATE, so no
// two transactions merge into the same row from the same old value. SQLite
// has one writer at a time, the transaction itself.
func (tx *Tx) mergeRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupAcc) error {
	const keyCols = 7
	per := herd.MaxQueryParams / (keyCols + 5)
	for len(keys) > 0 {
		chunk := keys[:min(per, len(keys))]
		keys = keys[len(chunk):]
		if tx.db.dialect == Postgres {
			if err := tx.insertEmptyRollups(ctx, chunk); err != nil {
				return err
			}
		}
		if err := tx.readStoredRollups(ctx, chunk, accs); err != nil {
			return err
		}
		if err := tx.writeRollups(ctx, chunk, accs); err != nil {
			return err
		}
	}
	return nil
}

func (tx *Tx) insertEmptyRollups(ctx context.Context, keys []rollupKey) error {
	row := "(?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?)"
	q := tx.memoText("rollup-empty/"+strconv.Itoa(len(keys)), func() string {
		return `INSERT INTO reading_rollups (` + rollupKeyColumns + `, n, sum, min, max, sketch) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") + ` ON CONFLICT DO NOTHING`
	})
	args := make([]any, 0, len(keys)*8)
	for _, k := range keys {
		args = append(keyArgs(args, k), []byte{})
	}
	if _, err := tx.execCached(ctx, q, args...); err != nil {
		return fmt.Errorf("insert rollups: %w", err)
	}
	return nil
}

// readStoredRollups merges the stored rows of keys into their accumulators.
func (tx *Tx) readStoredRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupAcc) error {
	row, lock := "(?, ?, ?, ?, ?, ?, ?)", ""
	if tx.db.dialect == Postgres {
		row, lock = "(?::bigint, ?::text, ?::bigint, ?::bigint, ?::bigint, ?::text, ?::text)", " ORDER BY "+prefixCols("r.", rollupKeyColumns)+" FOR UPDATE OF r"
	}
	q := tx.memoText("rollup-read/"+strconv.Itoa(len(keys)), func() string {
		return `WITH k (` + rollupKeyColumns + `) AS (VALUES ` + strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") + `)
			SELECT ` + prefixCols("r.", rollupKeyColumns) + `, r.n, r.sum, r.min, r.max, r.sketch FROM k JOIN reading_rollups r
			ON r.tenant_id = k.tenant_id AND r.field = k.field AND r.res = k.res AND r.bucket = k.bucket
			AND r.node_id = k.node_id AND r.model = k.model AND r.firmware = k.firmware` + lock
	})
	args := make([]any, 0, len(keys)*7)
	for _, k := range keys {
		args = keyArgs(args, k)
	}
	rows, err := tx.queryCached(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("read rollups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k rollupKey
		var n int64
		var sum, lo, hi float64
		var sk []byte
		if err := rows.Scan(&k.tenantID, &k.field, &k.res, &k.bucket, &k.nodeID, &k.model, &k.firmware, &n, &sum, &lo, &hi, &sk); err != nil {
			return fmt.Errorf("read rollups: %w", err)
		}
		a := accs[k]
		if a == nil || n == 0 {
			continue
		}
		a.merge(n, sum, lo, hi)
		if err := decodeSketchInto(a.sketch, sk); err != nil {
			return err
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	return rows.Err()
}

// writeRollups writes the merged rows.
func (tx *Tx) writeRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupAcc) error {
	row := "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	q := tx.memoText("rollup-write/"+strconv.Itoa(len(keys)), func() string {
		return `INSERT INTO reading_rollups (` + rollupKeyColumns + `, n, sum, min, max, sketch) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") +
			` ON CONFLICT (` + rollupKeyColumns + `) DO UPDATE SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max, sketch = excluded.sketch`
	})
	args := make([]any, 0, len(keys)*12)
	var buf []byte
	for _, k := range keys {
		a := accs[k]
		buf = buf[:0]
		a.sketch.Encode(&buf, true)
		args = append(keyArgs(args, k), a.n, a.sum, a.min, a.max, slices.Clone(buf))
	}
	if _, err := tx.execCached(ctx, q, args...); err != nil {
		return fmt.Errorf("write rollups: %w", err)
	}
	return nil
}

// prefixCols qualifies a comma list of columns.
func prefixCols(prefix, cols string) string {
	parts := strings.Split(cols, ", ")
	for i := range parts {
		parts[i] = prefix + parts[i]
	}
	return strings.Join(parts, ", ")
}

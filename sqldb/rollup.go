package sqldb

import (
	"cmp"
	"context"
	"database/sql/driver"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
	"modernc.org/sqlite"
)

// Rollups: one row per tenant, minute or hour, node, model and firmware,
// holding for each numeric field the count, sum, min, max and a DDSketch of
// the values of the readings committed (migration 0017, rollup_stats.go).
// Ingest keeps them in the transaction that commits the readings, from the
// readings it actually inserted, so a reading a device sends again after a
// lost PUBACK counts once, as it is stored once.

// Rollup resolutions: the bucket widths in milliseconds.
const (
	RollupMinute = int64(60_000)
	RollupHour   = int64(3_600_000)
)

func init() {
	// herd_rollup_merge(a, b) merges two rollup stats inside SQLite, so that
	// a rollup row is merged by one upsert, without reading it back.
	sqlite.MustRegisterDeterministicScalarFunction("herd_rollup_merge", 2, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		a, _ := args[0].([]byte)
		b, _ := args[1].([]byte)
		return mergeStats(a, b)
	})
	// numericValue reads herd.NumericReadingFields through projectionFields
	// by index: the two lists must agree.
	if len(herd.NumericReadingFields) != numericFields {
		panic("sqldb: numericFields is not len(herd.NumericReadingFields)")
	}
	for i, f := range herd.NumericReadingFields {
		if projectionFields[i].col != f {
			panic("sqldb: projectionFields and herd.NumericReadingFields disagree at " + f)
		}
	}
}

// rollupKey is the primary key of a rollup row.
type rollupKey struct {
	tenantID        int64
	res, bucket     int64
	nodeID          int64
	model, firmware string
}

func compareRollupKeys(a, b rollupKey) int {
	return cmp.Or(cmp.Compare(a.tenantID, b.tenantID), cmp.Compare(a.res, b.res),
		cmp.Compare(a.bucket, b.bucket), cmp.Compare(a.nodeID, b.nodeID), cmp.Compare(a.model, b.model), cmp.Compare(a.firmware, b.firmware))
}

// numericValue returns a reading's value of a numeric field, by the field's
// index in herd.NumericReadingFields (which follow projectionFields' order).
// It reads the fields directly: projectionField.value boxes the value, an
// allocation per field of every reading.
func numericValue(r *herd.Reading, i int) (float64, bool) {
	if r.Has&projectionFields[i].bit == 0 {
		return 0, false
	}
	switch i {
	case 0:
		return r.Temperature, true
	case 1:
		return r.Humidity, true
	case 2:
		return r.Pressure, true
	case 3:
		return r.Voltage, true
	case 4:
		return r.Current, true
	case 5:
		return r.Power, true
	case 6:
		return r.Battery, true
	case 7:
		return float64(r.RSSI), true
	case 8:
		return float64(r.UptimeS), true
	case 9:
		return float64(r.ErrorCount), true
	}
	return 0, false
}

// numericMask has the bits of the numeric reading fields.
var numericMask = func() (m herd.ReadingFields) {
	for _, f := range projectionFields[:len(herd.NumericReadingFields)] {
		m |= f.bit
	}
	return m
}()

// rollupDevice is what a rollup keeps of the device a reading came from.
type rollupDevice struct {
	nodeID          int64
	model, firmware string
}

// applyRollups adds the inserted readings to their rollups, under the
// devices' node, model and firmware as the batch's projection updates left
// them (so a firmware reported in the batch counts): it folds them into one
// accumulator per rollup row and merges those into the stored rows.
func (tx *Tx) applyRollups(ctx context.Context, items []herd.IngestItem, inserted []int, devices map[int64]rollupDevice) error {
	if len(inserted) == 0 || tx.db.NoRollups {
		return nil
	}
	accs := map[rollupKey]*rollupStats{}
	for _, i := range inserted {
		it := &items[i]
		d, ok := devices[it.DeviceID]
		if !ok || it.Reading.Has&numericMask == 0 {
			continue // no longer there (its readings go with it), or no number
		}
		for _, res := range [...]int64{RollupMinute, RollupHour} {
			k := rollupKey{tenantID: it.TenantID, res: res, bucket: floorDiv(it.Reading.TS, res) * res,
				nodeID: d.nodeID, model: d.model, firmware: d.firmware}
			st := accs[k]
			if st == nil {
				st = &rollupStats{}
				accs[k] = st
			}
			for fi := range numericFields {
				if v, ok := numericValue(&it.Reading, fi); ok {
					st.field(fi).add(v)
				}
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

// rollupKeyColumns are the key columns of reading_rollups, in key order.
const rollupKeyColumns = "tenant_id, res, bucket, node_id, model, firmware"

// keyArgs appends a key's values in rollupKeyColumns order.
func keyArgs(args []any, k rollupKey) []any {
	return append(args, k.tenantID, k.res, k.bucket, k.nodeID, k.model, k.firmware)
}

// mergeRollups merges the accumulators into their stored rows. On SQLite one
// upsert does it, merging stats with herd_rollup_merge (SQLite has one
// writer at a time, the transaction itself). On PostgreSQL, where a sketch
// cannot be merged in SQL, the rows are read, merged here and written back;
// several processes may ingest at once, so the missing rows are inserted
// first (empty) and all of them locked with FOR UPDATE, and no two
// transactions merge into the same row from the same old value.
func (tx *Tx) mergeRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupStats) error {
	const keyCols = 6
	per := herd.MaxQueryParams / (keyCols + 1)
	for len(keys) > 0 {
		chunk := keys[:min(per, len(keys))]
		keys = keys[len(chunk):]
		if tx.db.dialect == Postgres {
			if err := tx.insertEmptyRollups(ctx, chunk); err != nil {
				return err
			}
			if err := tx.readStoredRollups(ctx, chunk, accs); err != nil {
				return err
			}
		}
		if err := tx.writeRollups(ctx, chunk, accs); err != nil {
			return err
		}
	}
	return nil
}

func (tx *Tx) insertEmptyRollups(ctx context.Context, keys []rollupKey) error {
	row := "(?, ?, ?, ?, ?, ?, ?)"
	q := tx.memoText("rollup-empty/"+strconv.Itoa(len(keys)), func() string {
		return `INSERT INTO reading_rollups (` + rollupKeyColumns + `, stats) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") + ` ON CONFLICT DO NOTHING`
	})
	args := make([]any, 0, len(keys)*7)
	for _, k := range keys {
		args = append(keyArgs(args, k), []byte{})
	}
	if _, err := tx.execCached(ctx, q, args...); err != nil {
		return fmt.Errorf("insert rollups: %w", err)
	}
	return nil
}

// readStoredRollups merges the stored rows of keys into their accumulators,
// locking them (PostgreSQL).
func (tx *Tx) readStoredRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupStats) error {
	row := "(?::bigint, ?::bigint, ?::bigint, ?::bigint, ?::text, ?::text)"
	q := tx.memoText("rollup-read/"+strconv.Itoa(len(keys)), func() string {
		return `WITH k (` + rollupKeyColumns + `) AS (VALUES ` + strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") + `)
			SELECT ` + prefixCols("r.", rollupKeyColumns) + `, r.stats FROM k JOIN reading_rollups r
			ON r.tenant_id = k.tenant_id AND r.res = k.res AND r.bucket = k.bucket
			AND r.node_id = k.node_id AND r.model = k.model AND r.firmware = k.firmware
			ORDER BY ` + prefixCols("r.", rollupKeyColumns) + ` FOR UPDATE OF r`
	})
	args := make([]any, 0, len(keys)*6)
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
		var stats []byte
		if err := rows.Scan(&k.tenantID, &k.res, &k.bucket, &k.nodeID, &k.model, &k.firmware, &stats); err != nil {
			return fmt.Errorf("read rollups: %w", err)
		}
		if st := accs[k]; st != nil {
			if err := st.mergeEncoded(stats); err != nil {
				return err
			}
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	return rows.Err()
}

// writeRollups writes the rows: on PostgreSQL the merged ones, on SQLite
// the batch's own, merged into what is stored by the upsert.
func (tx *Tx) writeRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupStats) error {
	row := "(?, ?, ?, ?, ?, ?, ?)"
	set := `stats = excluded.stats`
	if tx.db.dialect == SQLite {
		set = `stats = herd_rollup_merge(reading_rollups.stats, excluded.stats)`
	}
	q := tx.memoText("rollup-write/"+strconv.Itoa(len(keys)), func() string {
		return `INSERT INTO reading_rollups (` + rollupKeyColumns + `, stats) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") +
			` ON CONFLICT (` + rollupKeyColumns + `) DO UPDATE SET ` + set
	})
	args := make([]any, 0, len(keys)*7)
	for _, k := range keys {
		args = append(keyArgs(args, k), accs[k].encode(nil))
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

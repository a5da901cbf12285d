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

// mergeRollups merges the accumulators into their stored rows, by one
// upsert a chunk of keys. On SQLite it merges stats with herd_rollup_merge
// (SQLite has one writer at a time, the transaction itself). On PostgreSQL,
// where a sketch cannot be merged in SQL, it appends the batch's sections
// to the stored stats (appendRollups): an encoding's sections of one field
// add up when read, so two encodings merge by concatenation, and the row
// the upsert locks is changed from its latest committed value, whichever
// transaction wrote that. Several processes may ingest at once: the keys
// come sorted, the upsert takes its rows in that order, and two
// transactions cannot deadlock.
func (tx *Tx) mergeRollups(ctx context.Context, keys []rollupKey, accs map[rollupKey]*rollupStats) error {
	const keyCols = 6
	per := herd.MaxQueryParams / (keyCols + 1)
	var big []storedRollup
	for len(keys) > 0 {
		chunk := keys[:min(per, len(keys))]
		keys = keys[len(chunk):]
		stats := make([][]byte, len(chunk))
		for i, k := range chunk {
			stats[i] = accs[k].encode(nil)
		}
		if tx.db.dialect == SQLite {
			if err := tx.writeRollups(ctx, chunk, stats, `herd_rollup_merge(reading_rollups.stats, excluded.stats)`); err != nil {
				return err
			}
			continue
		}
		var err error
		if big, err = tx.appendRollups(ctx, chunk, stats, big); err != nil {
			return err
		}
	}
	return tx.compactRollups(ctx, big)
}

// A PostgreSQL rollup row is re-encoded, its sections merged into one a
// field, when it holds more than rollupCompactSections sections of a field
// or more than rollupCompactBytes bytes. Each section costs an aggregate a
// sketch decode (about 0.4 µs): the fleet aggregate of bench/README.md
// merges its 4,800 rows in 3.4 ms when they are compacted, in 11 ms when
// every row holds four sections of the field (the most it can), and in
// 14 ms with the rows a 1,000-byte bound alone leaves (rows of one field
// and small batches hold many small sections). So the sections bound
// what a read pays; the bytes bound rows of many fields, keeping them under
// PostgreSQL's TOAST threshold (about 2 KB), past which every append would
// compress the value. The re-encoding costs a batch one more statement
// (the rows of a batch compact in one) and a decode and encode of those
// rows; the upsert returns their stats, so they are not read again. A row
// whose compacted stats pass the bytes (many fields of wide ranges) is
// re-encoded every batch: the read-merge-write this replaced, less a
// statement. (DB.rollupCompactBytes overrides the bytes for tests.)
const (
	rollupCompactSections = 4
	rollupCompactBytes    = 1000
)

// rollupCandidateBytes: a row of at most this many bytes passes neither
// bound (a section is at least 27 bytes), so the upsert does not return
// it.
const rollupCandidateBytes = (rollupCompactSections + 1) * 27

// storedRollup is a row's key and stats as an upsert left them.
type storedRollup struct {
	key   rollupKey
	stats []byte
}

// appendRollups appends stats, the batch's encodings of keys, to their
// stored rows (inserting the missing ones), and appends to big the rows
// it left past a compaction bound, with their stats.
func (tx *Tx) appendRollups(ctx context.Context, keys []rollupKey, stats [][]byte, big []storedRollup) ([]storedRollup, error) {
	limit := tx.db.rollupCompactBytes
	if limit == 0 {
		limit = rollupCompactBytes
	}
	candidate := min(limit, rollupCandidateBytes)
	row := "(?, ?, ?, ?, ?, ?, ?)"
	// The stored stats keep their version byte and lose the batch's. A
	// row with no stats (none is written so; a damaged one) takes the
	// batch's whole, version byte and all.
	q := tx.memoText("rollup-append/"+strconv.Itoa(candidate)+"/"+strconv.Itoa(len(keys)), func() string {
		return `WITH u AS (INSERT INTO reading_rollups (` + rollupKeyColumns + `, stats) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") +
			` ON CONFLICT (` + rollupKeyColumns + `) DO UPDATE SET stats = CASE WHEN octet_length(reading_rollups.stats) > 0
			THEN reading_rollups.stats || substring(excluded.stats from 2) ELSE excluded.stats END
			RETURNING ` + rollupKeyColumns + `, stats)
			SELECT ` + rollupKeyColumns + `, stats FROM u WHERE octet_length(stats) > ` + strconv.Itoa(candidate)
	})
	args := make([]any, 0, len(keys)*7)
	for i, k := range keys {
		args = append(keyArgs(args, k), stats[i])
	}
	rows, err := tx.queryCached(ctx, q, args...)
	if err != nil {
		return big, fmt.Errorf("append rollups: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r storedRollup
		k := &r.key
		if err := rows.Scan(&k.tenantID, &k.res, &k.bucket, &k.nodeID, &k.model, &k.firmware, &r.stats); err != nil {
			return big, fmt.Errorf("append rollups: %w", err)
		}
		if len(r.stats) <= limit {
			n, err := maxFieldSections(r.stats)
			if err != nil {
				return big, fmt.Errorf("append rollups: %w", err)
			}
			if n <= rollupCompactSections {
				continue
			}
		}
		big = append(big, r)
	}
	if err := rows.Close(); err != nil {
		return big, fmt.Errorf("append rollups: %w", err)
	}
	if err := rows.Err(); err != nil {
		return big, fmt.Errorf("append rollups: %w", err)
	}
	return big, nil
}

// compactRollups re-encodes rows the batch left past a bound, their
// sections merged into one a field. The upsert that returned them holds
// their locks until the commit, so no other transaction has changed them
// since.
func (tx *Tx) compactRollups(ctx context.Context, big []storedRollup) error {
	if len(big) == 0 {
		return nil
	}
	slices.SortFunc(big, func(a, b storedRollup) int { return compareRollupKeys(a.key, b.key) })
	const keyCols = 6
	per := herd.MaxQueryParams / (keyCols + 1)
	for len(big) > 0 {
		chunk := big[:min(per, len(big))]
		big = big[len(chunk):]
		keys := make([]rollupKey, len(chunk))
		stats := make([][]byte, len(chunk))
		for i, r := range chunk {
			merged, err := mergeStats(r.stats)
			if err != nil {
				return fmt.Errorf("compact rollups: %w", err)
			}
			keys[i], stats[i] = r.key, merged
		}
		if err := tx.writeRollups(ctx, keys, stats, `excluded.stats`); err != nil {
			return err
		}
	}
	return nil
}

// writeRollups upserts the rows of keys with stats, the stored stats
// replaced by set (an expression of reading_rollups.stats and
// excluded.stats).
func (tx *Tx) writeRollups(ctx context.Context, keys []rollupKey, stats [][]byte, set string) error {
	row := "(?, ?, ?, ?, ?, ?, ?)"
	q := tx.memoText("rollup-write/"+set+"/"+strconv.Itoa(len(keys)), func() string {
		return `INSERT INTO reading_rollups (` + rollupKeyColumns + `, stats) VALUES ` +
			strings.TrimSuffix(strings.Repeat(row+",", len(keys)), ",") +
			` ON CONFLICT (` + rollupKeyColumns + `) DO UPDATE SET stats = ` + set
	})
	args := make([]any, 0, len(keys)*7)
	for i, k := range keys {
		args = append(keyArgs(args, k), stats[i])
	}
	if _, err := tx.execCached(ctx, q, args...); err != nil {
		return fmt.Errorf("write rollups: %w", err)
	}
	return nil
}

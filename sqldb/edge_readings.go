package sqldb

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// The history's side of ingest: the readings inserted, and what the
// projection's update says of their devices for the rollups.

// insertReadings writes the batch's readings into the history. A reading
// already there (same device and ts: a retry after a lost PUBACK) is kept
// as first stored. It returns the indexes of the items it inserted, which
// the rollups count: a reading stored once is counted once.
func (tx *Tx) insertReadings(ctx context.Context, items []herd.IngestItem) (inserted []int, err error) {
	cols := len(readingColumns)
	per := herd.MaxQueryParams / cols
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	args := make([]any, 0, per*cols)
	var pending []int // the items of the statement being built
	type rowKey struct{ device, ts int64 }
	write := func() error {
		if len(pending) == 0 {
			return nil
		}
		rows := len(pending)
		q := tx.memoText("insert/"+strconv.Itoa(rows), func() string {
			return `INSERT INTO readings (` + strings.Join(readingColumns, ", ") + `) VALUES ` +
				strings.TrimSuffix(strings.Repeat(row+",", rows), ",") + ` ON CONFLICT (device_id, ts) DO NOTHING RETURNING device_id, ts`
		})
		rs, err := tx.queryCached(ctx, q, args...)
		if err != nil {
			return err
		}
		// Of two items with the same device and ts in one statement, the
		// first is the one stored.
		first := make(map[rowKey]int, rows)
		for _, i := range pending {
			k := rowKey{items[i].DeviceID, items[i].Reading.TS}
			if _, dup := first[k]; !dup {
				first[k] = i
			}
		}
		for rs.Next() {
			var k rowKey
			if err := rs.Scan(&k.device, &k.ts); err != nil {
				rs.Close()
				return err
			}
			if i, ok := first[k]; ok {
				inserted = append(inserted, i)
			}
		}
		if err := rs.Close(); err != nil {
			return err
		}
		args, pending = args[:0], pending[:0]
		return rs.Err()
	}
	for i := range items {
		if items[i].Kind != herd.IngestReading {
			continue
		}
		args = append(args, readingArgs(&items[i])...)
		if pending = append(pending, i); len(pending) == per {
			if err := write(); err != nil {
				return nil, fmt.Errorf("insert readings: %w", err)
			}
		}
	}
	if err := write(); err != nil {
		return nil, fmt.Errorf("insert readings: %w", err)
	}
	return inserted, nil
}

// readFoldedDevices runs a fold update and records what it returns.
func (tx *Tx) readFoldedDevices(ctx context.Context, q string, args []any, seen map[int64]rollupDevice) error {
	rows, err := tx.queryCached(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var d rollupDevice
		if err := rows.Scan(&id, &d.nodeID, &d.model, &d.firmware); err != nil {
			return err
		}
		seen[id] = d
	}
	if err := rows.Close(); err != nil {
		return err
	}
	return rows.Err()
}

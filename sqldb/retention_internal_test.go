package sqldb

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestRetention_SQLiteChunkTiming measures how long one chunked delete of
// SQLite's retention holds the writer, at a few chunk sizes, on a history
// of a realistic shape: 1,000 devices reporting every 10 s, rows in arrival
// order, both indexes, synchronous=FULL (as herd runs). It is how
// SQLiteDeleteChunk was chosen; it runs only with HERD_MEASURE_RETENTION=1
// (figures in docs/history.md, "Retention").
func TestRetention_SQLiteChunkTiming(t *testing.T) {
	if os.Getenv("HERD_MEASURE_RETENTION") == "" {
		t.Skip("a measurement: set HERD_MEASURE_RETENTION=1 to run it")
	}
	db := NewDB(filepath.Join(t.TempDir(), "herd.db"))
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	const devices, perDevice = 1000, 300 // 300,000 rows, 50 minutes
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	tx, err := db.wdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO readings (device_id, ts, tenant_id, received_at, temperature, battery, rssi, status) VALUES (?, ?, 1, ?, ?, ?, ?, 'ok')`)
	if err != nil {
		t.Fatal(err)
	}
	for i := range perDevice {
		for d := range devices {
			ts := t0 + int64(i)*10_000 + int64(d)
			if _, err := st.ExecContext(ctx, int64(d+1), ts, ts+5, 20.5+float64(d%7), 80.0, -60-int64(d%30)); err != nil {
				t.Fatal(err)
			}
		}
	}
	st.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// The floor: one small write transaction, as ingest's commit pays it
	// (the WAL's sync at commit).
	var floor []time.Duration
	for i := range 8 {
		start := time.Now()
		if _, err := db.wdb.ExecContext(ctx, `INSERT INTO readings (device_id, ts, tenant_id, received_at) VALUES (?, ?, 1, 0)`, int64(devices+1), t0+int64(perDevice+i)*10_000); err != nil {
			t.Fatal(err)
		}
		floor = append(floor, time.Since(start))
	}
	slices.Sort(floor)
	t.Logf("one-row commit: median %v, max %v", floor[len(floor)/2].Round(10*time.Microsecond), floor[len(floor)-1].Round(10*time.Microsecond))
	start := time.Now()
	if err := db.refreshRetentionMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("metrics refresh (dbstat over %d rows): %v", devices*perDevice, time.Since(start).Round(10*time.Microsecond))
	const q = `DELETE FROM readings WHERE id IN (SELECT id FROM readings WHERE ts < ? ORDER BY ts LIMIT ?)`
	for _, chunk := range []int{100, 200, 500, 1000, 2000, 5000} {
		var took []time.Duration
		for range 16 {
			start := time.Now()
			res, err := db.wdb.ExecContext(ctx, q, t0+int64(perDevice)*10_000, chunk)
			took = append(took, time.Since(start))
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := res.RowsAffected(); n != int64(chunk) {
				t.Fatalf("chunk of %d deleted %d", chunk, n)
			}
		}
		slices.Sort(took)
		t.Logf("chunk %5d rows: median %v, max %v (%.1f µs/row)", chunk, took[len(took)/2].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond), float64(took[len(took)/2].Microseconds())/float64(chunk))
	}
}

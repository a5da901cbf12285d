package sqldb_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
	"github.com/prometheus/client_golang/prometheus"
)

const retDay = 24 * time.Hour

// retKey is one reading of the history.
type retKey struct{ device, ts int64 }

// retHeld returns every reading the history holds.
func retHeld(tb testing.TB, db *sqldb.DB) map[retKey]bool {
	tb.Helper()
	rows, err := db.SQL().Query(`SELECT device_id, ts FROM readings`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	held := map[retKey]bool{}
	for rows.Next() {
		var k retKey
		if err := rows.Scan(&k.device, &k.ts); err != nil {
			tb.Fatal(err)
		}
		held[k] = true
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return held
}

// retPartitions returns the partitions of readings on PostgreSQL, by name.
func retPartitions(tb testing.TB, db *sqldb.DB) []string {
	tb.Helper()
	rows, err := db.SQL().Query(`SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass ORDER BY 1`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			tb.Fatal(err)
		}
		names = append(names, n)
	}
	return names
}

// retPartitionOf names the partition that holds a reading.
func retPartitionOf(tb testing.TB, db *sqldb.DB, device, ts int64) string {
	tb.Helper()
	var name string
	if err := db.SQL().QueryRow(`SELECT tableoid::regclass::text FROM readings WHERE device_id = $1 AND ts = $2`, device, ts).Scan(&name); err != nil {
		tb.Fatalf("partition of reading %d@%d: %v", device, ts, err)
	}
	return name
}

func retDayName(t time.Time) string { return "readings_p" + t.UTC().Format("20060102") }

// retGauge reads one of the store's unlabelled gauges.
func retGauge(tb testing.TB, db *sqldb.DB, name string) float64 {
	tb.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(db.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	tb.Fatalf("metric %s not found", name)
	return 0
}

// TestPruneReadings: readings past the retention go (on PostgreSQL with
// their whole day partitions, a day that straddles the cut waiting for the
// next day; from the legacy and default partitions row by row), recent
// ones stay; minute rollups go at the readings retention and hourly ones
// at the rollup retention. The metrics tell what is left.
func TestPruneReadings(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		f := newFixture(db)
		tn := f.mustTenant(t, "acme")
		devs := f.mustDevices(t, f.mustNode(t, tn.RootNodeID, "site").ID, 3)
		now := time.Date(2030, 3, 14, 12, 0, 0, 0, time.UTC)
		const retention, rollupRetention = 30 * retDay, 400 * retDay
		cut := now.Add(-retention)
		// On PostgreSQL partitions exist for the days the manager ran on
		// and the three after; the other readings land in the default, or
		// in the legacy partition (before the migration's tomorrow).
		ranOn := []time.Time{now.Add(-40 * retDay), now.Add(-31 * retDay), now.Add(-2 * retDay), now}
		partitioned := map[string]bool{}
		for _, at := range ranOn {
			db.Now = func() time.Time { return at }
			if err := db.EnsurePartitions(ctx); err != nil {
				t.Fatal(err)
			}
			for d := range 4 {
				partitioned[retDayName(at.Add(time.Duration(d)*retDay))] = true
			}
		}
		db.Now = func() time.Time { return now }
		var stamps []time.Time
		for _, age := range []time.Duration{5 * 365 * retDay, 45 * retDay, 40 * retDay, 36 * retDay, 31 * retDay, retention + time.Millisecond, retention, retention - time.Millisecond, 29 * retDay, 2 * retDay, time.Hour, 0} {
			stamps = append(stamps, now.Add(-age))
		}
		want := map[retKey]bool{}
		var items []herd.IngestItem
		for i, ts := range stamps {
			for _, d := range devs {
				ms := ts.UnixMilli()
				items = append(items, readingItem(d, now.UnixMilli(), herd.Reading{TS: ms, Has: herd.ReadingTemperature, Temperature: float64(i)}))
				kept := !ts.Before(cut)
				if db.Dialect() == sqldb.Postgres {
					// A day partition goes whole, once all of it is past.
					dayEnd := time.UnixMilli(ms).UTC().Truncate(retDay).Add(retDay)
					kept = kept || partitioned[retDayName(ts)] && dayEnd.After(cut)
				}
				if kept {
					want[retKey{d.ID, ms}] = true
				}
			}
		}
		mustIngest(t, db, items...)
		refreshAll(t, db) // per-device rollups of every bucket the refresh has reached
		if db.Dialect() == sqldb.Postgres {
			// The readings of days without a partition went somewhere.
			if p := retPartitionOf(t, db, devs[0].ID, now.Add(-36*retDay).UnixMilli()); p != "readings_default" {
				t.Fatalf("a reading of a day without a partition is in %s", p)
			}
			if p := retPartitionOf(t, db, devs[0].ID, now.Add(-5*365*retDay).UnixMilli()); p != "readings_legacy" {
				t.Fatalf("a reading of 2025 is in %s", p)
			}
		}

		// Rollups on both sides of both cuts.
		type rollup struct{ res, bucket int64 }
		hourCut := now.Add(-rollupRetention).UnixMilli()
		rollups := []rollup{
			{60000, cut.UnixMilli() - 60000}, {60000, cut.UnixMilli()}, {60000, now.UnixMilli()},
			{3600000, hourCut - 3600000}, {3600000, hourCut}, {3600000, cut.UnixMilli() - 3600000}, {3600000, now.Truncate(time.Hour).UnixMilli()},
		}
		wantRollups := map[rollup]bool{}
		for i, r := range rollups {
			for _, node := range []int64{1 << 40, 1<<40 + 1} { // no real node: ingest made rollups of those
				if _, err := db.SQL().Exec(db.Rebind(`INSERT INTO reading_rollups (tenant_id, res, bucket, node_id, model, firmware, stats) VALUES (?, ?, ?, ?, '', '', ?)`),
					tn.ID, r.res, r.bucket, node, []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			if r.res == 60000 && r.bucket >= cut.UnixMilli() || r.res == 3600000 && r.bucket >= hourCut {
				wantRollups[r] = true
			}
		}

		if err := db.PruneReadings(ctx, retention, rollupRetention); err != nil {
			t.Fatal(err)
		}
		held := retHeld(t, db)
		if !maps.Equal(held, want) {
			for k := range held {
				if !want[k] {
					t.Errorf("reading of device %d at %s kept past the retention", k.device, time.UnixMilli(k.ts).UTC())
				}
			}
			for k := range want {
				if !held[k] {
					t.Errorf("reading of device %d at %s pruned", k.device, time.UnixMilli(k.ts).UTC())
				}
			}
			t.FailNow()
		}
		gotRollups := map[rollup]bool{}
		// The test's own rows (the readings above made real ones too).
		rows, err := db.SQL().Query(db.Rebind(`SELECT res, bucket, COUNT(*) FROM reading_rollups WHERE node_id >= ? GROUP BY res, bucket`), int64(1<<40))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var r rollup
			var n int
			if err := rows.Scan(&r.res, &r.bucket, &n); err != nil {
				t.Fatal(err)
			}
			if n != 2 {
				t.Errorf("rollup bucket %v: %d rows, want both nodes'", r, n)
			}
			gotRollups[r] = true
		}
		rows.Close()
		if !maps.Equal(gotRollups, wantRollups) {
			t.Fatalf("rollups after pruning: %v, want %v", slices.Collect(maps.Keys(gotRollups)), slices.Collect(maps.Keys(wantRollups)))
		}

		// The per-device rollups go with the readings: those of the
		// readings kept are there, no other.
		span := now.Add(-sqldb.GraceDeviceRollups).UnixMilli() / sqldb.DeviceRollupBucket * sqldb.DeviceRollupBucket
		wantDev := map[retKey]bool{}
		for k := range want {
			if b := k.ts / sqldb.DeviceRollupBucket * sqldb.DeviceRollupBucket; b+sqldb.DeviceRollupBucket <= span {
				wantDev[retKey{k.device, b}] = true
			}
		}
		gotDev := map[retKey]bool{}
		rows, err = db.SQL().Query(`SELECT device_id, bucket FROM device_rollups`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k retKey
			if err := rows.Scan(&k.device, &k.ts); err != nil {
				t.Fatal(err)
			}
			gotDev[k] = true
		}
		rows.Close()
		if !maps.Equal(gotDev, wantDev) {
			t.Fatalf("per-device rollups after pruning: %d rows, want %d (%v vs %v)", len(gotDev), len(wantDev), gotDev, wantDev)
		}

		var oldest int64 = 1 << 62
		for k := range want {
			oldest = min(oldest, k.ts)
		}
		if got := retGauge(t, db, "herd_store_readings_oldest_timestamp_seconds"); got != float64(oldest)/1000 {
			t.Errorf("oldest reading metric %v, want %v", got, float64(oldest)/1000)
		}
		if got := retGauge(t, db, "herd_store_readings_bytes"); got <= 0 {
			t.Errorf("readings bytes metric %v", got)
		}
		if db.Dialect() == sqldb.Postgres {
			names := retPartitions(t, db)
			for _, n := range names {
				if n < retDayName(cut) && n != "readings_default" {
					t.Errorf("partition %s (or legacy) past the retention not dropped", n)
				}
			}
			if !slices.Contains(names, retDayName(cut)) || !slices.Contains(names, retDayName(now.Add(3*retDay))) || !slices.Contains(names, "readings_default") {
				t.Errorf("partitions after pruning: %v", names)
			}
			if got := retGauge(t, db, "herd_store_readings_partitions"); got != float64(len(names)) {
				t.Errorf("partitions metric %v, want %d", got, len(names))
			}
		} else if got := retGauge(t, db, "herd_store_readings_rows"); got < float64(len(want)) {
			t.Errorf("rows metric %v, want at least the %d readings held", got, len(want))
		}

		// A second run finds nothing more to do.
		if err := db.PruneReadings(ctx, retention, rollupRetention); err != nil {
			t.Fatal(err)
		}
		if held := retHeld(t, db); !maps.Equal(held, want) {
			t.Fatalf("a second run changed the history: %d readings, want %d", len(held), len(want))
		}
	})
}

// TestPruneReadings_IngestGoesOn: ingest commits while the retention
// deletes thousands of old readings (in many chunks on SQLite, a dropped
// partition and the default's rows on PostgreSQL), and every reading it
// acknowledged inside the retention is there afterwards, the old ones gone.
func TestPruneReadings_IngestGoesOn(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		f := newFixture(db)
		tn := f.mustTenant(t, "acme")
		devs := f.mustDevices(t, f.mustNode(t, tn.RootNodeID, "site").ID, 50)
		now := time.Date(2030, 3, 14, 12, 0, 0, 0, time.UTC)
		old := now.Add(-40 * retDay)
		db.Now = func() time.Time { return old }
		if err := db.EnsurePartitions(ctx); err != nil { // the old day's partition, to drop
			t.Fatal(err)
		}
		db.Now = func() time.Time { return now }
		if err := db.EnsurePartitions(ctx); err != nil {
			t.Fatal(err)
		}
		// 10,000 old readings: half on the old day's partition, half on a
		// day without one (the default on PostgreSQL).
		var items []herd.IngestItem
		for i := range 100 {
			for _, d := range devs {
				at := old.Add(time.Duration(i) * 10 * time.Second)
				if i%2 == 1 {
					at = at.Add(-5 * retDay)
				}
				items = append(items, readingItem(d, now.UnixMilli(), herd.Reading{TS: at.UnixMilli(), Has: herd.ReadingBattery, Battery: 50}))
			}
		}
		mustIngest(t, db, items...)

		ingest := sqldb.NewIngestService(db)
		var (
			mu       sync.Mutex
			acked    []retKey
			during   int // batches that began and committed inside the prune
			took     []time.Duration
			before   []time.Duration // batches committed before the prune began
			pruning  bool
			stop     = make(chan struct{})
			done     = make(chan error, 1)
			pruneErr error
		)
		started := make(chan struct{})
		go func() {
			var err error
			defer func() { done <- err }()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				began := pruning
				mu.Unlock()
				var batch []herd.IngestItem
				var keys []retKey
				for j, d := range devs[:10] {
					ts := now.Add(-time.Hour).UnixMilli() + int64(k)*1000 + int64(j)
					batch = append(batch, readingItem(d, now.UnixMilli(), herd.Reading{TS: ts, Has: herd.ReadingBattery, Battery: 60}))
					keys = append(keys, retKey{d.ID, ts})
				}
				start := time.Now()
				if err = ingest.Ingest(ctx, batch); err != nil {
					err = fmt.Errorf("ingest during pruning: %w", err)
					return
				}
				mu.Lock()
				acked = append(acked, keys...)
				if began && pruning {
					during++
					took = append(took, time.Since(start))
				} else if !began {
					before = append(before, time.Since(start))
				}
				mu.Unlock()
				if k == 30 {
					close(started)
				}
			}
		}()
		<-started
		mu.Lock()
		pruning = true
		mu.Unlock()
		pruneErr = db.PruneReadings(ctx, 30*retDay, 400*retDay)
		mu.Lock()
		pruning = false
		mu.Unlock()
		close(stop)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if pruneErr != nil {
			t.Fatal(pruneErr)
		}
		held := retHeld(t, db)
		for _, k := range acked {
			if !held[k] {
				t.Fatalf("acknowledged reading of device %d at %d missing after pruning", k.device, k.ts)
			}
		}
		if len(held) != len(acked) {
			t.Fatalf("%d readings held after pruning, want the %d acknowledged during it (the old ones gone)", len(held), len(acked))
		}
		if during == 0 {
			t.Fatal("no ingest batch committed while pruning ran: the test proved nothing")
		}
		slices.Sort(took)
		slices.Sort(before)
		t.Logf("%d ingest batches committed inside the prune: commit median %v, max %v; before it: median %v, max %v",
			during, took[len(took)/2].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond), before[len(before)/2].Round(10*time.Microsecond), before[len(before)-1].Round(10*time.Microsecond))
	})
}

package sqldb_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// refreshAll runs the per-device rollups' refresh until it has nothing left.
func refreshAll(t *testing.T, db *sqldb.DB) {
	t.Helper()
	for i := 0; ; i++ {
		more, err := db.RefreshDeviceRollups(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			return
		}
		if i > 100000 {
			t.Fatal("the refresh never ends")
		}
	}
}

// fixedClock is a DB clock tests move.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fixedClock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fixedClock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// TestDeviceHistory_Rollups: a stepped read from the per-device rollups
// equals the brute-force answer over the readings: aligned and unaligned
// steps, every aggregate, after late readings (stale buckets, read from the
// readings until the refresh computes them again), readings older than the
// span (the refresh goes back to them) and newer ones (it follows the
// clock).
func TestDeviceHistory_Rollups(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		clock := &fixedClock{t: istMidnight.Add(10 * 24 * time.Hour)}
		db.Now = clock.now
		var rollupReads atomic.Int64
		db.QueryHook = func(q string, _ []any) {
			if strings.Contains(q, "FROM device_rollups WHERE") {
				rollupReads.Add(1)
			}
		}
		e := newHistoryEnv(t, db)
		day := 24 * time.Hour
		o := e.origin
		half := o.Add(4*day + day/2)
		type stepCase struct {
			from, to time.Time
			step     time.Duration
			fields   []string
			rollups  bool // whether the rollups answer it
		}
		cases := []stepCase{
			{o, half, day, nil, true},
			{o, half, time.Hour, []string{"temperature", "rssi"}, true},
			{o.Add(-day), o.Add(5 * day), 15 * time.Minute, []string{"battery", "uptime_s"}, true},
			// An hour from an odd time: three of each step's four quarters.
			{o.Add(7*time.Minute + 13*time.Second), half, time.Hour, []string{"temperature", "error_count"}, true},
			{o.Add(time.Hour + 7*time.Minute), half.Add(-time.Millisecond), 3 * time.Hour, nil, true},
			// Too little served, or an extra: the readings answer.
			{o.Add(-day), o.Add(5 * day), 7 * time.Minute, []string{"battery"}, false},
			{o, half, time.Hour, []string{"temperature", "extra.co2"}, false},
		}
		check := func(t *testing.T, what string) {
			t.Helper()
			for _, tc := range cases {
				for _, agg := range []string{herd.AggAvg, herd.AggMin, herd.AggMax, herd.AggLast, herd.AggCount, herd.AggSum} {
					q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: tc.from, To: tc.to, Step: tc.step, Agg: agg, Fields: tc.fields}
					before := rollupReads.Load()
					got, err := e.hist.DeviceSeries(e.viewer, q)
					if err != nil {
						t.Fatal(err)
					}
					name := fmt.Sprintf("%s: %s..%s step %s agg %s fields %v", what, tc.from, tc.to, tc.step, agg, tc.fields)
					sameSeries(t, name, got.Series, oracleSeries(e.readings, q))
					if used := rollupReads.Load() > before; used != tc.rollups {
						t.Errorf("%s: rollups read %v, want %v", name, used, tc.rollups)
					}
				}
			}
		}
		// Before the first refresh there are no rollups to read.
		q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: o, To: half, Step: day, Agg: herd.AggAvg}
		if _, err := e.hist.DeviceSeries(e.viewer, q); err != nil || rollupReads.Load() != 0 {
			t.Fatalf("before any refresh: %v, %d rollup reads", err, rollupReads.Load())
		}
		refreshAll(t, db)
		t.Run("Refreshed", func(t *testing.T) { check(t, "refreshed") })

		ingest := sqldb.NewIngestService(db)
		add := func(t *testing.T, ts int64, at time.Time) {
			t.Helper()
			r := randomReading(rand.New(rand.NewPCG(uint64(ts), 7)), ts)
			if err := ingest.Ingest(context.Background(), []herd.IngestItem{{Kind: herd.IngestReading, DeviceID: e.dev.ID, TenantID: e.dev.TenantID, At: at.UnixMilli(), Reading: r}}); err != nil {
				t.Fatal(err)
			}
			e.readings = append(e.readings, storedReading{r: r, recv: at.UnixMilli()})
			// The oracle takes them in any order.
		}
		t.Run("Late", func(t *testing.T) {
			// Readings in buckets the refresh has computed, and one sent
			// again (stored once: it changes nothing).
			add(t, o.Add(time.Hour+7*time.Second).UnixMilli(), clock.now())
			add(t, o.Add(3*day+20*time.Minute+1).UnixMilli(), clock.now())
			dup := e.readings[10]
			again := dup.r
			again.Temperature += 1000
			if err := ingest.Ingest(context.Background(), []herd.IngestItem{{Kind: herd.IngestReading, DeviceID: e.dev.ID, TenantID: e.dev.TenantID, At: dup.recv, Reading: again}}); err != nil {
				t.Fatal(err)
			}
			check(t, "late, stale")
			refreshAll(t, db)
			check(t, "late, refreshed")
		})
		t.Run("Older", func(t *testing.T) {
			// Older than the span: marked, and computed as the refresh goes
			// back to it.
			old := o.Add(-20 * day)
			add(t, old.UnixMilli(), clock.now())
			refreshAll(t, db)
			c := stepCase{old, old.Add(day), time.Hour, []string{"temperature"}, true}
			cases = append(cases, c)
			check(t, "older")
		})
		t.Run("Newer", func(t *testing.T) {
			// The clock moves on; readings of the last hours are current
			// (not marked), and the refresh follows them.
			now := clock.now().Add(3 * time.Hour)
			clock.set(now)
			base := now.Add(-2 * time.Hour).Truncate(time.Hour)
			for i := range 40 {
				ts := base.Add(time.Duration(i) * 3 * time.Minute)
				add(t, ts.UnixMilli(), ts.Add(time.Second))
			}
			// Before the refresh the span stops three hours back: the
			// readings answer.
			cases = append(cases, stepCase{base, now, 30 * time.Minute, nil, false})
			check(t, "newer, before the refresh")
			refreshAll(t, db)
			cases[len(cases)-1].rollups = true
			check(t, "newer")
		})
	})
}

// TestIngest_RefusesALongTransaction: a batch whose transaction took more
// than MaxIngestDuration is not committed (the refresh's argument that it
// misses nothing needs the bound), and nothing of it is stored.
func TestIngest_RefusesALongTransaction(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		tn := f.mustTenant(t, "slow")
		root := &herd.Node{TenantID: tn.ID, Kind: "region", Name: "r"}
		if err := f.Nodes.CreateNode(f.super, root); err != nil {
			t.Fatal(err)
		}
		site := f.mustNode(t, root.ID, "site")
		dev := f.mustDevices(t, site.ID, 1)[0]
		start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		clock := &fixedClock{t: start}
		db.Now = clock.now
		db.QueryHook = func(q string, _ []any) {
			if strings.HasPrefix(q, "INSERT INTO readings") {
				clock.set(start.Add(sqldb.MaxIngestDuration + time.Second))
			}
		}
		r := herd.Reading{TS: start.UnixMilli(), Has: herd.ReadingTemperature, Temperature: 21}
		err := sqldb.NewIngestService(db).Ingest(context.Background(), []herd.IngestItem{{Kind: herd.IngestReading, DeviceID: dev.ID, TenantID: dev.TenantID, At: start.UnixMilli(), Reading: r}})
		if err == nil || !strings.Contains(err.Error(), "not committed") {
			t.Fatalf("ingest: %v, want a refusal", err)
		}
		db.QueryHook = nil
		p, err := sqldb.NewHistoryService(db).DeviceReadings(f.super, herd.ReadingsQuery{DeviceID: dev.ID, From: start.Add(-time.Hour), To: start.Add(time.Hour)})
		if err != nil || len(p.Items) != 0 {
			t.Fatalf("readings after the refusal: %v, %d", err, len(p.Items))
		}
	})
}

// TestDeviceRollups_ConcurrentLateReadings: late readings committed while
// the refresh computes their buckets again all end up in the rollups: once
// both have stopped and the refresh has caught up, every bucket read from
// the rollups alone equals the brute-force answer over the readings.
func TestDeviceRollups_ConcurrentLateReadings(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		tn := f.mustTenant(t, "late")
		root := &herd.Node{TenantID: tn.ID, Kind: "region", Name: "r"}
		if err := f.Nodes.CreateNode(f.super, root); err != nil {
			t.Fatal(err)
		}
		devs := f.mustDevices(t, f.mustNode(t, root.ID, "site").ID, 3)
		now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		db.Now = func() time.Time { return now }
		from, to := now.Add(-4*time.Hour), now.Add(-time.Hour)
		rng := rand.New(rand.NewPCG(19, 3))
		readings := map[int64][]storedReading{}
		seen := map[[2]int64]bool{}
		batch := func(n int) []herd.IngestItem {
			var items []herd.IngestItem
			for range n {
				d := devs[rng.IntN(len(devs))]
				ts := from.UnixMilli() + rng.Int64N(to.Sub(from).Milliseconds())
				if seen[[2]int64{d.ID, ts}] {
					continue
				}
				seen[[2]int64{d.ID, ts}] = true
				r := randomReading(rng, ts)
				readings[d.ID] = append(readings[d.ID], storedReading{r: r, recv: now.UnixMilli()})
				items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: now.UnixMilli(), Reading: r})
			}
			return items
		}
		ingest := sqldb.NewIngestService(db)
		if err := ingest.Ingest(context.Background(), batch(300)); err != nil {
			t.Fatal(err)
		}
		refreshAll(t, db)
		// Batches made up front: the generator is not safe for two
		// goroutines.
		var batches [][]herd.IngestItem
		for range 150 {
			batches = append(batches, batch(8))
		}
		// The refresher stops between steps when told (not by cancelling
		// one, whose connection, and so its lock, PostgreSQL would drop
		// later).
		var stop atomic.Bool
		var wg sync.WaitGroup
		refreshErr := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := db.RefreshDeviceRollups(context.Background()); err != nil {
					refreshErr <- err
					return
				}
			}
		}()
		for _, b := range batches {
			if err := ingest.Ingest(context.Background(), b); err != nil {
				t.Fatal(err)
			}
		}
		stop.Store(true)
		wg.Wait()
		select {
		case err := <-refreshErr:
			t.Fatal(err)
		default:
		}
		refreshAll(t, db)
		var marks int
		if err := db.SQL().QueryRow(`SELECT COUNT(*) FROM device_rollup_stale`).Scan(&marks); err != nil || marks != 0 {
			t.Fatalf("%d marks left after the refresh caught up (%v)", marks, err)
		}
		hist := sqldb.NewHistoryService(db)
		for _, d := range devs {
			for _, agg := range []string{herd.AggSum, herd.AggCount, herd.AggLast, herd.AggMax} {
				q := herd.ReadingsQuery{DeviceID: d.ID, From: from, To: to, Step: 15 * time.Minute, Agg: agg}
				got, err := hist.DeviceSeries(f.super, q)
				if err != nil {
					t.Fatal(err)
				}
				sameSeries(t, fmt.Sprintf("device %d agg %s", d.ID, agg), got.Series, oracleSeries(readings[d.ID], q))
			}
		}
	})
}

// TestDeviceRollups_ClockSwitchesRetention: the rollups stay true to the
// readings when the refresh's clock ran ahead and came back, when ingest
// ran with --rollups off for a while, and when the retention cuts a bucket
// in two.
func TestDeviceRollups_ClockSwitchesRetention(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		tn := f.mustTenant(t, "clock")
		root := &herd.Node{TenantID: tn.ID, Kind: "region", Name: "r"}
		if err := f.Nodes.CreateNode(f.super, root); err != nil {
			t.Fatal(err)
		}
		dev := f.mustDevices(t, f.mustNode(t, root.ID, "site").ID, 1)[0]
		start := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		clock := &fixedClock{t: start}
		db.Now = clock.now
		var readings []storedReading
		ingest := func(t *testing.T, ts time.Time) {
			t.Helper()
			r := herd.Reading{TS: ts.UnixMilli(), Has: herd.ReadingTemperature, Temperature: float64(ts.Minute())}
			if err := sqldb.NewIngestService(db).Ingest(context.Background(), []herd.IngestItem{{Kind: herd.IngestReading, DeviceID: dev.ID, TenantID: dev.TenantID, At: clock.now().UnixMilli(), Reading: r}}); err != nil {
				t.Fatal(err)
			}
			readings = append(readings, storedReading{r: r, recv: clock.now().UnixMilli()})
		}
		hist := sqldb.NewHistoryService(db)
		check := func(t *testing.T, what string, from, to time.Time) {
			t.Helper()
			for _, agg := range []string{herd.AggCount, herd.AggSum, herd.AggLast} {
				q := herd.ReadingsQuery{DeviceID: dev.ID, From: from, To: to, Step: 15 * time.Minute, Agg: agg, Fields: []string{"temperature"}}
				got, err := hist.DeviceSeries(f.super, q)
				if err != nil {
					t.Fatal(err)
				}
				sameSeries(t, what+" "+agg, got.Series, oracleSeries(readings, q))
			}
		}

		// The clock a day ahead for one refresh, then back: readings that
		// arrive on time meanwhile are in buckets the span claimed.
		ingest(t, start.Add(-2*time.Hour))
		refreshAll(t, db)
		clock.set(start.Add(24 * time.Hour))
		refreshAll(t, db)
		clock.set(start)
		// herd serve's next step, within a minute of the clock's return.
		if _, err := db.RefreshDeviceRollups(context.Background()); err != nil {
			t.Fatal(err)
		}
		for m := range 60 {
			clock.set(start.Add(time.Duration(m) * time.Minute))
			ingest(t, clock.now().Add(-30*time.Second))
		}
		check(t, "clock back, before the refresh", start.Add(-time.Hour), start.Add(time.Hour))
		clock.set(start.Add(2 * time.Hour))
		refreshAll(t, db)
		check(t, "clock back", start.Add(-time.Hour), start.Add(time.Hour))

		// A late reading while the rollups are off is marked all the same.
		db.NoRollups = true
		ingest(t, start.Add(20*time.Minute+5*time.Second))
		db.NoRollups = false
		refreshAll(t, db)
		check(t, "rollups off and on", start.Add(-time.Hour), start.Add(time.Hour))

		// A retention whose cut falls inside a bucket: the part of it
		// left is read from the readings, then computed again.
		cut := start.Add(22*time.Minute + 30*time.Second)
		if err := db.PruneReadings(context.Background(), clock.now().Sub(cut), 400*24*time.Hour); err != nil {
			t.Fatal(err)
		}
		kept := readings[:0]
		for _, r := range readings {
			// (On PostgreSQL these readings are in the default partition,
			// whose old rows go to the millisecond too.)
			if r.r.TS >= cut.UnixMilli() {
				kept = append(kept, r)
			}
		}
		readings = kept
		check(t, "retention, before the refresh", start, start.Add(time.Hour))
		refreshAll(t, db)
		check(t, "retention", start, start.Add(time.Hour))
	})
}

package sqldb_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// committed is one reading as the oracle keeps it: where its device was
// and what it ran when it reported.
type committed struct {
	deviceID int64
	ts       int64
	value    float64
	nodeID   int64
	path     string
	model    string
	firmware string
}

// aggFleet is a random fleet with readings ingested in batches, with
// retries, moves and firmware changes between them, and the oracle's record
// of every reading stored.
type aggFleet struct {
	f         *fixture
	tenant    *herd.Tenant
	sites     []*herd.Node
	regions   []*herd.Node
	viewerCtx context.Context // a user granted the first region only
	readings  []committed
	base      time.Time
}

func newAggFleet(t *testing.T, db *sqldb.DB, rng *rand.Rand) *aggFleet {
	t.Helper()
	f := newFixture(db)
	fl := &aggFleet{f: f, base: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}
	fl.tenant = f.mustTenant(t, "agg")
	for r := range 2 {
		region := f.mustNode(t, fl.tenant.RootNodeID, fmt.Sprintf("region-%d", r))
		fl.regions = append(fl.regions, region)
		for s := range 3 {
			fl.sites = append(fl.sites, f.mustNode(t, region.ID, fmt.Sprintf("site-%d-%d", r, s)))
		}
	}
	u, secret := f.mustUser(t, fl.tenant.ID, "viewer")
	f.mustGrant(t, u.ID, fl.regions[0].ID, herd.RoleViewer)
	fl.viewerCtx = f.as(t, secret)

	type dev struct {
		d        *herd.Device
		site     *herd.Node
		firmware string
		sent     map[int64]bool
	}
	var devs []*dev
	for _, site := range fl.sites {
		for range 4 {
			d := &herd.Device{NodeID: site.ID, Key: nextKey("agg"), Model: []string{"th-1", "th-2"}[rng.IntN(2)]}
			mustOK(t, f.Devices.CreateDevices(f.super, []*herd.Device{d}))
			devs = append(devs, &dev{d: d, site: site, sent: map[int64]bool{}})
		}
	}
	ingest := sqldb.NewIngestService(db)
	span := int64(6 * time.Hour / time.Millisecond)
	for batch := range 8 {
		var items []herd.IngestItem
		for range 60 {
			dv := devs[rng.IntN(len(devs))]
			ts := fl.base.UnixMilli() + rng.Int64N(span)
			if rng.IntN(10) == 0 {
				ts = fl.base.UnixMilli() + rng.Int64N(6)*int64(time.Hour/time.Millisecond) // on an hour's boundary
			}
			r := herd.Reading{TS: ts, Has: herd.ReadingTemperature, Temperature: math.Round(rng.NormFloat64()*80) / 4}
			if rng.IntN(8) == 0 {
				dv.firmware = fmt.Sprintf("1.%d", batch)
				r.Has |= herd.ReadingFirmware
				r.Firmware = dv.firmware
			}
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: dv.d.ID, TenantID: fl.tenant.ID, At: ts, Reading: r})
			// A retry of an earlier reading (same device, same ts, another
			// value): stored once, the first, and counted once.
			if rng.IntN(6) == 0 {
				items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: dv.d.ID, TenantID: fl.tenant.ID, At: ts,
					Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature, Temperature: 999}})
			}
		}
		mustOK(t, ingest.Ingest(context.Background(), items))
		// The oracle: the first reading of each (device, ts) ever sent.
		// A batch's firmware is the device's newest by ts (the
		// projection's rule), which the whole batch counts under.
		for _, it := range items {
			var dv *dev
			for _, x := range devs {
				if x.d.ID == it.DeviceID {
					dv = x
				}
			}
			if dv.sent[it.Reading.TS] {
				continue
			}
			dv.sent[it.Reading.TS] = true
			got, err := f.Devices.FindDeviceByID(f.super, dv.d.ID)
			mustOK(t, err)
			fl.readings = append(fl.readings, committed{deviceID: dv.d.ID, ts: it.Reading.TS, value: it.Reading.Temperature, nodeID: dv.site.ID, path: dv.site.Path, model: dv.d.Model, firmware: got.Firmware})
		}
		// Move a device: its readings so far stay with the site it
		// reported under.
		dv := devs[rng.IntN(len(devs))]
		to := fl.sites[rng.IntN(len(fl.sites))]
		_, err := f.Devices.MoveDevice(f.super, dv.d.ID, to.ID)
		mustOK(t, err)
		dv.site = to
	}
	return fl
}

// oracle computes an aggregate from the committed readings.
func (fl *aggFleet) oracle(q herd.AggregateQuery, scope []string) map[string]map[string][]herd.Point {
	return fl.oracleAs(q, scope, nil)
}

// oracleAs computes an aggregate from the committed readings, each
// attributed to its device as it is now when now is not nil.
func (fl *aggFleet) oracleAs(q herd.AggregateQuery, scope []string, now map[int64]*herd.Device) map[string]map[string][]herd.Point {
	from, to, step := q.From.UnixMilli(), q.To.UnixMilli(), q.Step.Milliseconds()
	root := herd.ScopeRoot(scope)
	cells := map[string]map[int64][]float64{}
	for _, r := range fl.readings {
		if d := now[r.deviceID]; d != nil {
			r.nodeID, r.path, r.model, r.firmware = d.NodeID, d.Path, d.Model, d.Firmware
		}
		if r.ts < from || r.ts >= to || !(herd.Scope{Paths: scope}).Covers(r.path) {
			continue
		}
		keep := true
		for _, f := range q.Filters {
			d := &herd.Device{NodeID: r.nodeID, Path: r.path, Model: r.model, Firmware: r.firmware}
			if now != nil {
				d = now[r.deviceID]
			}
			keep = keep && testutil.Matches(d, f)
		}
		if !keep {
			continue
		}
		g := ""
		switch q.GroupBy {
		case "node":
			id, _ := herd.GroupNodeID(root, r.path)
			g = strconv.FormatInt(id, 10)
		case "model":
			g = r.model
		case "firmware":
			g = r.firmware
		}
		if cells[g] == nil {
			cells[g] = map[int64][]float64{}
		}
		start := from + (r.ts-from)/step*step
		cells[g][start] = append(cells[g][start], r.value)
	}
	out := map[string]map[string][]herd.Point{}
	for g, byStep := range cells {
		out[g] = map[string][]herd.Point{}
		starts := make([]int64, 0, len(byStep))
		for s := range byStep {
			starts = append(starts, s)
		}
		slices.Sort(starts)
		for _, a := range q.Aggs {
			for _, s := range starts {
				vs := byStep[s]
				var v float64
				switch a {
				case herd.AggCount:
					v = float64(len(vs))
				case herd.AggSum, herd.AggAvg:
					for _, x := range vs {
						v += x
					}
					if a == herd.AggAvg {
						v /= float64(len(vs))
					}
				case herd.AggMin:
					v = slices.Min(vs)
				case herd.AggMax:
					v = slices.Max(vs)
				default:
					// The sketch answers within its accuracy of a value
					// between the two readings around rank q·(n−1).
					qq, _ := herd.QuantileOf(a)
					sorted := slices.Sorted(slices.Values(vs))
					rank := qq * float64(len(vs)-1)
					v = sorted[int(math.Floor(rank))]
					out[g][a+":hi"] = append(out[g][a+":hi"], herd.Point{TS: s, Value: sorted[int(math.Ceil(rank))]})
				}
				out[g][a] = append(out[g][a], herd.Point{TS: s, Value: v})
			}
		}
	}
	return out
}

// TestAggregate_Oracle: fleet aggregates from the rollups equal the same
// computation over every stored reading, on random queries (steps that
// read hourly and minute rollups, groups, filters, a scoped user),
// counting each reading once (retries), where its device reported
// (moves), under the firmware it then ran; quantiles within the sketch's
// relative accuracy of the exact value at their rank.
func TestAggregate_Oracle(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		rng := rand.New(rand.NewPCG(14, 1))
		fl := newAggFleet(t, db, rng)
		hs := sqldb.NewHistoryService(db)
		steps := []time.Duration{time.Minute, 5 * time.Minute, 90 * time.Minute, time.Hour, 2 * time.Hour, 24 * time.Hour}
		for i := range 60 {
			q := herd.AggregateQuery{TenantID: fl.tenant.ID, Field: "temperature",
				Aggs:    []string{herd.AggAvg, herd.AggMin, herd.AggMax, herd.AggCount, herd.AggSum, herd.AggP50, herd.AggP95, herd.AggP99},
				Step:    steps[rng.IntN(len(steps))],
				GroupBy: []string{"", "node", "model", "firmware"}[rng.IntN(4)]}
			// From on the hour or not; to anywhere (rounded up to a minute).
			q.From = fl.base.Add(time.Duration(rng.IntN(3)) * time.Hour)
			if rng.IntN(2) == 0 {
				q.From = q.From.Add(time.Duration(rng.IntN(3600)) * time.Second)
			}
			q.To = q.From.Add(time.Duration(1+rng.IntN(6*3600)) * time.Second)
			ctx := fl.f.super
			scope := []string{"/" + strconv.FormatInt(fl.tenant.RootNodeID, 10) + "/"}
			if rng.IntN(2) == 0 {
				ctx, scope = fl.viewerCtx, []string{fl.regions[0].Path}
				q.TenantID = 0
			}
			switch rng.IntN(5) {
			case 0:
				q.Filters = []herd.DeviceFilter{{Field: "model", Op: herd.OpEq, Values: []any{"th-1"}}}
			case 1:
				site := fl.sites[rng.IntN(3)]
				q.Filters = []herd.DeviceFilter{{Field: "node_id", Op: herd.OpIn, Values: []any{site.ID, fl.sites[4].ID}}}
			case 2:
				q.NodeID = fl.sites[rng.IntN(3)].ID
				scope = []string{fl.f.mustFindNode(t, q.NodeID).Path}
			}
			want := q
			mustOK(t, want.Normalize())
			res, err := hs.AggregateReadings(ctx, q)
			mustOK(t, err)
			if !res.From.Equal(want.From) || !res.To.Equal(want.To) {
				t.Fatalf("query %d: range [%s, %s), want [%s, %s)", i, res.From, res.To, want.From, want.To)
			}
			compareAggregate(t, fmt.Sprintf("query %d (%+v, %s)", i, q, res.Source), res, fl.oracle(want, scope))
		}
	})
}

// TestAggregate_FromReadings: a filter the rollups do not keep (here on
// the key) is answered from the readings of the devices that match it now,
// attributed to them as they are now; it equals the oracle over the same
// readings, quantiles exact.
func TestAggregate_FromReadings(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		rng := rand.New(rand.NewPCG(14, 2))
		fl := newAggFleet(t, db, rng)
		hs := sqldb.NewHistoryService(db)
		now := map[int64]*herd.Device{}
		var keys []any
		for _, r := range fl.readings {
			if now[r.deviceID] == nil {
				d, err := fl.f.Devices.FindDeviceByID(fl.f.super, r.deviceID)
				mustOK(t, err)
				now[r.deviceID] = d
				if len(keys) < 10 {
					keys = append(keys, d.Key)
				}
			}
		}
		for i := range 20 {
			q := herd.AggregateQuery{TenantID: fl.tenant.ID, Field: "temperature", Aggs: []string{herd.AggAvg, herd.AggCount, herd.AggP95},
				From: fl.base, To: fl.base.Add(6 * time.Hour), Step: []time.Duration{time.Minute, time.Hour, 90 * time.Minute}[i%3],
				GroupBy: []string{"", "node", "model", "firmware"}[rng.IntN(4)],
				Filters: []herd.DeviceFilter{{Field: "key", Op: herd.OpIn, Values: keys[:1+rng.IntN(len(keys))]}}}
			ctx, scope := fl.f.super, []string{"/" + strconv.FormatInt(fl.tenant.RootNodeID, 10) + "/"}
			if i%2 == 1 {
				ctx, scope = fl.viewerCtx, []string{fl.regions[0].Path}
			}
			res, err := hs.AggregateReadings(ctx, q)
			mustOK(t, err)
			if res.Source != "readings" {
				t.Fatalf("query %d: source %q, want readings", i, res.Source)
			}
			want := fl.oracleAs(q, scope, now)
			for _, byAgg := range want {
				delete(byAgg, herd.AggP95+":hi") // exact: the lower of the two
			}
			compareAggregate(t, fmt.Sprintf("query %d", i), res, want)
		}
	})
}

func compareAggregate(t *testing.T, what string, res *herd.AggregateResult, want map[string]map[string][]herd.Point) {
	t.Helper()
	got := map[string]map[string][]herd.Point{}
	for _, s := range res.Series {
		if got[s.Group] == nil {
			got[s.Group] = map[string][]herd.Point{}
		}
		got[s.Group][s.Agg] = s.Points
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d groups, want %d", what, len(got), len(want))
	}
	for g, byAgg := range want {
		for a, wp := range byAgg {
			if strings.HasSuffix(a, ":hi") {
				continue
			}
			gp := got[g][a]
			if len(gp) != len(wp) {
				t.Fatalf("%s: group %q %s: %d points, want %d (%v, want %v)", what, g, a, len(gp), len(wp), gp, wp)
			}
			for i := range wp {
				if gp[i].TS != wp[i].TS {
					t.Fatalf("%s: group %q %s point %d at %d, want %d", what, g, a, i, gp[i].TS, wp[i].TS)
				}
				if hi, ok := byAgg[a+":hi"]; ok {
					lo, up := wp[i].Value, hi[i].Value
					lo -= sqldb.SketchRelativeAccuracy*math.Abs(lo) + 1e-9
					up += sqldb.SketchRelativeAccuracy*math.Abs(up) + 1e-9
					if gp[i].Value < lo || gp[i].Value > up {
						t.Fatalf("%s: group %q %s point %d = %v, want within [%v, %v]", what, g, a, i, gp[i].Value, lo, up)
					}
					continue
				}
				if tol := 1e-9 * (1 + math.Abs(wp[i].Value)); math.Abs(gp[i].Value-wp[i].Value) > tol {
					t.Fatalf("%s: group %q %s point %d = %v, want %v (±%v)", what, g, a, i, gp[i].Value, wp[i].Value, tol)
				}
			}
		}
	}
}

func (f *fixture) mustFindNode(tb testing.TB, id int64) *herd.Node {
	tb.Helper()
	n, err := f.Nodes.FindNodeByID(f.super, id)
	if err != nil {
		tb.Fatalf("find node %d: %v", id, err)
	}
	return n
}

// TestRollups_ConcurrentIngest: batches committed at once by several
// transactions (PostgreSQL's several gateways; SQLite's one writer in turn)
// into the same rollup rows lose nothing: the count is every reading, and
// the min, max and sum are all of them. It runs again with rows
// compacted after every batch or two (PostgreSQL), so that appends and
// re-encodings of the same rows interleave.
func TestRollups_ConcurrentIngest(t *testing.T) {
	for _, compact := range []int{0, 100} {
		t.Run(fmt.Sprintf("compact=%d", compact), func(t *testing.T) {
			testConcurrentIngest(t, compact)
		})
	}
}

func testConcurrentIngest(t *testing.T, compact int) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.SetRollupCompactBytes(compact)
		f := newFixture(db)
		ten := f.mustTenant(t, "concurrent")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ds := f.mustDevices(t, site.ID, 40)
		ingest := sqldb.NewIngestService(db)
		base := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
		const writers, batches = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for b := range batches {
					var items []herd.IngestItem
					for i, d := range ds[w*10 : (w+1)*10] {
						ts := base.Add(time.Duration(b*10+i) * time.Second).UnixMilli()
						items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: ten.ID, At: ts,
							Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature, Temperature: float64(w*1000 + b*10 + i)}})
					}
					if err := ingest.Ingest(context.Background(), items); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		res, err := sqldb.NewHistoryService(db).AggregateReadings(f.super, herd.AggregateQuery{TenantID: ten.ID, Field: "temperature",
			Aggs: []string{herd.AggCount, herd.AggMin, herd.AggMax, herd.AggSum}, From: base, To: base.Add(time.Hour), Step: time.Hour})
		mustOK(t, err)
		want := map[string]float64{herd.AggCount: writers * batches * 10, herd.AggMin: 0, herd.AggMax: 3099}
		for w := range writers {
			for b := range batches {
				for i := range 10 {
					want[herd.AggSum] += float64(w*1000 + b*10 + i)
				}
			}
		}
		for _, s := range res.Series {
			if len(s.Points) != 1 || s.Points[0].Value != want[s.Agg] {
				t.Errorf("%s: %+v, want %v", s.Agg, s.Points, want[s.Agg])
			}
		}
	})
}

// TestAggregate_GroupNamesWithinGrants: a user granted two sites of two
// regions has the tenant's root as the scope's root, so group_by=node
// groups by region; the regions are above the grants, and their names are
// not the user's to read (GET /v1/nodes/{id} is a 404 for them).
func TestAggregate_GroupNamesWithinGrants(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		fl := newAggFleet(t, db, rand.New(rand.NewPCG(14, 3)))
		u, secret := fl.f.mustUser(t, fl.tenant.ID, "two sites")
		fl.f.mustGrant(t, u.ID, fl.sites[0].ID, herd.RoleViewer)
		fl.f.mustGrant(t, u.ID, fl.sites[3].ID, herd.RoleViewer)
		res, err := sqldb.NewHistoryService(db).AggregateReadings(fl.f.as(t, secret), herd.AggregateQuery{Field: "temperature", GroupBy: "node",
			From: fl.base, To: fl.base.Add(6 * time.Hour), Step: time.Hour})
		mustOK(t, err)
		if len(res.Series) == 0 {
			t.Fatal("no series")
		}
		for _, s := range res.Series {
			if s.Group != strconv.FormatInt(fl.regions[0].ID, 10) && s.Group != strconv.FormatInt(fl.regions[1].ID, 10) {
				t.Fatalf("group %q is not a region", s.Group)
			}
			if s.GroupName != "" {
				t.Fatalf("group %s named %q: a node above the grants", s.Group, s.GroupName)
			}
		}
		// With one grant, the groups are below it and named.
		res, err = sqldb.NewHistoryService(db).AggregateReadings(fl.viewerCtx, herd.AggregateQuery{Field: "temperature", GroupBy: "node",
			From: fl.base, To: fl.base.Add(6 * time.Hour), Step: time.Hour})
		mustOK(t, err)
		for _, s := range res.Series {
			if s.GroupName == "" {
				t.Fatalf("group %s under the grant has no name", s.Group)
			}
		}
	})
}

// TestAggregate_MinutesPastRetention: minute rollups go with the readings,
// so a range that needs them from before the readings retention is refused
// (saying what would answer), while whole hours from a whole hour there
// are answered from the hourly rollups.
func TestAggregate_MinutesPastRetention(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.ReadingsRetention = 7 * 24 * time.Hour
		f := newFixture(db)
		ten := f.mustTenant(t, "retention")
		hs := sqldb.NewHistoryService(db)
		old := db.Now().Add(-10 * 24 * time.Hour).Truncate(time.Hour)
		q := herd.AggregateQuery{TenantID: ten.ID, Field: "temperature", From: old, To: old.Add(24 * time.Hour), Step: 5 * time.Minute}
		_, err := hs.AggregateReadings(f.super, q)
		wantCode(t, err, herd.EINVALID)
		if !strings.Contains(herd.ErrorMessage(err), "whole hours") {
			t.Fatalf("message %q", herd.ErrorMessage(err))
		}
		q.Step = time.Hour
		res, err := hs.AggregateReadings(f.super, q)
		mustOK(t, err)
		if res.Source != "rollup_1h" {
			t.Fatalf("source %s", res.Source)
		}
	})
}

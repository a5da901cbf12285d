package sqldb_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// exportFleet is a random fleet with readings, and what the test knows of
// it to compute every export by brute force.
type exportFleet struct {
	f        *fixture
	tenant   *herd.Tenant
	other    *herd.Tenant // its readings never appear in the tenant's export
	regionA  *herd.Node   // the user's grant
	siteA1   *herd.Node
	siteA2   *herd.Node
	siteB    *herd.Node // outside the grant
	devices  map[int64]*herd.Device
	readings []*herd.ExportReading // every reading ingested, of both tenants
	t0       int64
	viewer   context.Context
}

func newExportFleet(t *testing.T, db *sqldb.DB, rng *rand.Rand) *exportFleet {
	f := newFixture(db)
	x := &exportFleet{f: f, devices: map[int64]*herd.Device{}, t0: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixMilli()}
	x.tenant = f.mustTenant(t, "export")
	x.other = f.mustTenant(t, "export other")
	x.regionA = f.mustNode(t, x.tenant.RootNodeID, "region a")
	x.siteA1 = f.mustNode(t, x.regionA.ID, "site a1")
	x.siteA2 = f.mustNode(t, x.regionA.ID, "site a2")
	x.siteB = f.mustNode(t, x.tenant.RootNodeID, "site b")
	otherSite := f.mustNode(t, x.other.RootNodeID, "other site")
	var all []*herd.Device
	for _, n := range []*herd.Node{x.siteA1, x.siteA2, x.siteB, otherSite} {
		ds := make([]*herd.Device, 3+rng.IntN(4))
		for i := range ds {
			ds[i] = &herd.Device{NodeID: n.ID, Key: nextKey("exp"), Model: []string{"m1", "m2"}[rng.IntN(2)]}
		}
		mustOK(t, f.Devices.CreateDevices(f.super, ds))
		all = append(all, ds...)
	}
	for _, d := range all {
		x.devices[d.ID] = d
	}
	// Readings on a coarse grid of times, so that many devices share a ts
	// and the keyset's tie-break on device_id is crossed at chunk
	// boundaries.
	var items []herd.IngestItem
	for _, d := range all {
		for slot := range 40 {
			if rng.IntN(3) == 0 {
				continue
			}
			r := randomExportReading(rng, x.t0+int64(slot)*1000)
			at := r.TS + int64(rng.IntN(500))
			items = append(items, readingItem(d, at, r))
			x.readings = append(x.readings, expectedExport(d, at, r))
		}
	}
	rng.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	for len(items) > 0 {
		n := min(len(items), 100)
		mustIngest(t, db, items[:n]...)
		items = items[n:]
	}
	u, secret := f.mustUser(t, x.tenant.ID, "viewer")
	f.mustGrant(t, u.ID, x.regionA.ID, herd.RoleViewer)
	x.viewer = f.as(t, secret)
	return x
}

func randomExportReading(rng *rand.Rand, ts int64) herd.Reading {
	r := herd.Reading{TS: ts, Has: herd.ReadingFields(rng.IntN(1 << 12))}
	r.Temperature, r.Humidity, r.Pressure = rng.NormFloat64()*10+20, rng.Float64()*100, 1000+rng.Float64()
	r.Voltage, r.Current, r.Power, r.Battery = rng.Float64()*5, rng.Float64(), rng.Float64()*100, rng.Float64()*100
	r.RSSI, r.UptimeS, r.ErrorCount = -int64(rng.IntN(100)), rng.Int64N(1e9), int64(rng.IntN(5))
	r.Status, r.Firmware = []string{"ok", "warn", "alarm"}[rng.IntN(3)], fmt.Sprintf("v%d", rng.IntN(3))
	if rng.IntN(2) == 0 {
		r.Extra = fmt.Appendf(nil, `{"fan":%d,"note":"a \"b\""}`, rng.IntN(10))
	}
	return r
}

// expectedExport is the reading as an export must return it.
func expectedExport(d *herd.Device, at int64, r herd.Reading) *herd.ExportReading {
	e := &herd.ExportReading{DeviceID: d.ID, Key: d.Key}
	e.TS, e.ReceivedAt = time.UnixMilli(r.TS).UTC(), time.UnixMilli(at).UTC()
	has := func(b herd.ReadingFields) bool { return r.Has&b != 0 }
	if has(herd.ReadingTemperature) {
		e.Temperature = new(r.Temperature)
	}
	if has(herd.ReadingHumidity) {
		e.Humidity = new(r.Humidity)
	}
	if has(herd.ReadingPressure) {
		e.Pressure = new(r.Pressure)
	}
	if has(herd.ReadingVoltage) {
		e.Voltage = new(r.Voltage)
	}
	if has(herd.ReadingCurrent) {
		e.Current = new(r.Current)
	}
	if has(herd.ReadingPower) {
		e.Power = new(r.Power)
	}
	if has(herd.ReadingBattery) {
		e.Battery = new(r.Battery)
	}
	if has(herd.ReadingRSSI) {
		e.RSSI = new(r.RSSI)
	}
	if has(herd.ReadingUptimeS) {
		e.UptimeS = new(r.UptimeS)
	}
	if has(herd.ReadingErrorCount) {
		e.ErrorCount = new(r.ErrorCount)
	}
	if has(herd.ReadingStatus) {
		e.Status = new(r.Status)
	}
	if has(herd.ReadingFirmware) {
		e.Firmware = new(r.Firmware)
	}
	if r.Extra != nil {
		e.Extra = json.RawMessage(r.Extra)
	}
	return e
}

// want is the brute-force export: the readings of the tenant's devices
// whose path (now) is under one of paths and that match the filters, in
// [from, to) as whole milliseconds, ordered by (ts, device_id).
func (x *exportFleet) want(tb testing.TB, paths []string, filters []herd.DeviceFilter, from, to time.Time) []*herd.ExportReading {
	tb.Helper()
	devs := map[int64]bool{}
	for id := range x.devices {
		d := x.f.mustFind(tb, id) // its path and fields now
		if d.TenantID != x.tenant.ID || !slices.ContainsFunc(paths, func(p string) bool { return strings.HasPrefix(d.Path, p) }) {
			continue
		}
		ok := true
		for _, f := range filters {
			ok = ok && testutil.Matches(d, f)
		}
		devs[id] = ok
	}
	var out []*herd.ExportReading
	for _, r := range x.readings {
		if devs[r.DeviceID] && !r.TS.Before(from) && r.TS.Before(to) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *herd.ExportReading) int {
		return cmp.Or(a.TS.Compare(b.TS), cmp.Compare(a.DeviceID, b.DeviceID))
	})
	return out
}

func (x *exportFleet) path(tb testing.TB, n *herd.Node) string {
	tb.Helper()
	got, err := x.f.Nodes.FindNodeByID(x.f.super, n.ID)
	if err != nil {
		tb.Fatal(err)
	}
	return got.Path
}

func export(tb testing.TB, hs *sqldb.HistoryService, ctx context.Context, q herd.ExportQuery) []*herd.ExportReading {
	tb.Helper()
	var out []*herd.ExportReading
	if err := hs.ExportReadings(ctx, q, func(r *herd.ExportReading) error {
		out = append(out, r)
		return nil
	}); err != nil {
		tb.Fatalf("export %+v: %v", q, err)
	}
	return out
}

func sameExport(tb testing.TB, got, want []*herd.ExportReading) {
	tb.Helper()
	if len(want) == 0 {
		tb.Fatal("the oracle expects no readings: the case tests nothing")
	}
	if len(got) != len(want) {
		tb.Fatalf("export gave %d readings, want %d", len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			g, _ := json.Marshal(got[i])
			w, _ := json.Marshal(want[i])
			tb.Fatalf("reading %d:\n got %s\nwant %s", i, g, w)
		}
	}
}

func TestExportReadings(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		defer sqldb.SetExportChunk(7)()
		rng := rand.New(rand.NewPCG(14, 5))
		x := newExportFleet(t, db, rng)
		hs := sqldb.NewHistoryService(db)
		from, to := time.UnixMilli(x.t0), time.UnixMilli(x.t0+40_000)
		var mu sync.Mutex
		var stmts []int // the argument counts of the export's statements
		db.QueryHook = func(q string, args []any) {
			if strings.Contains(q, "FROM readings r\n WHERE r.tenant_id") {
				mu.Lock()
				stmts = append(stmts, len(args))
				mu.Unlock()
			}
		}
		m1 := []herd.DeviceFilter{{Field: "model", Op: "eq", Values: []any{"m1"}}}

		t.Run("ViewerScope", func(t *testing.T) {
			stmts = nil
			got := export(t, hs, x.viewer, herd.ExportQuery{From: from, To: to})
			want := x.want(t, []string{x.path(t, x.regionA)}, nil, from, to)
			sameExport(t, got, want)
			for _, r := range got {
				if d := x.devices[r.DeviceID]; d.NodeID == x.siteB.ID || d.TenantID != x.tenant.ID {
					t.Fatalf("device %d outside the grant exported", r.DeviceID)
				}
			}
			// Chunks of 7: one statement per chunk and one more that comes
			// back short; each with the same few arguments, whatever the
			// number of devices (a condition, never a list of ids).
			if n := len(want)/7 + 1; len(stmts) != n {
				t.Fatalf("%d statements for %d readings, want %d", len(stmts), len(want), n)
			}
			for _, n := range stmts {
				if n > 8 {
					t.Fatalf("a statement with %d arguments", n)
				}
			}
		})
		t.Run("Filter", func(t *testing.T) {
			got := export(t, hs, x.viewer, herd.ExportQuery{Filters: m1, From: from, To: to})
			sameExport(t, got, x.want(t, []string{x.path(t, x.regionA)}, m1, from, to))
		})
		t.Run("NodeAndRange", func(t *testing.T) {
			// Bounds on readings' times: from is in, to is out, and a from
			// between two milliseconds starts at the next.
			f, tt := time.UnixMilli(x.t0+5000).Add(-time.Microsecond), time.UnixMilli(x.t0+17_000)
			got := export(t, hs, x.viewer, herd.ExportQuery{NodeID: x.siteA2.ID, From: f, To: tt})
			want := x.want(t, []string{x.path(t, x.siteA2)}, nil, time.UnixMilli(x.t0+5000), tt)
			sameExport(t, got, want)
			if !got[0].TS.Equal(time.UnixMilli(x.t0+5000)) || !got[len(got)-1].TS.Equal(time.UnixMilli(x.t0+16_000)) {
				t.Fatalf("export runs %s to %s", got[0].TS, got[len(got)-1].TS)
			}
		})
		t.Run("SuperAdmin", func(t *testing.T) {
			got := export(t, hs, x.f.super, herd.ExportQuery{TenantID: x.tenant.ID, Filters: m1, From: from, To: to})
			sameExport(t, got, x.want(t, []string{x.path(t, &herd.Node{ID: x.tenant.RootNodeID})}, m1, from, to))
		})
		t.Run("NodeOutsideGrants", func(t *testing.T) {
			err := hs.ExportReadings(x.viewer, herd.ExportQuery{NodeID: x.siteB.ID, From: from, To: to}, func(*herd.ExportReading) error { return nil })
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("OtherTenant", func(t *testing.T) {
			err := hs.ExportReadings(x.viewer, herd.ExportQuery{TenantID: x.other.ID, From: from, To: to}, func(*herd.ExportReading) error { return nil })
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("BadInput", func(t *testing.T) {
			err := hs.ExportReadings(x.viewer, herd.ExportQuery{From: to, To: from}, func(*herd.ExportReading) error { return nil })
			wantCode(t, err, herd.EINVALID)
			err = hs.ExportReadings(x.viewer, herd.ExportQuery{From: from, To: to, Filters: []herd.DeviceFilter{{Field: "id; DROP", Op: "eq", Values: []any{int64(1)}}}}, func(*herd.ExportReading) error { return nil })
			wantCode(t, err, herd.EINVALIDFILTER)
		})
		t.Run("StopsOnError", func(t *testing.T) {
			stop := errors.New("enough")
			n := 0
			err := hs.ExportReadings(x.viewer, herd.ExportQuery{From: from, To: to}, func(*herd.ExportReading) error {
				if n++; n == 10 {
					return stop
				}
				return nil
			})
			if !errors.Is(err, stop) || n != 10 {
				t.Fatalf("got %v after %d readings, want %v after 10", err, n, stop)
			}
		})
		t.Run("ByTheNodeNow", func(t *testing.T) {
			// A device moved into the grant brings its whole history: the
			// export scopes devices by their node now.
			var moved *herd.Device
			for _, d := range x.devices {
				if d.NodeID == x.siteB.ID {
					moved = d
					break
				}
			}
			if _, err := x.f.Devices.MoveDevice(x.f.super, moved.ID, x.siteA1.ID); err != nil {
				t.Fatal(err)
			}
			got := export(t, hs, x.viewer, herd.ExportQuery{From: from, To: to})
			sameExport(t, got, x.want(t, []string{x.path(t, x.regionA)}, nil, from, to))
			if !slices.ContainsFunc(got, func(r *herd.ExportReading) bool { return r.DeviceID == moved.ID && r.TS.UnixMilli() < x.t0+10_000 }) {
				t.Fatal("the moved device's early readings are not in the export")
			}
		})
	})
}

// TestExportPlan: on SQLite each chunk walks the readings along their
// (ts, device_id) index, in order, with no sort: a chunk costs what it
// reads up to its limit, not every remaining reading of the scope.
func TestExportPlan(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		x := newExportFleet(t, db, rand.New(rand.NewPCG(1, 2)))
		var stmt string
		var args []any
		db.QueryHook = func(q string, a []any) {
			if strings.Contains(q, "FROM readings r\n WHERE r.tenant_id") {
				stmt, args = q, a
			}
		}
		m1 := []herd.DeviceFilter{{Field: "model", Op: "eq", Values: []any{"m1"}}}
		export(t, sqldb.NewHistoryService(db), x.viewer, herd.ExportQuery{Filters: m1, From: time.UnixMilli(x.t0), To: time.UnixMilli(x.t0 + 40_000)})
		explain := "EXPLAIN QUERY PLAN "
		if db.Dialect() == sqldb.Postgres {
			explain = "EXPLAIN "
		}
		rows, err := db.SQL().QueryContext(context.Background(), db.Rebind(explain+stmt), args...)
		mustOK(t, err)
		defer rows.Close()
		var plan strings.Builder
		for rows.Next() {
			cols, _ := rows.Columns()
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			mustOK(t, rows.Scan(ptrs...))
			fmt.Fprintln(&plan, vals[len(vals)-1])
		}
		t.Logf("plan:\n%s", plan.String())
		if db.Dialect() == sqldb.SQLite {
			if p := plan.String(); !strings.Contains(p, "readings_ts_device") || strings.Contains(p, "TEMP B-TREE") {
				t.Fatalf("the chunk does not walk readings_ts_device in order:\n%s", p)
			}
		}
	})
}

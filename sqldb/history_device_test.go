package sqldb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// historyField is one typed reading field as the oracle reads it.
type historyField struct {
	name string
	bit  herd.ReadingFields
	num  func(r *herd.Reading) float64
}

var historyFieldsOracle = []historyField{
	{"temperature", herd.ReadingTemperature, func(r *herd.Reading) float64 { return r.Temperature }},
	{"humidity", herd.ReadingHumidity, func(r *herd.Reading) float64 { return r.Humidity }},
	{"pressure", herd.ReadingPressure, func(r *herd.Reading) float64 { return r.Pressure }},
	{"voltage", herd.ReadingVoltage, func(r *herd.Reading) float64 { return r.Voltage }},
	{"current", herd.ReadingCurrent, func(r *herd.Reading) float64 { return r.Current }},
	{"power", herd.ReadingPower, func(r *herd.Reading) float64 { return r.Power }},
	{"battery", herd.ReadingBattery, func(r *herd.Reading) float64 { return r.Battery }},
	{"rssi", herd.ReadingRSSI, func(r *herd.Reading) float64 { return float64(r.RSSI) }},
	{"uptime_s", herd.ReadingUptimeS, func(r *herd.Reading) float64 { return float64(r.UptimeS) }},
	{"error_count", herd.ReadingErrorCount, func(r *herd.Reading) float64 { return float64(r.ErrorCount) }},
	{"status", herd.ReadingStatus, nil},
	{"firmware", herd.ReadingFirmware, nil},
}

// oracleValue returns the number of field name in r, and whether r has one.
func oracleValue(r *herd.Reading, name string) (float64, bool) {
	if k, ok := herd.ExtraKey(name); ok {
		if r.Extra == nil {
			return 0, false
		}
		var m map[string]any
		if err := json.Unmarshal(r.Extra, &m); err != nil {
			panic(err)
		}
		v, ok := m[k].(float64)
		return v, ok
	}
	for _, f := range historyFieldsOracle {
		if f.name == name && r.Has&f.bit != 0 && f.num != nil {
			return f.num(r), true
		}
	}
	return 0, false
}

// oracleHas reports whether r carries field name (a number or not).
func oracleHas(r *herd.Reading, name string) bool {
	if k, ok := herd.ExtraKey(name); ok {
		var m map[string]any
		if r.Extra != nil {
			json.Unmarshal(r.Extra, &m)
		}
		_, has := m[k]
		return has
	}
	for _, f := range historyFieldsOracle {
		if f.name == name {
			return r.Has&f.bit != 0
		}
	}
	return false
}

// randomReading makes a reading at ts with a random set of fields and
// extras: co2 a number or (now and then) text, note always text.
func randomReading(rng *rand.Rand, ts int64) herd.Reading {
	r := herd.Reading{TS: ts}
	for _, f := range historyFieldsOracle {
		if rng.IntN(3) == 0 {
			continue
		}
		r.Has |= f.bit
	}
	r.Temperature = math.Round(rng.NormFloat64()*1000) / 100
	r.Humidity = rng.Float64() * 100
	r.Pressure = 950 + rng.Float64()*100
	r.Voltage = rng.Float64() * 240
	r.Current = rng.Float64()
	r.Power = rng.Float64() * 1e4
	r.Battery = float64(rng.IntN(101))
	r.RSSI = -int64(rng.IntN(100))
	r.UptimeS = rng.Int64N(1e9)
	r.ErrorCount = rng.Int64N(5)
	r.Status = []string{herd.StatusOK, herd.StatusWarn, herd.StatusAlarm}[rng.IntN(3)]
	r.Firmware = fmt.Sprintf("1.%d.0", rng.IntN(3))
	switch rng.IntN(4) {
	case 0:
	case 1:
		r.Extra = []byte(`{"note":"n` + fmt.Sprint(rng.IntN(9)) + `"}`)
	case 2:
		r.Extra = []byte(`{"co2":"high","note":"x"}`)
	default:
		r.Extra = []byte(fmt.Sprintf(`{"co2":%d,"door":"open"}`, 400+rng.IntN(1000)))
	}
	return r
}

// wantReading is the oracle's raw reading for fields (nil: all).
func wantReading(r *herd.Reading, recv int64, fields []string) *herd.HistoryReading {
	ask := func(name string) bool { return fields == nil || slices.Contains(fields, name) }
	h := &herd.HistoryReading{TS: time.UnixMilli(r.TS).UTC(), ReceivedAt: time.UnixMilli(recv).UTC()}
	if r.Has&herd.ReadingTemperature != 0 && ask("temperature") {
		h.Temperature = new(r.Temperature)
	}
	if r.Has&herd.ReadingHumidity != 0 && ask("humidity") {
		h.Humidity = new(r.Humidity)
	}
	if r.Has&herd.ReadingPressure != 0 && ask("pressure") {
		h.Pressure = new(r.Pressure)
	}
	if r.Has&herd.ReadingVoltage != 0 && ask("voltage") {
		h.Voltage = new(r.Voltage)
	}
	if r.Has&herd.ReadingCurrent != 0 && ask("current") {
		h.Current = new(r.Current)
	}
	if r.Has&herd.ReadingPower != 0 && ask("power") {
		h.Power = new(r.Power)
	}
	if r.Has&herd.ReadingBattery != 0 && ask("battery") {
		h.Battery = new(r.Battery)
	}
	if r.Has&herd.ReadingRSSI != 0 && ask("rssi") {
		h.RSSI = new(r.RSSI)
	}
	if r.Has&herd.ReadingUptimeS != 0 && ask("uptime_s") {
		h.UptimeS = new(r.UptimeS)
	}
	if r.Has&herd.ReadingErrorCount != 0 && ask("error_count") {
		h.ErrorCount = new(r.ErrorCount)
	}
	if r.Has&herd.ReadingStatus != 0 && ask("status") {
		h.Status = new(r.Status)
	}
	if r.Has&herd.ReadingFirmware != 0 && ask("firmware") {
		h.Firmware = new(r.Firmware)
	}
	if r.Extra != nil {
		if fields == nil {
			h.Extra = r.Extra
		} else {
			var m map[string]json.RawMessage
			json.Unmarshal(r.Extra, &m)
			kept := map[string]json.RawMessage{}
			for _, f := range fields {
				if k, ok := herd.ExtraKey(f); ok {
					if v, ok := m[k]; ok {
						kept[k] = v
					}
				}
			}
			if len(kept) > 0 {
				h.Extra, _ = json.Marshal(kept)
			}
		}
	}
	return h
}

// storedReading is one reading the test ingested for the device it reads.
type storedReading struct {
	r    herd.Reading
	recv int64
}

// oracleSeries computes a stepped query by brute force over the readings.
func oracleSeries(rs []storedReading, q herd.ReadingsQuery) []herd.Series {
	from, to, step := q.From.UnixMilli(), q.To.UnixMilli(), q.Step.Milliseconds()
	names := q.Fields
	if names == nil {
		names = herd.NumericReadingFields
	}
	var out []herd.Series
	for _, name := range names {
		type acc struct {
			n             int
			sum, min, max float64
			lastTS        int64
			last          float64
		}
		buckets := map[int64]*acc{}
		for _, s := range rs {
			if s.r.TS < from || s.r.TS >= to {
				continue
			}
			v, ok := oracleValue(&s.r, name)
			if !ok {
				continue
			}
			k := (s.r.TS - from) / step
			a := buckets[k]
			if a == nil {
				a = &acc{min: v, max: v, lastTS: math.MinInt64}
				buckets[k] = a
			}
			a.n++
			a.sum += v
			a.min, a.max = min(a.min, v), max(a.max, v)
			if s.r.TS > a.lastTS {
				a.lastTS, a.last = s.r.TS, v
			}
		}
		sr := herd.Series{Field: name, Points: []herd.Point{}}
		for k := int64(0); from+k*step < to; k++ {
			a := buckets[k]
			if a == nil {
				continue
			}
			v := map[string]float64{herd.AggAvg: a.sum / float64(a.n), herd.AggMin: a.min, herd.AggMax: a.max,
				herd.AggSum: a.sum, herd.AggCount: float64(a.n), herd.AggLast: a.last}[q.Agg]
			sr.Points = append(sr.Points, herd.Point{TS: from + k*step, Value: v})
		}
		if q.Fields == nil && len(sr.Points) == 0 {
			continue
		}
		out = append(out, sr)
	}
	return out
}

func sameSeries(t *testing.T, what string, got, want []herd.Series) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d series, want %d (%v vs %v)", what, len(got), len(want), seriesFields(got), seriesFields(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Field != w.Field || len(g.Points) != len(w.Points) {
			t.Fatalf("%s: series %d is %s with %d points, want %s with %d", what, i, g.Field, len(g.Points), w.Field, len(w.Points))
		}
		for j := range w.Points {
			gp, wp := g.Points[j], w.Points[j]
			if gp.TS != wp.TS || math.Abs(gp.Value-wp.Value) > 1e-9*math.Max(1, math.Abs(wp.Value)) {
				t.Fatalf("%s: %s point %d is %v, want %v", what, w.Field, j, gp, wp)
			}
		}
	}
}

func seriesFields(ss []herd.Series) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Field)
	}
	return out
}

// historyEnv is a device with random readings among other devices', and a
// viewer whose grants cover it and not a third device.
type historyEnv struct {
	f              *fixture
	hist           *sqldb.HistoryService
	dev, near, far *herd.Device
	readings       []storedReading // dev's, in ts order
	viewer         context.Context
	origin         time.Time // a local midnight at +05:30
}

// istMidnight is 2026-12-01T00:00:00+05:30: the origin of the stepped cases.
var istMidnight = time.Date(2026, 12, 1, 0, 0, 0, 0, time.FixedZone("", 5*3600+1800))

func newHistoryEnv(t *testing.T, db *sqldb.DB) *historyEnv {
	f := newFixture(db)
	tn := f.mustTenant(t, "acme")
	root := &herd.Node{TenantID: tn.ID, Kind: "region", Name: "r"}
	if err := f.Nodes.CreateNode(f.super, root); err != nil {
		t.Fatal(err)
	}
	a, b := f.mustNode(t, root.ID, "a"), f.mustNode(t, root.ID, "b")
	e := &historyEnv{f: f, hist: sqldb.NewHistoryService(db), origin: istMidnight}
	da := f.mustDevices(t, a.ID, 2)
	e.dev, e.near, e.far = da[0], da[1], f.mustDevices(t, b.ID, 1)[0]
	u, secret := f.mustUser(t, tn.ID, "viewer")
	f.mustGrant(t, u.ID, a.ID, herd.RoleViewer)
	e.viewer = f.as(t, secret)

	rng := rand.New(rand.NewPCG(14, 1))
	day := int64(24 * time.Hour / time.Millisecond)
	o := e.origin.UnixMilli()
	// Five days from a day before the origin; no readings on the origin's
	// second day (empty steps), some exactly on step boundaries, at the
	// origin, and just before and at the end of the ranges asked below.
	var tss []int64
	for i := 0; i < 1500; i++ {
		ts := o - day + rng.Int64N(6*day)
		if ts >= o+day && ts < o+2*day {
			continue
		}
		tss = append(tss, ts)
	}
	for k := int64(-1); k <= 5; k++ {
		if k != 1 {
			tss = append(tss, o+k*day, o+k*day+int64(time.Hour/time.Millisecond))
		}
	}
	end := o + 4*day + day/2
	tss = append(tss, end-1, end, o-1)
	slices.Sort(tss)
	tss = slices.Compact(tss)
	var items []herd.IngestItem
	for _, ts := range tss {
		r := randomReading(rng, ts)
		recv := ts + rng.Int64N(2000)
		e.readings = append(e.readings, storedReading{r: r, recv: recv})
		items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: e.dev.ID, TenantID: e.dev.TenantID, At: recv, Reading: r})
		for _, other := range []*herd.Device{e.near, e.far} {
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: other.ID, TenantID: other.TenantID, At: recv, Reading: randomReading(rng, ts)})
		}
	}
	ingest := sqldb.NewIngestService(db)
	for len(items) > 0 {
		n := min(len(items), 600)
		if err := ingest.Ingest(context.Background(), items[:n]); err != nil {
			t.Fatal(err)
		}
		items = items[n:]
	}
	return e
}

// walkReadings pages a raw query to its end.
func (e *historyEnv) walkReadings(t *testing.T, ctx context.Context, q herd.ReadingsQuery) []*herd.HistoryReading {
	t.Helper()
	var out []*herd.HistoryReading
	for pages := 0; ; pages++ {
		p, err := e.hist.DeviceReadings(ctx, q)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if len(p.Items) > q.Limit {
			t.Fatalf("page of %d, limit %d", len(p.Items), q.Limit)
		}
		out = append(out, p.Items...)
		if p.NextCursor == "" {
			return out
		}
		if len(p.Items) != q.Limit {
			t.Fatalf("a short page (%d of %d) with a next cursor", len(p.Items), q.Limit)
		}
		q.Cursor = p.NextCursor
	}
}

func (e *historyEnv) wantReadings(q herd.ReadingsQuery) []*herd.HistoryReading {
	from, to := q.From.UnixMilli(), q.To.UnixMilli()
	out := []*herd.HistoryReading{}
	for _, s := range e.readings {
		if s.r.TS < from || s.r.TS >= to {
			continue
		}
		if q.Fields != nil && !slices.ContainsFunc(q.Fields, func(f string) bool { return oracleHas(&s.r, f) }) {
			continue
		}
		out = append(out, wantReading(&s.r, s.recv, q.Fields))
	}
	return out
}

func sameReadings(t *testing.T, what string, got, want []*herd.HistoryReading) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d readings, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := *got[i], *want[i]
		if !jsonEqual(g.Extra, w.Extra) {
			t.Fatalf("%s: reading %d extra %s, want %s", what, i, g.Extra, w.Extra)
		}
		g.Extra, w.Extra = nil, nil
		if !reflect.DeepEqual(g, w) {
			gb, _ := json.Marshal(g)
			wb, _ := json.Marshal(w)
			t.Fatalf("%s: reading %d\n got %s\nwant %s", what, i, gb, wb)
		}
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func TestDeviceHistory(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := newHistoryEnv(t, db)
		day := 24 * time.Hour
		from, to := e.origin.Add(-day), e.origin.Add(5*day)

		t.Run("Raw", func(t *testing.T) {
			for _, tc := range []struct {
				fields []string
				limit  int
			}{
				{nil, 37}, {nil, herd.MaxReadingsLimit}, {[]string{"battery", "extra.co2"}, 101},
				{[]string{"extra.note"}, 50}, {[]string{"status", "firmware", "rssi"}, 1000},
			} {
				q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: from, To: to, Fields: tc.fields, Limit: tc.limit}
				what := fmt.Sprintf("fields %v limit %d", tc.fields, tc.limit)
				sameReadings(t, what, e.walkReadings(t, e.viewer, q), e.wantReadings(q))
			}
		})
		t.Run("RawExactPage", func(t *testing.T) {
			// A page exactly as long as what is left has no next cursor.
			q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: e.origin, To: e.origin.Add(day)}
			want := e.wantReadings(q)
			q.Limit = len(want)
			p, err := e.hist.DeviceReadings(e.viewer, q)
			if err != nil {
				t.Fatal(err)
			}
			if p.NextCursor != "" || len(p.Items) != len(want) {
				t.Fatalf("%d items, cursor %q; want %d and none", len(p.Items), p.NextCursor, len(want))
			}
			q.Limit--
			p, err = e.hist.DeviceReadings(e.viewer, q)
			if err != nil || p.NextCursor == "" {
				t.Fatalf("one short of the end: cursor %q, %v", p.NextCursor, err)
			}
		})
		t.Run("Stepped", func(t *testing.T) {
			half := e.origin.Add(4*day + day/2)
			for _, tc := range []struct {
				from, to time.Time
				step     time.Duration
				fields   []string
			}{
				// Local days from a +05:30 midnight, the last one half a day.
				{e.origin, half, day, nil},
				{e.origin, half, day, []string{"temperature", "rssi", "extra.co2"}},
				{from, to, time.Hour, []string{"extra.co2"}},
				{from, to, 7 * time.Minute, []string{"battery", "uptime_s"}},
				{e.origin.Add(time.Hour), half.Add(-time.Millisecond), 3 * time.Hour, nil},
			} {
				for _, agg := range []string{herd.AggAvg, herd.AggMin, herd.AggMax, herd.AggLast, herd.AggCount, herd.AggSum} {
					q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: tc.from, To: tc.to, Step: tc.step, Agg: agg, Fields: tc.fields}
					got, err := e.hist.DeviceSeries(e.viewer, q)
					if err != nil {
						t.Fatal(err)
					}
					what := fmt.Sprintf("%s..%s step %s agg %s fields %v", tc.from, tc.to, tc.step, agg, tc.fields)
					want := oracleSeries(e.readings, q)
					sameSeries(t, what, got.Series, want)
					if got.Step != herd.FormatStep(tc.step) || got.Agg != agg || !got.From.Equal(tc.from) || !got.To.Equal(tc.to) {
						t.Errorf("%s: header %+v", what, got)
					}
				}
			}
			// The oracle's days: the empty second day is left out, the last
			// step starts at 4 days and stops at the half day.
			q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: e.origin, To: half, Step: day, Agg: herd.AggCount, Fields: []string{"temperature"}}
			got, err := e.hist.DeviceSeries(e.viewer, q)
			if err != nil {
				t.Fatal(err)
			}
			var starts []int64
			for _, p := range got.Series[0].Points {
				starts = append(starts, p.TS)
			}
			o := e.origin.UnixMilli()
			d := day.Milliseconds()
			if want := []int64{o, o + 2*d, o + 3*d, o + 4*d}; !slices.Equal(starts, want) {
				t.Errorf("step starts %v, want %v", starts, want)
			}
		})
		t.Run("OutsideGrants", func(t *testing.T) {
			for _, id := range []int64{e.far.ID, 1 << 40} {
				q := herd.ReadingsQuery{DeviceID: id, From: from, To: to, Limit: 10}
				_, err := e.hist.DeviceReadings(e.viewer, q)
				wantCode(t, err, herd.ENOTFOUND)
				q.Step, q.Agg, q.Limit = time.Hour, herd.AggAvg, 0
				_, err = e.hist.DeviceSeries(e.viewer, q)
				wantCode(t, err, herd.ENOTFOUND)
			}
			// The super-admin sees it.
			p, err := e.hist.DeviceReadings(e.f.super, herd.ReadingsQuery{DeviceID: e.far.ID, From: from, To: to, Limit: 10})
			if err != nil || len(p.Items) != 10 {
				t.Fatalf("super-admin: %v", err)
			}
		})
		t.Run("ExtraKeys", func(t *testing.T) {
			// Keys that would break a statement they were pasted into, or a
			// JSON path without quotes: bound, they are only keys.
			ts := e.origin.Add(10 * day).UnixMilli()
			r := herd.Reading{TS: ts, Extra: []byte(`{"a.b":5,"x') OR 1=1 --":9,"$[0]":2,"température":1.5,"a":{"b":100}}`)}
			if err := sqldb.NewIngestService(db).Ingest(context.Background(), []herd.IngestItem{{Kind: herd.IngestReading, DeviceID: e.near.ID, TenantID: e.near.TenantID, At: ts, Reading: r}}); err != nil {
				t.Fatal(err)
			}
			q := herd.ReadingsQuery{DeviceID: e.near.ID, From: e.origin.Add(10 * day), To: e.origin.Add(11 * day), Step: day, Agg: herd.AggSum,
				Fields: []string{"extra.a.b", "extra.x') OR 1=1 --", "extra.$[0]", "extra.température", "extra.a", "extra.missing"}}
			got, err := e.hist.DeviceSeries(e.viewer, q)
			if err != nil {
				t.Fatal(err)
			}
			o := e.origin.Add(10 * day).UnixMilli()
			one := func(v float64) []herd.Point { return []herd.Point{{TS: o, Value: v}} }
			want := []herd.Series{{Field: "extra.a.b", Points: one(5)}, {Field: "extra.x') OR 1=1 --", Points: one(9)}, {Field: "extra.$[0]", Points: one(2)},
				{Field: "extra.température", Points: one(1.5)}, {Field: "extra.a", Points: []herd.Point{}}, {Field: "extra.missing", Points: []herd.Point{}}}
			sameSeries(t, "odd extra keys", got.Series, want)
			q.Step, q.Agg, q.Limit, q.Fields = 0, "", 10, []string{"extra.x') OR 1=1 --", "extra.missing"}
			p, err := e.hist.DeviceReadings(e.viewer, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) != 1 || string(p.Items[0].Extra) != `{"x') OR 1=1 --":9}` {
				t.Fatalf("raw: %d items, %s", len(p.Items), p.Items[0].Extra)
			}
		})
		t.Run("Cursor", func(t *testing.T) {
			q := herd.ReadingsQuery{DeviceID: e.dev.ID, From: from, To: to, Limit: 5}
			p, err := e.hist.DeviceReadings(e.viewer, q)
			if err != nil || p.NextCursor == "" {
				t.Fatal(err)
			}
			// Another device's cursor, an edited one, one made up.
			for _, c := range []string{p.NextCursor, p.NextCursor[:len(p.NextCursor)-2] + "AA", herd.EncodeReadingsCursor(herd.CursorKey("not the store's key, 32 bytes..."), e.near.ID, 0)} {
				_, err = e.hist.DeviceReadings(e.viewer, herd.ReadingsQuery{DeviceID: e.near.ID, From: from, To: to, Limit: 5, Cursor: c})
				wantCode(t, err, herd.EINVALIDCURSOR)
			}
		})
	})
}

package statecache_test

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/statecache"
)

// Few values per column, so that sort values repeat (the id tie-break
// decides) and filters hit; text reaches past ASCII, where byte order and
// prefix bounds go wrong first.
var (
	t0     = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	paths  = []string{"/1/", "/1/2/", "/1/2/5/", "/1/3/", "/1/3/6/", "/1/30/"}
	texts  = []string{"", "a", "ab", "abc", "b", "pump", "Pump", "pümp", "é", "a\U0010FFFF", "\U0010FFFF"}
	floats = []float64{-5.5, 0, 20, 20.5, 30, 1e10}
	ints   = []int64{-90, 0, 5, 3600}
)

func pick[T any](rng *rand.Rand, pool []T) T { return pool[rng.IntN(len(pool))] }

func randomDevice(rng *rand.Rand, id int64) *herd.Device {
	p := pick(rng, paths)
	ids, _ := herd.PathIDs(p)
	d := &herd.Device{
		ID: id, NodeID: ids[len(ids)-1], Path: p, Key: "k" + strconv.FormatInt(id, 10),
		Name: pick(rng, texts), Model: pick(rng, texts), Firmware: pick(rng, texts),
		Status:     pick(rng, []string{herd.StatusOK, herd.StatusWarn, herd.StatusAlarm, ""}),
		Online:     rng.IntN(2) == 0,
		ErrorCount: pick(rng, ints), ConfigVersion: pick(rng, ints),
		CreatedAt: t0.Add(time.Duration(rng.IntN(3)) * time.Second),
	}
	maybe := func() bool { return rng.IntN(3) != 0 }
	if maybe() {
		ts := t0.Add(time.Duration(rng.IntN(3)) * time.Millisecond)
		d.LastSeen = &ts
	}
	for _, p := range []**float64{&d.Temperature, &d.Humidity, &d.Pressure, &d.Voltage, &d.Current, &d.Power, &d.Battery} {
		if maybe() {
			*p = new(pick(rng, floats))
		}
	}
	for _, p := range []**int64{&d.RSSI, &d.UptimeS} {
		if maybe() {
			*p = new(pick(rng, ints))
		}
	}
	return d
}

// randomValue returns a value of the field's type, usually one some device
// holds.
func randomValue(rng *rand.Rand, ds []*herd.Device, field string) any {
	f := herd.DeviceFields[field]
	for range 5 {
		if v, null := pick(rng, ds).FieldValue(field); !null {
			return v
		}
	}
	switch f.Type {
	case herd.FieldFloat:
		return pick(rng, floats)
	case herd.FieldInt, herd.FieldTime:
		return pick(rng, ints)
	case herd.FieldBool:
		return false
	case herd.FieldEnum:
		return herd.StatusOK
	}
	return pick(rng, texts)
}

func randomQuery(rng *rand.Rand, ds []*herd.Device) herd.DeviceQuery {
	q := herd.DeviceQuery{
		Sort:  herd.DeviceSort{Field: pick(rng, herd.DeviceFieldNames), Desc: rng.IntN(2) == 0},
		Limit: 1 + rng.IntN(7),
	}
	for range rng.IntN(3) {
		field := pick(rng, herd.DeviceFieldNames)
		ft := herd.DeviceFields[field].Type
		ops := []string{herd.OpEq, herd.OpNe, herd.OpIn}
		if ft != herd.FieldBool && ft != herd.FieldEnum {
			ops = append(ops, herd.OpLt, herd.OpLe, herd.OpGt, herd.OpGe)
		}
		if ft == herd.FieldString {
			ops = append(ops, herd.OpPrefix)
		}
		f := herd.DeviceFilter{Field: field, Op: pick(rng, ops)}
		n := 1
		if f.Op == herd.OpIn {
			n += rng.IntN(3)
		}
		for range n {
			v := randomValue(rng, ds, field)
			if f.Op == herd.OpPrefix {
				s := v.(string)
				if s == "" {
					s = "a"
				}
				v = s[:1+rng.IntN(len(s))]
				if !herd.ValidText(v.(string)) {
					v = s
				}
			}
			f.Values = append(f.Values, v)
		}
		q.Filters = append(q.Filters, f)
	}
	return q
}

func inScope(d *herd.Device, scope []string) bool {
	for _, p := range scope {
		if strings.HasPrefix(d.Path, p) {
			return true
		}
	}
	return false
}

// TestCache_Oracle walks every page of random queries over a cache that
// random upserts and deletes keep changing, and checks each walk and count
// against a brute-force evaluation of the same query.
func TestCache_Oracle(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := statecache.New()
	truth := map[int64]*herd.Device{}
	nextID := int64(1)
	for round := range 60 {
		// Change the cache: new devices, new values, deletions.
		for range 20 + rng.IntN(40) {
			switch {
			case len(truth) > 0 && rng.IntN(4) == 0:
				for id := range truth {
					delete(truth, id)
					c.Delete(id)
					break
				}
			case len(truth) > 0 && rng.IntN(3) == 0:
				for id := range truth {
					d := randomDevice(rng, id)
					truth[id] = d
					c.Upsert(d)
					break
				}
			default:
				d := randomDevice(rng, nextID)
				nextID++
				truth[d.ID] = d
				c.Upsert(d)
			}
		}
		if c.Len() != len(truth) {
			t.Fatalf("round %d: cache holds %d devices, want %d", round, c.Len(), len(truth))
		}
		all := make([]*herd.Device, 0, len(truth))
		for _, d := range truth {
			all = append(all, d)
		}
		if len(all) == 0 {
			continue // the deletes emptied the cache: no value to draw from
		}
		for range 20 {
			q := randomQuery(rng, all)
			scope := []string{pick(rng, paths)}
			if rng.IntN(2) == 0 {
				scope = append(scope, pick(rng, paths))
			}
			var want []*herd.Device
			for _, d := range all {
				ok := inScope(d, scope)
				for _, f := range q.Filters {
					ok = ok && testutil.Matches(d, f)
				}
				if ok {
					want = append(want, d)
				}
			}
			slices.SortFunc(want, func(a, b *herd.Device) int { return testutil.CompareDevices(a, b, q.Sort) })

			var got []int64
			var after *herd.DeviceCursor
			for page := 0; ; page++ {
				res, ok := c.Query(statecache.Query{Paths: scope, Filters: q.Filters, Sort: q.Sort, After: after, Limit: q.Limit})
				if !ok {
					t.Fatalf("query %+v refused", q)
				}
				if res.Count != int64(len(want)) {
					t.Fatalf("round %d %+v scope %v page %d: count %d, want %d", round, q, scope, page, res.Count, len(want))
				}
				for _, h := range res.Hits {
					got = append(got, h.ID)
				}
				if len(res.Hits) < q.Limit {
					break
				}
				last := res.Hits[len(res.Hits)-1]
				after = &herd.DeviceCursor{Null: last.Null, Value: last.Value, ID: last.ID}
				if page > len(want) {
					t.Fatal("the walk does not end")
				}
			}
			wantIDs := make([]int64, len(want))
			for i, d := range want {
				wantIDs[i] = d.ID
			}
			if !slices.Equal(got, wantIDs) {
				t.Fatalf("round %d, sort %s, filters %+v, scope %v:\n got %v\nwant %v", round, q.Sort, q.Filters, scope, got, wantIDs)
			}
		}
	}
}

// TestCache_LargeScope checks the queries that are split between
// processors against the oracle: a scope above the split size, first pages
// and counts.
func TestCache_LargeScope(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 60,000 devices")
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	c := statecache.New()
	all := make([]*herd.Device, 60000)
	for i := range all {
		all[i] = randomDevice(rng, int64(i+1))
	}
	c.Upsert(all...)
	for range 20 {
		q := randomQuery(rng, all)
		q.Limit = 1 + rng.IntN(60)
		var want []*herd.Device
		for _, d := range all {
			ok := true
			for _, f := range q.Filters {
				ok = ok && testutil.Matches(d, f)
			}
			if ok {
				want = append(want, d)
			}
		}
		slices.SortFunc(want, func(a, b *herd.Device) int { return testutil.CompareDevices(a, b, q.Sort) })
		var after *herd.DeviceCursor
		var got []int64
		for range 3 {
			res, ok := c.Query(statecache.Query{Paths: []string{"/1/"}, Filters: q.Filters, Sort: q.Sort, After: after, Limit: q.Limit})
			if !ok || res.Count != int64(len(want)) {
				t.Fatalf("sort %s, filters %+v: count %d (ok %v), want %d", q.Sort, q.Filters, res.Count, ok, len(want))
			}
			for _, h := range res.Hits {
				got = append(got, h.ID)
			}
			if len(res.Hits) < q.Limit {
				break
			}
			last := res.Hits[len(res.Hits)-1]
			after = &herd.DeviceCursor{Null: last.Null, Value: last.Value, ID: last.ID}
		}
		for i, id := range got {
			if id != want[i].ID {
				t.Fatalf("sort %s, filters %+v: hit %d is %d, want %d", q.Sort, q.Filters, i, id, want[i].ID)
			}
		}
		if len(got) < min(len(want), 3*q.Limit) {
			t.Fatalf("%d hits, want %d", len(got), min(len(want), 3*q.Limit))
		}
	}
}

// TestCache_HitValues checks that a hit carries its sort value typed as the
// cursor wants it, so that the store can make a cursor without the row.
func TestCache_HitValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	c := statecache.New()
	d := randomDevice(rng, 7)
	d.Temperature, d.Online = nil, true
	c.Upsert(d)
	for _, field := range herd.DeviceFieldNames {
		res, ok := c.Query(statecache.Query{Paths: []string{"/"}, Sort: herd.DeviceSort{Field: field}, Limit: 1})
		if !ok || len(res.Hits) != 1 {
			t.Fatalf("%s: %+v %v", field, res, ok)
		}
		v, null := d.FieldValue(field)
		if h := res.Hits[0]; h.Null != null || !reflect.DeepEqual(h.Value, v) {
			t.Errorf("%s: hit value %#v (null %v), want %#v (null %v)", field, h.Value, h.Null, v, null)
		}
	}
}

// TestCache_WrongValueType checks that a value of the wrong type makes the
// cache decline the query instead of panicking.
func TestCache_WrongValueType(t *testing.T) {
	c := statecache.New()
	c.Upsert(randomDevice(rand.New(rand.NewPCG(1, 1)), 1))
	for _, q := range []statecache.Query{
		{Filters: []herd.DeviceFilter{{Field: "temperature", Op: herd.OpGt, Values: []any{"30"}}}},
		{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpEq, Values: []any{int64(3)}}}},
		{Filters: []herd.DeviceFilter{{Field: "rssi", Op: herd.OpPrefix, Values: []any{"1"}}}},
		{After: &herd.DeviceCursor{Value: "x", ID: 1}, Sort: herd.DeviceSort{Field: "battery"}},
	} {
		q.Paths, q.Limit = []string{"/"}, 10
		if q.Sort.Field == "" {
			q.Sort.Field = "id"
		}
		if _, ok := c.Query(q); ok {
			t.Errorf("query %+v was answered", q)
		}
	}
}

// TestCache_PointerFree checks that the cache's state holds no pointers
// besides its slices' and maps' own: a million cached devices must not add
// millions of objects for the garbage collector to trace.
func TestCache_PointerFree(t *testing.T) {
	var hasPointers func(reflect.Type) bool
	hasPointers = func(t reflect.Type) bool {
		switch t.Kind() {
		case reflect.Pointer, reflect.Interface, reflect.Func, reflect.Chan, reflect.UnsafePointer:
			return true
		case reflect.Slice, reflect.Map, reflect.String:
			return true
		case reflect.Array:
			return hasPointers(t.Elem())
		case reflect.Struct:
			for i := range t.NumField() {
				if hasPointers(t.Field(i).Type) {
					return true
				}
			}
		}
		return false
	}
	// Per-device state is slices of pointer-free elements and an id map of
	// pointer-free keys and values; the paths (one per node) are the only
	// strings.
	var check func(path string, t reflect.Type)
	check = func(path string, typ reflect.Type) {
		switch typ.Kind() {
		case reflect.Slice:
			if hasPointers(typ.Elem()) {
				t.Errorf("%s: %s holds pointers", path, typ)
			}
		case reflect.Map:
			if hasPointers(typ.Key()) || hasPointers(typ.Elem()) {
				t.Errorf("%s: %s holds pointers", path, typ)
			}
		case reflect.Array:
			check(path+"[]", typ.Elem())
		case reflect.Struct:
			for i := range typ.NumField() {
				check(path+"."+typ.Field(i).Name, typ.Field(i).Type)
			}
		}
	}
	ct := reflect.TypeFor[statecache.Cache]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		switch f.Name {
		case "mu":
		case "paths", "pathIdx", "members":
			// One entry per node path, not per device.
		case "labels":
			// One entry per label key, not per device; each key's column
			// is per-device state and must be pointer-free.
			check(f.Name+"[]", f.Type.Elem().Elem())
		default:
			check(f.Name, f.Type)
		}
	}
}

// BenchmarkQuery measures the cache on the bench fleet's shape, a fifth of
// a million devices in scope: a temperature and battery filter sorted by
// name, and the alarm board (status alarm by temperature, descending).
func BenchmarkQuery(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	c := statecache.New()
	for region := range 5 {
		for site := range 40 {
			p := "/1/" + strconv.Itoa(10+region) + "/" + strconv.Itoa(1000+region*100+site) + "/"
			for i := range 5000 {
				id := int64(region*200000 + site*5000 + i + 1)
				temp, batt := 22+6*rng.NormFloat64(), 100-30*rng.ExpFloat64()
				status := herd.StatusOK
				if rng.IntN(25) == 0 {
					status = herd.StatusAlarm
				}
				c.Upsert(&herd.Device{ID: id, Path: p, Key: "d" + strconv.FormatInt(id, 10),
					Name: "device " + strconv.FormatInt(rng.Int64N(1e9), 36), Status: status,
					Temperature: &temp, Battery: &batt, CreatedAt: t0})
			}
		}
	}
	for _, q := range []statecache.Query{{
		Paths: []string{"/1/10/"},
		Filters: []herd.DeviceFilter{
			{Field: "temperature", Op: herd.OpGt, Values: []any{30.0}},
			{Field: "battery", Op: herd.OpLt, Values: []any{20.0}},
		},
		Sort:  herd.DeviceSort{Field: "name"},
		Limit: 51,
	}, {
		Paths:   []string{"/1/10/"},
		Filters: []herd.DeviceFilter{{Field: "status", Op: herd.OpEq, Values: []any{herd.StatusAlarm}}},
		Sort:    herd.DeviceSort{Field: "temperature", Desc: true},
		Limit:   51,
	}} {
		b.Run(q.Filters[0].Field, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if res, _ := c.Query(q); res.Count == 0 {
					b.Fatal("no matches")
				}
			}
		})
	}
}

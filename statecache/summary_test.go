package statecache_test

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/statecache"
)

var summaryGroupBys = []string{"", "status", "model", "firmware", "online", "path"}

// summaryOracle is Summarize by brute force.
func summaryOracle(truth map[int64]*herd.Device, q statecache.SummaryQuery) map[string]*statecache.SummaryPart {
	out := map[string]*statecache.SummaryPart{}
	for _, d := range truth {
		if !inScope(d, q.Paths) {
			continue
		}
		ok := true
		for _, f := range q.Filters {
			ok = ok && testutil.Matches(d, f)
		}
		if !ok {
			continue
		}
		var key string
		switch q.GroupBy {
		case "status":
			key = d.Status
		case "model":
			key = d.Model
		case "firmware":
			key = d.Firmware
		case "online":
			key = strconv.FormatBool(d.Online)
		case "path":
			key = d.Path
		}
		g := out[key]
		if g == nil {
			g = &statecache.SummaryPart{Key: key, Fields: make([]statecache.FieldAcc, len(q.Fields))}
			out[key] = g
		}
		g.Count++
		for n, f := range q.Fields {
			switch v, null := d.FieldValue(f); {
			case null:
			case f == "rssi" || f == "uptime_s" || f == "error_count":
				g.Fields[n].Add(float64(v.(int64)))
			default:
				g.Fields[n].Add(v.(float64))
			}
		}
	}
	return out
}

func checkParts(t *testing.T, got []statecache.SummaryPart, want map[string]*statecache.SummaryPart, q statecache.SummaryQuery) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%+v: %d groups, want %d", q, len(got), len(want))
	}
	for _, g := range got {
		w := want[g.Key]
		if w == nil || g.Count != w.Count {
			t.Fatalf("%+v: group %q of %d, want %+v", q, g.Key, g.Count, w)
		}
		for n := range w.Fields {
			a, b := g.Fields[n], w.Fields[n]
			if a.Count != b.Count || a.Min != b.Min || a.Max != b.Max || math.Abs(a.Sum-b.Sum) > 1e-6*math.Max(1, math.Abs(b.Sum)) {
				t.Fatalf("%+v: group %q field %s: %+v, want %+v", q, g.Key, q.Fields[n], a, b)
			}
		}
	}
}

// TestCache_Summarize checks Summarize against brute force over a cache
// that upserts (moves between paths among them) and deletes keep changing,
// at sizes below and above the split between processors.
func TestCache_Summarize(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for _, size := range []int{300, 60000} {
		c := statecache.New()
		truth := map[int64]*herd.Device{}
		var ds []*herd.Device
		for id := int64(1); id <= int64(size); id++ {
			d := randomDevice(rng, id)
			truth[id] = d
			ds = append(ds, d)
		}
		c.Upsert(ds...)
		for round := range 4 {
			if round > 0 {
				var changed []*herd.Device
				var gone []int64
				for id := range truth {
					switch rng.IntN(10) {
					case 0:
						d := randomDevice(rng, id)
						truth[id] = d
						changed = append(changed, d)
					case 1:
						delete(truth, id)
						gone = append(gone, id)
					}
				}
				c.Upsert(changed...)
				c.Delete(gone...)
			}
			all := make([]*herd.Device, 0, len(truth))
			for _, d := range truth {
				all = append(all, d)
			}
			for range 15 {
				q := statecache.SummaryQuery{
					Paths:   [][]string{{"/1/"}, {"/1/2/"}, {"/1/3/", "/1/2/5/"}, {"/9/"}}[rng.IntN(4)],
					Filters: randomQuery(rng, all).Filters,
					GroupBy: pick(rng, summaryGroupBys),
				}
				for _, i := range rng.Perm(len(herd.NumericReadingFields))[:rng.IntN(5)] {
					q.Fields = append(q.Fields, herd.NumericReadingFields[i])
				}
				got, ok := c.Summarize(q)
				if !ok {
					t.Fatalf("%+v: declined", q)
				}
				checkParts(t, got, summaryOracle(truth, q), q)
			}
		}
	}
}

// TestCache_SummarizeDeclines checks that a query the cache cannot answer
// exactly is declined, for the store to answer from the database.
func TestCache_SummarizeDeclines(t *testing.T) {
	c := statecache.New()
	c.Upsert(randomDevice(rand.New(rand.NewPCG(1, 1)), 1))
	for _, q := range []statecache.SummaryQuery{
		{Paths: []string{"/1/"}, Filters: []herd.DeviceFilter{{Field: "temperature", Op: herd.OpEq, Values: []any{"hot"}}}},
		{Paths: []string{"/1/"}, GroupBy: "name"},
		{Paths: []string{"/1/"}, Fields: []string{"config_version"}},
		{Paths: []string{"/1/"}, Fields: []string{"colour"}},
	} {
		if _, ok := c.Summarize(q); ok {
			t.Errorf("%+v: answered", q)
		}
	}
}

// BenchmarkSummarize measures a summary of a 200,000-device scope grouped
// by status with two fields, with and without a filter.
func BenchmarkSummarize(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 7))
	c := statecache.New()
	ds := make([]*herd.Device, 200000)
	for i := range ds {
		ds[i] = randomDevice(rng, int64(i+1))
	}
	c.Upsert(ds...)
	for _, bc := range []struct {
		name string
		q    statecache.SummaryQuery
	}{
		{"status", statecache.SummaryQuery{Paths: []string{"/1/"}, GroupBy: "status", Fields: []string{"temperature", "battery"}}},
		{"path", statecache.SummaryQuery{Paths: []string{"/1/"}, GroupBy: "path", Fields: []string{"temperature", "battery"}}},
		{"model+filter", statecache.SummaryQuery{Paths: []string{"/1/"}, GroupBy: "model", Fields: []string{"temperature"},
			Filters: []herd.DeviceFilter{{Field: "temperature", Op: herd.OpGt, Values: []any{20.0}}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, ok := c.Summarize(bc.q); !ok {
					b.Fatal("declined")
				}
			}
		})
	}
}

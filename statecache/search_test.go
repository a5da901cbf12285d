package statecache_test

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/statecache"
)

// Text where case folding is not lowercasing: ß folds to ss, final sigma
// to sigma, İ to i and a combining dot; and plain lowercase ASCII, which
// the cache keeps no folded copy of.
var (
	searchTexts = []string{"", "Straße", "STRASSE", "ÖL", "öl-pump", "İstanbul", "istanbul", "ΣΊΣΥΦΟΣ", "σίσυφος",
		"oslo-Boiler", "Oslo boiler 2", "pump", "PUMP-7", "th-200", "TH-200", "1.4.2", "naïve Ünit", "a\U0010FFFF"}
	labelKeys  = []string{"ring", "customer", "floor"}
	nodeIDs    = []int64{1, 2, 3, 5, 6, 30}
	nodeNames  = []string{"Oslo", "Nordic", "Boiler Room", "STRASSE 5", "İzmir", "öl depot", "Σίσυφος", "plant"}
	absentText = []string{"zzq", "ßß", "σσσ", "\U0010FFFF\U0010FFFF"}
)

func randomSearchDevice(rng *rand.Rand, id int64) *herd.Device {
	d := randomDevice(rng, id)
	d.Name, d.Model, d.Firmware = pick(rng, searchTexts), pick(rng, searchTexts), pick(rng, searchTexts)
	if rng.IntN(3) == 0 {
		d.Key = pick(rng, searchTexts) + strconv.FormatInt(id, 10)
	}
	d.Labels = map[string]string{}
	for _, k := range labelKeys {
		if rng.IntN(2) == 0 {
			d.Labels[k] = pick(rng, searchTexts)
		}
	}
	return d
}

// randomTerm returns a folded text some device holds (a piece of one of
// its folded texts), or, one time in four, one that no device holds.
func randomTerm(rng *rand.Rand, ds []*herd.Device, names map[int64]string) string {
	var s string
	switch rng.IntN(8) {
	case 0, 1:
		return pick(rng, absentText)
	case 2:
		s = names[pick(rng, nodeIDs)]
	default:
		d := pick(rng, ds)
		fields := []string{"name", "key", "model", "firmware"}
		for _, k := range labelKeys {
			fields = append(fields, "label."+k)
		}
		s, _ = d.SearchText(pick(rng, fields))
	}
	r := []rune(herd.FoldText(s))
	if len(r) == 0 {
		return pick(rng, absentText)
	}
	lo := rng.IntN(len(r))
	return string(r[lo : lo+1+rng.IntN(len(r)-lo)])
}

// nodeWorld is the node tree of the test paths with random names: the
// folded names by node, and the set of a word as the store computes it.
type nodeWorld map[int64]string

func randomNodeWorld(rng *rand.Rand) nodeWorld {
	w := nodeWorld{}
	for _, id := range nodeIDs {
		w[id] = herd.FoldText(pick(rng, nodeNames))
	}
	return w
}

// pathNames are the folded names of the nodes on a path, root first.
func (w nodeWorld) pathNames(path string) []string {
	ids, _ := herd.PathIDs(path)
	var names []string
	for _, id := range ids {
		names = append(names, w[id])
	}
	return names
}

// nodes is every node whose own name or an ancestor's holds the word.
func (w nodeWorld) nodes(word string) map[int64]bool {
	set := map[int64]bool{}
	for _, p := range paths {
		ids, _ := herd.PathIDs(p)
		for _, n := range w.pathNames(p) {
			if strings.Contains(n, word) {
				set[ids[len(ids)-1]] = true
			}
		}
	}
	return set
}

// searchCase is a query and, for each word of it, whether the store's node
// set is arbitrary (then a device matches through its node when the set
// holds it, whatever the names).
type searchCase struct {
	q         statecache.Query
	arbitrary []bool
}

func randomSearchQuery(rng *rand.Rand, ds []*herd.Device, world nodeWorld) searchCase {
	q := randomQuery(rng, ds)
	q.Filters = q.Filters[:min(len(q.Filters), rng.IntN(2))]
	sc := searchCase{q: statecache.Query{Filters: q.Filters, Sort: q.Sort, Limit: q.Limit}}
	if rng.IntN(3) == 0 {
		// Sorts by the searched texts, ties and all.
		sc.q.Sort.Field = pick(rng, []string{"name", "model", "label.ring"})
	}
	for range rng.IntN(3) {
		field := pick(rng, []string{"name", "key", "model", "firmware", "label.ring", "label.customer", "label.floor", "label.absent"})
		sc.q.Filters = append(sc.q.Filters, herd.DeviceFilter{Field: field, Op: herd.OpContains, Values: []any{randomTerm(rng, ds, world)}})
	}
	for range rng.IntN(3) {
		w := statecache.SearchWord{Word: randomTerm(rng, ds, world)}
		arbitrary := rng.IntN(4) == 0
		if arbitrary {
			w.Nodes = map[int64]bool{}
			for _, id := range nodeIDs {
				if rng.IntN(4) == 0 {
					w.Nodes[id] = true
				}
			}
		} else {
			w.Nodes = world.nodes(w.Word)
		}
		sc.q.Search = append(sc.q.Search, w)
		sc.arbitrary = append(sc.arbitrary, arbitrary)
	}
	return sc
}

// matches is the oracle of the query's filters and words over one device.
func (sc searchCase) matches(d *herd.Device, world nodeWorld) bool {
	for _, f := range sc.q.Filters {
		if !testutil.Matches(d, f) {
			return false
		}
	}
	for n, w := range sc.q.Search {
		if sc.arbitrary[n] {
			if !w.Nodes[d.NodeID] && !d.MatchesWord(w.Word, nil) {
				return false
			}
		} else if !d.MatchesWord(w.Word, world.pathNames(d.Path)) {
			return false
		}
	}
	return true
}

// walk pages through the query's answer and returns the ids it found.
func walk(t *testing.T, c *statecache.Cache, q statecache.Query, wantCount int) []int64 {
	t.Helper()
	var got []int64
	q.After = nil
	for page := 0; ; page++ {
		res, ok := c.Query(q)
		if !ok {
			t.Fatalf("%+v: declined", q)
		}
		if res.Count != int64(wantCount) {
			t.Fatalf("%+v page %d: count %d, want %d", q, page, res.Count, wantCount)
		}
		for _, h := range res.Hits {
			got = append(got, h.ID)
		}
		if len(res.Hits) < q.Limit || page > wantCount {
			return got
		}
		last := res.Hits[len(res.Hits)-1]
		q.After = &herd.DeviceCursor{Null: last.Null, Value: last.Value, ID: last.ID}
	}
}

// TestCache_SearchOracle checks contains filters and words of q against
// the oracle (Device.MatchesContains, Device.MatchesWord) over a cache
// that upserts (new names, labels and paths) and deletes keep changing,
// under node names that change between rounds.
func TestCache_SearchOracle(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	c := statecache.New()
	truth := map[int64]*herd.Device{}
	nextID := int64(1)
	var empty, found, words int
	for round := range 60 {
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
					d := randomSearchDevice(rng, id)
					if rng.IntN(2) == 0 {
						// Only the labels change (or only the name).
						old := *truth[id]
						if rng.IntN(2) == 0 {
							old.Labels = d.Labels
						} else {
							old.Name = d.Name
						}
						d = &old
					}
					truth[id] = d
					c.Upsert(d)
					break
				}
			default:
				d := randomSearchDevice(rng, nextID)
				nextID++
				truth[d.ID] = d
				c.Upsert(d)
			}
		}
		all := make([]*herd.Device, 0, len(truth))
		for _, d := range truth {
			all = append(all, d)
		}
		if len(all) == 0 {
			continue // the deletes emptied the cache: no text to draw from
		}
		world := randomNodeWorld(rng)
		for range 30 {
			sc := randomSearchQuery(rng, all, world)
			sc.q.Paths = []string{pick(rng, paths)}
			var want []*herd.Device
			for _, d := range all {
				if inScope(d, sc.q.Paths) && sc.matches(d, world) {
					want = append(want, d)
				}
			}
			slices.SortFunc(want, func(a, b *herd.Device) int { return testutil.CompareDevices(a, b, sc.q.Sort) })
			wantIDs := make([]int64, len(want))
			for i, d := range want {
				wantIDs[i] = d.ID
			}
			if got := walk(t, c, sc.q, len(want)); !slices.Equal(got, wantIDs) {
				t.Fatalf("round %d, %+v:\n got %v\nwant %v", round, sc.q, got, wantIDs)
			}
			if len(want) == 0 {
				empty++
			} else {
				found++
			}
			words += len(sc.q.Search)
		}
	}
	// The terms must be ones that occur as well as ones that do not.
	if empty < 100 || found < 300 || words < 500 {
		t.Fatalf("%d queries found nothing, %d something, %d words: the test is not testing", empty, found, words)
	}
}

// TestCache_SearchLargeScope checks searches split between processors:
// counts and first pages over a scope above the split size.
func TestCache_SearchLargeScope(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 60,000 devices")
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	c := statecache.New()
	all := make([]*herd.Device, 60000)
	for i := range all {
		all[i] = randomSearchDevice(rng, int64(i+1))
	}
	c.Upsert(all...)
	world := randomNodeWorld(rng)
	for range 30 {
		sc := randomSearchQuery(rng, all, world)
		sc.q.Paths, sc.q.Limit = []string{"/1/"}, 1+rng.IntN(60)
		var want []*herd.Device
		for _, d := range all {
			if sc.matches(d, world) {
				want = append(want, d)
			}
		}
		slices.SortFunc(want, func(a, b *herd.Device) int { return testutil.CompareDevices(a, b, sc.q.Sort) })
		res, ok := c.Query(sc.q)
		if !ok || res.Count != int64(len(want)) {
			t.Fatalf("%+v: count %d (ok %v), want %d", sc.q, res.Count, ok, len(want))
		}
		if len(res.Hits) != min(len(want), sc.q.Limit) {
			t.Fatalf("%+v: %d hits, want %d", sc.q, len(res.Hits), min(len(want), sc.q.Limit))
		}
		for i, h := range res.Hits {
			if h.ID != want[i].ID {
				t.Fatalf("%+v: hit %d is %d, want %d", sc.q, i, h.ID, want[i].ID)
			}
		}
	}
}

// TestCache_SearchCases pins a few foldings down by hand.
func TestCache_SearchCases(t *testing.T) {
	c := statecache.New()
	c.Upsert(
		&herd.Device{ID: 1, NodeID: 2, Path: "/1/2/", Key: "dev1", Name: "Straße 9", Labels: map[string]string{"ring": "ÖLTANK"}},
		&herd.Device{ID: 2, NodeID: 3, Path: "/1/3/", Key: "dev2", Name: "ΣΊΣΥΦΟΣ", Model: "TH-200"},
		&herd.Device{ID: 3, NodeID: 3, Path: "/1/3/", Key: "dev3", Name: "İstanbul", Firmware: "oslo-Boiler"},
	)
	for _, tc := range []struct {
		filter string
		q      string
		want   []int64
	}{
		{filter: "name:contains:STRASSE", want: []int64{1}},
		{filter: "name:contains:σίσυφος", want: []int64{2}},
		{filter: "name:contains:istanbul"}, // İ folds to i and a combining dot
		{filter: "name:contains:i̇stan", want: []int64{3}},
		{filter: "model:contains:th-2", want: []int64{2}},
		{filter: "firmware:contains:BOILER", want: []int64{3}},
		{filter: "label.ring:contains:ölt", want: []int64{1}},
		{filter: "label.floor:contains:ölt"},
		{filter: "key:contains:dev2", want: []int64{2}},
		{q: "öltank STRASSE", want: []int64{1}},
		{q: "strasse sisyphus"},
		{q: "dev3 Boil", want: []int64{3}},
		{q: "quay", want: []int64{2, 3}}, // node 3 is named Quayside
	} {
		q := statecache.Query{Paths: []string{"/1/"}, Sort: herd.DeviceSort{Field: "id"}, Limit: 10}
		if tc.filter != "" {
			f, err := herd.ParseDeviceFilter(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			q.Filters = append(q.Filters, f)
		}
		words, err := herd.ParseSearch(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range words {
			nodes := map[int64]bool{}
			if strings.Contains("quayside", w) {
				nodes[3] = true
			}
			q.Search = append(q.Search, statecache.SearchWord{Word: w, Nodes: nodes})
		}
		res, ok := c.Query(q)
		var got []int64
		for _, h := range res.Hits {
			got = append(got, h.ID)
		}
		if !ok || !slices.Equal(got, tc.want) || res.Count != int64(len(tc.want)) {
			t.Errorf("%q q=%q: %v (count %d, ok %v), want %v", tc.filter, tc.q, got, res.Count, ok, tc.want)
		}
	}
}

// TestCache_SearchDeclines: a contains the cache does not implement, or
// a search over labels it keeps no columns for, goes to the database.
func TestCache_SearchDeclines(t *testing.T) {
	c := statecache.New()
	c.Upsert(&herd.Device{ID: 1, NodeID: 1, Path: "/1/", Key: "k", Labels: map[string]string{"ring": "North"}})
	word := []statecache.SearchWord{{Word: "nor"}}
	for _, q := range []statecache.Query{
		{Filters: []herd.DeviceFilter{{Field: "status", Op: herd.OpContains, Values: []any{"ok"}}}},
		{Filters: []herd.DeviceFilter{{Field: "temperature", Op: herd.OpContains, Values: []any{"2"}}}},
		{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains, Values: []any{int64(2)}}}},
		{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains}}},
		{Filters: []herd.DeviceFilter{{Field: "label.ring", Op: herd.OpContains, Values: []any{"a", "b"}}}},
	} {
		q.Paths, q.Limit, q.Sort.Field = []string{"/"}, 10, "id"
		if _, ok := c.Query(q); ok {
			t.Errorf("%+v: answered", q)
		}
	}
	if res, ok := c.Query(statecache.Query{Paths: []string{"/"}, Search: word, Sort: herd.DeviceSort{Field: "id"}, Limit: 1}); !ok || res.Count != 1 {
		t.Fatalf("a word over labels with columns: %+v, %v", res, ok)
	}
	// Past MaxLabelColumns keys some label values have no column.
	for i := range statecache.MaxLabelColumns {
		c.Upsert(&herd.Device{ID: int64(i + 2), NodeID: 1, Path: "/1/", Key: "k", Labels: map[string]string{"k" + strconv.Itoa(i): "v"}})
	}
	if _, ok := c.Query(statecache.Query{Paths: []string{"/"}, Search: word, Sort: herd.DeviceSort{Field: "id"}, Limit: 1}); ok {
		t.Fatal("a word over labels without columns was answered")
	}
	f := []herd.DeviceFilter{{Field: "label.nocolumn", Op: herd.OpContains, Values: []any{"nor"}}}
	if _, ok := c.Query(statecache.Query{Paths: []string{"/"}, Filters: f, Sort: herd.DeviceSort{Field: "id"}, Limit: 1}); ok {
		t.Fatal("a contains on a key without a column was answered")
	}
	f[0].Field = "label.ring"
	if res, ok := c.Query(statecache.Query{Paths: []string{"/"}, Filters: f, Sort: herd.DeviceSort{Field: "id"}, Limit: 1}); !ok || res.Count != 1 {
		t.Fatalf("a contains on a key with a column: %+v, %v", res, ok)
	}
}

// TestCache_SummarizeContains checks a summary filtered by contains
// against brute force.
func TestCache_SummarizeContains(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	c := statecache.New()
	truth := map[int64]*herd.Device{}
	var all []*herd.Device
	for id := int64(1); id <= 2000; id++ {
		d := randomSearchDevice(rng, id)
		truth[id], all = d, append(all, d)
	}
	c.Upsert(all...)
	world := randomNodeWorld(rng)
	nonEmpty := 0
	for range 200 {
		sc := randomSearchQuery(rng, all, world)
		q := statecache.SummaryQuery{Paths: []string{pick(rng, paths)}, GroupBy: pick(rng, summaryGroupBys), Fields: []string{"temperature", "rssi"}}
		for _, f := range sc.q.Filters {
			if f.Op == herd.OpContains {
				q.Filters = append(q.Filters, f)
			}
		}
		got, ok := c.Summarize(q)
		if !ok {
			t.Fatalf("%+v: declined", q)
		}
		want := summaryOracle(truth, q)
		checkParts(t, got, want, q)
		if len(q.Filters) > 0 && len(want) > 0 {
			nonEmpty++
		}
	}
	if nonEmpty < 20 {
		t.Fatalf("only %d filtered summaries found devices", nonEmpty)
	}
}

// BenchmarkQuery_Search measures words of q and a contains over a
// 200,000-device scope of mixed-case names, models and labels.
func BenchmarkQuery_Search(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	c := statecache.New()
	models := []string{"TH-200", "th-300", "Boiler Ctl", "pm-10"}
	sites := []string{"Oslo", "Bergen", "Straße", "Trondheim", "İzmir"}
	for region := range 5 {
		for site := range 40 {
			p := "/1/" + strconv.Itoa(10+region) + "/" + strconv.Itoa(1000+region*100+site) + "/"
			for i := range 5000 {
				id := int64(region*200000 + site*5000 + i + 1)
				c.Upsert(&herd.Device{ID: id, NodeID: int64(1000 + region*100 + site), Path: p, Key: "d" + strconv.FormatInt(id, 10),
					Name:  pick(rng, sites) + " " + pick(rng, []string{"Boiler", "Pump", "Meter"}) + " " + strconv.FormatInt(rng.Int64N(1e6), 36),
					Model: pick(rng, models), Firmware: "1." + strconv.Itoa(rng.IntN(20)) + ".0", CreatedAt: t0,
					Labels: map[string]string{"ring": strconv.Itoa(rng.IntN(8)), "customer": pick(rng, []string{"Acme", "globex", "Initech"})}})
			}
		}
	}
	word := func(w string) statecache.SearchWord {
		return statecache.SearchWord{Word: w, Nodes: map[int64]bool{1001: true, 1002: true}}
	}
	for _, bc := range []struct {
		name string
		q    statecache.Query
	}{
		{"one-word", statecache.Query{Search: []statecache.SearchWord{word("boiler")}}},
		{"one-rare-word", statecache.Query{Search: []statecache.SearchWord{word("zq1")}}},
		{"two-words", statecache.Query{Search: []statecache.SearchWord{word("pump"), word("oslo")}}},
		{"label-eq+name-contains", statecache.Query{Filters: []herd.DeviceFilter{
			{Field: "label.ring", Op: herd.OpEq, Values: []any{"3"}},
			{Field: "name", Op: herd.OpContains, Values: []any{"meter"}}}}},
		{"name-contains", statecache.Query{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains, Values: []any{"strasse"}}}}},
	} {
		bc.q.Paths, bc.q.Sort, bc.q.Limit = []string{"/1/10/"}, herd.DeviceSort{Field: "name"}, 51
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := c.Query(bc.q); !ok {
					b.Fatal("declined")
				}
			}
		})
	}
}

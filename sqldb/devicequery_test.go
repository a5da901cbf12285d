package sqldb_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

var seedFlag = flag.Uint64("herd.seed", 0, "seed of the randomized store tests; 0 picks one (the test logs it)")

// testSeed returns the seed of a randomized test and logs how to repeat it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d: repeat with go test ./sqldb -run '%s' -herd.seed=%d", seed, t.Name(), seed)
	return seed
}

// Value pools hold few values so that sort values repeat and the id
// tie-break decides, and so that filters hit. Text values reach into
// multi-byte UTF-8 and U+10FFFF, where byte order and prefix bounds are
// easy to get wrong; none contains '|', the in-list separator.
var (
	t0        = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	poolNames = []string{"a", "ab", "abc", "b", "pump", "Pump", "pump 2", "pümp", "é", "z", "a\U0010FFFF", "\U0010FFFF", "\U0010FFFFz", "x:y",
		"Straße 5", "STRASSE", "ÖL-Pumpe", "İstanbul", "ΣΊΣΥΦΟΣ", "oslo-Boiler", "boiler\n7", "100%_off"}
	// Node names, which q matches too: words that devices hold as well,
	// in other cases.
	poolNodeNames = []string{"n", "Oslo", "oslo-west", "Bergen", "BOILER room", "straße", "σίσυφος", "pümp hall"}
	// Search terms: pieces of the pooled texts in another case, across a
	// word boundary, with LIKE's wildcards, and some that nothing holds.
	poolTerms = []string{"pum", "PUMP", "ümp", "strasse", "STRAßE", "öl-", "istanbul", "İst", "σίσ", "ΣΊΣ", "oslo", "OSLO-b", "boiler", "bergen",
		"can", "CANARY", "eta", "0%_", "%_o", "x:y", "1.1", "2.0-Β", "p-1", "nothing"}
	poolModels   = []string{"", "P1", "P10", "P2", "p1", "\uffff"}
	poolFirmware = []string{"", "1.0", "1.10", "1.2", "2.0-β"}
	poolStatus   = []string{herd.StatusOK, herd.StatusWarn, herd.StatusAlarm, ""}
	poolTimes    = []int64{t0 - 5000, t0, t0 + 1, t0 + 1000, t0 + 86400000}
	poolFloats   = []float64{-5.5, -0.25, 0, 20, 20.5, 30, 1e10}
	poolInts     = []int64{-90, -70, 0, 5, 3600}
	poolCounts   = []int64{0, 1, 2, 7}
	// Label keys and values: a few keys, each on about half the devices,
	// values that differ only in case or by a multi-byte rune, and the
	// empty value, which a device has (exists) but is not absent.
	poolLabelKeys   = []string{"ring", "floor", "asset/tag", "x.y-z_1"}
	poolLabelValues = []string{"canary", "Canary", "beta", "", "é", "3", "\U0010FFFF"}
)

// randomLabels gives each pooled key to about half the devices.
func randomLabels(rng *rand.Rand) map[string]string {
	labels := map[string]string{}
	for _, k := range poolLabelKeys {
		if rng.IntN(2) == 0 {
			labels[k] = pick(rng, poolLabelValues)
		}
	}
	return labels
}

func pick[T any](rng *rand.Rand, pool []T) T { return pool[rng.IntN(len(pool))] }

// randomDevice returns a device with random readings, NULL about a third
// of the time.
func randomDevice(rng *rand.Rand, nodeID int64) *herd.Device {
	d := &herd.Device{
		NodeID: nodeID, Key: nextKey("p"), Name: pick(rng, poolNames), Model: pick(rng, poolModels),
		Firmware: pick(rng, poolFirmware), Status: pick(rng, poolStatus), Online: rng.IntN(2) == 0,
		ErrorCount: pick(rng, poolCounts), ConfigVersion: pick(rng, poolCounts),
		CreatedAt: time.UnixMilli(pick(rng, poolTimes[:3])).UTC(),
		Labels:    randomLabels(rng),
	}
	maybe := func() bool { return rng.IntN(3) != 0 }
	if maybe() {
		ts := time.UnixMilli(pick(rng, poolTimes)).UTC()
		d.LastSeen = &ts
	}
	for _, p := range []**float64{&d.Temperature, &d.Humidity, &d.Pressure, &d.Voltage, &d.Current, &d.Power, &d.Battery} {
		if maybe() {
			*p = new(pick(rng, poolFloats))
		}
	}
	for _, p := range []**int64{&d.RSSI, &d.UptimeS} {
		if maybe() {
			*p = new(pick(rng, poolInts))
		}
	}
	return d
}

// model is the in-memory truth of one tenant: its tree, devices and
// grants, kept without paths so that paths are checked, not assumed.
type model struct {
	tenant  *herd.Tenant
	names   map[int64]string // node → name
	parent  map[int64]int64  // node → parent, 0 for the root
	nodes   []int64
	devices map[int64]*herd.Device
	grants  map[int64]map[int64]*herd.Grant // user → node → grant
	secrets map[int64]string                // user → token
}

func (m *model) path(node int64) string {
	var chain []int64
	for n := node; n != 0; n = m.parent[n] {
		chain = append(chain, n)
	}
	p := "/"
	for i := len(chain) - 1; i >= 0; i-- {
		p = herd.ChildPath(p, chain[i])
	}
	return p
}

// nodeNames returns the folded names of the node and its ancestors.
func (m *model) nodeNames(node int64) []string {
	var out []string
	for n := node; n != 0; n = m.parent[n] {
		out = append(out, herd.FoldText(m.names[n]))
	}
	return out
}

// randomSearch returns a q of one to three words, from the terms' pool or
// a piece of a device's name, in any case.
func (m *model) randomSearch(rng *rand.Rand) string {
	var words []string
	for range 1 + rng.IntN(3) {
		w := pick(rng, poolTerms)
		if strings.ContainsAny(w, " ") {
			continue
		}
		words = append(words, w)
	}
	if len(words) == 0 {
		words = []string{"pump"}
	}
	return strings.Join(words, pick(rng, []string{" ", "  ", "\t"}))
}

func (m *model) under(node, ancestor int64) bool {
	for n := node; n != 0; n = m.parent[n] {
		if n == ancestor {
			return true
		}
	}
	return false
}

// visible is the oracle of the scope: the device's node descends from a
// node the user holds any grant on (every role can view). User 0 is the
// super-admin.
func (m *model) visible(user int64, d *herd.Device) bool {
	if user == 0 {
		return true
	}
	for node := range m.grants[user] {
		if m.under(d.NodeID, node) {
			return true
		}
	}
	return false
}

func (m *model) oracle(user int64, q herd.DeviceQuery) []*herd.Device {
	var out []*herd.Device
	for _, d := range m.devices {
		if !m.visible(user, d) {
			continue
		}
		ok := true
		for _, f := range q.Filters {
			ok = ok && testutil.Matches(d, f)
		}
		for _, w := range q.Search {
			ok = ok && d.MatchesWord(w, m.nodeNames(d.NodeID))
		}
		if ok {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *herd.Device) int { return testutil.CompareDevices(a, b, q.Sort) })
	return out
}

// formatValue writes a value as a filter takes it, times in either form.
func formatValue(rng *rand.Rand, field herd.Field, v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int64:
		if field.Type == herd.FieldTime && rng.IntN(2) == 0 {
			return time.UnixMilli(x).UTC().Format(time.RFC3339Nano)
		}
		return strconv.FormatInt(x, 10)
	}
	panic(fmt.Sprintf("formatValue %T", v))
}

// randomValue draws a value of the field: mostly one some device holds,
// sometimes one from the field's pool that may match nothing.
func (m *model) randomValue(rng *rand.Rand, name string) any {
	if rng.IntN(4) != 0 && len(m.devices) > 0 {
		for _, d := range m.devices {
			if v, null := d.FieldValue(name); !null {
				return v
			}
			break
		}
	}
	switch herd.DeviceFields[name].Type {
	case herd.FieldString:
		switch name {
		case "path":
			return m.path(pick(rng, m.nodes))
		case "key":
			return "p-" + strconv.Itoa(rng.IntN(50))
		case "model":
			return pick(rng, poolModels)
		case "firmware":
			return pick(rng, poolFirmware)
		}
		return pick(rng, poolNames)
	case herd.FieldEnum:
		return pick(rng, poolStatus)
	case herd.FieldBool:
		return rng.IntN(2) == 0
	case herd.FieldFloat:
		return pick(rng, poolFloats) + float64(rng.IntN(2))*0.5
	case herd.FieldTime:
		return pick(rng, poolTimes)
	}
	switch name {
	case "id":
		for id := range m.devices {
			return id
		}
	case "node_id":
		return pick(rng, m.nodes)
	case "error_count", "config_version":
		return pick(rng, poolCounts)
	}
	return pick(rng, poolInts)
}

// randomFilter returns a FIELD:OP:VALUE string for any field and any
// operator that applies to it.
func (m *model) randomFilter(rng *rand.Rand) string {
	if rng.IntN(4) == 0 {
		return randomLabelFilter(rng)
	}
	if rng.IntN(5) == 0 {
		field := pick(rng, []string{"name", "key", "model", "firmware", herd.LabelFieldPrefix + pick(rng, poolLabelKeys)})
		return field + ":contains:" + pick(rng, poolTerms)
	}
	name := pick(rng, herd.DeviceFieldNames)
	field := herd.DeviceFields[name]
	ops := []string{herd.OpEq, herd.OpNe, herd.OpIn}
	if field.Type != herd.FieldBool && field.Type != herd.FieldEnum {
		ops = append(ops, herd.OpLt, herd.OpLe, herd.OpGt, herd.OpGe)
	}
	if field.Type == herd.FieldString {
		ops = append(ops, herd.OpPrefix, herd.OpPrefix)
	}
	op := pick(rng, ops)
	var vals []string
	switch op {
	case herd.OpIn:
		for range 1 + rng.IntN(4) {
			vals = append(vals, formatValue(rng, field, m.randomValue(rng, name)))
		}
	case herd.OpPrefix:
		s := m.randomValue(rng, name).(string)
		if n := utf8.RuneCountInString(s); n > 0 {
			s = string([]rune(s)[:1+rng.IntN(n)])
		}
		if name == "path" && rng.IntN(2) == 0 {
			s = strings.TrimSuffix(s, "/") // "/1/2" also matches "/1/23/"
		}
		if s == "" {
			s = pick(rng, []string{"a", "p", "\U0010FFFF", "P"})
		}
		vals = []string{s}
	default:
		vals = []string{formatValue(rng, field, m.randomValue(rng, name))}
	}
	return name + ":" + op + ":" + strings.Join(vals, "|")
}

// randomLabelFilter returns a filter on a label: a pooled key or one no
// device has, with every label operator.
func randomLabelFilter(rng *rand.Rand) string {
	key := pick(rng, append(poolLabelKeys, "none"))
	switch op := pick(rng, []string{herd.OpEq, herd.OpNe, herd.OpIn, herd.OpExists}); op {
	case herd.OpExists:
		return herd.LabelFieldPrefix + key + ":exists:" + strconv.FormatBool(rng.IntN(2) == 0)
	case herd.OpIn:
		var vals []string
		for range 1 + rng.IntN(3) {
			vals = append(vals, pick(rng, poolLabelValues))
		}
		return herd.LabelFieldPrefix + key + ":in:" + strings.Join(vals, "|")
	default:
		return herd.LabelFieldPrefix + key + ":" + op + ":" + pick(rng, poolLabelValues)
	}
}

// build makes a random tree of depth 1–4 under a new tenant, with devices
// on random nodes (the root and inner nodes included) and users with
// random, overlapping grants.
func build(t *testing.T, f *fixture, rng *rand.Rand, devices, users int) *model {
	t.Helper()
	ten := f.mustTenant(t, "prop")
	m := &model{tenant: ten, names: map[int64]string{ten.RootNodeID: ten.Name}, parent: map[int64]int64{ten.RootNodeID: 0}, nodes: []int64{ten.RootNodeID},
		devices: map[int64]*herd.Device{}, grants: map[int64]map[int64]*herd.Grant{}, secrets: map[int64]string{}}
	depth := 1 + rng.IntN(4)
	level := []int64{ten.RootNodeID}
	for range depth {
		var next []int64
		for _, p := range level {
			for range 1 + rng.IntN(3) {
				n := f.mustNode(t, p, pick(rng, poolNodeNames))
				m.parent[n.ID], m.names[n.ID] = p, n.Name
				m.nodes = append(m.nodes, n.ID)
				next = append(next, n.ID)
			}
		}
		level = next
	}
	ds := make([]*herd.Device, devices)
	for i := range ds {
		ds[i] = randomDevice(rng, pick(rng, m.nodes))
	}
	mustOK(t, f.Devices.CreateDevices(f.super, ds))
	for _, d := range ds {
		m.devices[d.ID] = d
	}
	for i := range users {
		u, secret := f.mustUser(t, ten.ID, "u"+strconv.Itoa(i))
		m.secrets[u.ID] = secret
		m.grants[u.ID] = map[int64]*herd.Grant{}
		for range rng.IntN(5) { // some users have no grant at all
			m.grant(t, f, rng, u.ID)
		}
	}
	return m
}

func (m *model) grant(t *testing.T, f *fixture, rng *rand.Rand, user int64) {
	t.Helper()
	node := pick(rng, m.nodes)
	if m.grants[user][node] != nil {
		return
	}
	m.grants[user][node] = f.mustGrant(t, user, node, pick(rng, []herd.Role{herd.RoleViewer, herd.RoleOperator, herd.RoleAdmin}))
}

// churn moves random subtrees and devices, deletes a device, and revokes
// and adds grants, keeping the model in step.
func (m *model) churn(t *testing.T, f *fixture, rng *rand.Rand) {
	t.Helper()
	for range 1 + rng.IntN(3) {
		id := m.nodes[1+rng.IntN(len(m.nodes)-1)]
		to := pick(rng, m.nodes)
		_, err := f.Nodes.MoveNode(f.super, id, to)
		if m.under(to, id) {
			wantCode(t, err, herd.EINVALID)
			continue
		}
		mustOK(t, err)
		m.parent[id] = to
	}
	for range rng.IntN(3) {
		id := pick(rng, m.nodes)
		name := pick(rng, poolNodeNames)
		_, err := f.Nodes.UpdateNode(f.super, id, herd.NodeUpdate{Name: &name})
		mustOK(t, err)
		m.names[id] = name
	}
	for id, d := range m.devices {
		switch rng.IntN(10) {
		case 4:
			// A rename, which the search index must follow.
			name, model := pick(rng, poolNames), pick(rng, poolModels)
			got, err := f.Devices.UpdateDevice(f.super, id, herd.DeviceUpdate{Name: &name, Model: &model})
			mustOK(t, err)
			d.Name, d.Model, d.Version = got.Name, got.Model, got.Version
		case 0:
			_, err := f.Devices.MoveDevice(f.super, id, pick(rng, m.nodes))
			mustOK(t, err)
			got, err := f.Devices.FindDeviceByID(f.super, id)
			mustOK(t, err)
			d.NodeID = got.NodeID
		case 1:
			mustOK(t, f.Devices.DeleteDevice(f.super, id))
			delete(m.devices, id)
		case 2, 3:
			// A label patch: set, change and remove keys at random.
			u := herd.DeviceUpdate{Labels: map[string]*string{}}
			for _, k := range poolLabelKeys {
				switch rng.IntN(3) {
				case 0:
					u.Labels[k] = new(pick(rng, poolLabelValues))
				case 1:
					u.Labels[k] = nil
				}
			}
			got, err := f.Devices.UpdateDevice(f.super, id, u)
			mustOK(t, err)
			d.Labels, d.Version = got.Labels, got.Version
		}
	}
	for user, gs := range m.grants {
		for node, g := range gs {
			if rng.IntN(4) == 0 {
				mustOK(t, f.Grants.DeleteGrant(f.super, g.ID))
				delete(gs, node)
			}
		}
		if rng.IntN(2) == 0 {
			m.grant(t, f, rng, user)
		}
	}
	for _, d := range m.devices {
		d.Path = m.path(d.NodeID)
	}
}

// TestQueryDevices_Property checks the scoped query against a brute-force
// oracle on random trees, devices, grants, moves, filters, sorts and page
// sizes: all pages walked through the cursor must give exactly the devices
// under a node the user holds a grant on that match the filters, in the
// sort's order, and count must be their number.
func TestQueryDevices_Property(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 0x6865726421))
		rounds, queries := 3, 20
		if testing.Short() {
			rounds, queries = 2, 8
		}
		// The store picks an access path per page: read the scope and sort
		// it, or walk the sort column's index. The walks must take both.
		var mu sync.Mutex
		shapes := map[string]int{}
		db.QueryHook = func(query string, _ []any) {
			if strings.Contains(query, "ORDER BY") && strings.Contains(query, "devices.id IN (SELECT rowid FROM device_search_fts") ||
				strings.Contains(query, "devices.id IN (SELECT s.device_id FROM device_search s") {
				mu.Lock()
				shapes["search index"]++ // a page the trigram index drove
				mu.Unlock()
				return
			}
			if strings.Contains(query, "FROM devices WHERE") && strings.Contains(query, " AND id IN (") {
				mu.Lock()
				shapes["state cache"]++
				mu.Unlock()
				return
			}
			if !strings.Contains(query, "ORDER BY") || !strings.Contains(query, "FROM devices") {
				return
			}
			shape := "sort index"
			if strings.Contains(query, "MATERIALIZED") || strings.Contains(query, "INDEXED BY devices_tenant_path") ||
				strings.Contains(query, "INDEXED BY devices_tenant_status_path") {
				shape = "scope first"
			} else if !strings.Contains(query, "INDEXED BY") && db.Dialect() == sqldb.SQLite {
				shape = "engine's choice"
			}
			mu.Lock()
			shapes[shape]++
			mu.Unlock()
		}
		t.Cleanup(func() { db.QueryHook = nil })
		// Searches drive their pages through the trigram index whenever a
		// text is rare enough, even in these small scopes.
		db.SetSearchIndexFrom(1)
		// A decoy tenant whose devices hold the same values must never show.
		decoy := build(t, f, rng, 20, 1)
		m := build(t, f, rng, 60+rng.IntN(60), 3)
		walks, pages := 0, 0
		for round := range rounds {
			if round > 0 {
				m.churn(t, f, rng)
			}
			users := []int64{0} // the super-admin
			for u := range m.secrets {
				users = append(users, u)
			}
			slices.Sort(users)
			for _, user := range users {
				ctx := f.super
				if user != 0 {
					ctx = f.as(t, m.secrets[user]) // grants as they are now
				}
				for range queries {
					v := url.Values{}
					for range rng.IntN(4) {
						v.Add("filter", m.randomFilter(rng))
					}
					sort := pick(rng, herd.DeviceFieldNames)
					if rng.IntN(5) == 0 {
						sort = herd.LabelFieldPrefix + pick(rng, append(poolLabelKeys, "none"))
					}
					if rng.IntN(2) == 0 {
						sort = "-" + sort
					}
					v.Set("sort", sort)
					v.Set("limit", strconv.Itoa(pick(rng, []int{1, 2, 3, 5, 8, 13, 50, 500})))
					if rng.IntN(4) == 0 {
						v.Set("q", m.randomSearch(rng))
					}
					if user == 0 {
						v.Set("tenant_id", strconv.FormatInt(m.tenant.ID, 10))
					}
					q, err := herd.ParseDeviceQuery(v)
					if err != nil {
						t.Fatalf("seed %d: parse %q: %v", seed, v.Encode(), err)
					}
					want := m.oracle(user, q)
					got, count := f.walk(t, ctx, q)
					walks++
					pages += len(got)/q.Limit + 1
					if !slices.Equal(ids(got), ids(want)) {
						t.Fatalf("seed %d round %d user %d query %s:\ngot  %v\nwant %v%s", seed, round, user, v.Encode(), ids(got), ids(want), explain(got, want, q))
					}
					for i, d := range got {
						if !reflect.DeepEqual(d, want[i]) {
							t.Fatalf("seed %d: device %d reads\n%+v\nwant\n%+v", seed, d.ID, d, want[i])
						}
					}
					if count != int64(len(want)) {
						t.Fatalf("seed %d round %d user %d query %s: count %d, want %d", seed, round, user, v.Encode(), count, len(want))
					}
				}
			}
		}
		// The decoy tenant's own admin sees its devices and only those.
		for u := range decoy.secrets {
			if decoy.grants[u][decoy.tenant.RootNodeID] == nil {
				decoy.grants[u][decoy.tenant.RootNodeID] = f.mustGrant(t, u, decoy.tenant.RootNodeID, herd.RoleViewer)
			}
			q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}, Limit: 7}
			got, _ := f.walk(t, f.as(t, decoy.secrets[u]), q)
			if want := decoy.oracle(u, q); !slices.Equal(ids(got), ids(want)) {
				t.Fatalf("seed %d: decoy tenant sees %v, want %v", seed, ids(got), ids(want))
			}
		}
		db.QueryHook = nil
		t.Logf("%d walks, about %d pages; page statements by access path: %v", walks, pages, shapes)
		if db.StateCache.Always {
			if shapes["state cache"] == 0 || len(shapes) != 1 {
				t.Errorf("seed %d: the walks did not all go through the state cache (%v)", seed, shapes)
			}
		} else if shapes["scope first"] == 0 || shapes["sort index"] == 0 || shapes["search index"] == 0 {
			t.Errorf("seed %d: the walks did not take every access path (%v); the oracle checked only some", seed, shapes)
		}
		checkSearchIndex(t, db)
	})
}

// checkSearchIndex has SQLite check that its trigram index holds exactly
// the rows of device_search, after the creates, patches, moves and deletes
// of a test: the index of new devices is written by the store, not by a
// trigger, so a device indexed twice or never would show here (a page
// would not: the index only proposes candidates).
func checkSearchIndex(t *testing.T, db *sqldb.DB) {
	t.Helper()
	if db.Dialect() != sqldb.SQLite {
		return
	}
	if _, err := db.SQL().Exec(`INSERT INTO device_search_fts (device_search_fts, rank) VALUES ('integrity-check', 1)`); err != nil {
		t.Fatalf("the trigram index does not match device_search: %v", err)
	}
}

// explain describes the first difference between a walk and the oracle.
func explain(got, want []*herd.Device, q herd.DeviceQuery) string {
	for i := range min(len(got), len(want)) {
		if got[i].ID != want[i].ID {
			gv, gn := got[i].FieldValue(q.Sort.Field)
			wv, wn := want[i].FieldValue(q.Sort.Field)
			return fmt.Sprintf("\nfirst difference at %d: got %d (%v null=%v path %s), want %d (%v null=%v path %s)",
				i, got[i].ID, gv, gn, got[i].Path, want[i].ID, wv, wn, want[i].Path)
		}
	}
	return fmt.Sprintf("\n%d items, want %d", len(got), len(want))
}

// TestQueryDevices_WalkDuringInserts walks all pages while another
// goroutine keeps inserting devices into the scope: every device that
// existed before the walk shows exactly once, no device shows twice, and
// the walk never goes back in sort order. The sort columns are ones the
// inserts do not change for existing rows.
func TestQueryDevices_WalkDuringInserts(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 1))
		ten := f.mustTenant(t, "busy")
		region := f.mustNode(t, ten.RootNodeID, "region")
		sites := []int64{region.ID, f.mustNode(t, region.ID, "s1").ID, f.mustNode(t, region.ID, "s2").ID}
		outside := f.mustNode(t, ten.RootNodeID, "outside")
		u, secret := f.mustUser(t, ten.ID, "watcher")
		f.mustGrant(t, u.ID, region.ID, herd.RoleViewer)
		var pre []*herd.Device
		for range 150 {
			pre = append(pre, randomDevice(rng, pick(rng, sites)))
		}
		mustOK(t, f.Devices.CreateDevices(f.super, pre))

		for _, sort := range []string{"name", "-temperature", "last_seen", "-id"} {
			t.Run(strings.TrimPrefix(sort, "-"), func(t *testing.T) {
				s, err := herd.ParseDeviceSort(sort)
				mustOK(t, err)
				q := herd.DeviceQuery{Sort: s, Limit: 7}
				ctx := f.as(t, secret)

				inserted := make(chan []int64) // one batch per page the walker asks for
				stop := make(chan struct{})
				errc := make(chan error, 1)
				irng := rand.New(rand.NewPCG(rng.Uint64(), 2))
				go func() {
					defer close(inserted)
					for {
						var batch []*herd.Device
						for range 1 + irng.IntN(3) {
							node := pick(irng, sites)
							if irng.IntN(4) == 0 {
								node = outside.ID
							}
							batch = append(batch, randomDevice(irng, node))
						}
						if err := f.Devices.CreateDevices(f.super, batch); err != nil {
							errc <- err
							return
						}
						select {
						case inserted <- ids(batch):
						case <-stop:
							return
						}
					}
				}()

				seen := map[int64]int{}
				var last *herd.Device
				walked, newRows := 0, 0
				for page := 0; ; page++ {
					// Each page is asked for after at least one more insert,
					// while the next insert is already under way.
					select {
					case _, ok := <-inserted:
						if !ok {
							t.Fatalf("inserter: %v", <-errc)
						}
					case err := <-errc:
						t.Fatalf("inserter: %v", err)
					}
					p, err := f.Devices.QueryDevices(ctx, q)
					mustOK(t, err)
					for _, d := range p.Items {
						seen[d.ID]++
						if last != nil && testutil.CompareDevices(last, d, q.Sort) >= 0 {
							t.Fatalf("seed %d: walk went back from %d to %d", seed, last.ID, d.ID)
						}
						last = d
						walked++
					}
					if p.NextCursor == "" {
						break
					}
					q.Cursor = p.NextCursor // the store checks and decodes it
				}
				close(stop)
				for range inserted { // let the inserter finish its last batch
				}
				for _, d := range pre {
					if seen[d.ID] != 1 {
						t.Fatalf("seed %d: pre-existing device %d seen %d times", seed, d.ID, seen[d.ID])
					}
				}
				for id, n := range seen {
					if n != 1 {
						t.Fatalf("seed %d: device %d seen %d times", seed, id, n)
					}
				}
				newRows = walked - len(pre)
				t.Logf("%d rows walked, %d of them inserted during the walk", walked, newRows)
			})
		}
	})
}

// TestGrantService_RevokeTakesEffect checks that a revoke takes effect on
// the very next request (a cursor issued before it is refused), and that
// neither grant nor revoke touches a device row.
func TestGrantService_RevokeTakesEffect(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		region := f.mustNode(t, ten.RootNodeID, "region")
		site := f.mustNode(t, region.ID, "site")
		ds := f.mustDevices(t, site.ID, 12)
		u, secret := f.mustUser(t, ten.ID, "viewer")
		q := herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}, Limit: 5}

		var mu sync.Mutex
		var writes []string
		db.QueryHook = func(query string, _ []any) {
			if isWrite(query) {
				mu.Lock()
				writes = append(writes, query)
				mu.Unlock()
			}
		}
		t.Cleanup(func() { db.QueryHook = nil })
		before := f.state(t, ten.ID).devices
		g := f.mustGrant(t, u.ID, region.ID, herd.RoleViewer)
		ctx := f.as(t, secret)
		page, err := f.Devices.QueryDevices(ctx, q)
		mustOK(t, err)
		if len(page.Items) != 5 || page.Count != 12 || page.NextCursor == "" {
			t.Fatalf("with the grant: %d items, count %d", len(page.Items), page.Count)
		}
		if _, err := f.Devices.FindDeviceByID(ctx, ds[0].ID); err != nil {
			t.Fatal(err)
		}

		mustOK(t, f.Grants.DeleteGrant(f.super, g.ID))
		// The very next request, authenticated as every request is.
		ctx = f.as(t, secret)
		p, err := f.Devices.QueryDevices(ctx, q)
		mustOK(t, err)
		if len(p.Items) != 0 || p.NextCursor != "" {
			t.Fatalf("first page after revoke: %v", ids(p.Items))
		}
		// The cursor was issued to the grants the user held: with others
		// it is refused, and the user pages again from the first page.
		_, err = f.Devices.QueryDevices(ctx, withCursor(t, q, page.NextCursor))
		wantCode(t, err, herd.EINVALIDCURSOR)
		if p, _ := f.Devices.QueryDevices(ctx, q); p.Count != 0 {
			t.Fatalf("count after revoke %d", p.Count)
		}
		_, err = f.Devices.FindDeviceByID(ctx, ds[0].ID)
		wantCode(t, err, herd.ENOTFOUND)

		// Granting again is just as immediate.
		f.mustGrant(t, u.ID, site.ID, herd.RoleOperator)
		items, _ := f.walk(t, f.as(t, secret), q)
		if len(items) != len(ds) {
			t.Fatalf("after re-grant: %d devices", len(items))
		}

		// Grant and revoke wrote grant and event rows and nothing else.
		db.QueryHook = nil
		for _, w := range writes {
			lw := strings.ToLower(w)
			if strings.Contains(lw, "devices") || !(strings.Contains(lw, "grants") || strings.Contains(lw, "events") || strings.Contains(lw, "tenants set event_seq")) {
				t.Fatalf("grant or revoke ran %q", w)
			}
		}
		if len(writes) == 0 {
			t.Fatal("the hook saw no writes")
		}
		if after := f.state(t, ten.ID).devices; !reflect.DeepEqual(after, before) {
			t.Fatal("device rows changed")
		}
	})
}

func withCursor(tb testing.TB, q herd.DeviceQuery, cursor string) herd.DeviceQuery {
	tb.Helper()
	q.Cursor = cursor // the store checks and decodes it
	return q
}

// TestQueryDevices_OneSnapshot checks that the statements of one page read
// one snapshot: a page over a nullable sort column reads its NULL rows and
// its other rows in two statements, and a device committed between them
// shows in neither. (Otherwise a reading that goes from NULL to a value
// between the two would show its device twice on one page.)
func TestQueryDevices_OneSnapshot(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		f.mustDevices(t, site.ID, 3) // no temperature yet
		var mu sync.Mutex
		var inserted bool
		var insertErr error
		db.QueryHook = func(query string, _ []any) {
			mu.Lock()
			fire := !inserted && strings.Contains(query, "temperature IS NOT NULL")
			inserted = inserted || fire // before the insert, which runs this hook too
			mu.Unlock()
			if fire {
				err := f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: site.ID, Key: nextKey("late"), Temperature: new(20.0)}})
				mu.Lock()
				insertErr = err
				mu.Unlock()
			}
		}
		t.Cleanup(func() { db.QueryHook = nil })
		q := herd.DeviceQuery{TenantID: ten.ID, Sort: herd.DeviceSort{Field: "temperature"}, Limit: 10}
		p, err := f.Devices.QueryDevices(f.super, q)
		mustOK(t, err)
		db.QueryHook = nil
		mustOK(t, insertErr)
		if !inserted {
			t.Fatal("the page read no non-NULL temperatures")
		}
		if len(p.Items) != 3 {
			t.Fatalf("page of %d items: its statements read different snapshots", len(p.Items))
		}
		// The device is there for the next request.
		if p, err := f.Devices.QueryDevices(f.super, q); err != nil || len(p.Items) != 4 {
			t.Fatalf("next request: %d items, %v", len(p.Items), err)
		}
	})
}

// stmt is one statement the store sent, as QueryHook saw it.
type stmt struct {
	query string
	args  []any
}

// TestQueryDevices_NoDeviceIDLists is the guard test: no code path sends a
// list of the caller's device ids to the database. With grants covering
// thousands of devices, every statement of Authenticate, QueryDevices and
// FindDeviceByID carries a handful of parameters — the tenant, two bounds
// per covering path, the filter values, the keyset position and the limit —
// and hardly any of them is a device id. And the store refuses outright a
// statement with more than herd.MaxQueryParams parameters.
func TestQueryDevices_NoDeviceIDLists(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "big")
		big := f.mustNode(t, ten.RootNodeID, "big region")
		small := f.mustNode(t, ten.RootNodeID, "small region")
		var bigSites []*herd.Node
		for i := range 5 {
			bigSites = append(bigSites, f.mustNode(t, big.ID, "site"+strconv.Itoa(i)))
		}
		smallSite := f.mustNode(t, small.ID, "small site")
		rng := rand.New(rand.NewPCG(7, 7))
		inScope := map[int64]bool{}
		perSite := 1000 // 5,000 devices in the grants
		if raceEnabled && db.Dialect() == sqldb.SQLite {
			perSite = 400 // still 100 times the small scope below
		}
		t.Logf("%d devices in scope", len(bigSites)*perSite+20)
		for _, s := range bigSites {
			ds := make([]*herd.Device, perSite)
			for i := range ds {
				ds[i] = randomDevice(rng, s.ID)
			}
			mustOK(t, f.Devices.CreateDevices(f.super, ds))
			for _, d := range ds {
				inScope[d.ID] = true
			}
		}
		for _, d := range f.mustDevices(t, smallSite.ID, 20) {
			inScope[d.ID] = true
		}
		f.mustDevices(t, ten.RootNodeID, 30) // outside the grants
		u, secret := f.mustUser(t, ten.ID, "regional manager")
		f.mustGrant(t, u.ID, big.ID, herd.RoleViewer)
		f.mustGrant(t, u.ID, bigSites[2].ID, herd.RoleOperator) // collapses into the region
		f.mustGrant(t, u.ID, smallSite.ID, herd.RoleViewer)
		const paths = 2

		// The hook may be called from several goroutines of one request.
		var mu sync.Mutex
		var seen []stmt
		db.QueryHook = func(query string, args []any) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, stmt{query, append([]any(nil), args...)})
		}
		statements := func() []stmt {
			mu.Lock()
			defer mu.Unlock()
			return append([]stmt(nil), seen...)
		}
		reset := func() {
			mu.Lock()
			defer mu.Unlock()
			seen = nil
		}
		t.Cleanup(func() { db.QueryHook = nil })

		t.Run("OK", func(t *testing.T) {
			queries := []url.Values{
				{"sort": {"-last_seen"}},
				{"filter": {"status:eq:alarm"}, "sort": {"-temperature"}},
				{"filter": {"temperature:gt:0", "battery:lt:20"}, "sort": {"name"}},
				{"filter": {"name:prefix:pu", "status:in:ok|warn|alarm", "online:eq:true"}, "sort": {"-rssi"}, "limit": {"10"}},
				{"sort": {"id"}, "limit": {"500"}},
			}
			for _, v := range queries {
				reset()
				ctx := f.as(t, secret)
				q, err := herd.ParseDeviceQuery(v)
				mustOK(t, err)
				values := 0
				for _, flt := range q.Filters {
					values += len(flt.Values)
					if flt.Op == herd.OpPrefix {
						values++ // the prefix's upper bound
					}
				}
				total := 0
				for page := 0; page < 3; page++ {
					p, err := f.Devices.QueryDevices(ctx, q)
					mustOK(t, err)
					if p.Count == 0 || len(p.Items) == 0 {
						t.Fatalf("%s: nothing found; the guard would prove nothing", v.Encode())
					}
					for _, d := range p.Items {
						if !inScope[d.ID] {
							t.Fatalf("%s: device %d is outside the grants", v.Encode(), d.ID)
						}
					}
					if _, err := f.Devices.FindDeviceByID(ctx, p.Items[0].ID); err != nil {
						t.Fatal(err)
					}
					if p.NextCursor == "" {
						break
					}
					q.Cursor = p.NextCursor // the store checks and decodes it
				}
				// tenant + 2 per path + filter values + keyset (value, id) +
				// limit; a capped walk adds its own tenant, cap and 2 per
				// path for the scope test on the index entry.
				bound := 1 + 2*paths + values + 2 + 1 + (1 + 1 + 2*paths)
				// Tenant and node ids are small numbers that device ids
				// share; a list of the scope's ids would be thousands.
				maxIDs := 5
				if db.StateCache.Always {
					// The state cache picks one page of ids; the store reads
					// those rows (the background note's "a small IN is fine").
					bound += q.Limit
					maxIDs += q.Limit
				}
				for _, s := range statements() {
					if strings.HasPrefix(s.query, sqldb.PageLabelsSQL) {
						// The labels of the page's devices, by the page's
						// ids: one page (the row the next page starts from
						// is not read), never the scope.
						if len(s.args) > 1+q.Limit {
							t.Fatalf("%s: the labels of a page read by %d parameters: %s", v.Encode(), len(s.args), s.query)
						}
						continue
					}
					total += len(s.args)
					if len(s.args) > bound {
						t.Fatalf("%s: statement with %d parameters (bound %d): %s", v.Encode(), len(s.args), bound, s.query)
					}
					ids := 0
					for _, a := range s.args {
						if id, ok := a.(int64); ok && inScope[id] {
							ids++
						}
					}
					if ids > maxIDs {
						t.Fatalf("%s: statement carries %d device ids: %s %v", v.Encode(), ids, s.query, s.args)
					}
				}
				budget := 40 * 3
				if db.StateCache.Always {
					budget += 3 * (q.Limit + 10) // a catch-up and a page of ids per page
				}
				if n := len(statements()); n == 0 || total > budget {
					t.Fatalf("%s: %d statements with %d parameters in all", v.Encode(), n, total)
				}
			}
		})
		t.Run("ErrInListTooLong", func(t *testing.T) {
			// The parser refuses long in-lists and too many values in all.
			vals := make([]string, herd.MaxInValues+1)
			for i := range vals {
				vals[i] = strconv.Itoa(i + 1)
			}
			_, err := herd.ParseDeviceQuery(url.Values{"filter": {"id:in:" + strings.Join(vals, "|")}})
			wantCode(t, err, herd.EINVALIDFILTER)
		})
		t.Run("ErrQueryTooLarge", func(t *testing.T) {
			// Queries built around the parser, shipping the caller's ids as
			// an in-list or as many lists, are refused before anything
			// reaches the database, whichever layer refuses them.
			var list []any
			for id := range inScope {
				if len(list) > herd.MaxQueryParams {
					break
				}
				list = append(list, id)
			}
			oneList := []herd.DeviceFilter{{Field: "id", Op: herd.OpIn, Values: list}}
			var manyLists []herd.DeviceFilter
			for i := range herd.MaxFilters {
				manyLists = append(manyLists, herd.DeviceFilter{Field: "id", Op: herd.OpIn, Values: list[i*20 : i*20+herd.MaxInValues]})
			}
			for name, filters := range map[string][]herd.DeviceFilter{"one list": oneList, "many lists": manyLists} {
				reset()
				q := herd.DeviceQuery{Filters: filters, Sort: herd.DeviceSort{Field: "id"}, Limit: 10}
				_, err := f.Devices.QueryDevices(f.as(t, secret), q)
				if herd.ErrorCode(err) != herd.EINVALIDFILTER {
					t.Fatalf("%s: got %v, want %s", name, err, herd.EINVALIDFILTER)
				}
				for _, s := range statements() {
					if len(s.args) > herd.MaxQueryParams {
						t.Fatalf("%s: statement with %d parameters reached the database: %s", name, len(s.args), s.query)
					}
				}
			}
			// A short list of ids is fine.
			q := herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "id", Op: herd.OpIn, Values: list[:50]}}, Sort: herd.DeviceSort{Field: "id"}, Limit: 10}
			p, err := f.Devices.QueryDevices(f.as(t, secret), q)
			mustOK(t, err)
			if p.Count != 50 {
				t.Fatalf("count %d, want 50", p.Count)
			}
		})
		t.Run("ErrGuard", func(t *testing.T) {
			// The store's last line: any statement above MaxQueryParams is
			// refused before it is sent; one at the limit runs.
			in := func(n int) (string, []any) {
				return "SELECT id FROM devices WHERE id IN (" + strings.TrimSuffix(strings.Repeat("?,", n), ",") + ")", make([]any, n)
			}
			q, args := in(herd.MaxQueryParams)
			for i := range args {
				args[i] = int64(i + 1)
			}
			reset()
			mustOK(t, db.QueryGuarded(t.Context(), q, args...))
			if n := len(statements()); n != 1 {
				t.Fatalf("the hook saw %d statements, want 1", n)
			}
			q, args = in(herd.MaxQueryParams + 1)
			for i := range args {
				args[i] = int64(i + 1)
			}
			reset()
			if err := db.QueryGuarded(t.Context(), q, args...); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Fatalf("a statement with %d parameters: %v", len(args), err)
			}
			if n := len(statements()); n != 0 {
				t.Fatalf("the refused statement reached the hook (%d statements)", n)
			}
		})
	})
}

// TestQueryDevices_CountCap checks that the count is exact up to the cap
// and capped above it.
func TestQueryDevices_CountCap(t *testing.T) {
	if testing.Short() {
		t.Skip("loads more than herd.CountCap devices")
	}
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		if raceEnabled && db.Dialect() == sqldb.SQLite {
			// Over 10,000 inserts take half a minute on SQLite under the
			// race detector; the count is the same SQL on both engines and
			// runs here on PostgreSQL, and on SQLite without -race.
			t.Skip("skipped on SQLite under -race")
		}
		f := newFixture(db)
		ten := f.mustTenant(t, "huge")
		site := f.mustNode(t, ten.RootNodeID, "site")
		n := herd.CountCap + 10
		for start := 0; start < n; start += herd.MaxBatchDevices {
			ds := make([]*herd.Device, min(herd.MaxBatchDevices, n-start))
			for i := range ds {
				ds[i] = &herd.Device{NodeID: site.ID, Key: nextKey("cap"), Online: (start+i)%2 == 0}
			}
			mustOK(t, f.Devices.CreateDevices(f.super, ds))
		}
		for _, tt := range []struct {
			filter string
			count  int64
			capped bool
		}{
			{"", herd.CountCap, true},
			{"online:eq:true", int64(n / 2), false},
		} {
			v := url.Values{"tenant_id": {strconv.FormatInt(ten.ID, 10)}, "limit": {"3"}}
			if tt.filter != "" {
				v.Set("filter", tt.filter)
			}
			q, err := herd.ParseDeviceQuery(v)
			mustOK(t, err)
			p, err := f.Devices.QueryDevices(f.super, q)
			mustOK(t, err)
			if p.Count != tt.count || p.CountCapped != tt.capped || len(p.Items) != 3 {
				t.Fatalf("filter %q: count %d capped %v, want %d %v", tt.filter, p.Count, p.CountCapped, tt.count, tt.capped)
			}
		}
	})
}

package sqldb_test

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// summaryFleet is a model whose nodes have names of their own, so that a
// group named after the wrong node shows.
type summaryFleet struct {
	*model
	names map[int64]string
}

// buildSummaryFleet is build with named nodes and two users of known
// shape besides the random ones: one granted a subtree below the root, one
// granted two sibling subtrees (whose common root is a node they may not
// see).
func buildSummaryFleet(t *testing.T, f *fixture, rng *rand.Rand, devices, users int) *summaryFleet {
	t.Helper()
	ten := f.mustTenant(t, "summ")
	// One map of node names for the model and the fleet: churn renames
	// nodes, and the summary's expected group names must follow.
	names := map[int64]string{ten.RootNodeID: ten.Name}
	m := &model{tenant: ten, names: names, parent: map[int64]int64{ten.RootNodeID: 0}, nodes: []int64{ten.RootNodeID},
		devices: map[int64]*herd.Device{}, grants: map[int64]map[int64]*herd.Grant{}, secrets: map[int64]string{}}
	sf := &summaryFleet{model: m, names: names}
	root, err := f.Nodes.FindNodeByID(f.super, ten.RootNodeID)
	mustOK(t, err)
	sf.names[root.ID] = root.Name
	level := []int64{ten.RootNodeID}
	for depth := range 2 + rng.IntN(3) {
		var next []int64
		for _, p := range level {
			for range 1 + rng.IntN(3) {
				name := fmt.Sprintf("site %d.%d", depth, len(m.nodes))
				n := f.mustNode(t, p, name)
				m.parent[n.ID] = p
				m.nodes = append(m.nodes, n.ID)
				sf.names[n.ID] = name
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
	newUser := func(name string) int64 {
		u, secret := f.mustUser(t, ten.ID, name)
		m.secrets[u.ID] = secret
		m.grants[u.ID] = map[int64]*herd.Grant{}
		return u.ID
	}
	for i := range users {
		u := newUser("u" + strconv.Itoa(i))
		for range rng.IntN(4) {
			m.grant(t, f, rng, u)
		}
	}
	// A subtree: a child of the root.
	sub := m.nodes[1]
	u := newUser("scoped")
	m.grants[u][sub] = f.mustGrant(t, u, sub, herd.RoleViewer)
	// Two siblings, when the tree has them.
	for _, a := range m.nodes[1:] {
		for _, b := range m.nodes[1:] {
			if a < b && m.parent[a] == m.parent[b] {
				u := newUser("siblings")
				m.grants[u][a] = f.mustGrant(t, u, a, herd.RoleViewer)
				m.grants[u][b] = f.mustGrant(t, u, b, herd.RoleOperator)
				return sf
			}
		}
	}
	return sf
}

// covering is the oracle of a scope's covering nodes: the user's granted
// nodes that no other granted node is above (the tenant's root for the
// super-admin, user 0).
func (sf *summaryFleet) covering(user int64) []int64 {
	if user == 0 {
		return []int64{sf.tenant.RootNodeID}
	}
	var out []int64
	for n := range sf.grants[user] {
		top := true
		for o := range sf.grants[user] {
			if o != n && sf.under(n, o) {
				top = false
			}
		}
		if top {
			out = append(out, n)
		}
	}
	return out
}

// chain is the node's ancestors from the root down to it.
func (sf *summaryFleet) chain(node int64) []int64 {
	var c []int64
	for n := node; n != 0; n = sf.parent[n] {
		c = append(c, n)
	}
	slices.Reverse(c)
	return c
}

// oracleGroup is the brute-force summary of a group.
type oracleGroup struct {
	name   string
	count  int64
	fields map[string][]float64
}

// summaryOracle computes the summary by brute force: the devices under a
// covering node that pass every filter, grouped by the key each group_by
// gives. For group_by=node the groups are the children of the covering
// nodes' lowest common ancestor (itself for devices right on it), named
// when a covering node is at or above them. notFound says the node of the
// query is outside the scope.
func (sf *summaryFleet) summaryOracle(user int64, q herd.SummaryQuery) (groups map[string]*oracleGroup, notFound bool) {
	cover := sf.covering(user)
	if q.NodeID != 0 {
		seen := slices.ContainsFunc(cover, func(c int64) bool { return sf.under(q.NodeID, c) })
		if !seen {
			return nil, true
		}
		cover = []int64{q.NodeID}
	}
	var lca []int64
	for i, c := range cover {
		ch := sf.chain(c)
		if i == 0 {
			lca = ch
			continue
		}
		n := 0
		for n < len(lca) && n < len(ch) && lca[n] == ch[n] {
			n++
		}
		lca = lca[:n]
	}
	groups = map[string]*oracleGroup{}
	if q.GroupBy == "" {
		groups[""] = &oracleGroup{fields: map[string][]float64{}}
	}
	for _, d := range sf.devices {
		if !slices.ContainsFunc(cover, func(c int64) bool { return sf.under(d.NodeID, c) }) {
			continue
		}
		ok := true
		for _, f := range q.Filters {
			ok = ok && testutil.Matches(d, f)
		}
		if !ok {
			continue
		}
		var key, name string
		switch q.GroupBy {
		case "status":
			key = d.Status
		case "model":
			key = d.Model
		case "firmware":
			key = d.Firmware
		case "online":
			key = strconv.FormatBool(d.Online)
		case "node":
			ch := sf.chain(d.NodeID)
			node := ch[len(lca)-1] // the root itself for a device right on it
			if len(ch) > len(lca) {
				node = ch[len(lca)]
			}
			key = strconv.FormatInt(node, 10)
			if slices.ContainsFunc(cover, func(c int64) bool { return sf.under(node, c) }) {
				name = sf.names[node]
			}
		}
		g := groups[key]
		if g == nil {
			g = &oracleGroup{name: name, fields: map[string][]float64{}}
			groups[key] = g
		}
		g.count++
		for _, f := range q.Fields {
			if v, null := d.FieldValue(f); !null {
				switch x := v.(type) {
				case float64:
					g.fields[f] = append(g.fields[f], x)
				case int64:
					g.fields[f] = append(g.fields[f], float64(x))
				}
			}
		}
	}
	return groups, false
}

// checkSummary compares an answer with the oracle's groups.
func checkSummary(t *testing.T, got *herd.Summary, q herd.SummaryQuery, want map[string]*oracleGroup) {
	t.Helper()
	keys := make([]string, 0, len(want))
	var total int64
	for k, g := range want {
		keys = append(keys, k)
		total += g.count
	}
	if q.GroupBy == "node" {
		slices.SortFunc(keys, func(a, b string) int {
			x, _ := strconv.ParseInt(a, 10, 64)
			y, _ := strconv.ParseInt(b, 10, 64)
			return cmp.Compare(x, y)
		})
	} else {
		slices.Sort(keys)
	}
	var gotKeys []string
	for _, g := range got.Groups {
		gotKeys = append(gotKeys, g.Key)
	}
	if !slices.Equal(gotKeys, keys) {
		t.Fatalf("groups %q, want %q", gotKeys, keys)
	}
	if got.Count != total || got.GroupBy != q.GroupBy || got.GroupsTruncated {
		t.Fatalf("count %d group_by %q truncated %v, want %d %q false", got.Count, got.GroupBy, got.GroupsTruncated, total, q.GroupBy)
	}
	for _, g := range got.Groups {
		w := want[g.Key]
		if g.Count != w.count || g.Name != w.name {
			t.Fatalf("group %q: count %d name %q, want %d %q", g.Key, g.Count, g.Name, w.count, w.name)
		}
		if len(g.Fields) != len(q.Fields) {
			t.Fatalf("group %q: fields %v, want %v", g.Key, g.Fields, q.Fields)
		}
		for _, f := range q.Fields {
			vs, fs := w.fields[f], g.Fields[f]
			if fs.Count != int64(len(vs)) {
				t.Fatalf("group %q %s: count %d, want %d", g.Key, f, fs.Count, len(vs))
			}
			if len(vs) == 0 {
				if fs.Min != nil || fs.Avg != nil || fs.Max != nil {
					t.Fatalf("group %q %s: figures %v %v %v over no value", g.Key, f, fs.Min, fs.Avg, fs.Max)
				}
				continue
			}
			sum := 0.0
			for _, v := range vs {
				sum += v
			}
			avg := sum / float64(len(vs))
			if fs.Min == nil || fs.Avg == nil || fs.Max == nil {
				t.Fatalf("group %q %s: null figures over %d values", g.Key, f, len(vs))
			}
			if *fs.Min != slices.Min(vs) || *fs.Max != slices.Max(vs) || math.Abs(*fs.Avg-avg) > 1e-9*math.Max(1, math.Abs(avg)) {
				t.Fatalf("group %q %s: min %v avg %v max %v, want %v %v %v", g.Key, f, *fs.Min, *fs.Avg, *fs.Max, slices.Min(vs), avg, slices.Max(vs))
			}
		}
	}
}

// TestSummarizeDevices_Property checks the summary against a brute-force
// oracle on random trees, devices, grants, moves, filters, groupings and
// fields, through the database's GROUP BY and through the state cache.
func TestSummarizeDevices_Property(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		hs := sqldb.NewHistoryService(db)
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 0x73756d6d))
		rounds, queries := 3, 25
		if testing.Short() {
			rounds, queries = 2, 10
		}
		// A decoy tenant whose devices hold the same values must never count.
		buildSummaryFleet(t, f, rng, 30, 1)
		sf := buildSummaryFleet(t, f, rng, 80+rng.IntN(80), 3)
		wantSource := "devices"
		if db.StateCache.Always {
			wantSource = "state_cache"
		}
		byGroup := map[string]int{}
		notFound := 0
		for round := range rounds {
			if round > 0 {
				sf.churn(t, f, rng)
			}
			users := []int64{0}
			for u := range sf.secrets {
				users = append(users, u)
			}
			slices.Sort(users)
			for _, user := range users {
				ctx := f.super
				if user != 0 {
					ctx = f.as(t, sf.secrets[user])
				}
				for range queries {
					v := url.Values{}
					for range rng.IntN(3) {
						v.Add("filter", sf.randomFilter(rng))
					}
					if g := rng.IntN(len(herd.SummaryGroupBys) + 1); g < len(herd.SummaryGroupBys) {
						v.Set("group_by", herd.SummaryGroupBys[g])
					}
					var fields []string
					for _, i := range rng.Perm(len(herd.NumericReadingFields))[:rng.IntN(4)] {
						fields = append(fields, herd.NumericReadingFields[i])
					}
					if len(fields) > 0 {
						v.Set("fields", joinComma(fields))
					}
					if rng.IntN(3) == 0 {
						v.Set("node_id", strconv.FormatInt(pick(rng, sf.nodes), 10))
					}
					if user == 0 {
						v.Set("tenant_id", strconv.FormatInt(sf.tenant.ID, 10))
					}
					q, err := herd.ParseSummaryQuery(v)
					if err != nil {
						t.Fatalf("seed %d: parse %q: %v", seed, v.Encode(), err)
					}
					want, nf := sf.summaryOracle(user, q)
					got, err := hs.SummarizeDevices(ctx, q)
					if nf {
						notFound++
						if herd.ErrorCode(err) != herd.ENOTFOUND {
							t.Fatalf("seed %d round %d user %d %s: got %+v, %v; want ENOTFOUND", seed, round, user, v.Encode(), got, err)
						}
						continue
					}
					if err != nil {
						t.Fatalf("seed %d round %d user %d %s: %v", seed, round, user, v.Encode(), err)
					}
					t.Run("", func(t *testing.T) {
						defer func() {
							if t.Failed() {
								t.Logf("seed %d round %d user %d query %s", seed, round, user, v.Encode())
							}
						}()
						checkSummary(t, got, q, want)
						if src := wantSource; got.Source != src && (got.Source != "none" || len(sf.covering(user)) != 0) {
							t.Fatalf("source %q, want %q", got.Source, src)
						}
					})
					if t.Failed() {
						t.FailNow()
					}
					byGroup[q.GroupBy]++
				}
			}
		}
		t.Logf("summaries by group_by: %v; %d nodes outside the scope refused", byGroup, notFound)
		if notFound == 0 || len(byGroup) != len(herd.SummaryGroupBys)+1 {
			t.Errorf("seed %d: the queries did not cover every group_by and a refused node (%v, %d)", seed, byGroup, notFound)
		}
	})
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}

// TestSummarizeDevices_Routing checks which source answers: the state cache
// for a large scope of a cached tenant, the table below the sizes.
func TestSummarizeDevices_Routing(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 30, MinScope: 20, Refresh: 0}
		f := newFixture(db)
		hs := sqldb.NewHistoryService(db)
		ten := f.mustTenant(t, "route")
		big := f.mustNode(t, ten.RootNodeID, "big")
		small := f.mustNode(t, ten.RootNodeID, "small")
		f.mustDevices(t, big.ID, 25)
		f.mustDevices(t, small.ID, 10)
		mustOK(t, db.WarmStateCache(f.super, ten.ID))
		for _, tc := range []struct {
			node   int64
			count  int64
			source string
		}{{0, 35, "state_cache"}, {big.ID, 25, "state_cache"}, {small.ID, 10, "devices"}} {
			s, err := hs.SummarizeDevices(f.super, herd.SummaryQuery{TenantID: ten.ID, NodeID: tc.node, GroupBy: "online"})
			mustOK(t, err)
			if s.Source != tc.source || s.Count != tc.count {
				t.Errorf("node %d: source %q count %d, want %q %d", tc.node, s.Source, s.Count, tc.source, tc.count)
			}
		}
		// A device created after the load counts at once: the cache catches
		// up before it answers.
		f.mustDevices(t, big.ID, 3)
		s, err := hs.SummarizeDevices(f.super, herd.SummaryQuery{TenantID: ten.ID})
		mustOK(t, err)
		if s.Source != "state_cache" || s.Count != 38 || len(s.Groups) != 1 || s.Groups[0].Count != 38 {
			t.Errorf("after creating 3: %+v", s)
		}
	})
}

// TestSummarizeDevices_Truncated checks the cut to MaxSummaryGroups: the
// largest groups are kept, in key order, and the count stays the scope's.
func TestSummarizeDevices_Truncated(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		hs := sqldb.NewHistoryService(db)
		ten := f.mustTenant(t, "many")
		n := herd.MaxSummaryGroups + 5
		ds := make([]*herd.Device, 0, n+4)
		for i := range n {
			ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: nextKey("m"), Model: fmt.Sprintf("m%05d", i)})
		}
		// m00000 and m00003 are the largest groups, of three devices each;
		// of the others, ties, the first keys are kept.
		for _, model := range []string{"m00000", "m00000", "m00003", "m00003"} {
			ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: nextKey("m"), Model: model})
		}
		mustOK(t, f.Devices.CreateDevices(f.super, ds))
		s, err := hs.SummarizeDevices(f.super, herd.SummaryQuery{TenantID: ten.ID, GroupBy: "model"})
		mustOK(t, err)
		if !s.GroupsTruncated || len(s.Groups) != herd.MaxSummaryGroups || s.Count != int64(n+4) {
			t.Fatalf("truncated %v, %d groups, count %d; want true, %d, %d", s.GroupsTruncated, len(s.Groups), s.Count, herd.MaxSummaryGroups, n+4)
		}
		if s.Groups[0].Key != "m00000" || s.Groups[0].Count != 3 || s.Groups[3].Key != "m00003" || s.Groups[3].Count != 3 {
			t.Fatalf("first groups %+v", s.Groups[:4])
		}
		if last := s.Groups[len(s.Groups)-1]; last.Key != "m00999" || last.Count != 1 {
			t.Fatalf("last group %+v, want m00999", last)
		}
		if !slices.IsSortedFunc(s.Groups, func(a, b herd.SummaryGroup) int { return cmp.Compare(a.Key, b.Key) }) {
			t.Fatal("groups out of key order")
		}
	})
}

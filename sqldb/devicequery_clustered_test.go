package sqldb_test

import (
	"context"
	"math/rand/v2"
	"net/url"
	"reflect"
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

// TestQueryDevices_ClusteredFleet checks the planner on a fleet created site
// by site, as `herd seed` and real roll-outs make it: each site is a run of
// ids (and of creation and report times), not a sprinkle through the sort
// order. A viewer of the last site asking for the first page by id would
// walk the sort index past every other site's entries before reaching one
// of theirs (the first site by -id the same); the plan must bound that walk
// by the scope, not the tenant. Every page must still equal the oracle's,
// whichever plan answered it and wherever a capped walk handed over to the
// scope read.
func TestQueryDevices_ClusteredFleet(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		seed := testSeed(t)
		rng := rand.New(rand.NewPCG(seed, 0x636c7573746572))
		const regions, sitesPer, perSite = 3, 10, 100 // the tenant is 30 times a site
		ten := f.mustTenant(t, "clustered")
		m := &model{tenant: ten, parent: map[int64]int64{ten.RootNodeID: 0}, nodes: []int64{ten.RootNodeID},
			devices: map[int64]*herd.Device{}, grants: map[int64]map[int64]*herd.Grant{}, secrets: map[int64]string{}}
		var sites []int64
		for r := range regions {
			region := f.mustNode(t, ten.RootNodeID, "region "+strconv.Itoa(r))
			m.parent[region.ID] = ten.RootNodeID
			m.nodes = append(m.nodes, region.ID)
			for s := range sitesPer {
				site := f.mustNode(t, region.ID, "site "+strconv.Itoa(s))
				m.parent[site.ID] = region.ID
				m.nodes = append(m.nodes, site.ID)
				sites = append(sites, site.ID)
			}
		}
		// Site by site: ids, creation times and report times grow with the
		// site; a third of the devices have never reported (NULL last_seen),
		// so the two keyset segments of a nullable sort are clustered too.
		for n, site := range sites {
			ds := make([]*herd.Device, perSite)
			for i := range ds {
				d := randomDevice(rng, site)
				at := t0 + int64(n*perSite+i)*1000
				d.CreatedAt = time.UnixMilli(at).UTC()
				d.LastSeen = nil
				if rng.IntN(3) != 0 {
					seen := time.UnixMilli(at + 500).UTC()
					d.LastSeen = &seen
				}
				ds[i] = d
			}
			mustOK(t, f.Devices.CreateDevices(f.super, ds))
			for _, d := range ds {
				m.devices[d.ID] = d
			}
		}
		viewer := func(name string, nodes ...int64) int64 {
			u, secret := f.mustUser(t, ten.ID, name)
			m.secrets[u.ID] = secret
			m.grants[u.ID] = map[int64]*herd.Grant{}
			for _, n := range nodes {
				m.grants[u.ID][n] = f.mustGrant(t, u.ID, n, herd.RoleViewer)
			}
			return u.ID
		}
		users := []int64{
			viewer("last site", sites[len(sites)-1]),           // the end of the id order
			viewer("first site", sites[0]),                     // its start
			viewer("both ends", sites[0], sites[len(sites)-1]), // two covering paths
		}

		var mu sync.Mutex
		handovers := 0
		db.QueryHook = func(query string, _ []any) {
			if strings.Contains(query, "LIMIT 1 OFFSET") { // a capped walk came back short
				mu.Lock()
				handovers++
				mu.Unlock()
			}
		}
		t.Cleanup(func() { db.QueryHook = nil })

		filterSets := [][]string{
			nil,
			{"online:eq:true"},
			{"status:eq:ok"},
			{"online:eq:true", "firmware:ne:1.0"},
		}
		plans := map[string]int{}
		for _, user := range users {
			ctx := f.as(t, m.secrets[user])
			inScope := len(m.oracle(user, herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}}))
			for _, sort := range []string{"id", "-id", "last_seen", "-last_seen", "-created_at"} {
				for _, limit := range []int{1, 10, 50} {
					for _, filters := range filterSets {
						v := url.Values{"sort": {sort}, "limit": {strconv.Itoa(limit)}, "filter": filters}
						q, err := herd.ParseDeviceQuery(v)
						mustOK(t, err)
						name, mayPass, err := f.Devices.PlanDeviceQuery(ctx, q)
						mustOK(t, err)
						plans[name]++
						// A capped walk may read its cap and the check of it
						// in each segment, then the scope: the cap is the walk
						// that costs as much as the scope read (five index
						// entries to a row), so at most 2×2×5+1 = 21 times the
						// scope for a nullable sort, 11 times otherwise. The
						// tenant is 30 times a site; an unbounded walk may
						// pass all of it.
						bound := int64(11 * inScope)
						if herd.DeviceFields[q.Sort.Field].Nullable {
							bound = int64(21 * inScope)
						}
						if mayPass > bound {
							t.Errorf("user %d %s: plan %q may read %d index entries; the scope holds %d devices (bound %d)", user, v.Encode(), name, mayPass, inScope, bound)
						}
						want := m.oracle(user, q)
						checkPages(t, f, ctx, q, want, 4, func() string {
							return "seed " + strconv.FormatUint(seed, 10) + " user " + strconv.FormatInt(user, 10) + " " + v.Encode() + " plan " + name
						})
					}
				}
			}
		}
		t.Logf("first-page plans %v; %d capped walks handed over to the scope read", plans, handovers)
		if plans["walk capped"] == 0 || plans["scope"] == 0 {
			t.Errorf("the queries did not take both the capped walk and the scope read (%v)", plans)
		}
		if !db.StateCache.Always && handovers == 0 {
			t.Errorf("no capped walk came back short: the hand-over to the scope read went unchecked")
		}
	})
}

// checkPages follows the query's cursors for up to maxPages pages and checks
// every page against the oracle: the items so far are the oracle's first
// ones, every row reads as stored, the count is the oracle's, and a walk
// that ends has seen them all.
func checkPages(t *testing.T, f *fixture, ctx context.Context, q herd.DeviceQuery, want []*herd.Device, maxPages int, what func() string) {
	t.Helper()
	var got []*herd.Device
	for page := 0; page < maxPages; page++ {
		p, err := f.Devices.QueryDevices(ctx, q)
		if err != nil {
			t.Fatalf("%s: page %d: %v", what(), page, err)
		}
		if p.Count != int64(min(len(want), herd.CountCap)) {
			t.Fatalf("%s: page %d counts %d, want %d", what(), page, p.Count, len(want))
		}
		got = append(got, p.Items...)
		n := min(len(got), len(want))
		if len(got) > len(want) || !slices.Equal(ids(got), ids(want[:n])) {
			t.Fatalf("%s: after page %d:\ngot  %v\nwant %v%s", what(), page, ids(got), ids(want[:n]), explain(got, want[:n], q))
		}
		for i, d := range p.Items {
			if w := want[len(got)-len(p.Items)+i]; !reflect.DeepEqual(d, w) {
				t.Fatalf("%s: device %d reads\n%+v\nwant\n%+v", what(), d.ID, d, w)
			}
		}
		if p.NextCursor == "" {
			if len(got) != len(want) {
				t.Fatalf("%s: the walk ends after %d of %d devices", what(), len(got), len(want))
			}
			return
		}
		q.Cursor = p.NextCursor // the store checks and decodes it
	}
}

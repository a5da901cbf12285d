package sqldb_test

import (
	"net/url"
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

// TestStateCache_Routing checks which queries the state cache answers once
// warmed: filtered queries over a large tenant's scope that no index serves,
// and nothing of a tenant below the size limit.
func TestStateCache_Routing(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		db.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 40, MinScope: 10, Refresh: time.Hour}
		f := newFixture(db)
		big, small := f.mustTenant(t, "big"), f.mustTenant(t, "small")
		f.mustDevices(t, f.mustNode(t, big.RootNodeID, "site").ID, 50)
		f.mustDevices(t, f.mustNode(t, small.RootNodeID, "site").ID, 30)
		mustOK(t, db.WarmStateCaches(t.Context()))

		var mu sync.Mutex
		cached := 0
		db.QueryHook = func(query string, _ []any) {
			if strings.Contains(query, "FROM devices WHERE") && strings.Contains(query, " AND id IN (") {
				mu.Lock()
				cached++
				mu.Unlock()
			}
		}
		t.Cleanup(func() { db.QueryHook = nil })
		for _, tt := range []struct {
			tenant *herd.Tenant
			query  url.Values
			cached bool
		}{
			{big, url.Values{"filter": {"error_count:ge:0"}, "sort": {"name"}}, true},
			{big, url.Values{"sort": {"-humidity"}}, true}, // no index sorts by humidity
			{big, url.Values{"sort": {"-last_seen"}}, false},
			{big, url.Values{"filter": {"status:eq:"}, "sort": {"name"}}, false},
			{big, url.Values{"filter": {"status:eq:"}, "sort": {"-temperature"}}, true},                // readings' columns have no index
			{big, url.Values{"filter": {"key:prefix:d", "error_count:ge:0"}, "sort": {"name"}}, false}, // the key index finds few rows
			{small, url.Values{"filter": {"error_count:ge:0"}, "sort": {"name"}}, false},
		} {
			mu.Lock()
			cached = 0
			mu.Unlock()
			tt.query.Set("tenant_id", itoa(tt.tenant.ID))
			q, err := herd.ParseDeviceQuery(tt.query)
			mustOK(t, err)
			p, err := f.Devices.QueryDevices(f.super, q)
			mustOK(t, err)
			mu.Lock()
			got := cached > 0
			mu.Unlock()
			if got != tt.cached {
				t.Errorf("%s: answered from the cache %v, want %v", tt.query.Encode(), got, tt.cached)
			}
			if p.Count == 0 {
				t.Errorf("%s: nothing found", tt.query.Encode())
			}
		}
	})
}

// TestStateCache_OtherProcess checks that a cache sees at once what another
// process committed: two DBs on one store stand for two herd processes.
// Every kind of device write is made through one and read through the
// other's cache: create, move, subtree move, delete.
func TestStateCache_OtherProcess(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		reader := sqldb.NewDB(db.DSN)
		reader.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, Always: true, Refresh: time.Hour}
		mustOK(t, reader.Open())
		t.Cleanup(func() { reader.Close() })

		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		a, b := f.mustNode(t, ten.RootNodeID, "a"), f.mustNode(t, ten.RootNodeID, "b")
		a1 := f.mustNode(t, a.ID, "a1")
		ds := f.mustDevices(t, a1.ID, 5)
		devices := sqldb.NewDeviceService(reader)
		under := func(node *herd.Node) []int64 {
			t.Helper()
			q := herd.DeviceQuery{TenantID: ten.ID, Filters: []herd.DeviceFilter{{Field: "path", Op: herd.OpPrefix, Values: []any{nodePath(t, f, node.ID)}}}, Sort: herd.DeviceSort{Field: "id"}, Limit: 100}
			p, err := devices.QueryDevices(f.super, q)
			mustOK(t, err)
			if p.Count != int64(len(p.Items)) {
				t.Fatalf("count %d for %d items", p.Count, len(p.Items))
			}
			return ids(p.Items)
		}
		if got := under(a); !slices.Equal(got, ids(ds)) {
			t.Fatalf("under a: %v, want %v", got, ids(ds))
		}
		more := f.mustDevices(t, a1.ID, 2)
		if got := under(a); !slices.Equal(got, ids(append(ds, more...))) {
			t.Fatalf("after create: %v", got)
		}
		_, err := f.Devices.MoveDevice(f.super, ds[0].ID, b.ID)
		mustOK(t, err)
		if got := under(b); !slices.Equal(got, []int64{ds[0].ID}) {
			t.Fatalf("after move: under b %v", got)
		}
		_, err = f.Nodes.MoveNode(f.super, a1.ID, b.ID)
		mustOK(t, err)
		if got := under(a); len(got) != 0 {
			t.Fatalf("after subtree move: under a %v", got)
		}
		if got := under(b); len(got) != 7 {
			t.Fatalf("after subtree move: under b %v", got)
		}
		mustOK(t, f.Devices.DeleteDevice(f.super, ds[1].ID))
		if got := under(b); len(got) != 6 || slices.Contains(got, ds[1].ID) {
			t.Fatalf("after delete: under b %v", got)
		}
	})
}

func nodePath(t *testing.T, f *fixture, id int64) string {
	t.Helper()
	n, err := f.Nodes.FindNodeByID(f.super, id)
	mustOK(t, err)
	return n.Path
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

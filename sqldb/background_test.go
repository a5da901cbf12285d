package sqldb_test

import (
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestClose_WaitsForCacheLoad shows that the state cache load a query starts
// in the background belongs to the DB: Close cancels it and does not return
// while it runs. The load is held inside its first statement until Close is
// seen waiting (or has returned, which is the failure), so the outcome does
// not depend on how fast the load would have been.
func TestClose_WaitsForCacheLoad(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		// Not Always: a large enough query starts the load in the
		// background and is answered from the database meanwhile.
		db.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, MinScope: 1, Refresh: time.Hour}
		f := newFixture(db)
		ten := f.mustTenant(t, "closing")
		site := f.mustNode(t, ten.RootNodeID, "site")
		f.mustDevices(t, site.ID, 3)
		u, secret := f.mustUser(t, ten.ID, "viewer")
		f.mustGrant(t, u.ID, site.ID, herd.RoleViewer)
		ctx := f.as(t, secret)

		entered, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		db.QueryHook = func(query string, _ []any) {
			// The load's first statement reads the change horizon.
			if strings.Contains(query, "device_rev'") || strings.Contains(query, "pg_current_snapshot") {
				once.Do(func() {
					close(entered)
					<-release
				})
			}
		}
		// A filter no index serves sends the query to the cache.
		q, err := herd.ParseDeviceQuery(url.Values{"filter": {"error_count:ge:0"}, "sort": {"name"}})
		mustOK(t, err)
		if _, err := f.Devices.QueryDevices(ctx, q); err != nil {
			t.Fatal(err)
		}
		<-entered

		closed := make(chan struct{})
		go func() {
			defer close(closed)
			db.Close()
		}()
		// Close must wait for the held load: either it is seen waiting, or
		// it has returned with the load still running.
		deadline := time.Now().Add(30 * time.Second)
		for !goroutineIn("sqldb.(*background).stop", "sync.(*WaitGroup).Wait") {
			select {
			case <-closed:
				close(release)
				t.Fatal("Close returned while the state cache load it should own was still running")
			default:
			}
			if time.Now().After(deadline) {
				close(release)
				t.Fatal("Close neither returned nor waited for the load")
			}
			time.Sleep(time.Millisecond) // polling a goroutine's state: there is no signal for "blocked in Wait"
		}
		close(release)
		<-closed
		if goroutineIn("sqldb.(*DB).loadCache") || goroutineIn("sqldb.(*DB).preparePending") || goroutineIn("sqldb.(*DB).refreshCaches") {
			t.Fatal("a goroutine of the DB outlived Close")
		}
	})
}

// goroutineIn reports whether some goroutine's stack holds every one of the
// given function names.
func goroutineIn(funcs ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		all := true
		for _, fn := range funcs {
			all = all && strings.Contains(g, fn)
		}
		if all {
			return true
		}
	}
	return false
}

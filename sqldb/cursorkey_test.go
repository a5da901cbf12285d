package sqldb_test

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestCursorKey_SharedByEveryOpen: every handle opened on one store, even
// several opening a new store at once (each racing to make the key), signs
// with the same key, so each takes the cursors of every other; a handle on
// another store refuses them. A reopen keeps the key.
func TestCursorKey_SharedByEveryOpen(t *testing.T) {
	t.Parallel()
	for _, d := range testutil.Dialects() {
		t.Run(string(d), func(t *testing.T) {
			dsn := filepath.Join(t.TempDir(), "herd.db")
			if d == sqldb.Postgres {
				dsn = testutil.PostgresSchemaDSN(t)
			}
			const n = 4
			dbs := make([]*sqldb.DB, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range dbs {
				dbs[i] = sqldb.NewDB(dsn)
				if i == 0 && d == sqldb.SQLite {
					// SQLite's migrations take no lock across processes, so
					// one creates the file; the rest open it at once.
					errs[0] = dbs[0].Open()
					continue
				}
				wg.Go(func() { errs[i] = dbs[i].Open() })
			}
			wg.Wait()
			for i, db := range dbs {
				if errs[i] != nil {
					t.Fatalf("open %d: %v", i, errs[i])
				}
				t.Cleanup(func() { db.Close() })
			}
			f := newFixture(dbs[0])
			ten := f.mustTenant(t, "acme")
			f.mustDevices(t, ten.RootNodeID, 5)
			q := herd.DeviceQuery{TenantID: ten.ID, Limit: 2}
			first, err := f.Devices.QueryDevices(f.super, q)
			mustOK(t, err)
			if first.NextCursor == "" || first.Count != 5 {
				t.Fatalf("first page: count %d, cursor %q", first.Count, first.NextCursor)
			}
			for i, db := range dbs {
				q.Cursor = first.NextCursor
				p, err := sqldb.NewDeviceService(db).QueryDevices(f.super, q)
				if err != nil {
					t.Fatalf("handle %d refused handle 0's cursor: %v", i, err)
				} else if p.Count != 5 || len(p.Items) != 2 || p.Items[0].ID <= first.Items[1].ID {
					t.Fatalf("handle %d: page %+v", i, p)
				}
			}

			// A reopened store keeps its key.
			again := sqldb.NewDB(dsn)
			mustOK(t, again.Open())
			defer again.Close()
			q.Cursor = first.NextCursor
			_, err = sqldb.NewDeviceService(again).QueryDevices(f.super, q)
			mustOK(t, err)

			// Another store of the same shape, with the same ids, has a key
			// of its own.
			other := newFixture(testutil.MustOpenDB(t, d))
			if ten2 := other.mustTenant(t, "acme"); ten2.ID != ten.ID {
				t.Fatalf("tenant ids %d and %d differ: the cursor would be refused for its query, not its key", ten.ID, ten2.ID)
			}
			_, err = other.Devices.QueryDevices(other.super, q)
			wantCode(t, err, herd.EINVALIDCURSOR)
			if msg := herd.ErrorMessage(err); !strings.Contains(msg, "not issued by this store") {
				t.Fatalf("message %q", msg)
			}
		})
	}
}

package sqldb_test

import (
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestIngestService_StatusSurvivesDisconnect: status is what the device
// reported, connectivity is online. A device reports warn and hangs up
// cleanly right after its PUBACK (the quickstart's mosquitto_pub does it
// every time): it is offline and still warn, in the store, in the filters
// and through the state cache of another process that had the device
// cached before the disconnect. Its device.offline event says it left; no
// event claims a status it did not report.
func TestIngestService_StatusSurvivesDisconnect(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		reader := sqldb.NewDB(db.DSN)
		reader.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, Always: true, Refresh: time.Hour}
		mustOK(t, reader.Open())
		t.Cleanup(func() { reader.Close() })
		var fromCache atomic.Int64
		reader.QueryHook = func(query string, _ []any) {
			if strings.Contains(query, "FROM devices WHERE") && strings.Contains(query, " AND id IN (") {
				fromCache.Add(1)
			}
		}

		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		ds := f.mustDevices(t, f.mustNode(t, ten.RootNodeID, "site").ID, 2)
		d, quiet := ds[0], ds[1]
		// query answers the filters through the reader's cache, and says
		// which of the two devices match.
		query := func(filters ...string) []int64 {
			t.Helper()
			before := fromCache.Load()
			q, err := herd.ParseDeviceQuery(url.Values{"tenant_id": {itoa(ten.ID)}, "filter": filters, "sort": {"id"}})
			mustOK(t, err)
			p, err := sqldb.NewDeviceService(reader).QueryDevices(f.super, q)
			mustOK(t, err)
			if fromCache.Load() == before {
				t.Fatalf("%v: not answered from the state cache", filters)
			}
			return ids(p.Items)
		}

		mustIngest(t, db, connectItem(d, at0), connectItem(quiet, at0))
		mustIngest(t, db, readingItem(d, at0+10, herd.Reading{TS: at0 + 10, Has: herd.ReadingStatus | herd.ReadingTemperature, Status: herd.StatusWarn, Temperature: 71.5}))
		if got := query("status:eq:warn", "online:eq:true"); !slices.Equal(got, []int64{d.ID}) {
			t.Fatalf("warn and online before the disconnect: %v, want [%d]", got, d.ID)
		}
		n := len(f.events(t, ten.ID))
		mustIngest(t, db, disconnectItem(d, at0+11))

		got := f.mustFind(t, d.ID)
		if got.Online || got.Status != herd.StatusWarn || got.Temperature == nil || *got.Temperature != 71.5 {
			t.Fatalf("after a clean disconnect: online %v status %q temperature %v, want false warn 71.5", got.Online, got.Status, got.Temperature)
		}
		wantLastSeen(t, got, at0+10)
		if q := f.mustFind(t, quiet.ID); !q.Online || q.Status != "" {
			t.Fatalf("the device that reported nothing: online %v status %q, want true and empty", q.Online, q.Status)
		}
		for _, tt := range []struct {
			filters []string
			want    []int64
		}{
			{[]string{"status:eq:warn", "online:eq:false"}, []int64{d.ID}},
			{[]string{"status:eq:warn"}, []int64{d.ID}},
			{[]string{"online:eq:false"}, []int64{d.ID}},
			{[]string{"online:eq:true"}, []int64{quiet.ID}},
			{[]string{"status:eq:"}, []int64{quiet.ID}},
		} {
			if got := query(tt.filters...); !slices.Equal(got, tt.want) {
				t.Errorf("%v: %v, want %v", tt.filters, got, tt.want)
			}
		}
		evs := f.events(t, ten.ID)[n:]
		if len(evs) != 1 {
			t.Fatalf("%d events after the disconnect, want 1", len(evs))
		}
		wantDeviceEvent(t, evs[0], herd.EventDeviceOffline, d)
		if strings.Contains(string(evs[0].Payload), "status") {
			t.Errorf("device.offline carries a status: %s", evs[0].Payload)
		}
	})
}

// TestMigration_StatusReported: migration 0014 empties the 'offline'
// statuses that disconnects used to write over what devices reported, and
// leaves reported ones alone. The store is opened, put back to before 0014
// (the rows as the old code left them, the migration unrecorded), and
// opened again.
func TestMigration_StatusReported(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		ds := f.mustDevices(t, f.mustNode(t, ten.RootNodeID, "site").ID, 2)
		for i, st := range []string{"offline", herd.StatusWarn} {
			_, err := db.SQL().ExecContext(t.Context(), db.Rebind(`UPDATE devices SET status = ? WHERE id = ?`), st, ds[i].ID)
			mustOK(t, err)
		}
		_, err := db.SQL().ExecContext(t.Context(), `DELETE FROM schema_migrations WHERE name LIKE '%0014_status_reported.sql'`)
		mustOK(t, err)
		again := sqldb.NewDB(db.DSN)
		mustOK(t, again.Open())
		t.Cleanup(func() { again.Close() })
		for i, want := range []string{"", herd.StatusWarn} {
			if got := f.mustFind(t, ds[i].ID).Status; got != want {
				t.Errorf("device %d after the migration: status %q, want %q", i, got, want)
			}
		}
	})
}

package sqldb_test

import (
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestDeviceService_Labels: labels given on create come back on every read,
// a patch merges them key by key with a new version and an event, and a
// delete takes them with the device.
func TestDeviceService_Labels(t *testing.T) {
	testutil.RunWithStateCache(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ds := []*herd.Device{
			{NodeID: site.ID, Key: nextKey("lab"), Labels: map[string]string{"ring": "beta", "floor": "3", "old": "x"}},
			{NodeID: site.ID, Key: nextKey("lab")},
			{NodeID: site.ID, Key: nextKey("lab"), Labels: map[string]string{"ring": "canary"}},
		}
		mustOK(t, f.Devices.CreateDevices(f.super, ds))
		want := map[int64]map[string]string{ds[0].ID: ds[0].Labels, ds[1].ID: {}, ds[2].ID: ds[2].Labels}
		check := func(t *testing.T) {
			t.Helper()
			for id, labels := range want {
				d, err := f.Devices.FindDeviceByID(f.super, id)
				mustOK(t, err)
				if d.Labels == nil || !maps.Equal(d.Labels, labels) {
					t.Fatalf("device %d has labels %v, want %v", id, d.Labels, labels)
				}
			}
			page, err := f.Devices.QueryDevices(f.super, herd.DeviceQuery{TenantID: ten.ID, Limit: 10})
			mustOK(t, err)
			if len(page.Items) != len(want) {
				t.Fatalf("%d devices listed, want %d", len(page.Items), len(want))
			}
			for _, d := range page.Items {
				if d.Labels == nil || !maps.Equal(d.Labels, want[d.ID]) {
					t.Fatalf("listed device %d has labels %v, want %v", d.ID, d.Labels, want[d.ID])
				}
			}
		}
		t.Run("OKCreate", check)
		t.Run("OKPatch", func(t *testing.T) {
			got, err := f.Devices.UpdateDevice(f.super, ds[0].ID, herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary"), "old": nil, "new": new("")}})
			mustOK(t, err)
			want[ds[0].ID] = map[string]string{"ring": "canary", "floor": "3", "new": ""}
			if got.Version != 2 || !maps.Equal(got.Labels, want[ds[0].ID]) {
				t.Fatalf("patched %+v", got)
			}
			ev := f.lastEvent(t, ten.ID, herd.EventDeviceUpdated)
			var inEvent herd.Device
			p := decodeUpdate(t, ev, "device", &inEvent)
			old, _ := p.Old["labels"].(map[string]any)
			if !slices.Equal(p.Changed, []string{"labels"}) || !maps.Equal(inEvent.Labels, want[ds[0].ID]) ||
				!reflect.DeepEqual(old, map[string]any{"ring": "beta", "floor": "3", "old": "x"}) {
				t.Fatalf("event payload %s", ev.Payload)
			}
			check(t)
			// The same labels again change nothing: no version, no event.
			before := f.state(t, ten.ID)
			got, err = f.Devices.UpdateDevice(f.super, ds[0].ID, herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary"), "gone": nil}})
			mustOK(t, err)
			if got.Version != 2 {
				t.Fatalf("version %d after a patch that changed nothing", got.Version)
			}
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("OKClear", func(t *testing.T) {
			got, err := f.Devices.UpdateDevice(f.super, ds[2].ID, herd.DeviceUpdate{ClearLabels: true})
			mustOK(t, err)
			want[ds[2].ID] = map[string]string{}
			if got.Version != 2 || len(got.Labels) != 0 {
				t.Fatalf("cleared %+v", got)
			}
			check(t)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			before := f.state(t, ten.ID)
			labels := map[string]*string{}
			for i := range herd.MaxLabels {
				labels[string(rune('a'+i%26))+string(rune('a'+i/26))] = new("v")
			}
			_, err := f.Devices.UpdateDevice(f.super, ds[0].ID, herd.DeviceUpdate{Labels: labels}) // 64 new + 3 kept
			wantCode(t, err, herd.EINVALID)
			_, err = f.Devices.UpdateDevice(f.super, ds[0].ID, herd.DeviceUpdate{Labels: map[string]*string{"Bad": new("v")}})
			wantCode(t, err, herd.EINVALID)
			err = f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: site.ID, Key: nextKey("lab"), Labels: map[string]string{"a b": "v"}}})
			wantCode(t, err, herd.EINVALID)
			f.wantUnchanged(t, ten.ID, before)
			check(t)
		})
		t.Run("OKDelete", func(t *testing.T) {
			mustOK(t, f.Devices.DeleteDevice(f.super, ds[0].ID))
			delete(want, ds[0].ID)
			var n int
			mustOK(t, db.SQL().QueryRowContext(t.Context(), db.Rebind(`SELECT COUNT(*) FROM device_labels WHERE device_id = ?`), ds[0].ID).Scan(&n))
			if n != 0 {
				t.Fatalf("%d labels left of a deleted device", n)
			}
			// Its row of the search index goes with it too (both tables
			// keep only their key to devices on PostgreSQL: migration 0024).
			mustOK(t, db.SQL().QueryRowContext(t.Context(), db.Rebind(`SELECT COUNT(*) FROM device_search WHERE device_id = ?`), ds[0].ID).Scan(&n))
			if n != 0 {
				t.Fatalf("the search row of a deleted device is left")
			}
			check(t)
		})
	})
}

// TestStateCache_SeesLabels: a state cache of another process finds a
// device by the labels a patch gave it, and no longer by those it took.
func TestStateCache_SeesLabels(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		reader := sqldb.NewDB(db.DSN)
		reader.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, Always: true, Refresh: time.Hour}
		mustOK(t, reader.Open())
		t.Cleanup(func() { reader.Close() })
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ds := f.mustDevices(t, site.ID, 4)
		devices := sqldb.NewDeviceService(reader)
		find := func(filter string) []int64 {
			t.Helper()
			fl, err := herd.ParseDeviceFilter(filter)
			mustOK(t, err)
			p, err := devices.QueryDevices(f.super, herd.DeviceQuery{TenantID: ten.ID, Filters: []herd.DeviceFilter{fl}, Limit: 100})
			mustOK(t, err)
			return ids(p.Items)
		}
		if got := find("label.ring:exists:true"); len(got) != 0 {
			t.Fatalf("before: %v", got)
		}
		_, err := f.Devices.UpdateDevice(f.super, ds[2].ID, herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary")}})
		mustOK(t, err)
		if got := find("label.ring:eq:canary"); !slices.Equal(got, []int64{ds[2].ID}) {
			t.Fatalf("by the new label: %v", got)
		}
		_, err = f.Devices.UpdateDevice(f.super, ds[2].ID, herd.DeviceUpdate{Labels: map[string]*string{"ring": nil, "floor": new("2")}})
		mustOK(t, err)
		if got := find("label.ring:eq:canary"); len(got) != 0 {
			t.Fatalf("by the removed label: %v", got)
		}
		if got := find("label.floor:in:1|2"); !slices.Equal(got, []int64{ds[2].ID}) {
			t.Fatalf("by the second label: %v", got)
		}
		mustOK(t, f.Devices.DeleteDevice(f.super, ds[2].ID))
		if got := find("label.floor:exists:false"); len(got) != 3 {
			t.Fatalf("after the delete: %v", got)
		}
	})
}

// TestRolloutService_LabelTarget: a rollout's target filters take label
// filters as the device query does (they are parsed by the same parser and
// become the same SQL), so "ring=canary" chooses the canaries only.
func TestRolloutService_LabelTarget(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newRolloutFleet(t, db, 3)
		canaries := []int64{f.devices[1].ID, f.devices[4].ID}
		for _, id := range canaries {
			_, err := f.Devices.UpdateDevice(f.super, id, herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary")}})
			mustOK(t, err)
		}
		_, err := f.Devices.UpdateDevice(f.super, f.devices[2].ID, herd.DeviceUpdate{Labels: map[string]*string{"ring": new("beta")}})
		mustOK(t, err)
		r := configRollout(f, 2)
		r.Target.Filter = []string{"label.ring:eq:canary"}
		mustOK(t, f.rollouts.CreateRollout(f.super, r))
		rows, err := db.SQL().QueryContext(t.Context(), db.Rebind(`SELECT device_id FROM rollout_members WHERE rollout_id = ? ORDER BY device_id`), r.ID)
		mustOK(t, err)
		var got []int64
		for rows.Next() {
			var id int64
			mustOK(t, rows.Scan(&id))
			got = append(got, id)
		}
		mustOK(t, rows.Close())
		if r.Members != 2 || !slices.Equal(got, canaries) {
			t.Fatalf("members %d %v, want the canaries %v", r.Members, got, canaries)
		}
		bad := configRollout(f, 3)
		bad.Target.Filter = []string{"label.ring:exists:maybe"}
		wantCode(t, f.rollouts.CreateRollout(f.super, bad), herd.EINVALIDFILTER)
	})
}

// TestExportReadings_LabelFilter: label filters are conditions on the
// devices like any other, and the history export's semi-join takes them.
func TestExportReadings_LabelFilter(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		rng := rand.New(rand.NewPCG(15, 5))
		x := newExportFleet(t, db, rng)
		hs := sqldb.NewHistoryService(db)
		from, to := time.UnixMilli(x.t0), time.UnixMilli(x.t0+40_000)
		n := 0
		for id := range x.devices {
			if n++; n%2 == 0 {
				_, err := x.f.Devices.UpdateDevice(x.f.super, id, herd.DeviceUpdate{Labels: map[string]*string{"ring": new("canary")}})
				mustOK(t, err)
			}
		}
		for _, s := range []string{"label.ring:eq:canary", "label.ring:ne:canary", "label.ring:exists:false", "label.ring:in:beta|canary"} {
			fl, err := herd.ParseDeviceFilter(s)
			mustOK(t, err)
			want := x.want(t, []string{x.path(t, x.regionA)}, []herd.DeviceFilter{fl}, from, to)
			sameExport(t, export(t, hs, x.viewer, herd.ExportQuery{Filters: []herd.DeviceFilter{fl}, From: from, To: to}), want)
		}
	})
}

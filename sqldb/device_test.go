package sqldb_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// tenantState is what a failed change must leave untouched: the devices of
// a tenant and its outbox.
type tenantState struct {
	devices []*herd.Device
	events  int
}

func (f *fixture) state(tb testing.TB, tenantID int64) tenantState {
	tb.Helper()
	items, _ := f.walk(tb, f.super, herd.DeviceQuery{TenantID: tenantID, Sort: herd.DeviceSort{Field: "id"}, Limit: herd.MaxLimit})
	evs, err := sqldb.NewOutboxService(f.db).OutboxEvents(context.Background(), tenantID, 0, 1<<20)
	if err != nil {
		tb.Fatal(err)
	}
	return tenantState{items, len(evs)}
}

func (f *fixture) wantUnchanged(tb testing.TB, tenantID int64, before tenantState) {
	tb.Helper()
	after := f.state(tb, tenantID)
	if !reflect.DeepEqual(after.devices, before.devices) {
		tb.Fatalf("devices changed: %d before, %d after", len(before.devices), len(after.devices))
	}
	if after.events != before.events {
		tb.Fatalf("%d events before, %d after", before.events, after.events)
	}
}

func TestDeviceService_CreateDevices(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		t.Run("OK", func(t *testing.T) {
			seen := time.UnixMilli(1709296245123).UTC()
			created := time.UnixMilli(1700000000000).UTC()
			d := &herd.Device{
				NodeID: site.ID, Key: " pump-1 ", Model: "P1", Firmware: "1.2.3", Status: herd.StatusAlarm, Online: true,
				LastSeen: &seen, Temperature: new(21.5), Humidity: new(40.0), Pressure: new(1013.25), Voltage: new(230.0),
				Current: new(-1.5), Power: new(0.0), Battery: new(99.5), RSSI: new(int64(-70)), UptimeS: new(int64(3600)),
				ErrorCount: 3, ConfigVersion: 9, CreatedAt: created,
			}
			mustOK(t, f.Devices.CreateDevices(f.super, []*herd.Device{d}))
			if d.ID == 0 || d.TenantID != ten.ID || d.Path != site.Path || d.Key != "pump-1" || d.Name != "pump-1" {
				t.Fatalf("got %+v", d)
			}
			got, err := f.Devices.FindDeviceByID(f.super, d.ID)
			mustOK(t, err)
			if !reflect.DeepEqual(got, d) {
				t.Fatalf("found %+v\ncreated %+v", got, d)
			}
		})
		t.Run("OKDefaults", func(t *testing.T) {
			d := &herd.Device{NodeID: site.ID, Key: nextKey("bare")}
			mustOK(t, f.Devices.CreateDevices(f.super, []*herd.Device{d}))
			got, err := f.Devices.FindDeviceByID(f.super, d.ID)
			mustOK(t, err)
			if got.Status != "" || got.Name != d.Key || got.Online || got.LastSeen != nil || got.Temperature != nil || got.CreatedAt.IsZero() {
				t.Fatalf("got %+v", got)
			}
		})
		t.Run("OKBatch", func(t *testing.T) {
			other := f.mustNode(t, ten.RootNodeID, "other")
			var ds []*herd.Device
			for i := range 60 { // more than one multi-row statement
				n := site.ID
				if i%2 == 1 {
					n = other.ID
				}
				ds = append(ds, &herd.Device{NodeID: n, Key: nextKey("batch")})
			}
			mustOK(t, f.Devices.CreateDevices(f.super, ds))
			for _, d := range ds {
				got, err := f.Devices.FindDeviceByID(f.super, d.ID)
				mustOK(t, err)
				if got.Key != d.Key || got.NodeID != d.NodeID {
					t.Fatalf("id %d holds %s on %d, want %s on %d", d.ID, got.Key, got.NodeID, d.Key, d.NodeID)
				}
			}
		})
		t.Run("OKNodeAdmin", func(t *testing.T) {
			u, secret := f.mustUser(t, ten.ID, "site admin")
			f.mustGrant(t, u.ID, site.ID, herd.RoleAdmin)
			mustOK(t, f.Devices.CreateDevices(f.as(t, secret), []*herd.Device{{NodeID: site.ID, Key: nextKey("adm")}}))
		})
		t.Run("ErrConflictInsideBatch", func(t *testing.T) {
			before := f.state(t, ten.ID)
			key := nextKey("twice")
			ds := []*herd.Device{{NodeID: site.ID, Key: key}, {NodeID: site.ID, Key: nextKey("ok")}, {NodeID: site.ID, Key: key}}
			wantCode(t, f.Devices.CreateDevices(f.super, ds), herd.ECONFLICT)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("ErrConflictWithExisting", func(t *testing.T) {
			taken := f.mustDevices(t, site.ID, 1)[0]
			before := f.state(t, ten.ID)
			var ds []*herd.Device
			for range 50 {
				ds = append(ds, &herd.Device{NodeID: site.ID, Key: nextKey("new")})
			}
			// The clash comes after the first multi-row statement has run.
			ds[45].Key = taken.Key
			wantCode(t, f.Devices.CreateDevices(f.super, ds), herd.ECONFLICT)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("ErrConflictAcrossTenants", func(t *testing.T) {
			// Keys are MQTT client ids and unique store-wide.
			other := f.mustTenant(t, "other")
			taken := f.mustDevices(t, site.ID, 1)[0]
			wantCode(t, f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: other.RootNodeID, Key: taken.Key}}), herd.ECONFLICT)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			before := f.state(t, ten.ID)
			for _, d := range []herd.Device{
				{NodeID: site.ID},
				{Key: nextKey("nonode")},
				{NodeID: site.ID, Key: "a/b"},
				{NodeID: site.ID, Key: "a b"},
				{NodeID: site.ID, Key: "a+"},
				{NodeID: site.ID, Key: "a#"},
				{NodeID: site.ID, Key: strings.Repeat("k", 129)},
				{NodeID: site.ID, Key: nextKey("k"), Name: "\xff"},
				{NodeID: site.ID, Key: nextKey("k"), Status: "broken"},
				{NodeID: site.ID, Key: nextKey("k"), Name: strings.Repeat("n", 201)},
			} {
				// Alone and as one bad row in a batch of good ones.
				wantCode(t, f.Devices.CreateDevices(f.super, []*herd.Device{&d}), herd.EINVALID)
				batch := []*herd.Device{{NodeID: site.ID, Key: nextKey("good")}, &d}
				wantCode(t, f.Devices.CreateDevices(f.super, batch), herd.EINVALID)
			}
			wantCode(t, f.Devices.CreateDevices(f.super, nil), herd.EINVALID)
			big := make([]*herd.Device, herd.MaxBatchDevices+1)
			for i := range big {
				big[i] = &herd.Device{NodeID: site.ID, Key: nextKey("big")}
			}
			wantCode(t, f.Devices.CreateDevices(f.super, big), herd.EINVALID)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			wantCode(t, f.Devices.CreateDevices(context.Background(), []*herd.Device{{NodeID: site.ID, Key: nextKey("x")}}), herd.EUNAUTHORIZED)
		})
		t.Run("ErrNodeNotFound", func(t *testing.T) {
			wantCode(t, f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: 1 << 40, Key: nextKey("x")}}), herd.ENOTFOUND)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			before := f.state(t, ten.ID)
			mine := f.mustNode(t, ten.RootNodeID, "mine")
			before = f.state(t, ten.ID)
			u, secret := f.mustUser(t, ten.ID, "site operator")
			f.mustGrant(t, u.ID, site.ID, herd.RoleOperator)
			f.mustGrant(t, u.ID, mine.ID, herd.RoleAdmin)
			before.events += 3 // the user, token and grants above
			ctx := f.as(t, secret)
			wantCode(t, f.Devices.CreateDevices(ctx, []*herd.Device{{NodeID: site.ID, Key: nextKey("x")}}), herd.EFORBIDDEN)
			// One node the user may not change spoils the whole batch.
			batch := []*herd.Device{{NodeID: mine.ID, Key: nextKey("x")}, {NodeID: site.ID, Key: nextKey("y")}}
			wantCode(t, f.Devices.CreateDevices(ctx, batch), herd.EFORBIDDEN)
			before.events++
			f.wantUnchanged(t, ten.ID, before)
		})
	})
}

func TestDeviceService_FindDeviceByID(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		north := f.mustNode(t, ten.RootNodeID, "north")
		south := f.mustNode(t, ten.RootNodeID, "south")
		mine := f.mustDevices(t, north.ID, 1)[0]
		theirs := f.mustDevices(t, south.ID, 1)[0]
		u, secret := f.mustUser(t, ten.ID, "north viewer")
		f.mustGrant(t, u.ID, north.ID, herd.RoleViewer)
		ctx := f.as(t, secret)
		t.Run("OK", func(t *testing.T) {
			got, err := f.Devices.FindDeviceByID(ctx, mine.ID)
			mustOK(t, err)
			if got.ID != mine.ID {
				t.Fatalf("got %d", got.ID)
			}
		})
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			_, err := f.Devices.FindDeviceByID(ctx, theirs.ID)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrNotFound", func(t *testing.T) {
			_, err := f.Devices.FindDeviceByID(ctx, 1<<40)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrUnauthorized", func(t *testing.T) {
			_, err := f.Devices.FindDeviceByID(context.Background(), mine.ID)
			wantCode(t, err, herd.EUNAUTHORIZED)
		})
	})
}

func TestDeviceService_MoveDevice(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		north := f.mustNode(t, ten.RootNodeID, "north")
		south := f.mustNode(t, ten.RootNodeID, "south")
		hidden := f.mustNode(t, ten.RootNodeID, "hidden")
		u, secret := f.mustUser(t, ten.ID, "admin of north and south")
		f.mustGrant(t, u.ID, north.ID, herd.RoleAdmin)
		f.mustGrant(t, u.ID, south.ID, herd.RoleAdmin)
		ctx := f.as(t, secret)
		t.Run("OK", func(t *testing.T) {
			d := f.mustDevices(t, north.ID, 1)[0]
			got, err := f.Devices.MoveDevice(ctx, d.ID, south.ID)
			mustOK(t, err)
			if got.NodeID != south.ID || got.Path != south.Path {
				t.Fatalf("moved %+v", got)
			}
			found, err := f.Devices.FindDeviceByID(ctx, d.ID)
			mustOK(t, err)
			if found.NodeID != south.ID || found.Path != south.Path {
				t.Fatalf("found %+v", found)
			}
			// It shows under the new node and not under the old one.
			for _, tt := range []struct {
				node int64
				want bool
			}{{south.ID, true}, {north.ID, false}} {
				items, _ := f.walk(t, ctx, herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "node_id", Op: "eq", Values: []any{tt.node}}}, Sort: herd.DeviceSort{Field: "id"}, Limit: 50})
				has := false
				for _, it := range items {
					has = has || it.ID == d.ID
				}
				if has != tt.want {
					t.Fatalf("under node %d: %v, want %v", tt.node, has, tt.want)
				}
			}
		})
		t.Run("ErrNodeOutsideGrants", func(t *testing.T) {
			d := f.mustDevices(t, north.ID, 1)[0]
			_, err := f.Devices.MoveDevice(ctx, d.ID, hidden.ID)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrNodeOfAnotherTenant", func(t *testing.T) {
			other := f.mustTenant(t, "other")
			d := f.mustDevices(t, north.ID, 1)[0]
			_, err := f.Devices.MoveDevice(f.super, d.ID, other.RootNodeID)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrDeviceOutsideGrants", func(t *testing.T) {
			d := f.mustDevices(t, hidden.ID, 1)[0]
			_, err := f.Devices.MoveDevice(ctx, d.ID, north.ID)
			wantCode(t, err, herd.ENOTFOUND)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			d := f.mustDevices(t, north.ID, 1)[0]
			v, vsecret := f.mustUser(t, ten.ID, "viewer")
			f.mustGrant(t, v.ID, ten.RootNodeID, herd.RoleOperator)
			_, err := f.Devices.MoveDevice(f.as(t, vsecret), d.ID, south.ID)
			wantCode(t, err, herd.EFORBIDDEN)
			// Admin of the device but only viewer of the target.
			w, wsecret := f.mustUser(t, ten.ID, "north admin")
			f.mustGrant(t, w.ID, north.ID, herd.RoleAdmin)
			f.mustGrant(t, w.ID, south.ID, herd.RoleViewer)
			_, err = f.Devices.MoveDevice(f.as(t, wsecret), d.ID, south.ID)
			wantCode(t, err, herd.EFORBIDDEN)
			got, err := f.Devices.FindDeviceByID(f.super, d.ID)
			mustOK(t, err)
			if got.NodeID != north.ID {
				t.Fatalf("device moved to %d", got.NodeID)
			}
		})
	})
}

func TestDeviceService_DeleteDevice(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site := f.mustNode(t, ten.RootNodeID, "site")
		hidden := f.mustNode(t, ten.RootNodeID, "hidden")
		t.Run("OK", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			mustOK(t, f.Devices.DeleteDevice(f.super, d.ID))
			_, err := f.Devices.FindDeviceByID(f.super, d.ID)
			wantCode(t, err, herd.ENOTFOUND)
			wantCode(t, f.Devices.DeleteDevice(f.super, d.ID), herd.ENOTFOUND)
			// The key is free again.
			mustOK(t, f.Devices.CreateDevices(f.super, []*herd.Device{{NodeID: site.ID, Key: d.Key}}))
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			d := f.mustDevices(t, site.ID, 1)[0]
			u, secret := f.mustUser(t, ten.ID, "operator")
			f.mustGrant(t, u.ID, site.ID, herd.RoleOperator)
			wantCode(t, f.Devices.DeleteDevice(f.as(t, secret), d.ID), herd.EFORBIDDEN)
			h := f.mustDevices(t, hidden.ID, 1)[0]
			wantCode(t, f.Devices.DeleteDevice(f.as(t, secret), h.ID), herd.ENOTFOUND)
			for _, id := range []int64{d.ID, h.ID} {
				_, err := f.Devices.FindDeviceByID(f.super, id)
				mustOK(t, err)
			}
		})
	})
}

package sqldb_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// lastEvent returns the tenant's last event of the type, failing when
// there is none.
func (f *fixture) lastEvent(tb testing.TB, tenantID int64, typ string) *herd.Event {
	tb.Helper()
	evs := f.events(tb, tenantID)
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i]
		}
	}
	tb.Fatalf("no %s event", typ)
	return nil
}

// updatePayload is the payload of a *.updated event, the object aside.
type updatePayload struct {
	Changed []string       `json:"changed"`
	Old     map[string]any `json:"old"`
}

func decodeUpdate(tb testing.TB, ev *herd.Event, obj string, into any) updatePayload {
	tb.Helper()
	var p updatePayload
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(ev.Payload, &p); err != nil {
		tb.Fatal(err)
	} else if err := json.Unmarshal(ev.Payload, &raw); err != nil {
		tb.Fatal(err)
	} else if err := json.Unmarshal(raw[obj], into); err != nil {
		tb.Fatalf("payload %s has no %s: %v", ev.Payload, obj, err)
	}
	return p
}

func TestDeviceService_UpdateDevice(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		site, other := f.mustNode(t, ten.RootNodeID, "site"), f.mustNode(t, ten.RootNodeID, "other")
		ds := f.mustDevices(t, site.ID, 3)
		admin, adminSecret := f.mustUser(t, ten.ID, "site admin")
		f.mustGrant(t, admin.ID, site.ID, herd.RoleAdmin)
		viewer, viewerSecret := f.mustUser(t, ten.ID, "viewer")
		f.mustGrant(t, viewer.ID, site.ID, herd.RoleViewer)
		outsider, outsiderSecret := f.mustUser(t, ten.ID, "outsider")
		f.mustGrant(t, outsider.ID, other.ID, herd.RoleAdmin)
		asAdmin := f.as(t, adminSecret)

		t.Run("OK", func(t *testing.T) {
			d := ds[0]
			if d.Version != 1 {
				t.Fatalf("a new device is at version %d, want 1", d.Version)
			}
			got, err := f.Devices.UpdateDevice(asAdmin, d.ID, herd.DeviceUpdate{Name: new(" Boiler 1 "), Model: new("th-300"), IfVersion: 1})
			mustOK(t, err)
			if got.Name != "Boiler 1" || got.Model != "th-300" || got.Version != 2 || got.Key != d.Key || got.Path != d.Path {
				t.Fatalf("updated %+v", got)
			}
			found, err := f.Devices.FindDeviceByID(f.super, d.ID)
			mustOK(t, err)
			if !reflect.DeepEqual(found, got) {
				t.Fatalf("found %+v, updated %+v", found, got)
			}
			ev := f.lastEvent(t, ten.ID, herd.EventDeviceUpdated)
			var inEvent herd.Device
			p := decodeUpdate(t, ev, "device", &inEvent)
			if ev.SubjectID != d.ID || ev.Path != d.Path || !slices.Equal(p.Changed, []string{"name", "model"}) ||
				p.Old["name"] != d.Name || p.Old["model"] != "" || inEvent.Name != "Boiler 1" || inEvent.Version != 2 {
				t.Fatalf("event %+v payload %s", ev, ev.Payload)
			}
		})
		t.Run("OKNothingChanged", func(t *testing.T) {
			d, err := f.Devices.FindDeviceByID(f.super, ds[0].ID)
			mustOK(t, err)
			before := f.state(t, ten.ID)
			got, err := f.Devices.UpdateDevice(asAdmin, d.ID, herd.DeviceUpdate{Name: new(d.Name)})
			mustOK(t, err)
			if got.Version != d.Version {
				t.Fatalf("version %d after a patch that changed nothing, want %d", got.Version, d.Version)
			}
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("OKEmptyNameIsKey", func(t *testing.T) {
			got, err := f.Devices.UpdateDevice(asAdmin, ds[1].ID, herd.DeviceUpdate{Name: new("")})
			mustOK(t, err)
			if got.Name != ds[1].Key {
				t.Fatalf("name %q, want the key %q as on create", got.Name, ds[1].Key)
			}
		})
		t.Run("OKTelemetryAndMoveKeepVersion", func(t *testing.T) {
			d := ds[2]
			at := time.Now().Truncate(time.Millisecond)
			mustOK(t, sqldb.NewIngestService(db).Ingest(t.Context(), []herd.IngestItem{{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: at.UnixMilli(),
				Reading: herd.Reading{TS: at.UnixMilli(), Has: herd.ReadingTemperature, Temperature: 21}}}))
			moved, err := f.Devices.MoveDevice(f.super, d.ID, other.ID)
			mustOK(t, err)
			got, err := f.Devices.FindDeviceByID(f.super, d.ID)
			mustOK(t, err)
			if got.Temperature == nil || *got.Temperature != 21 || got.Version != 1 || moved.Version != 1 {
				t.Fatalf("after a reading and a move: %+v (moved at version %d), want the reading and version 1", got, moved.Version)
			}
			_, err = f.Devices.MoveDevice(f.super, d.ID, site.ID)
			mustOK(t, err)
		})
		t.Run("ErrStale", func(t *testing.T) {
			d, err := f.Devices.FindDeviceByID(f.super, ds[0].ID)
			mustOK(t, err)
			before := f.state(t, ten.ID)
			_, err = f.Devices.UpdateDevice(asAdmin, d.ID, herd.DeviceUpdate{Name: new("late"), IfVersion: d.Version - 1})
			wantCode(t, err, herd.EPRECONDITION)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			before := f.state(t, ten.ID)
			_, err := f.Devices.UpdateDevice(asAdmin, ds[0].ID, herd.DeviceUpdate{Name: new("fine"), Model: new(string(make([]byte, herd.MaxModelLen+1)))})
			wantCode(t, err, herd.EINVALID)
			_, err = f.Devices.UpdateDevice(asAdmin, ds[0].ID, herd.DeviceUpdate{Name: new("bad\x00name")})
			wantCode(t, err, herd.EINVALID)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			_, err := f.Devices.UpdateDevice(f.as(t, viewerSecret), ds[0].ID, herd.DeviceUpdate{Name: new("viewer's")})
			wantCode(t, err, herd.EFORBIDDEN)
		})
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			before := f.state(t, ten.ID)
			_, err := f.Devices.UpdateDevice(f.as(t, outsiderSecret), ds[0].ID, herd.DeviceUpdate{Name: new("outsider's")})
			wantCode(t, err, herd.ENOTFOUND)
			_, err = f.Devices.UpdateDevice(asAdmin, 1<<40, herd.DeviceUpdate{Name: new("nobody")})
			wantCode(t, err, herd.ENOTFOUND)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("RaceOneWins", func(t *testing.T) {
			// Two editors with the same version: one update applies, the
			// other is a precondition failure, never a silent overwrite.
			d, err := f.Devices.FindDeviceByID(f.super, ds[1].ID)
			mustOK(t, err)
			const editors = 4
			errs := make([]error, editors)
			var wg sync.WaitGroup
			for i := range editors {
				wg.Go(func() {
					_, errs[i] = f.Devices.UpdateDevice(asAdmin, d.ID, herd.DeviceUpdate{Model: new("m" + string(rune('a'+i))), IfVersion: d.Version})
				})
			}
			wg.Wait()
			won := 0
			for _, err := range errs {
				if err == nil {
					won++
				} else if herd.ErrorCode(err) != herd.EPRECONDITION {
					t.Fatalf("an editor failed with %v, want %s", err, herd.EPRECONDITION)
				}
			}
			got, err := f.Devices.FindDeviceByID(f.super, d.ID)
			mustOK(t, err)
			if won != 1 || got.Version != d.Version+1 {
				t.Fatalf("%d editors won, version %d; want 1 and %d", won, got.Version, d.Version+1)
			}
		})
	})
}

// TestStateCache_SeesUpdate: a state cache of another process finds a
// device by the name and model an update gave it, and no longer by the old.
func TestStateCache_SeesUpdate(t *testing.T) {
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
		find := func(field, value string) []int64 {
			t.Helper()
			q := herd.DeviceQuery{TenantID: ten.ID, Filters: []herd.DeviceFilter{{Field: field, Op: herd.OpEq, Values: []any{value}}}, Sort: herd.DeviceSort{Field: "id"}, Limit: 100}
			p, err := devices.QueryDevices(f.super, q)
			mustOK(t, err)
			return ids(p.Items)
		}
		if got := find("name", ds[2].Key); !slices.Equal(got, []int64{ds[2].ID}) {
			t.Fatalf("before: %v", got)
		}
		_, err := f.Devices.UpdateDevice(f.super, ds[2].ID, herd.DeviceUpdate{Name: new("renamed"), Model: new("m-9")})
		mustOK(t, err)
		if got := find("name", "renamed"); !slices.Equal(got, []int64{ds[2].ID}) {
			t.Fatalf("by the new name: %v", got)
		}
		if got := find("model", "m-9"); !slices.Equal(got, []int64{ds[2].ID}) {
			t.Fatalf("by the new model: %v", got)
		}
		if got := find("name", ds[2].Key); len(got) != 0 {
			t.Fatalf("by the old name: %v", got)
		}
	})
}

func TestNodeService_UpdateNode(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		region := f.mustNode(t, ten.RootNodeID, "region")
		site, other := f.mustNode(t, region.ID, "site"), f.mustNode(t, ten.RootNodeID, "other")
		admin, adminSecret := f.mustUser(t, ten.ID, "region admin")
		f.mustGrant(t, admin.ID, region.ID, herd.RoleAdmin)
		viewer, viewerSecret := f.mustUser(t, ten.ID, "viewer")
		f.mustGrant(t, viewer.ID, region.ID, herd.RoleViewer)
		outsider, outsiderSecret := f.mustUser(t, ten.ID, "outsider")
		f.mustGrant(t, outsider.ID, other.ID, herd.RoleAdmin)
		asAdmin := f.as(t, adminSecret)
		t.Run("OK", func(t *testing.T) {
			got, err := f.Nodes.UpdateNode(asAdmin, site.ID, herd.NodeUpdate{Name: new("Oslo"), Kind: new("city"), IfVersion: 1})
			mustOK(t, err)
			if got.Name != "Oslo" || got.Kind != "city" || got.Version != 2 || got.Path != site.Path || got.ParentID != region.ID {
				t.Fatalf("updated %+v", got)
			}
			found, err := f.Nodes.FindNodeByID(f.super, site.ID)
			mustOK(t, err)
			found.Ancestors = nil // the breadcrumb is the read's
			if !reflect.DeepEqual(found, got) {
				t.Fatalf("found %+v, updated %+v", found, got)
			}
			ev := f.lastEvent(t, ten.ID, herd.EventNodeUpdated)
			var n herd.Node
			p := decodeUpdate(t, ev, "node", &n)
			if ev.SubjectID != site.ID || ev.Path != site.Path || !slices.Equal(p.Changed, []string{"name", "kind"}) || p.Old["name"] != "site" || n.Version != 2 {
				t.Fatalf("event %+v payload %s", ev, ev.Payload)
			}
		})
		t.Run("ErrRequired", func(t *testing.T) {
			before := f.state(t, ten.ID)
			_, err := f.Nodes.UpdateNode(asAdmin, site.ID, herd.NodeUpdate{Name: new("  ")})
			wantCode(t, err, herd.EINVALID)
			_, err = f.Nodes.UpdateNode(asAdmin, site.ID, herd.NodeUpdate{Kind: new("")})
			wantCode(t, err, herd.EINVALID)
			f.wantUnchanged(t, ten.ID, before)
		})
		t.Run("ErrStale", func(t *testing.T) {
			_, err := f.Nodes.UpdateNode(asAdmin, site.ID, herd.NodeUpdate{Name: new("late"), IfVersion: 1})
			wantCode(t, err, herd.EPRECONDITION)
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			_, err := f.Nodes.UpdateNode(f.as(t, viewerSecret), site.ID, herd.NodeUpdate{Name: new("x")})
			wantCode(t, err, herd.EFORBIDDEN)
		})
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			_, err := f.Nodes.UpdateNode(f.as(t, outsiderSecret), site.ID, herd.NodeUpdate{Name: new("x")})
			wantCode(t, err, herd.ENOTFOUND)
			n, err := f.Nodes.FindNodeByID(f.super, site.ID)
			mustOK(t, err)
			if n.Name != "Oslo" || n.Version != 2 {
				t.Fatalf("node changed by a refused update: %+v", n)
			}
		})
	})
}

func TestUserService_UpdateUser(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		region := f.mustNode(t, ten.RootNodeID, "region")
		admin, adminSecret := f.mustUser(t, ten.ID, "tenant admin")
		f.mustGrant(t, admin.ID, ten.RootNodeID, herd.RoleAdmin)
		regional, regionalSecret := f.mustUser(t, ten.ID, "regional")
		f.mustGrant(t, regional.ID, region.ID, herd.RoleAdmin)
		u, secret := f.mustUser(t, ten.ID, "ana")
		f.mustGrant(t, u.ID, region.ID, herd.RoleViewer)
		asAdmin := f.as(t, adminSecret)
		t.Run("OKRename", func(t *testing.T) {
			got, err := f.Users.UpdateUser(asAdmin, u.ID, herd.UserUpdate{Name: new("Ana B."), IfVersion: 1})
			mustOK(t, err)
			if got.Name != "Ana B." || got.Version != 2 || got.Disabled {
				t.Fatalf("updated %+v", got)
			}
		})
		t.Run("OKDisableRefusesTokens", func(t *testing.T) {
			if _, err := f.Users.Authenticate(t.Context(), secret); err != nil {
				t.Fatalf("before: %v", err)
			}
			got, err := f.Users.UpdateUser(asAdmin, u.ID, herd.UserUpdate{Disabled: new(true)})
			mustOK(t, err)
			if !got.Disabled || got.Version != 3 {
				t.Fatalf("updated %+v", got)
			}
			_, err = f.Users.Authenticate(t.Context(), secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			// A token made for a disabled user is refused as well.
			tok, err := f.Users.CreateToken(f.super, u.ID)
			mustOK(t, err)
			_, err = f.Users.Authenticate(t.Context(), tok.Secret)
			wantCode(t, err, herd.EUNAUTHORIZED)
			// Other users' tokens still work.
			if _, err := f.Users.Authenticate(t.Context(), regionalSecret); err != nil {
				t.Fatalf("another user's token: %v", err)
			}
			ev := f.lastEvent(t, ten.ID, herd.EventUserUpdated)
			var inEvent herd.User
			p := decodeUpdate(t, ev, "user", &inEvent)
			if !slices.Equal(p.Changed, []string{"disabled"}) || p.Old["disabled"] != false || !inEvent.Disabled {
				t.Fatalf("event payload %s", ev.Payload)
			}
			// Enabled again, with its grants as they were.
			_, err = f.Users.UpdateUser(asAdmin, u.ID, herd.UserUpdate{Disabled: new(false)})
			mustOK(t, err)
			a, err := f.Users.Authenticate(t.Context(), secret)
			mustOK(t, err)
			if a.UserID != u.ID || len(a.Grants) != 1 {
				t.Fatalf("enabled again: %+v", a)
			}
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			// An admin of a region is not an admin of the tenant, and no
			// user may disable themself without being one.
			_, err := f.Users.UpdateUser(f.as(t, regionalSecret), u.ID, herd.UserUpdate{Disabled: new(true)})
			wantCode(t, err, herd.EFORBIDDEN)
			_, err = f.Users.UpdateUser(f.as(t, secret), u.ID, herd.UserUpdate{Name: new("me")})
			wantCode(t, err, herd.EFORBIDDEN)
		})
		t.Run("ErrLastRootAdmin", func(t *testing.T) {
			// The tenant's only root admin may not disable themself or
			// revoke their root grant: no one but a super-admin could
			// manage the tenant's users after. With a second root admin
			// either may go; a super-admin may always.
			ten := f.mustTenant(t, "lone")
			lone, loneSecret := f.mustUser(t, ten.ID, "lone admin")
			loneGrant := f.mustGrant(t, lone.ID, ten.RootNodeID, herd.RoleAdmin)
			asLone := f.as(t, loneSecret)
			viewer, _ := f.mustUser(t, ten.ID, "viewer")
			f.mustGrant(t, viewer.ID, ten.RootNodeID, herd.RoleViewer)
			_, err := f.Users.UpdateUser(asLone, lone.ID, herd.UserUpdate{Disabled: new(true)})
			wantCode(t, err, herd.ECONFLICT)
			wantCode(t, f.Grants.DeleteGrant(asLone, loneGrant.ID), herd.ECONFLICT)
			// Nothing was written, and other users are not held by it.
			if got, err := f.Users.FindUserByID(f.super, lone.ID); err != nil || got.Disabled {
				t.Fatalf("the lone admin after the refusals: %+v, %v", got, err)
			}
			_, err = f.Users.UpdateUser(asLone, viewer.ID, herd.UserUpdate{Disabled: new(true)})
			mustOK(t, err)
			// A disabled second admin does not count.
			second, _ := f.mustUser(t, ten.ID, "second admin")
			secondGrant := f.mustGrant(t, second.ID, ten.RootNodeID, herd.RoleAdmin)
			_, err = f.Users.UpdateUser(asLone, second.ID, herd.UserUpdate{Disabled: new(true)})
			mustOK(t, err)
			wantCode(t, f.Grants.DeleteGrant(asLone, loneGrant.ID), herd.ECONFLICT)
			_, err = f.Users.UpdateUser(asLone, second.ID, herd.UserUpdate{Disabled: new(false)})
			mustOK(t, err)
			mustOK(t, f.Grants.DeleteGrant(asLone, secondGrant.ID))
			f.mustGrant(t, second.ID, ten.RootNodeID, herd.RoleAdmin)
			_, err = f.Users.UpdateUser(asLone, lone.ID, herd.UserUpdate{Disabled: new(true)})
			mustOK(t, err)
			// Now the second is the last; the super-admin may still.
			_, err = f.Users.UpdateUser(f.super, second.ID, herd.UserUpdate{Disabled: new(true)})
			mustOK(t, err)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			_, err := f.Users.UpdateUser(asAdmin, u.ID, herd.UserUpdate{Name: new("")})
			wantCode(t, err, herd.EINVALID)
		})
		t.Run("ErrStale", func(t *testing.T) {
			_, err := f.Users.UpdateUser(asAdmin, u.ID, herd.UserUpdate{Name: new("late"), IfVersion: 2})
			wantCode(t, err, herd.EPRECONDITION)
			got, err := f.Users.FindUserByID(f.super, u.ID)
			mustOK(t, err)
			if got.Name != "Ana B." || got.Disabled || got.Version != 4 {
				t.Fatalf("user %+v", got)
			}
		})
	})
}

func TestTenantService_UpdateTenant(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		ten := f.mustTenant(t, "acme")
		admin, adminSecret := f.mustUser(t, ten.ID, "tenant admin")
		f.mustGrant(t, admin.ID, ten.RootNodeID, herd.RoleAdmin)
		t.Run("OK", func(t *testing.T) {
			if ten.Version != 1 {
				t.Fatalf("a new tenant is at version %d", ten.Version)
			}
			got, err := f.Tenants.UpdateTenant(f.super, ten.ID, herd.TenantUpdate{Name: new("Acme AS"), IfVersion: 1})
			mustOK(t, err)
			if got.Name != "Acme AS" || got.Version != 2 || got.RootNodeID != ten.RootNodeID {
				t.Fatalf("updated %+v", got)
			}
			found, err := f.Tenants.FindTenantByID(f.super, ten.ID)
			mustOK(t, err)
			if !reflect.DeepEqual(found, got) {
				t.Fatalf("found %+v, updated %+v", found, got)
			}
			ev := f.lastEvent(t, ten.ID, herd.EventTenantUpdated)
			var inEvent herd.Tenant
			p := decodeUpdate(t, ev, "tenant", &inEvent)
			if ev.Path != herd.ChildPath("/", ten.RootNodeID) || p.Old["name"] != "acme" || inEvent.Name != "Acme AS" {
				t.Fatalf("event %+v payload %s", ev, ev.Payload)
			}
			// The root node keeps its own name.
			root, err := f.Nodes.FindNodeByID(f.super, ten.RootNodeID)
			mustOK(t, err)
			if root.Name != "acme" {
				t.Fatalf("root node renamed to %q", root.Name)
			}
		})
		t.Run("ErrForbidden", func(t *testing.T) {
			_, err := f.Tenants.UpdateTenant(f.as(t, adminSecret), ten.ID, herd.TenantUpdate{Name: new("mine")})
			wantCode(t, err, herd.EFORBIDDEN)
		})
		t.Run("ErrStale", func(t *testing.T) {
			_, err := f.Tenants.UpdateTenant(f.super, ten.ID, herd.TenantUpdate{Name: new("late"), IfVersion: 1})
			wantCode(t, err, herd.EPRECONDITION)
		})
		t.Run("ErrInvalid", func(t *testing.T) {
			_, err := f.Tenants.UpdateTenant(f.super, ten.ID, herd.TenantUpdate{Name: new(" ")})
			wantCode(t, err, herd.EINVALID)
		})
		t.Run("ErrNotFound", func(t *testing.T) {
			_, err := f.Tenants.UpdateTenant(f.super, 1<<40, herd.TenantUpdate{Name: new("x")})
			wantCode(t, err, herd.ENOTFOUND)
		})
	})
}

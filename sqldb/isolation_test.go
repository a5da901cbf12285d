package sqldb_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestTenantIsolation: every id of tenant B, used by an admin of all of
// tenant A, is not found, by every service (tenants, nodes, devices, users
// and tokens, grants, the lists (users, tokens, a node's children and
// grants, the node search), commands, webhooks and their deliveries, device
// credentials, configs, firmware, rollouts, events, passwords and sessions
// (a sign-in names its tenant), the telemetry history:
// readings, aggregates, the summary, the export), and changes nothing of B; every such lookup states
// the tenant in its SQL, the gateway's read of a device's open commands
// too; and A's scoped query never returns B's devices,
// whatever the filters, a search (contains, q, the trigram index's
// candidates) included. (The apps feed is named by token id:
// appsocket.TestAppSocket_NewTokenDoesNotInheritFeed; ids given out again
// are TestIDsNeverReused.)
func TestTenantIsolation(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFixture(db)
		a := f.mustTenant(t, "a")
		b := f.mustTenant(t, "b")
		aSite := f.mustNode(t, a.RootNodeID, "a site")
		aDevs := f.mustDevices(t, aSite.ID, 3)
		admin, secret := f.mustUser(t, a.ID, "a admin")
		f.mustGrant(t, admin.ID, a.RootNodeID, herd.RoleAdmin)
		ctx := f.as(t, secret)

		bSite := f.mustNode(t, b.RootNodeID, "b site")
		bDevs := f.mustDevices(t, bSite.ID, 3)
		bUser, bSecret := f.mustUser(t, b.ID, "b user")
		bGrant := f.mustGrant(t, bUser.ID, bSite.ID, herd.RoleViewer)
		bActor, err := f.Users.Authenticate(t.Context(), bSecret)
		mustOK(t, err)
		cmds := sqldb.NewCommandService(db)
		hooks := sqldb.NewWebhookService(db)
		creds := sqldb.NewCredentialService(db)
		events := sqldb.NewEventService(db)
		bCmd := &herd.Command{DeviceID: bDevs[0].ID, Name: "unlock", Args: []byte(`{"pin":"4711"}`)}
		mustOK(t, cmds.CreateCommand(f.super, bCmd))
		bHook := &herd.Webhook{NodeID: bSite.ID, URL: "https://b.example/hook", EventTypes: []string{"*"}}
		mustOK(t, hooks.CreateWebhook(f.super, bHook))
		bCred, err := creds.CreateDeviceCredential(f.super, bDevs[1].ID)
		mustOK(t, err)
		configs := sqldb.NewConfigService(db)
		fws := sqldb.NewFirmwareService(db)
		bProfile := &herd.ConfigProfile{TenantID: b.ID, Name: "b profile", Schema: []byte(`{"type":"object"}`)}
		mustOK(t, configs.CreateConfigProfile(f.super, bProfile))
		mustOK(t, configs.CreateConfigVersion(f.super, &herd.ConfigVersion{ProfileID: bProfile.ID, Document: []byte(`{"rate":1}`)}))
		aProfile := &herd.ConfigProfile{TenantID: a.ID, Name: "a profile", Schema: []byte(`{"type":"object"}`)}
		mustOK(t, configs.CreateConfigProfile(ctx, aProfile))
		mustOK(t, configs.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: aProfile.ID, Document: []byte(`{}`)}))
		bFirmware := &herd.Firmware{TenantID: b.ID, Model: "th-200", Version: "1.0.0", URL: "https://b.example/fw.bin", SHA256: strings.Repeat("ab", 32), Size: 1}
		mustOK(t, fws.CreateFirmware(f.super, bFirmware))
		rollouts := sqldb.NewRolloutService(db)
		bRollout := &herd.Rollout{TenantID: b.ID, Name: "b rollout", RolloutSpec: herd.RolloutSpec{
			Target: herd.RolloutTarget{NodeID: bSite.ID}, Payload: herd.RolloutPayload{ProfileID: bProfile.ID, Version: 1}}}
		mustOK(t, rollouts.CreateRollout(f.super, bRollout))
		history := sqldb.NewHistoryService(db)
		lists := sqldb.NewListService(db)
		// Readings of both tenants' devices, an hour ago.
		readingAt := time.Now().Add(-time.Hour).Truncate(time.Minute)
		var items []herd.IngestItem
		for _, d := range append(slices.Clone(aDevs), bDevs...) {
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: readingAt.UnixMilli(),
				Reading: herd.Reading{TS: readingAt.UnixMilli(), Has: herd.ReadingTemperature, Temperature: 20}})
		}
		mustOK(t, sqldb.NewIngestService(db).Ingest(t.Context(), items))
		rangeFrom, rangeTo := readingAt.Add(-time.Hour), readingAt.Add(time.Hour)
		bBefore := f.state(t, b.ID)

		t.Run("ErrNotFound", func(t *testing.T) {
			for name, err := range map[string]error{
				"FindTenantByID":      errOf(f.Tenants.FindTenantByID(ctx, b.ID)),
				"FindNodeByID":        errOf(f.Nodes.FindNodeByID(ctx, bSite.ID)),
				"FindNodeByID root":   errOf(f.Nodes.FindNodeByID(ctx, b.RootNodeID)),
				"CreateNode parent":   f.Nodes.CreateNode(ctx, &herd.Node{ParentID: bSite.ID, Kind: "k", Name: "n"}),
				"CreateNode tenant":   f.Nodes.CreateNode(ctx, &herd.Node{TenantID: b.ID, Kind: "k", Name: "n"}),
				"MoveNode B node":     errOf(f.Nodes.MoveNode(ctx, bSite.ID, b.RootNodeID)),
				"MoveNode into B":     errOf(f.Nodes.MoveNode(ctx, aSite.ID, bSite.ID)),
				"CreateDevices":       f.Devices.CreateDevices(ctx, []*herd.Device{{NodeID: bSite.ID, Key: nextKey("x")}}),
				"FindDeviceByID":      errOf(f.Devices.FindDeviceByID(ctx, bDevs[0].ID)),
				"UpdateTenant":        errOf(f.Tenants.UpdateTenant(ctx, b.ID, herd.TenantUpdate{Name: new("spy")})),
				"UpdateNode":          errOf(f.Nodes.UpdateNode(ctx, bSite.ID, herd.NodeUpdate{Name: new("spy")})),
				"UpdateNode root":     errOf(f.Nodes.UpdateNode(ctx, b.RootNodeID, herd.NodeUpdate{Name: new("spy")})),
				"UpdateDevice":        errOf(f.Devices.UpdateDevice(ctx, bDevs[0].ID, herd.DeviceUpdate{Name: new("spy")})),
				"UpdateUser":          errOf(f.Users.UpdateUser(ctx, bUser.ID, herd.UserUpdate{Disabled: new(true)})),
				"SetPassword":         sqldb.NewSessionService(db).SetPassword(ctx, bUser.ID, "a long enough password", ""),
				"CreatePasswordLink":  errOf(sqldb.NewSessionService(db).CreatePasswordLink(ctx, bUser.ID)),
				"MoveDevice B device": errOf(f.Devices.MoveDevice(ctx, bDevs[0].ID, aSite.ID)),
				"MoveDevice into B":   errOf(f.Devices.MoveDevice(ctx, aDevs[0].ID, bSite.ID)),
				"DeleteDevice":        f.Devices.DeleteDevice(ctx, bDevs[0].ID),
				"QueryDevices tenant": errOf(f.Devices.QueryDevices(ctx, herd.DeviceQuery{TenantID: b.ID, Sort: herd.DeviceSort{Field: "id"}})),
				"CreateUser":          f.Users.CreateUser(ctx, &herd.User{TenantID: b.ID, Name: "spy"}),
				"FindUserByID":        errOf(f.Users.FindUserByID(ctx, bUser.ID)),
				"CreateToken":         errOf(f.Users.CreateToken(ctx, bUser.ID)),
				"DeleteToken":         f.Users.DeleteToken(ctx, bActor.TokenID),
				"CreateGrant B user":  f.Grants.CreateGrant(ctx, &herd.Grant{UserID: bUser.ID, NodeID: aSite.ID, Role: herd.RoleViewer}),
				"CreateGrant B node":  f.Grants.CreateGrant(ctx, &herd.Grant{UserID: admin.ID, NodeID: bSite.ID, Role: herd.RoleViewer}),
				"DeleteGrant":         f.Grants.DeleteGrant(ctx, bGrant.ID),
				"FindGrantsByUser":    errOf(f.Grants.FindGrantsByUser(ctx, bUser.ID)),

				"FindUsers tenant":   errOf(lists.FindUsers(ctx, herd.UserListQuery{TenantID: b.ID})),
				"FindUsers node":     errOf(lists.FindUsers(ctx, herd.UserListQuery{NodeID: bSite.ID})),
				"FindTokens":         errOf(lists.FindTokens(ctx, bUser.ID, herd.ListParams{})),
				"FindChildren":       errOf(lists.FindChildren(ctx, b.RootNodeID, herd.ListParams{})),
				"FindGrantsByNode":   errOf(lists.FindGrantsByNode(ctx, bSite.ID, herd.ListParams{})),
				"SearchNodes tenant": errOf(lists.SearchNodes(ctx, herd.NodeSearch{TenantID: b.ID, Q: "site"})),

				"CreateCommand":        cmds.CreateCommand(ctx, &herd.Command{DeviceID: bDevs[0].ID, Name: "lock"}),
				"FindCommandByID":      errOf(cmds.FindCommandByID(ctx, bCmd.ID)),
				"FindCommandsByDevice": errOf(cmds.FindCommandsByDevice(ctx, bDevs[0].ID, 10)),

				"CreateWebhook":   hooks.CreateWebhook(ctx, &herd.Webhook{NodeID: bSite.ID, URL: "https://a.example/spy", EventTypes: []string{"*"}}),
				"FindWebhookByID": errOf(hooks.FindWebhookByID(ctx, bHook.ID)),
				"DeleteWebhook":   hooks.DeleteWebhook(ctx, bHook.ID),
				"RedriveWebhook":  errOf(hooks.RedriveWebhook(ctx, bHook.ID)),
				"FindDeliveries":  errOf(hooks.FindDeliveries(ctx, bHook.ID, "", 10)),

				"CreateDeviceCredential":        errOf(creds.CreateDeviceCredential(ctx, bDevs[1].ID)),
				"CreateDeviceCredentials mixed": errOf(creds.CreateDeviceCredentials(ctx, []int64{aDevs[0].ID, bDevs[1].ID})),
				"DeleteDeviceCredential":        creds.DeleteDeviceCredential(ctx, bDevs[1].ID),

				"CreateConfigProfile":       configs.CreateConfigProfile(ctx, &herd.ConfigProfile{TenantID: b.ID, Name: "spy", Schema: []byte(`{}`)}),
				"FindConfigProfileByID":     errOf(configs.FindConfigProfileByID(ctx, bProfile.ID)),
				"FindConfigProfiles":        errOf(configs.FindConfigProfiles(ctx, b.ID, 0, 10)),
				"CreateConfigVersion":       configs.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: bProfile.ID, Document: []byte(`{}`)}),
				"FindConfigVersion":         errOf(configs.FindConfigVersion(ctx, bProfile.ID, 1)),
				"FindConfigVersions":        errOf(configs.FindConfigVersions(ctx, bProfile.ID, 0, 10)),
				"FindDeviceConfig":          errOf(configs.FindDeviceConfig(ctx, bDevs[0].ID)),
				"SetDesiredConfig B device": errOf(configs.SetDesiredConfig(ctx, bDevs[0].ID, aProfile.ID, 1)),
				"SetDesiredConfig B config": errOf(configs.SetDesiredConfig(ctx, aDevs[0].ID, bProfile.ID, 1)),
				"CreateFirmware":            fws.CreateFirmware(ctx, &herd.Firmware{TenantID: b.ID, Model: "m", Version: "v", URL: "https://a.example/x", SHA256: strings.Repeat("0", 64), Size: 1}),
				"FindFirmwareByID":          errOf(fws.FindFirmwareByID(ctx, bFirmware.ID)),
				"FindFirmware":              errOf(fws.FindFirmware(ctx, b.ID, "", 0, 10)),
				"CreateRollout B node": rollouts.CreateRollout(ctx, &herd.Rollout{TenantID: a.ID, Name: "spy", RolloutSpec: herd.RolloutSpec{
					Target: herd.RolloutTarget{NodeID: bSite.ID}, Payload: herd.RolloutPayload{ProfileID: aProfile.ID, Version: 1}}}),
				"CreateRollout B config": rollouts.CreateRollout(ctx, &herd.Rollout{TenantID: a.ID, Name: "spy", RolloutSpec: herd.RolloutSpec{
					Target: herd.RolloutTarget{NodeID: aSite.ID}, Payload: herd.RolloutPayload{ProfileID: bProfile.ID, Version: 1}}}),
				"FindRolloutByID":    errOf(rollouts.FindRolloutByID(ctx, bRollout.ID)),
				"FindRollouts":       errOf(rollouts.FindRollouts(ctx, b.ID, 0, 10)),
				"FindRolloutMembers": errOf(rollouts.FindRolloutMembers(ctx, bRollout.ID, "", 0, 10)),
				"ActOnRollout":       errOf(rollouts.ActOnRollout(ctx, bRollout.ID, herd.RolloutCancel)),

				"FindEvents":      errOf(events.FindEvents(ctx, b.ID, 0, 10)),
				"FindEvents head": errOf(events.FindEvents(ctx, b.ID, -1, 10)),

				"DeviceReadings":           errOf(history.DeviceReadings(ctx, herd.ReadingsQuery{DeviceID: bDevs[0].ID, From: rangeFrom, To: rangeTo, Limit: 10})),
				"DeviceSeries":             errOf(history.DeviceSeries(ctx, herd.ReadingsQuery{DeviceID: bDevs[0].ID, From: rangeFrom, To: rangeTo, Step: time.Hour, Agg: herd.AggAvg})),
				"AggregateReadings tenant": errOf(history.AggregateReadings(ctx, herd.AggregateQuery{TenantID: b.ID, Field: "temperature", From: rangeFrom, To: rangeTo})),
				"AggregateReadings node":   errOf(history.AggregateReadings(ctx, herd.AggregateQuery{NodeID: bSite.ID, Field: "temperature", From: rangeFrom, To: rangeTo})),
				"AggregateFromReadings":    errOf(history.AggregateFromReadings(ctx, herd.AggregateQuery{NodeID: bSite.ID, Field: "temperature", From: rangeFrom, To: rangeTo})),
				"SummarizeDevices tenant":  errOf(history.SummarizeDevices(ctx, herd.SummaryQuery{TenantID: b.ID})),
				"SummarizeDevices node":    errOf(history.SummarizeDevices(ctx, herd.SummaryQuery{NodeID: bSite.ID})),
				"ExportReadings tenant":    history.ExportReadings(ctx, herd.ExportQuery{TenantID: b.ID, From: rangeFrom, To: rangeTo}, func(*herd.ExportReading) error { return nil }),
				"ExportReadings node":      history.ExportReadings(ctx, herd.ExportQuery{NodeID: bSite.ID, From: rangeFrom, To: rangeTo}, func(*herd.ExportReading) error { return nil }),
			} {
				if code := herd.ErrorCode(err); code != herd.ENOTFOUND {
					t.Errorf("%s: got %s (%v), want %s", name, code, err, herd.ENOTFOUND)
				}
			}
			// Nothing of B changed, and B's token still works.
			f.wantUnchanged(t, b.ID, bBefore)
			if _, err := f.Users.Authenticate(t.Context(), bSecret); err != nil {
				t.Fatalf("B's token: %v", err)
			}
			if c, err := cmds.FindCommandByID(f.super, bCmd.ID); err != nil || c.Status != herd.CommandPending || string(c.Args) != `{"pin":"4711"}` {
				t.Fatalf("B's command: %+v, %v", c, err)
			}
			if w, err := hooks.FindWebhookByID(f.super, bHook.ID); err != nil || w.Status != herd.WebhookActive {
				t.Fatalf("B's webhook: %+v, %v", w, err)
			}
			if _, err := creds.AuthenticateDevice(t.Context(), bDevs[1].Key, bCred.Token); err != nil {
				t.Fatalf("B's device credential: %v", err)
			}
			// A's device of the mixed batch got no credential either.
			if n := f.count(t, `SELECT COUNT(*) FROM device_credentials WHERE device_id = ?`, aDevs[0].ID); n != 0 {
				t.Fatalf("A's device has %d credentials after a batch that failed", n)
			}
			// A's device got no config from B's profile.
			if c, err := configs.FindDeviceConfig(ctx, aDevs[0].ID); err != nil || c.Desired != nil {
				t.Fatalf("A's device config: %+v, %v", c, err)
			}
			// A's lists leave B's rows out.
			if _, err := lists.FindTenants(ctx, herd.ListParams{}); herd.ErrorCode(err) != herd.EFORBIDDEN {
				t.Fatalf("A's admin lists the tenants: %v", err)
			}
			us, err := lists.FindUsers(ctx, herd.UserListQuery{})
			mustOK(t, err)
			if len(us.Items) != 1 || us.Items[0].ID != admin.ID {
				t.Fatalf("A lists users %+v", us.Items)
			}
			found, err := lists.SearchNodes(ctx, herd.NodeSearch{Q: "site"})
			mustOK(t, err)
			if len(found.Items) != 1 || found.Items[0].ID != aSite.ID {
				t.Fatalf("A finds nodes %+v", found.Items)
			}
			kids, err := lists.FindChildren(ctx, a.RootNodeID, herd.ListParams{})
			mustOK(t, err)
			if len(kids.Items) != 1 || kids.Items[0].ID != aSite.ID || kids.Items[0].DeviceCount != int64(len(aDevs)) {
				t.Fatalf("A's root's children %+v", kids.Items)
			}
			ps, err := configs.FindConfigProfiles(ctx, 0, 0, 10)
			mustOK(t, err)
			if len(ps.Items) != 1 || ps.Items[0].ID != aProfile.ID {
				t.Fatalf("A lists profiles %+v", ps.Items)
			}
			rs, err := rollouts.FindRollouts(ctx, 0, 0, 10)
			mustOK(t, err)
			if len(rs.Items) != 0 {
				t.Fatalf("A lists rollouts %+v", rs.Items)
			}
			if r, err := rollouts.FindRolloutByID(f.super, bRollout.ID); err != nil || r.State != herd.RolloutScheduled {
				t.Fatalf("B's rollout: %+v, %v", r, err)
			}
			ws, err := hooks.FindWebhooks(ctx)
			mustOK(t, err)
			for _, w := range ws {
				if w.TenantID != a.ID {
					t.Fatalf("A lists webhook %+v", w)
				}
			}
			// A's history reads over A's whole scope count A's readings
			// only: the rollups, the readings, the summary, the export.
			for _, agg := range []func(context.Context, herd.AggregateQuery) (*herd.AggregateResult, error){history.AggregateReadings, history.AggregateFromReadings} {
				res, err := agg(ctx, herd.AggregateQuery{Field: "temperature", Aggs: []string{herd.AggCount}, From: rangeFrom, To: rangeTo})
				mustOK(t, err)
				if len(res.Series) != 1 || len(res.Series[0].Points) != 1 || res.Series[0].Points[0].Value != float64(len(aDevs)) {
					t.Fatalf("A's aggregate (%s): %+v, want a count of %d", res.Source, res.Series, len(aDevs))
				}
			}
			sum, err := history.SummarizeDevices(ctx, herd.SummaryQuery{})
			mustOK(t, err)
			if sum.Count != int64(len(aDevs)) {
				t.Fatalf("A's summary counts %d devices, want %d", sum.Count, len(aDevs))
			}
			exported := 0
			mustOK(t, history.ExportReadings(ctx, herd.ExportQuery{From: rangeFrom, To: rangeTo}, func(r *herd.ExportReading) error {
				if !slices.ContainsFunc(aDevs, func(d *herd.Device) bool { return d.ID == r.DeviceID }) {
					t.Fatalf("A's export has device %d", r.DeviceID)
				}
				exported++
				return nil
			}))
			if exported != len(aDevs) {
				t.Fatalf("A's export has %d readings, want %d", exported, len(aDevs))
			}
		})
		t.Run("SignInNamesItsTenant", func(t *testing.T) {
			// B's user, with a password, cannot sign in to A by name, nor
			// does a session of A's admin see B.
			db.SetPasswordParams(cheapHash)
			ss := sqldb.NewSessionService(db)
			mustOK(t, ss.SetPassword(f.super, bUser.ID, "b's long password", ""))
			_, err := ss.SignIn(t.Context(), a.ID, "b user", "b's long password")
			wantCode(t, err, herd.EUNAUTHORIZED)
			mustOK(t, ss.SetPassword(f.super, admin.ID, "a's long password", ""))
			s, err := ss.SignIn(t.Context(), a.ID, "a admin", "a's long password")
			mustOK(t, err)
			sa, err := ss.AuthenticateSession(t.Context(), s.Secret)
			mustOK(t, err)
			_, err = f.Devices.FindDeviceByID(herd.NewContextWithActor(t.Context(), sa), bDevs[2].ID)
			wantCode(t, err, herd.ENOTFOUND)
		})

		t.Run("SQLStatesTheTenant", func(t *testing.T) {
			// Every lookup by id for a user of A says tenant_id in its
			// SQL, so a row of B is never read, whatever Go would make of
			// it: the isolation is in the statement, not remembered.
			var mu sync.Mutex
			var unscoped []string
			db.QueryHook = func(q string, args []any) {
				mu.Lock()
				defer mu.Unlock()
				if strings.HasPrefix(strings.TrimSpace(q), "SELECT") && strings.Contains(q, "id = ?") && !strings.Contains(q, "tenant_id = ?") && !strings.Contains(q, "FROM tenants") {
					unscoped = append(unscoped, q)
				}
			}
			defer func() { db.QueryHook = nil }()
			for _, call := range []func() error{
				func() error { return errOf(f.Nodes.FindNodeByID(ctx, bSite.ID)) },
				func() error { return errOf(f.Devices.FindDeviceByID(ctx, bDevs[0].ID)) },
				func() error { return f.Devices.DeleteDevice(ctx, bDevs[0].ID) },
				func() error { return errOf(f.Users.FindUserByID(ctx, bUser.ID)) },
				func() error { return f.Users.DeleteToken(ctx, bActor.TokenID) },
				func() error {
					return sqldb.NewSessionService(db).SetPassword(ctx, bUser.ID, "a long enough password", "")
				},
				func() error { return f.Grants.DeleteGrant(ctx, bGrant.ID) },
				func() error { return errOf(cmds.FindCommandByID(ctx, bCmd.ID)) },
				func() error { return errOf(cmds.FindCommandsByDevice(ctx, bDevs[0].ID, 10)) },
				func() error { return errOf(hooks.FindWebhookByID(ctx, bHook.ID)) },
				func() error { return errOf(hooks.FindDeliveries(ctx, bHook.ID, "", 10)) },
				func() error { return errOf(creds.CreateDeviceCredential(ctx, bDevs[1].ID)) },
				func() error { return creds.DeleteDeviceCredential(ctx, bDevs[1].ID) },
				func() error { return errOf(configs.FindConfigProfileByID(ctx, bProfile.ID)) },
				func() error { return errOf(configs.FindConfigVersion(ctx, bProfile.ID, 1)) },
				func() error { return errOf(configs.FindConfigVersions(ctx, bProfile.ID, 0, 10)) },
				func() error {
					return configs.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: bProfile.ID, Document: []byte(`{}`)})
				},
				func() error { return errOf(configs.FindDeviceConfig(ctx, bDevs[0].ID)) },
				func() error { return errOf(configs.SetDesiredConfig(ctx, aDevs[0].ID, bProfile.ID, 1)) },
				func() error { return errOf(fws.FindFirmwareByID(ctx, bFirmware.ID)) },
				func() error { return errOf(rollouts.FindRolloutByID(ctx, bRollout.ID)) },
				func() error { return errOf(rollouts.FindRolloutMembers(ctx, bRollout.ID, "", 0, 10)) },
				func() error { return errOf(rollouts.ActOnRollout(ctx, bRollout.ID, herd.RolloutPause)) },
				func() error { return errOf(lists.FindUsers(ctx, herd.UserListQuery{NodeID: bSite.ID})) },
				func() error { return errOf(lists.FindTokens(ctx, bUser.ID, herd.ListParams{})) },
				func() error { return errOf(lists.FindChildren(ctx, bSite.ID, herd.ListParams{})) },
				func() error { return errOf(lists.FindGrantsByNode(ctx, bSite.ID, herd.ListParams{})) },
			} {
				if code := herd.ErrorCode(call()); code != herd.ENOTFOUND {
					t.Errorf("got %s, want %s", code, herd.ENOTFOUND)
				}
			}
			for _, q := range unscoped {
				t.Errorf("a lookup by id for a user does not state the tenant: %s", q)
			}
		})
		t.Run("PendingConfigStatesTheTenant", func(t *testing.T) {
			// The gateway reads a device's desired config in the tenant
			// its credential authenticated, as it reads commands.
			mustOK(t, errOf(configs.SetDesiredConfig(f.super, bDevs[0].ID, bProfile.ID, 1)))
			c, err := configs.PendingConfig(t.Context(), a.ID, bDevs[0].ID)
			mustOK(t, err)
			if c != nil {
				t.Fatalf("B's device's desired config read in tenant A: %+v", c)
			}
			c, err = configs.PendingConfig(t.Context(), b.ID, bDevs[0].ID)
			mustOK(t, err)
			if c == nil || c.ProfileID != bProfile.ID {
				t.Fatalf("B's device's desired config: %+v, want profile %d", c, bProfile.ID)
			}
		})
		t.Run("CommandQueueStatesTheTenant", func(t *testing.T) {
			// The gateway reads a device's open commands in the tenant its
			// credential authenticated: another tenant gets none of them.
			open, err := cmds.OpenCommands(t.Context(), a.ID, bDevs[0].ID)
			mustOK(t, err)
			if len(open) != 0 {
				t.Fatalf("B's device's open commands read in tenant A: %+v", open)
			}
			open, err = cmds.OpenCommands(t.Context(), b.ID, bDevs[0].ID)
			mustOK(t, err)
			if len(open) != 1 || open[0].ID != bCmd.ID {
				t.Fatalf("B's device's open commands: %+v, want command %d", open, bCmd.ID)
			}
		})
		t.Run("OKQueryNeverReturnsOtherTenant", func(t *testing.T) {
			bIDs := map[int64]bool{}
			for _, d := range bDevs {
				bIDs[d.ID] = true
			}
			for _, q := range []herd.DeviceQuery{
				{Sort: herd.DeviceSort{Field: "id"}},
				{TenantID: a.ID, Sort: herd.DeviceSort{Field: "name", Desc: true}},
				{Filters: []herd.DeviceFilter{{Field: "node_id", Op: "eq", Values: []any{bSite.ID}}}, Sort: herd.DeviceSort{Field: "id"}},
				{Filters: []herd.DeviceFilter{{Field: "path", Op: "prefix", Values: []any{"/"}}}, Sort: herd.DeviceSort{Field: "path"}},
				{Filters: []herd.DeviceFilter{{Field: "id", Op: "in", Values: []any{bDevs[0].ID, bDevs[1].ID, aDevs[0].ID}}}, Sort: herd.DeviceSort{Field: "id"}},
				{Filters: []herd.DeviceFilter{{Field: "key", Op: "eq", Values: []any{bDevs[2].Key}}}, Sort: herd.DeviceSort{Field: "key", Desc: true}},
			} {
				q.Limit = 2
				items, count := f.walk(t, ctx, q)
				for _, d := range items {
					if bIDs[d.ID] || d.TenantID != a.ID {
						t.Fatalf("query %+v returned device %d of tenant %d", q, d.ID, d.TenantID)
					}
				}
				if count != int64(len(items)) {
					t.Fatalf("query %+v: count %d for %d items", q, count, len(items))
				}
			}
			// And A's devices are there, so the queries above did run.
			items, _ := f.walk(t, ctx, herd.DeviceQuery{Sort: herd.DeviceSort{Field: "id"}, Limit: 10})
			if len(items) != len(aDevs) {
				t.Fatalf("A sees %d devices, want %d", len(items), len(aDevs))
			}
		})
		t.Run("SearchNeverReturnsOtherTenant", func(t *testing.T) {
			// B holds the text A searches for, in device names, labels and
			// a node's name, more often than A does: the trigram index's
			// candidates (asked from any scope here) and the scope's test
			// must both keep to A, and every statement that reads the
			// search index or the nodes' names states the tenant.
			db.SetSearchIndexFrom(1)
			defer db.SetSearchIndexFrom(0)
			blue := "Kettle-Blue"
			aHall := f.mustNode(t, a.RootNodeID, "furnace hall")
			aSearch := make([]*herd.Device, 12)
			for i := range aSearch {
				aSearch[i] = &herd.Device{NodeID: aHall.ID, Key: nextKey("srch"), Name: fmt.Sprintf("furnace %d", i)}
			}
			aSearch[0].Name, aSearch[1].Labels = blue, map[string]string{"asset": "kettle-blue-7"}
			mustOK(t, f.Devices.CreateDevices(f.super, aSearch))
			bHall := f.mustNode(t, b.RootNodeID, "KETTLE-BLUE-HALL")
			bSearch := make([]*herd.Device, 20)
			for i := range bSearch {
				bSearch[i] = &herd.Device{NodeID: bHall.ID, Key: nextKey("srch"), Name: blue, Labels: map[string]string{"asset": "kettle-blue-7"}}
			}
			mustOK(t, f.Devices.CreateDevices(f.super, bSearch))
			var mu sync.Mutex
			var unscoped []string
			driven := 0
			db.QueryHook = func(q string, _ []any) {
				mu.Lock()
				defer mu.Unlock()
				if strings.Contains(q, "devices.id IN (SELECT") {
					driven++
				}
				for _, part := range strings.Split(q, "SELECT")[1:] {
					// Stated as a parameter, or by correlation with the
					// device row the outer statement scoped.
					if (strings.Contains(part, "device_search") || strings.Contains(part, "name_fold")) &&
						!strings.Contains(part, "tenant_id = ?") && !strings.Contains(part, "tenant_id = devices.tenant_id") {
						unscoped = append(unscoped, q)
					}
				}
			}
			defer func() { db.QueryHook = nil }()
			for _, tc := range []struct {
				q    herd.DeviceQuery
				want []int64
			}{
				{herd.DeviceQuery{Search: []string{"kettle-blue"}}, []int64{aSearch[0].ID, aSearch[1].ID}},
				{herd.DeviceQuery{Search: []string{"kettle", "furnace"}}, []int64{aSearch[0].ID, aSearch[1].ID}}, // through A's hall
				{herd.DeviceQuery{Search: []string{"blue-hall"}}, nil},                                           // B's hall only
				{herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "name", Op: herd.OpContains, Values: []any{"kettle-blue"}}}}, []int64{aSearch[0].ID}},
				{herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "label.asset", Op: herd.OpContains, Values: []any{"blue-7"}}}}, []int64{aSearch[1].ID}},
			} {
				tc.q.Sort, tc.q.Limit = herd.DeviceSort{Field: "id"}, 1
				items, _ := f.walk(t, ctx, tc.q)
				var got []int64
				for _, d := range items {
					if d.TenantID != a.ID {
						t.Fatalf("search %+v returned device %d of tenant %d", tc.q, d.ID, d.TenantID)
					}
					got = append(got, d.ID)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("search %+v: got %v, want %v", tc.q, got, tc.want)
				}
			}
			if driven == 0 {
				t.Error("no page was driven by the search index's candidates: the test asks nothing of them")
			}
			for _, q := range unscoped {
				t.Errorf("a statement of the search does not state the tenant: %s", q)
			}
		})
	})
}

// count runs a COUNT query on the store.
func (f *fixture) count(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := f.db.SQL().QueryRow(f.db.Rebind(q), args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

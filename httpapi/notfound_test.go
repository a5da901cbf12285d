package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// notFoundMessage is the only shape a not-found message may take: the kind
// of thing and the id the caller sent, nothing about the object (its node,
// path, tenant or name).
var notFoundMessage = regexp.MustCompile(`^(tenant|node|device|user|token|grant|webhook|command|config profile|firmware|rollout) (\d+) not found$`)

// outside is one set of objects the caller cannot see.
type outside struct {
	node, device, command, grant, token, webhook, rollout int64
}

// TestNotFoundOutsideGrants: an object outside the caller's grants is a
// 404, the same answer as for one that does not exist, on every route that
// takes an id: in another tenant and in the caller's own tenant under a
// node the caller cannot see. The message names nothing but the id sent,
// and nothing changes. A caller who sees an object but may not change it
// gets 403.
func TestNotFoundOutsideGrants(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := mustOpenServer(t, db, func(s *httpapi.Server) {
			s.CredentialService = sqldb.NewCredentialService(db)
			s.CommandService = sqldb.NewCommandService(db)
			s.Idempotency = sqldb.NewIdempotencyService(db)
			s.EventService = sqldb.NewEventService(db)
			s.WebhookService = sqldb.NewWebhookService(db)
			s.ConfigService = sqldb.NewConfigService(db)
			s.FirmwareService = sqldb.NewFirmwareService(db)
			s.RolloutService = sqldb.NewRolloutService(db)
		})
		f := e.mustCreateFleet()
		ctx := context.Background()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		webhook := func(nodeID int64) int64 {
			var w herd.Webhook
			r := e.do("POST", "/v1/webhooks", adminSecret, map[string]any{"url": "https://example.com/h", "event_types": []string{"*"}, "node_id": fmt.Sprint(nodeID)})
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &w)
			return w.ID
		}
		command := func(deviceID int64) int64 {
			c := &herd.Command{DeviceID: deviceID, Name: "unlock", Args: []byte(`{"pin":"4711"}`)}
			must(sqldb.NewCommandService(db).CreateCommand(testutil.SuperContext(), c))
			return c.ID
		}
		// rollout starts a config rollout over the devices under a node;
		// each node below gets one, so no two hold the same devices.
		rollout := func(tenantID, nodeID, profileID int64) int64 {
			ro := &herd.Rollout{TenantID: tenantID, Name: "cfg", RolloutSpec: herd.RolloutSpec{
				Target: herd.RolloutTarget{NodeID: nodeID}, Payload: herd.RolloutPayload{ProfileID: profileID, Version: 1}}}
			must(e.admin.CreateRollout(ctx, ro))
			return ro.ID
		}
		credential := func(deviceID int64) {
			_, err := sqldb.NewCredentialService(db).CreateDeviceCredential(testutil.SuperContext(), deviceID)
			must(err)
		}

		// Another tenant, with one of everything.
		other := &herd.Tenant{Name: "globex"}
		must(e.admin.CreateTenant(ctx, other))
		site := &herd.Node{TenantID: other.ID, Kind: "site", Name: "plant"}
		must(e.admin.CreateNode(ctx, site))
		dev := &herd.Device{NodeID: site.ID, Key: "globex-1"}
		must(e.admin.CreateDevice(ctx, dev))
		credential(dev.ID)
		dave := &herd.User{TenantID: other.ID, Name: "dave"}
		must(e.admin.CreateUser(ctx, dave))
		daveGrant := &herd.Grant{UserID: dave.ID, NodeID: site.ID, Role: herd.RoleViewer}
		must(e.admin.CreateGrant(ctx, daveGrant))
		daveToken, err := e.admin.CreateToken(ctx, dave.ID)
		must(err)
		otherProfile := &herd.ConfigProfile{TenantID: other.ID, Name: "globex", Schema: []byte(`{"type":"object"}`)}
		must(e.admin.CreateConfigProfile(ctx, otherProfile))
		must(e.admin.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: otherProfile.ID, Document: []byte(`{}`)}))
		otherFirmware := &herd.Firmware{TenantID: other.ID, Model: "th-200", Version: "1.0", URL: "https://example.com/fw", SHA256: strings.Repeat("a", 64), Size: 1}
		must(e.admin.CreateFirmware(ctx, otherFirmware))
		ownProfile := &herd.ConfigProfile{TenantID: f.tenant.ID, Name: "acme", Schema: []byte(`{"type":"object"}`)}
		must(e.admin.CreateConfigProfile(ctx, ownProfile))
		must(e.admin.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: ownProfile.ID, Document: []byte(`{}`)}))
		ownFirmware := &herd.Firmware{TenantID: f.tenant.ID, Model: "th-200", Version: "1.0", URL: "https://example.com/fw", SHA256: strings.Repeat("a", 64), Size: 1}
		must(e.admin.CreateFirmware(ctx, ownFirmware))
		configBody := fmt.Sprintf(`{"profile_id":"%d","version":1}`, ownProfile.ID)
		rolloutBody := func(tenantID, nodeID, firmwareID int64) string {
			return fmt.Sprintf(`{"tenant_id":"%d","name":"fw","target":{"node_id":"%d"},"payload":{"firmware_id":"%d"}}`, tenantID, nodeID, firmwareID)
		}
		otherTenant := outside{node: site.ID, device: dev.ID, command: command(dev.ID), grant: daveGrant.ID, token: daveToken.ID, webhook: webhook(site.ID),
			rollout: rollout(other.ID, site.ID, otherProfile.ID)}

		// bob's own tenant, outside his one grant (admin of n1): the south
		// region, alice's grant on north, alice's token.
		s1a := f.devices["s1-a"]
		credential(s1a.ID)
		sameTenant := outside{node: f.s1.ID, device: s1a.ID, command: command(s1a.ID), grant: f.aliceGrant.ID, token: f.aliceToken.ID, webhook: webhook(f.south.ID),
			rollout: rollout(f.tenant.ID, f.s1.ID, ownProfile.ID)}

		type call struct {
			name, method, path, body string
			id                       int64 // the id the message may name
		}
		byID := func(o outside) []call {
			dp := func(format string) string { return fmt.Sprintf(format, o.device) }
			return []call{
				{"NodeView", "GET", fmt.Sprintf("/v1/nodes/%d", o.node), "", o.node},
				{"NodeMove", "POST", fmt.Sprintf("/v1/nodes/%d/move", o.node), fmt.Sprintf(`{"parent_id":"%d"}`, f.n1.ID), o.node},
				{"NodeCreateUnder", "POST", "/v1/nodes", fmt.Sprintf(`{"parent_id":"%d","kind":"room","name":"leak"}`, o.node), o.node},
				{"NodeChildren", "GET", fmt.Sprintf("/v1/nodes/%d/children", o.node), "", o.node},
				{"NodeGrants", "GET", fmt.Sprintf("/v1/grants?node_id=%d", o.node), "", o.node},
				{"UsersUnderNode", "GET", fmt.Sprintf("/v1/users?node_id=%d", o.node), "", o.node},
				{"DeviceView", "GET", dp("/v1/devices/%d"), "", o.device},
				{"DeviceMove", "POST", dp("/v1/devices/%d/move"), fmt.Sprintf(`{"node_id":"%d"}`, f.n1.ID), o.device},
				{"DeviceMoveInto", "POST", fmt.Sprintf("/v1/devices/%d/move", f.devices["n1-a"].ID), fmt.Sprintf(`{"node_id":"%d"}`, o.node), o.node},
				{"DeviceDelete", "DELETE", dp("/v1/devices/%d"), "", o.device},
				{"DeviceCreateUnder", "POST", "/v1/devices", fmt.Sprintf(`{"node_id":"%d","key":"leak-1"}`, o.node), o.node},
				{"CredentialCreate", "POST", dp("/v1/devices/%d/credentials"), "", o.device},
				{"CredentialDelete", "DELETE", dp("/v1/devices/%d/credentials"), "", o.device},
				{"CommandCreate", "POST", dp("/v1/devices/%d/commands"), `{"name":"reboot"}`, o.device},
				{"DeviceCommands", "GET", dp("/v1/devices/%d/commands"), "", o.device},
				{"DeviceConfigView", "GET", dp("/v1/devices/%d/config"), "", o.device},
				{"DeviceConfigSet", "PUT", dp("/v1/devices/%d/config"), configBody, o.device},
				{"CommandView", "GET", fmt.Sprintf("/v1/commands/%d", o.command), "", o.command},
				{"GrantCreate", "POST", "/v1/grants", fmt.Sprintf(`{"user_id":"%d","node_id":"%d","role":"viewer"}`, f.bob.ID, o.node), o.node},
				{"GrantDelete", "DELETE", fmt.Sprintf("/v1/grants/%d", o.grant), "", o.grant},
				{"TokenDelete", "DELETE", fmt.Sprintf("/v1/tokens/%d", o.token), "", o.token},
				{"WebhookCreate", "POST", "/v1/webhooks", fmt.Sprintf(`{"url":"https://example.com/h","event_types":["*"],"node_id":"%d"}`, o.node), o.node},
				{"WebhookView", "GET", fmt.Sprintf("/v1/webhooks/%d", o.webhook), "", o.webhook},
				{"WebhookDelete", "DELETE", fmt.Sprintf("/v1/webhooks/%d", o.webhook), "", o.webhook},
				{"WebhookDeliveries", "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries", o.webhook), "", o.webhook},
				{"WebhookRedrive", "POST", fmt.Sprintf("/v1/webhooks/%d/redrive", o.webhook), "", o.webhook},
				{"RolloutCreateUnder", "POST", "/v1/rollouts", rolloutBody(f.tenant.ID, o.node, ownFirmware.ID), o.node},
				{"RolloutView", "GET", fmt.Sprintf("/v1/rollouts/%d", o.rollout), "", o.rollout},
				{"RolloutMembers", "GET", fmt.Sprintf("/v1/rollouts/%d/devices", o.rollout), "", o.rollout},
				{"RolloutPause", "POST", fmt.Sprintf("/v1/rollouts/%d/pause", o.rollout), "", o.rollout},
				{"RolloutResume", "POST", fmt.Sprintf("/v1/rollouts/%d/resume", o.rollout), "", o.rollout},
				{"RolloutAbort", "POST", fmt.Sprintf("/v1/rollouts/%d/abort", o.rollout), "", o.rollout},
				{"RolloutCancel", "POST", fmt.Sprintf("/v1/rollouts/%d/cancel", o.rollout), "", o.rollout},
			}
		}
		// Tenants and users belong to a whole tenant: everyone in it sees
		// them, so only another tenant's are out of sight.
		tenantWide := []call{
			{"TenantView", "GET", fmt.Sprintf("/v1/tenants/%d", other.ID), "", other.ID},
			{"Events", "GET", fmt.Sprintf("/v1/events?tenant_id=%d", other.ID), "", other.ID},
			{"UserView", "GET", fmt.Sprintf("/v1/users/%d", dave.ID), "", dave.ID},
			{"UserCreateIn", "POST", "/v1/users", fmt.Sprintf(`{"tenant_id":"%d","name":"leak"}`, other.ID), other.ID},
			{"TokenCreate", "POST", fmt.Sprintf("/v1/users/%d/tokens", dave.ID), "", dave.ID},
			{"UserGrants", "GET", fmt.Sprintf("/v1/users/%d/grants", dave.ID), "", dave.ID},
			{"UserTokens", "GET", fmt.Sprintf("/v1/users/%d/tokens", dave.ID), "", dave.ID},
			{"Users", "GET", fmt.Sprintf("/v1/users?tenant_id=%d", other.ID), "", other.ID},
			{"NodeSearch", "GET", fmt.Sprintf("/v1/nodes?q=plant&tenant_id=%d", other.ID), "", other.ID},
			{"ConfigProfileView", "GET", fmt.Sprintf("/v1/config-profiles/%d", otherProfile.ID), "", otherProfile.ID},
			{"ConfigProfiles", "GET", fmt.Sprintf("/v1/config-profiles?tenant_id=%d", other.ID), "", other.ID},
			{"ConfigProfileCreateIn", "POST", "/v1/config-profiles", fmt.Sprintf(`{"tenant_id":"%d","name":"leak","schema":{}}`, other.ID), other.ID},
			{"ConfigVersionCreate", "POST", fmt.Sprintf("/v1/config-profiles/%d/versions", otherProfile.ID), `{"document":{}}`, otherProfile.ID},
			{"ConfigVersions", "GET", fmt.Sprintf("/v1/config-profiles/%d/versions", otherProfile.ID), "", otherProfile.ID},
			{"ConfigVersionView", "GET", fmt.Sprintf("/v1/config-profiles/%d/versions/1", otherProfile.ID), "", otherProfile.ID},
			{"DeviceConfigSetOtherProfile", "PUT", fmt.Sprintf("/v1/devices/%d/config", f.devices["n1-a"].ID), fmt.Sprintf(`{"profile_id":"%d","version":1}`, otherProfile.ID), otherProfile.ID},
			{"FirmwareView", "GET", fmt.Sprintf("/v1/firmware/%d", otherFirmware.ID), "", otherFirmware.ID},
			{"FirmwareList", "GET", fmt.Sprintf("/v1/firmware?tenant_id=%d", other.ID), "", other.ID},
			{"Rollouts", "GET", fmt.Sprintf("/v1/rollouts?tenant_id=%d", other.ID), "", other.ID},
			{"RolloutCreateIn", "POST", "/v1/rollouts", rolloutBody(other.ID, site.ID, otherFirmware.ID), site.ID},
			{"RolloutOtherFirmware", "POST", "/v1/rollouts", rolloutBody(f.tenant.ID, f.n1.ID, otherFirmware.ID), otherFirmware.ID},
			{"FirmwareCreateIn", "POST", "/v1/firmware", fmt.Sprintf(`{"tenant_id":"%d","model":"m","version":"v","url":"https://example.com/x","sha256":"%s","size":1}`, other.ID, strings.Repeat("b", 64)), other.ID},
		}
		run := func(t *testing.T, token string, c call, status int, code string) {
			t.Helper()
			before := rowCounts(t, db)
			key := ""
			if (c.method == "POST" && strings.HasSuffix(c.path, "/commands")) || c.method == "PUT" {
				key = "notfound-" + t.Name() // commands require one
			}
			r := e.doKey(c.method, c.path, token, key, c.body)
			r.wantError(t, status, code)
			if status == http.StatusNotFound {
				var er httpapi.ErrorResponse
				r.decode(t, &er)
				m := notFoundMessage.FindStringSubmatch(er.Error.Message)
				if m == nil || m[2] != strconv.FormatInt(c.id, 10) {
					t.Errorf("message %q says more than that %d is not found", er.Error.Message, c.id)
				}
			}
			if after := rowCounts(t, db); after != before {
				t.Fatalf("a refused request wrote: before %s, after %s", before, after)
			}
		}
		t.Run("OtherTenant", func(t *testing.T) {
			for _, c := range append(byID(otherTenant), tenantWide...) {
				t.Run(c.name, func(t *testing.T) { run(t, f.bobToken.Secret, c, http.StatusNotFound, herd.ENOTFOUND) })
			}
		})
		t.Run("OutsideGrants", func(t *testing.T) {
			for _, c := range byID(sameTenant) {
				t.Run(c.name, func(t *testing.T) { run(t, f.bobToken.Secret, c, http.StatusNotFound, herd.ENOTFOUND) })
			}
		})

		// alice views north, so she sees everything under n1 and may
		// change none of it; carol views the whole tenant.
		carol := &herd.User{TenantID: f.tenant.ID, Name: "carol"}
		must(e.admin.CreateUser(ctx, carol))
		must(e.admin.CreateGrant(ctx, &herd.Grant{UserID: carol.ID, NodeID: f.tenant.RootNodeID, Role: herd.RoleViewer}))
		carolToken, err := e.admin.CreateToken(ctx, carol.ID)
		must(err)
		n1a := f.devices["n1-a"]
		credential(n1a.ID)
		hook := webhook(f.n1.ID)
		n1Rollout := rollout(f.tenant.ID, f.n1.ID, ownProfile.ID)
		t.Run("SeenNotChangeable", func(t *testing.T) {
			for _, c := range []struct {
				call
				token string
			}{
				{call{"NodeMove", "POST", fmt.Sprintf("/v1/nodes/%d/move", f.n1.ID), fmt.Sprintf(`{"parent_id":"%d"}`, f.n2.ID), 0}, f.aliceToken.Secret},
				{call{"NodeCreateUnder", "POST", "/v1/nodes", fmt.Sprintf(`{"parent_id":"%d","kind":"room","name":"r"}`, f.n1.ID), 0}, f.aliceToken.Secret},
				{call{"DeviceMove", "POST", fmt.Sprintf("/v1/devices/%d/move", n1a.ID), fmt.Sprintf(`{"node_id":"%d"}`, f.n2.ID), 0}, f.aliceToken.Secret},
				{call{"DeviceDelete", "DELETE", fmt.Sprintf("/v1/devices/%d", n1a.ID), "", 0}, f.aliceToken.Secret},
				{call{"CredentialCreate", "POST", fmt.Sprintf("/v1/devices/%d/credentials", n1a.ID), "", 0}, f.aliceToken.Secret},
				{call{"CredentialDelete", "DELETE", fmt.Sprintf("/v1/devices/%d/credentials", n1a.ID), "", 0}, f.aliceToken.Secret},
				{call{"CommandCreate", "POST", fmt.Sprintf("/v1/devices/%d/commands", n1a.ID), `{"name":"reboot"}`, 0}, f.aliceToken.Secret},
				{call{"DeviceConfigSet", "PUT", fmt.Sprintf("/v1/devices/%d/config", n1a.ID), configBody, 0}, f.aliceToken.Secret},
				{call{"ConfigProfileCreate", "POST", "/v1/config-profiles", fmt.Sprintf(`{"tenant_id":"%d","name":"x","schema":{}}`, f.tenant.ID), 0}, f.aliceToken.Secret},
				{call{"ConfigVersionCreate", "POST", fmt.Sprintf("/v1/config-profiles/%d/versions", ownProfile.ID), `{"document":{}}`, 0}, f.aliceToken.Secret},
				{call{"FirmwareCreate", "POST", "/v1/firmware", fmt.Sprintf(`{"tenant_id":"%d","model":"m","version":"v","url":"https://example.com/x","sha256":"%s","size":1}`, f.tenant.ID, strings.Repeat("b", 64)), 0}, f.aliceToken.Secret},
				{call{"RolloutCreate", "POST", "/v1/rollouts", rolloutBody(f.tenant.ID, f.n1.ID, ownFirmware.ID), 0}, f.aliceToken.Secret},
				{call{"RolloutPause", "POST", fmt.Sprintf("/v1/rollouts/%d/pause", n1Rollout), "", 0}, f.aliceToken.Secret},
				{call{"RolloutResume", "POST", fmt.Sprintf("/v1/rollouts/%d/resume", n1Rollout), "", 0}, f.aliceToken.Secret},
				{call{"RolloutAbort", "POST", fmt.Sprintf("/v1/rollouts/%d/abort", n1Rollout), "", 0}, f.aliceToken.Secret},
				{call{"RolloutCancel", "POST", fmt.Sprintf("/v1/rollouts/%d/cancel", n1Rollout), "", 0}, f.aliceToken.Secret},
				{call{"GrantCreate", "POST", "/v1/grants", fmt.Sprintf(`{"user_id":"%d","node_id":"%d","role":"admin"}`, f.alice.ID, f.n1.ID), 0}, f.aliceToken.Secret},
				{call{"GrantDelete", "DELETE", fmt.Sprintf("/v1/grants/%d", f.bobGrant.ID), "", 0}, f.aliceToken.Secret},
				{call{"WebhookView", "GET", fmt.Sprintf("/v1/webhooks/%d", hook), "", 0}, f.aliceToken.Secret},
				{call{"WebhookDelete", "DELETE", fmt.Sprintf("/v1/webhooks/%d", hook), "", 0}, f.aliceToken.Secret},
				{call{"WebhookDeliveries", "GET", fmt.Sprintf("/v1/webhooks/%d/deliveries", hook), "", 0}, f.aliceToken.Secret},
				{call{"WebhookRedrive", "POST", fmt.Sprintf("/v1/webhooks/%d/redrive", hook), "", 0}, f.aliceToken.Secret},
				{call{"TokenCreate", "POST", fmt.Sprintf("/v1/users/%d/tokens", f.bob.ID), "", 0}, f.aliceToken.Secret},
				{call{"UserGrants", "GET", fmt.Sprintf("/v1/users/%d/grants", f.bob.ID), "", 0}, f.aliceToken.Secret},
				{call{"UserTokens", "GET", fmt.Sprintf("/v1/users/%d/tokens", f.bob.ID), "", 0}, f.aliceToken.Secret},
				{call{"NodeGrants", "GET", fmt.Sprintf("/v1/grants?node_id=%d", f.n1.ID), "", 0}, f.aliceToken.Secret},
				{call{"Users", "GET", "/v1/users", "", 0}, f.aliceToken.Secret},
				{call{"UsersUnderNode", "GET", fmt.Sprintf("/v1/users?node_id=%d", f.n1.ID), "", 0}, f.aliceToken.Secret},
				{call{"Tenants", "GET", "/v1/tenants", "", 0}, f.bobToken.Secret},
				{call{"UserCreate", "POST", "/v1/users", fmt.Sprintf(`{"tenant_id":"%d","name":"x"}`, f.tenant.ID), 0}, f.aliceToken.Secret},
				{call{"TokenDelete", "DELETE", fmt.Sprintf("/v1/tokens/%d", f.bobToken.ID), "", 0}, carolToken.Secret},
			} {
				t.Run(c.name, func(t *testing.T) { run(t, c.token, c.call, http.StatusForbidden, herd.EFORBIDDEN) })
			}
		})
	})
}

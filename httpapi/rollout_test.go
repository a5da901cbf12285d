package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// A device in an active rollout of one kind is left out of every other
// rollout of that kind, and a target with no free devices is refused: so
// every test below gives each of its rollouts a site of devices of its own
// (mustCreateSite) instead of sharing the fleet's. No controller runs
// here, so a rollout stays scheduled with its members pending unless a
// test steps it itself.

// rolloutInFlight is the test server's default max_in_flight, unlike
// herd.DefaultMaxInFlight so that a test sees which one a spec got.
const rolloutInFlight = 40

func openRolloutServer(t *testing.T, db *sqldb.DB) *env {
	return mustOpenServer(t, db, func(s *httpapi.Server) {
		s.ConfigService = sqldb.NewConfigService(db)
		s.FirmwareService = sqldb.NewFirmwareService(db)
		s.Idempotency = sqldb.NewIdempotencyService(db)
		s.EventService = sqldb.NewEventService(db)
		s.RolloutService = sqldb.NewRolloutService(db)
		s.RolloutMaxInFlight = rolloutInFlight
	})
}

// rolloutFleet is the fleet with th-200 firmware 1.5.0 and olga, an
// operator of n1 (bob is its admin, alice a viewer of north above it).
type rolloutFleet struct {
	*fleet
	fw        *herd.Firmware
	olgaToken string
}

func (e *env) mustCreateRolloutFleet() *rolloutFleet {
	e.t.Helper()
	ctx := e.t.Context()
	f := &rolloutFleet{fleet: e.mustCreateFleet()}
	f.fw = &herd.Firmware{TenantID: f.tenant.ID, Model: "th-200", Version: "1.5.0", URL: "https://cdn.example/th-200-1.5.0.bin", SHA256: strings.Repeat("ab", 32), Size: 1024}
	if err := e.admin.CreateFirmware(ctx, f.fw); err != nil {
		e.t.Fatal(err)
	}
	olga := &herd.User{TenantID: f.tenant.ID, Name: "olga"}
	if err := e.admin.CreateUser(ctx, olga); err != nil {
		e.t.Fatal(err)
	}
	if err := e.admin.CreateGrant(ctx, &herd.Grant{UserID: olga.ID, NodeID: f.n1.ID, Role: herd.RoleOperator}); err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.admin.CreateToken(ctx, olga.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	f.olgaToken = tok.Secret
	return f
}

// mustCreateSite makes a node under parent holding n th-200 devices of
// its own, named name-0, name-1, …
func (e *env) mustCreateSite(parent *herd.Node, name string, n int) (*herd.Node, []*herd.Device) {
	e.t.Helper()
	ctx := e.t.Context()
	site := &herd.Node{TenantID: parent.TenantID, ParentID: parent.ID, Kind: "site", Name: name}
	if err := e.admin.CreateNode(ctx, site); err != nil {
		e.t.Fatal(err)
	}
	ds := make([]*herd.Device, n)
	for i := range ds {
		ds[i] = &herd.Device{NodeID: site.ID, Key: fmt.Sprintf("%s-%d", name, i), Model: "th-200", Firmware: "1.0.0"}
	}
	if n > 0 {
		if err := e.admin.CreateDevices(ctx, ds); err != nil {
			e.t.Fatal(err)
		}
	}
	return site, ds
}

// rolloutSpec is the JSON of a firmware rollout of fwID over the devices
// under nodeID; each of mods then changes it (a nil value deletes a key).
func rolloutSpec(tenantID, nodeID, fwID int64, mods ...map[string]any) string {
	m := map[string]any{
		"tenant_id": fmt.Sprint(tenantID),
		"name":      "th-200 fw 1.5.0",
		"target":    map[string]any{"node_id": fmt.Sprint(nodeID)},
		"payload":   map[string]any{"firmware_id": fmt.Sprint(fwID)},
	}
	for _, mod := range mods {
		for k, v := range mod {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
	}
	buf, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(buf)
}

// listRollouts is every rollout GET /v1/rollouts shows the token holder,
// by id.
func (e *env) listRollouts(t *testing.T, token, query string) []int64 {
	t.Helper()
	r := e.do("GET", "/v1/rollouts?limit=1000"+query, token, nil)
	r.wantStatus(t, http.StatusOK)
	var page herd.ConfigPage[*herd.Rollout]
	r.decode(t, &page)
	ids := []int64{}
	for _, ro := range page.Items {
		ids = append(ids, ro.ID)
	}
	return ids
}

// wantErrorShape checks that an error answer is {"error":{"code","message"}}
// and nothing else.
func wantErrorShape(t *testing.T, r response, status int, code string) {
	t.Helper()
	r.wantError(t, status, code)
	var top map[string]json.RawMessage
	r.decode(t, &top)
	var body map[string]any
	if err := json.Unmarshal(top["error"], &body); err != nil || len(top) != 1 {
		t.Fatalf("error body %s: want one key \"error\" holding an object (%v)", r.Body, err)
	}
	msg, ok := body["message"].(string)
	if len(body) != 2 || body["code"] != code || !ok || msg == "" {
		t.Fatalf("error body %s: want exactly code %q and a message", r.Body, code)
	}
}

// TestRolloutsAPI_CreateIdempotent: a create retried with its
// Idempotency-Key and body answers the first rollout again and makes no
// second one; the key with another body is refused as reused; a new key
// over the same devices finds them all taken and is a 400.
func TestRolloutsAPI_CreateIdempotent(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		site, _ := e.mustCreateSite(f.n1, "idem", 3)
		body := rolloutSpec(f.tenant.ID, site.ID, f.fw.ID)

		var ro, again herd.Rollout
		first := e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "ro-idem", body)
		first.wantStatus(t, http.StatusCreated)
		first.decode(t, &ro)
		if ro.ID == 0 || ro.TenantID != f.tenant.ID || ro.Kind != herd.RolloutFirmware || ro.State != herd.RolloutScheduled ||
			ro.Members != 3 || ro.TargetVersion != "1.5.0" || ro.MaxInFlight != rolloutInFlight || ro.OnAbort != herd.OnAbortRollback {
			t.Fatalf("created %s", first.Body)
		}
		second := e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "ro-idem", body)
		second.wantStatus(t, http.StatusCreated)
		second.decode(t, &again)
		if again.ID != ro.ID || second.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(first.Body, second.Body) {
			t.Fatalf("retry: id %d replayed %q %s, first %s", again.ID, second.Header.Get(httpapi.HeaderReplayed), second.Body, first.Body)
		}
		if ids := e.listRollouts(t, f.bobToken.Secret, ""); !slices.Equal(ids, []int64{ro.ID}) {
			t.Fatalf("rollouts listed %v, want only %d", ids, ro.ID)
		}
		if n := countRows(t, db, "rollouts"); n != 1 {
			t.Fatalf("%d rollouts stored, want 1", n)
		}
		if n := countEvents(t, db, herd.EventRolloutCreated); n != 1 {
			t.Fatalf("%d rollout.created events, want 1", n)
		}

		before := rowCounts(t, db)
		other := rolloutSpec(f.tenant.ID, site.ID, f.fw.ID, map[string]any{"name": "another name"})
		e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "ro-idem", other).wantError(t, http.StatusUnprocessableEntity, herd.EKEYREUSED, httpapi.HeaderIdempotencyKey)
		e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "ro-idem-2", body).wantError(t, http.StatusBadRequest, herd.EINVALID, "matches no devices")
		if after := rowCounts(t, db); after != before {
			t.Fatalf("a refused create wrote: before %s, after %s", before, after)
		}

		// Through the client: the same key twice is one rollout.
		site2, _ := e.mustCreateSite(f.n1, "idem-client", 2)
		bob := httpapi.NewClient(e.srv.URL(), f.bobToken.Secret)
		spec := func() *herd.Rollout {
			return &herd.Rollout{TenantID: f.tenant.ID, Name: "client", RolloutSpec: herd.RolloutSpec{
				Target: herd.RolloutTarget{NodeID: site2.ID}, Payload: herd.RolloutPayload{FirmwareID: f.fw.ID}}}
		}
		c1, c2 := spec(), spec()
		if err := bob.CreateRolloutKey(t.Context(), "ro-client", c1); err != nil {
			t.Fatal(err)
		}
		if err := bob.CreateRolloutKey(t.Context(), "ro-client", c2); err != nil {
			t.Fatal(err)
		}
		if c1.ID == 0 || c2.ID != c1.ID || c1.Members != 2 {
			t.Fatalf("client creates: %+v then %+v", c1, c2)
		}
		if n := countRows(t, db, "rollouts"); n != 2 {
			t.Fatalf("%d rollouts stored, want 2", n)
		}
	})
}

// TestRolloutsAPI_CreateRoles: starting a rollout takes the admin role on
// its target node: a viewer and an operator of it get 403 with the JSON
// error shape, write nothing, and leave the devices free for an admin.
func TestRolloutsAPI_CreateRoles(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		site, _ := e.mustCreateSite(f.n1, "roles", 2)
		body := rolloutSpec(f.tenant.ID, site.ID, f.fw.ID)
		before := rowCounts(t, db)
		for name, token := range map[string]string{"Viewer": f.aliceToken.Secret, "Operator": f.olgaToken} {
			t.Run(name, func(t *testing.T) {
				r := e.doKey("POST", "/v1/rollouts", token, "roles-"+name, body)
				wantErrorShape(t, r, http.StatusForbidden, herd.EFORBIDDEN)
				r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "admin")
			})
		}
		if after := rowCounts(t, db); after != before {
			t.Fatalf("a refused create wrote: before %s, after %s", before, after)
		}
		var ro herd.Rollout
		r := e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "roles-admin", body)
		r.wantStatus(t, http.StatusCreated)
		r.decode(t, &ro)
		if ro.Members != 2 {
			t.Fatalf("admin's rollout %s", r.Body)
		}
	})
}

// TestRolloutsAPI_OutsideGrants: a target node outside the caller's
// grants, in the caller's tenant or another, is a 404 as for a node that
// does not exist; a rollout outside them is a 404 too, on every route that
// takes its id, and the list leaves it out.
func TestRolloutsAPI_OutsideGrants(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		ctx := t.Context()
		globex := &herd.Tenant{Name: "globex"}
		if err := e.admin.CreateTenant(ctx, globex); err != nil {
			t.Fatal(err)
		}
		plant, _ := e.mustCreateSite(&herd.Node{TenantID: globex.ID, ID: globex.RootNodeID}, "plant", 2)
		globexFW := &herd.Firmware{TenantID: globex.ID, Model: "th-200", Version: "2.0", URL: "https://cdn.example/g.bin", SHA256: strings.Repeat("cd", 32), Size: 1}
		if err := e.admin.CreateFirmware(ctx, globexFW); err != nil {
			t.Fatal(err)
		}
		south, _ := e.mustCreateSite(f.south, "south-x", 2)
		own, _ := e.mustCreateSite(f.n1, "own", 2)

		before := rowCounts(t, db)
		for name, c := range map[string]struct {
			body string
			id   int64
		}{
			"SameTenant":      {rolloutSpec(f.tenant.ID, south.ID, f.fw.ID), south.ID},
			"OtherTenantNode": {rolloutSpec(f.tenant.ID, plant.ID, f.fw.ID), plant.ID},
			"OtherTenant":     {rolloutSpec(globex.ID, plant.ID, globexFW.ID), plant.ID},
		} {
			t.Run("Create"+name, func(t *testing.T) {
				r := e.do("POST", "/v1/rollouts", f.bobToken.Secret, c.body)
				wantErrorShape(t, r, http.StatusNotFound, herd.ENOTFOUND)
				r.wantError(t, http.StatusNotFound, herd.ENOTFOUND, fmt.Sprintf("node %d not found", c.id))
			})
		}
		if after := rowCounts(t, db); after != before {
			t.Fatalf("a refused create wrote: before %s, after %s", before, after)
		}

		create := func(tenantID, nodeID, fwID int64) int64 {
			t.Helper()
			var ro herd.Rollout
			r := e.do("POST", "/v1/rollouts", adminSecret, rolloutSpec(tenantID, nodeID, fwID))
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &ro)
			return ro.ID
		}
		ownID, southID, globexID := create(f.tenant.ID, own.ID, f.fw.ID), create(f.tenant.ID, south.ID, f.fw.ID), create(globex.ID, plant.ID, globexFW.ID)
		for _, id := range []int64{southID, globexID} {
			for _, c := range []struct{ method, path string }{
				{"GET", "/v1/rollouts/%d"}, {"GET", "/v1/rollouts/%d/devices"}, {"POST", "/v1/rollouts/%d/pause"},
			} {
				r := e.do(c.method, fmt.Sprintf(c.path, id), f.bobToken.Secret, nil)
				wantErrorShape(t, r, http.StatusNotFound, herd.ENOTFOUND)
				r.wantError(t, http.StatusNotFound, herd.ENOTFOUND, fmt.Sprintf("rollout %d not found", id))
			}
		}
		e.do("GET", "/v1/rollouts/999999", f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "rollout 999999 not found")
		if ids := e.listRollouts(t, f.bobToken.Secret, ""); !slices.Equal(ids, []int64{ownID}) {
			t.Fatalf("bob lists %v, want only %d", ids, ownID)
		}
		// alice views north, not south.
		if ids := e.listRollouts(t, f.aliceToken.Secret, ""); !slices.Equal(ids, []int64{ownID}) {
			t.Fatalf("alice lists %v, want only %d", ids, ownID)
		}
		e.do("GET", fmt.Sprintf("/v1/rollouts?tenant_id=%d", globex.ID), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		// The super-admin sees both of acme's, newest first.
		if ids := e.listRollouts(t, adminSecret, fmt.Sprintf("&tenant_id=%d", f.tenant.ID)); !slices.Equal(ids, []int64{southID, ownID}) {
			t.Fatalf("the super-admin lists %v, want %d %d", ids, southID, ownID)
		}
		// One a page: the cursor is before=, the last id of the page.
		p1, err := e.admin.FindRollouts(ctx, f.tenant.ID, 0, 1)
		if err != nil || len(p1.Items) != 1 || p1.Items[0].ID != southID || p1.Next != southID {
			t.Fatalf("first page %+v, %v", p1, err)
		}
		p2, err := e.admin.FindRollouts(ctx, f.tenant.ID, p1.Next, 1)
		if err != nil || len(p2.Items) != 1 || p2.Items[0].ID != ownID || p2.Next != 0 {
			t.Fatalf("second page %+v, %v", p2, err)
		}
		e.do("GET", "/v1/rollouts", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "tenant_id")
		e.do("GET", "/v1/rollouts?before=x", f.bobToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR)
		e.do("GET", "/v1/rollouts?limit=0", f.bobToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
		e.do("GET", fmt.Sprintf("/v1/rollouts/%d", ownID), f.aliceToken.Secret, nil).wantStatus(t, http.StatusOK)
	})
}

// TestRolloutsAPI_BadSpec: a spec the rules refuse is a 400 naming the
// field, and so is a target with no devices to move; none writes.
func TestRolloutsAPI_BadSpec(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		site, _ := e.mustCreateSite(f.n1, "spec", 2)
		empty, _ := e.mustCreateSite(f.n1, "empty", 0)
		spec := func(mods ...map[string]any) string { return rolloutSpec(f.tenant.ID, site.ID, f.fw.ID, mods...) }
		waves := func(p ...float64) map[string]any {
			ws := []map[string]any{}
			for _, x := range p {
				ws = append(ws, map[string]any{"percent": x})
			}
			return map[string]any{"waves": ws}
		}
		before := rowCounts(t, db)
		for name, c := range map[string]struct {
			body  string
			code  string
			parts []string
		}{
			"WavesNotIncreasing": {spec(waves(50, 20, 100)), herd.EINVALID, []string{"waves[1].percent"}},
			"WavesEqual":         {spec(waves(50, 50, 100)), herd.EINVALID, []string{"waves[1].percent"}},
			"WaveOver100":        {spec(waves(50, 120)), herd.EINVALID, []string{"waves[1].percent", "at most 100"}},
			"LastWaveShort":      {spec(waves(10, 90)), herd.EINVALID, []string{"last wave must be 100"}},
			"BothPayloads":       {spec(map[string]any{"payload": map[string]any{"firmware_id": fmt.Sprint(f.fw.ID), "profile_id": "1", "version": 1}}), herd.EINVALID, []string{"payload", "not both"}},
			"NoPayload":          {spec(map[string]any{"payload": map[string]any{}}), herd.EINVALID, []string{"payload must name"}},
			"ProfileNoVersion":   {spec(map[string]any{"payload": map[string]any{"profile_id": "1"}}), herd.EINVALID, []string{"payload.version"}},
			"NoTarget":           {spec(map[string]any{"target": nil}), herd.EINVALID, []string{"target.node_id"}},
			"NoTenant":           {spec(map[string]any{"tenant_id": nil}), herd.EINVALID, []string{"tenant_id"}},
			"NoName":             {spec(map[string]any{"name": " "}), herd.EINVALID, []string{"name"}},
			"NameNUL":            {spec(map[string]any{"name": "a\x00b"}), herd.EINVALID, []string{"name"}},
			"NameLong":           {spec(map[string]any{"name": strings.Repeat("x", 10000)}), herd.EINVALID, []string{"name"}},
			"Filter":             {spec(map[string]any{"target": map[string]any{"node_id": fmt.Sprint(site.ID), "filter": []string{"model:like:th"}}}), herd.EINVALIDFILTER, []string{"target.filter"}},
			"InFlight":           {spec(map[string]any{"max_in_flight": 100001}), herd.EINVALID, []string{"max_in_flight"}},
			"OfflinePercent":     {spec(map[string]any{"max_offline_percent": 101}), herd.EINVALID, []string{"max_offline_percent"}},
			"SuccessPercent":     {spec(map[string]any{"gates": map[string]any{"success_min_percent": 101}}), herd.EINVALID, []string{"gates.success_min_percent"}},
			"HealthField":        {spec(map[string]any{"gates": map[string]any{"health": []any{map[string]any{"field": "mood", "max_increase_vs_control": 1}}}}), herd.EINVALID, []string{"gates.health[0].field", `"mood"`}},
			"HealthKind":         {spec(map[string]any{"gates": map[string]any{"health": []any{map[string]any{"field": "online", "max_increase_vs_control": 1}}}}), herd.EINVALID, []string{"gates.health[0]", "min_percent"}},
			"OnAbort":            {spec(map[string]any{"on_abort": "pray"}), herd.EINVALID, []string{"on_abort"}},
			"StartAt":            {spec(map[string]any{"start_at": "tomorrow"}), herd.EINVALID, []string{"start_at"}},
			"StoreField":         {spec(map[string]any{"state": "succeeded"}), herd.EINVALID, []string{"unknown field", "state"}},
			"NoDevices":          {rolloutSpec(f.tenant.ID, empty.ID, f.fw.ID), herd.EINVALID, []string{"matches no devices"}},
			"FilterMatchesNone":  {spec(map[string]any{"target": map[string]any{"node_id": fmt.Sprint(site.ID), "filter": []string{"key:eq:nothing"}}}), herd.EINVALID, []string{"matches no devices"}},
		} {
			t.Run(name, func(t *testing.T) {
				r := e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "bad-"+name, c.body)
				wantErrorShape(t, r, http.StatusBadRequest, c.code)
				r.wantError(t, http.StatusBadRequest, c.code, c.parts...)
			})
		}
		e.do("POST", "/v1/rollouts", f.bobToken.Secret, spec(map[string]any{"payload": map[string]any{"firmware_id": "999999"}})).
			wantError(t, http.StatusNotFound, herd.ENOTFOUND, "firmware 999999 not found")
		if after := rowCounts(t, db); after != before {
			t.Fatalf("a refused rollout wrote: before %s, after %s", before, after)
		}
		// The site's devices are still free.
		e.do("POST", "/v1/rollouts", f.bobToken.Secret, spec()).wantStatus(t, http.StatusCreated)
	})
}

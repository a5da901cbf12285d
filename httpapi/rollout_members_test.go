package httpapi_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRolloutsAPI_Members: the members page by ord (after=, limit=), every
// one once and in member order, the first device of every site before the
// second of any; ?state= gives those of one state.
func TestRolloutsAPI_Members(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		ctx := t.Context()
		zone := &herd.Node{TenantID: f.tenant.ID, ParentID: f.n1.ID, Kind: "zone", Name: "members"}
		if err := e.admin.CreateNode(ctx, zone); err != nil {
			t.Fatal(err)
		}
		siteOf := map[int64]int64{} // device → site
		for i, n := range []int{3, 2, 4} {
			site, ds := e.mustCreateSite(zone, fmt.Sprintf("m%d", i), n)
			for _, d := range ds {
				siteOf[d.ID] = site.ID
			}
		}
		var ro herd.Rollout
		r := e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutSpec(f.tenant.ID, zone.ID, f.fw.ID,
			map[string]any{"max_in_flight": 2, "waves": []any{map[string]any{"percent": 30}, map[string]any{"percent": 100}}}))
		r.wantStatus(t, http.StatusCreated)
		r.decode(t, &ro)
		if ro.Members != 9 {
			t.Fatalf("%d members, want 9: %s", ro.Members, r.Body)
		}
		mpath := fmt.Sprintf("/v1/rollouts/%d/devices", ro.ID)
		// page reads every member of a state ("" for all) two at a time.
		page := func(token, state string) []*herd.RolloutMember {
			t.Helper()
			var all []*herd.RolloutMember
			var after int64
			for range 20 {
				r := e.do("GET", fmt.Sprintf("%s?limit=2&after=%d&state=%s", mpath, after, state), token, nil)
				r.wantStatus(t, http.StatusOK)
				var p herd.ConfigPage[*herd.RolloutMember]
				r.decode(t, &p)
				if len(p.Items) > 2 {
					t.Fatalf("limit 2, got %d: %s", len(p.Items), r.Body)
				}
				all = append(all, p.Items...)
				if p.Next == 0 {
					return all
				} else if len(p.Items) != 2 || p.Next != p.Items[1].Ord {
					t.Fatalf("page after %d: next %d with %s", after, p.Next, r.Body)
				}
				after = p.Next
			}
			t.Fatal("20 pages of 2 and no end")
			return nil
		}
		all := page(f.aliceToken.Secret, "")
		seen := map[int64]bool{}
		for i, m := range all {
			if m.RolloutID != ro.ID || m.State != herd.MemberPending || seen[m.DeviceID] || siteOf[m.DeviceID] == 0 {
				t.Fatalf("member %d: %+v", i, m)
			}
			seen[m.DeviceID] = true
			if i > 0 && (m.Ord <= all[i-1].Ord || m.Wave < all[i-1].Wave) {
				t.Fatalf("members out of order at %d: %+v after %+v", i, m, all[i-1])
			}
		}
		if len(seen) != len(siteOf) {
			t.Fatalf("paged %d members, want %d", len(seen), len(siteOf))
		}
		if sites := map[int64]bool{siteOf[all[0].DeviceID]: true, siteOf[all[1].DeviceID]: true, siteOf[all[2].DeviceID]: true}; len(sites) != 3 {
			t.Errorf("the first three members are not one per site: %v", sites)
		}
		if got, err := e.admin.FindRolloutMembers(ctx, ro.ID, "", 0, 100); err != nil || len(got.Items) != 9 || got.Next != 0 {
			t.Fatalf("client page %+v, %v", got, err)
		}

		// One step of the store's driver (no controller runs here) tells
		// max_in_flight of the first wave's members.
		driver := sqldb.NewRolloutService(db)
		if ids, err := driver.ClaimRollouts(ctx, "rollout-test", time.Minute, 10); err != nil || !slices.Equal(ids, []int64{ro.ID}) {
			t.Fatalf("claim %v, %v", ids, err)
		}
		if _, err := driver.StepRollout(ctx, "rollout-test", ro.ID, time.Minute); err != nil {
			t.Fatal(err)
		}
		byState := map[string][]int64{}
		for _, m := range page(adminSecret, "") {
			byState[m.State] = append(byState[m.State], m.Ord)
		}
		if len(byState[herd.MemberTold]) != 2 || len(byState[herd.MemberPending]) != 7 {
			t.Fatalf("after one step, members by state %v, want 2 told and 7 pending", byState)
		}
		for _, s := range herd.MemberStates {
			var ords []int64
			for _, m := range page(f.bobToken.Secret, s) {
				if m.State != s {
					t.Fatalf("?state=%s gave a %s member", s, m.State)
				}
				ords = append(ords, m.Ord)
			}
			if !slices.Equal(ords, byState[s]) {
				t.Errorf("?state=%s: ords %v, want %v", s, ords, byState[s])
			}
		}
		e.do("GET", mpath+"?state=done", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, `"done"`, "pending")
		e.do("GET", mpath+"?after=x", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR)
		e.do("GET", mpath+"?limit=0", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
	})
}

// TestRolloutsAPI_DevicesInActiveRollout: a device in an active rollout
// of a kind is left out of a new one of that kind, whose target then
// holds only the free devices (none free is a 400); a rollout of the other
// kind takes it.
func TestRolloutsAPI_DevicesInActiveRollout(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		ctx := t.Context()
		zone := &herd.Node{TenantID: f.tenant.ID, ParentID: f.n1.ID, Kind: "zone", Name: "overlap"}
		if err := e.admin.CreateNode(ctx, zone); err != nil {
			t.Fatal(err)
		}
		taken, _ := e.mustCreateSite(zone, "taken", 2)
		_, free := e.mustCreateSite(zone, "free", 3)
		create := func(body string) *herd.Rollout {
			t.Helper()
			var ro herd.Rollout
			r := e.do("POST", "/v1/rollouts", f.bobToken.Secret, body)
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &ro)
			return &ro
		}
		if ro := create(rolloutSpec(f.tenant.ID, taken.ID, f.fw.ID)); ro.Members != 2 {
			t.Fatalf("first rollout has %d members, want 2", ro.Members)
		}
		wide := create(rolloutSpec(f.tenant.ID, zone.ID, f.fw.ID))
		if wide.Members != 3 {
			t.Fatalf("the zone's rollout has %d members, want the 3 free ones", wide.Members)
		}
		page, err := e.admin.FindRolloutMembers(ctx, wide.ID, "", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got, want []int64
		for _, m := range page.Items {
			got = append(got, m.DeviceID)
		}
		for _, d := range free {
			want = append(want, d.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("members %v, want the free site's %v", got, want)
		}
		e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutSpec(f.tenant.ID, zone.ID, f.fw.ID)).wantError(t, http.StatusBadRequest, herd.EINVALID, "matches no devices", herd.RolloutFirmware)

		// A config rollout is another kind: every device is free for it.
		p := &herd.ConfigProfile{TenantID: f.tenant.ID, Name: "sensor", Schema: []byte(rateSchema)}
		if err := e.admin.CreateConfigProfile(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := e.admin.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(`{"rate_s":10}`)}); err != nil {
			t.Fatal(err)
		}
		cfg := create(rolloutSpec(f.tenant.ID, zone.ID, 0, map[string]any{"payload": map[string]any{"profile_id": fmt.Sprint(p.ID), "version": 1}}))
		if cfg.Kind != herd.RolloutConfig || cfg.Members != 5 || cfg.TargetVersion != "1" {
			t.Fatalf("config rollout %+v", cfg)
		}
		// Config's default max_in_flight is the smaller of the server's and herd's.
		if cfg.MaxInFlight != min(rolloutInFlight, herd.DefaultMaxInFlight) {
			t.Fatalf("config rollout max_in_flight %d", cfg.MaxInFlight)
		}
	})
}

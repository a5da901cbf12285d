package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

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

// mustCreateFirmware records th-200 firmware 1.5.0 in the fleet's tenant.
func (e *env) mustCreateFirmware(f *fleet) *herd.Firmware {
	e.t.Helper()
	fw := &herd.Firmware{TenantID: f.tenant.ID, Model: "th-200", Version: "1.5.0", URL: "https://cdn.example/th-200-1.5.0.bin", SHA256: strings.Repeat("ab", 32), Size: 1024}
	if err := e.admin.CreateFirmware(e.t.Context(), fw); err != nil {
		e.t.Fatal(err)
	}
	return fw
}

// rolloutBody is a firmware rollout of fw over the th-200s under node, in
// the JSON of the issue; extra, when given, replaces its tail (from
// "waves" on).
func rolloutBody(f *fleet, fw *herd.Firmware, node *herd.Node, extra ...string) string {
	tail := `"waves":[{"percent":50},{"percent":100}],"max_offline_percent":5,"start_jitter_s":0,` +
		`"gates":{"answer_timeout_s":600,"success_min_percent":95,"abort_failure_percent":5,"abort_min_devices":10,"bake_s":300,` +
		`"health":[{"field":"error_count","max_increase_vs_control":0.5},{"field":"online","min_percent":98}]},"on_abort":"rollback"`
	if len(extra) > 0 {
		tail = extra[0]
	}
	return fmt.Sprintf(`{"tenant_id":"%d","name":"th-200 fw 1.5.0","target":{"node_id":"%d","filter":["model:eq:th-200"]},"payload":{"firmware_id":"%d"},%s}`,
		f.tenant.ID, node.ID, fw.ID, tail)
}

func countRollouts(t *testing.T, db *sqldb.DB) int {
	t.Helper()
	var n int
	if err := db.SQL().QueryRow(`SELECT COUNT(*) FROM rollouts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRolloutsAPI: an admin of the target node creates a rollout (once
// per Idempotency-Key), with the server's default max_in_flight for
// firmware; a bad spec is a 400 naming the field and writes nothing; a
// viewer gets 403, a target outside the caller's grants 404; the rollout
// shows its members and per-wave progress to whoever sees its node; the
// list pages newest first and the members by state and ord.
func TestRolloutsAPI(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateFleet()
		fw := e.mustCreateFirmware(f)

		// bob administers n1, whose th-200s are n1-a and n1-b.
		var ro herd.Rollout
		first := e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "ro-1", rolloutBody(f, fw, f.n1))
		first.wantStatus(t, http.StatusCreated)
		first.decode(t, &ro)
		if ro.ID == 0 || ro.TenantID != f.tenant.ID || ro.Kind != herd.RolloutFirmware || ro.Members != 2 || ro.TargetVersion != "1.5.0" {
			t.Fatalf("created %s", first.Body)
		}
		if ro.State != herd.RolloutRunning || ro.MaxInFlight != rolloutInFlight || ro.OnAbort != herd.OnAbortRollback || len(ro.Waves) != 2 || len(ro.Gates.Health) != 2 {
			t.Fatalf("created %s", first.Body)
		}
		again := e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "ro-1", rolloutBody(f, fw, f.n1))
		again.wantStatus(t, http.StatusCreated)
		if again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(first.Body, again.Body) {
			t.Fatalf("replay %q %s, first %s", again.Header.Get(httpapi.HeaderReplayed), again.Body, first.Body)
		}
		if n := countRollouts(t, db); n != 1 {
			t.Fatalf("%d rollouts after a replayed create, want 1", n)
		}
		if n := countEvents(t, db, herd.EventRolloutCreated); n != 1 {
			t.Fatalf("%d rollout.created events, want 1", n)
		}

		t.Run("ErrSpec", func(t *testing.T) {
			before := rowCounts(t, db)
			for name, c := range map[string]struct {
				body  string
				code  string
				parts []string
			}{
				"WavesShort":    {rolloutBody(f, fw, f.n1, `"waves":[{"percent":10},{"percent":90}]`), herd.EINVALID, []string{"last wave must be 100"}},
				"WavesDown":     {rolloutBody(f, fw, f.n1, `"waves":[{"percent":50},{"percent":20},{"percent":100}]`), herd.EINVALID, []string{"waves[1].percent"}},
				"HealthField":   {rolloutBody(f, fw, f.n1, `"gates":{"health":[{"field":"mood","max_increase_vs_control":1}]}`), herd.EINVALID, []string{"gates.health[0].field", `"mood"`}},
				"HealthUnknown": {rolloutBody(f, fw, f.n1, `"gates":{"health":[{"field":"online","min_percent":98,"max_percent":99}]}`), herd.EINVALID, []string{"unknown field", "max_percent"}},
				"HealthKind":    {rolloutBody(f, fw, f.n1, `"gates":{"health":[{"field":"online","max_increase_vs_control":1}]}`), herd.EINVALID, []string{"gates.health[0]", "min_percent"}},
				"Unknown":       {rolloutBody(f, fw, f.n1, `"state":"succeeded"`), herd.EINVALID, []string{"unknown field", "state"}},
				"InFlight":      {rolloutBody(f, fw, f.n1, `"max_in_flight":100001`), herd.EINVALID, []string{"max_in_flight"}},
				"OnAbort":       {rolloutBody(f, fw, f.n1, `"on_abort":"pray"`), herd.EINVALID, []string{"on_abort"}},
				"StartAt":       {rolloutBody(f, fw, f.n1, `"start_at":"tomorrow"`), herd.EINVALID, []string{"start_at"}},
				"BothPayloads": {fmt.Sprintf(`{"tenant_id":"%d","name":"x","target":{"node_id":"%d"},"payload":{"firmware_id":"%d","profile_id":"1","version":1}}`, f.tenant.ID, f.n1.ID, fw.ID),
					herd.EINVALID, []string{"payload", "not both"}},
				"NoPayload": {fmt.Sprintf(`{"tenant_id":"%d","name":"x","target":{"node_id":"%d"},"payload":{}}`, f.tenant.ID, f.n1.ID), herd.EINVALID, []string{"payload"}},
				"NoTarget":  {fmt.Sprintf(`{"tenant_id":"%d","name":"x","payload":{"firmware_id":"%d"}}`, f.tenant.ID, fw.ID), herd.EINVALID, []string{"target.node_id"}},
				"Filter": {fmt.Sprintf(`{"tenant_id":"%d","name":"x","target":{"node_id":"%d","filter":["model:like:th"]},"payload":{"firmware_id":"%d"}}`, f.tenant.ID, f.n1.ID, fw.ID),
					herd.EINVALIDFILTER, []string{"target.filter"}},
			} {
				t.Run(name, func(t *testing.T) {
					e.doKey("POST", "/v1/rollouts", f.bobToken.Secret, "bad-"+name, c.body).wantError(t, http.StatusBadRequest, c.code, c.parts...)
				})
			}
			if after := rowCounts(t, db); after != before {
				t.Fatalf("a refused rollout wrote: before %s, after %s", before, after)
			}
		})
		t.Run("ErrViewer", func(t *testing.T) {
			// alice views north, n1 included: she sees rollouts there and
			// may not start one.
			e.do("POST", "/v1/rollouts", f.aliceToken.Secret, rolloutBody(f, fw, f.n1)).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
		})
		t.Run("ErrOutsideGrants", func(t *testing.T) {
			e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutBody(f, fw, f.s1)).wantError(t, http.StatusNotFound, herd.ENOTFOUND, fmt.Sprintf("node %d not found", f.s1.ID))
		})

		path := fmt.Sprintf("/v1/rollouts/%d", ro.ID)
		t.Run("View", func(t *testing.T) {
			var got herd.Rollout
			r := e.do("GET", path, f.aliceToken.Secret, nil)
			r.wantStatus(t, http.StatusOK)
			r.decode(t, &got)
			if got.ID != ro.ID || got.Members != 2 || len(got.Progress) != 2 {
				t.Fatalf("view %s", r.Body)
			}
			var members int64
			for i, p := range got.Progress {
				if p.Wave != i || p.Percent != ro.Waves[i].Percent {
					t.Errorf("progress[%d] %+v", i, p)
				}
				members += p.Members
			}
			if members != got.Members {
				t.Fatalf("the waves hold %d members, the rollout %d: %s", members, got.Members, r.Body)
			}
			e.do("GET", "/v1/rollouts/999999", f.aliceToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "rollout 999999 not found")
			e.do("GET", "/v1/rollouts/x", f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, "id")
		})

		// The super-admin rolls out over every device under north (n1-a,
		// n1-b, n1-c, n2-a, n2-b), some of which bob (n1 only) does not see.
		ctx := t.Context()
		wide := &herd.Rollout{TenantID: f.tenant.ID, Name: "north", RolloutSpec: herd.RolloutSpec{
			Target: herd.RolloutTarget{NodeID: f.north.ID}, Payload: herd.RolloutPayload{FirmwareID: fw.ID},
			Waves: []herd.RolloutWave{{Percent: 40}, {Percent: 100}}, MaxInFlight: 2,
		}}
		if err := e.admin.CreateRollout(ctx, wide); err != nil {
			t.Fatal(err)
		}
		if wide.ID <= ro.ID || wide.Members != 5 || wide.MaxInFlight != 2 {
			t.Fatalf("wide rollout %+v", wide)
		}
		t.Run("List", func(t *testing.T) {
			page, err := e.admin.FindRollouts(ctx, f.tenant.ID, 0, 1)
			if err != nil || len(page.Items) != 1 || page.Items[0].ID != wide.ID || page.Next != wide.ID {
				t.Fatalf("first page %+v, %v", page, err)
			}
			r := e.do("GET", fmt.Sprintf("/v1/rollouts?tenant_id=%d&limit=1&before=%d", f.tenant.ID, page.Next), adminSecret, nil)
			r.wantStatus(t, http.StatusOK)
			var p2 herd.ConfigPage[*herd.Rollout]
			r.decode(t, &p2)
			if len(p2.Items) != 1 || p2.Items[0].ID != ro.ID {
				t.Fatalf("second page %s", r.Body)
			}
			if p2.Next != 0 {
				page, err = e.admin.FindRollouts(ctx, f.tenant.ID, p2.Next, 1)
				if err != nil || len(page.Items) != 0 || page.Next != 0 {
					t.Fatalf("page after the last %+v, %v", page, err)
				}
			}
			// bob sees the rollout on n1, not the one on north.
			bob := httpapi.NewClient(e.srv.URL(), f.bobToken.Secret)
			page, err = bob.FindRollouts(ctx, 0, 0, 10)
			if err != nil || len(page.Items) != 1 || page.Items[0].ID != ro.ID {
				t.Fatalf("bob's list %+v, %v", page, err)
			}
			e.do("GET", fmt.Sprintf("/v1/rollouts/%d", wide.ID), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			e.do("GET", "/v1/rollouts?before=x", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID)
			e.do("GET", fmt.Sprintf("/v1/rollouts?tenant_id=%d&before=-1", f.tenant.ID), adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR, "before")
			for _, l := range []string{"0", "-1", "1001", "x"} {
				e.do("GET", "/v1/rollouts?limit="+l, f.aliceToken.Secret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
			}
		})
		t.Run("Members", func(t *testing.T) {
			mpath := fmt.Sprintf("/v1/rollouts/%d/devices", wide.ID)
			seen := map[int64]bool{}
			var ords []int64
			var after int64
			for range 10 {
				page, err := e.admin.FindRolloutMembers(ctx, wide.ID, herd.MemberPending, after, 2)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range page.Items {
					if m.RolloutID != wide.ID || m.State != herd.MemberPending || seen[m.DeviceID] {
						t.Fatalf("member %+v", m)
					}
					seen[m.DeviceID] = true
					ords = append(ords, m.Ord)
				}
				if page.Next == 0 {
					break
				} else if len(page.Items) != 2 || page.Next != page.Items[1].Ord {
					t.Fatalf("page after %d: %+v", after, page)
				}
				after = page.Next
			}
			if len(seen) != 5 {
				t.Fatalf("paged %d members, want 5", len(seen))
			}
			for i := 1; i < len(ords); i++ {
				if ords[i] <= ords[i-1] {
					t.Fatalf("ords not in member order: %v", ords)
				}
			}
			for _, key := range []string{"n1-a", "n1-b", "n1-c", "n2-a", "n2-b"} {
				if !seen[f.devices[key].ID] {
					t.Errorf("%s is not a member", key)
				}
			}
			var page herd.ConfigPage[*herd.RolloutMember]
			r := e.do("GET", mpath+"?state=applied", adminSecret, nil)
			r.wantStatus(t, http.StatusOK)
			r.decode(t, &page)
			if len(page.Items) != 0 {
				t.Fatalf("applied members before anything was told: %s", r.Body)
			}
			e.do("GET", mpath+"?state=done", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALID, `"done"`, "pending", "revert_failed")
			e.do("GET", mpath+"?after=x", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDCURSOR)
			e.do("GET", mpath+"?limit=0", adminSecret, nil).wantError(t, http.StatusBadRequest, herd.EINVALIDLIMIT)
			// A viewer of north reads them; bob does not see the rollout.
			e.do("GET", mpath, f.aliceToken.Secret, nil).wantStatus(t, http.StatusOK)
			e.do("GET", mpath, f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
		})
		t.Run("Actions", func(t *testing.T) {
			act := func(token, key, action string) response {
				t.Helper()
				return e.doKey("POST", path+"/"+action, token, key, "")
			}
			state := func(r response, want string) {
				t.Helper()
				r.wantStatus(t, http.StatusOK)
				var got herd.Rollout
				r.decode(t, &got)
				if got.ID != ro.ID || got.State != want {
					t.Fatalf("state %q, want %q: %s", got.State, want, r.Body)
				}
			}
			// alice may not pull the brake: she only views n1.
			act(f.aliceToken.Secret, "", herd.RolloutPause).wantError(t, http.StatusForbidden, herd.EFORBIDDEN)
			paused := act(f.bobToken.Secret, "pause-1", herd.RolloutPause)
			state(paused, herd.RolloutPaused)
			replay := act(f.bobToken.Secret, "pause-1", herd.RolloutPause)
			if replay.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(replay.Body, paused.Body) {
				t.Fatalf("replayed pause %q %s", replay.Header.Get(httpapi.HeaderReplayed), replay.Body)
			}
			// Paused again under a new key: nothing changes.
			state(act(f.bobToken.Secret, "", herd.RolloutPause), herd.RolloutPaused)
			if n := countEvents(t, db, herd.EventRolloutPaused); n != 1 {
				t.Fatalf("%d rollout.paused events, want 1", n)
			}
			state(act(f.bobToken.Secret, "", herd.RolloutResume), herd.RolloutRunning)
			state(act(f.bobToken.Secret, "", herd.RolloutCancel), herd.RolloutCancelled)
			act(f.bobToken.Secret, "", herd.RolloutResume).wantError(t, http.StatusConflict, herd.ECONFLICT)
			act(f.bobToken.Secret, "", herd.RolloutPause).wantError(t, http.StatusConflict, herd.ECONFLICT)
			e.do("POST", path+"/explode", f.bobToken.Secret, nil).wantStatus(t, http.StatusNotFound)
			e.do("POST", "/v1/rollouts/999999/pause", f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "rollout 999999 not found")

			// Through the client: abort the wide one.
			got, err := e.admin.ActOnRollout(ctx, wide.ID, herd.RolloutAbort)
			if err != nil || got.ID != wide.ID || got.State == herd.RolloutRunning || herd.ErrorCode(err) != "" {
				t.Fatalf("abort %+v, %v", got, err)
			}
			if _, err := e.admin.ActOnRollout(ctx, wide.ID, "explode"); herd.ErrorCode(err) != herd.EINVALID {
				t.Fatalf("unknown action: %v", err)
			}
			got, err = e.admin.FindRolloutByID(ctx, ro.ID)
			if err != nil || got.State != herd.RolloutCancelled || got.FinishedAt == nil {
				t.Fatalf("cancelled rollout %+v, %v", got, err)
			}
		})
	})
}

// TestRolloutsAPI_DefaultInFlight: a spec without max_in_flight takes the
// server's default for firmware, and for config the smaller of it and
// herd.DefaultMaxInFlight.
func TestRolloutsAPI_DefaultInFlight(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	e := mustOpenServer(t, db, func(s *httpapi.Server) {
		s.ConfigService = sqldb.NewConfigService(db)
		s.FirmwareService = sqldb.NewFirmwareService(db)
		s.Idempotency = sqldb.NewIdempotencyService(db)
		s.RolloutService = sqldb.NewRolloutService(db)
		s.RolloutMaxInFlight = 500
	})
	f := e.mustCreateFleet()
	ctx := t.Context()
	fw := e.mustCreateFirmware(f)
	p := &herd.ConfigProfile{TenantID: f.tenant.ID, Name: "sensor", Schema: []byte(rateSchema)}
	if err := e.admin.CreateConfigProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(`{"rate_s":10}`)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		payload herd.RolloutPayload
		kind    string
		want    int64
	}{
		{herd.RolloutPayload{FirmwareID: fw.ID}, herd.RolloutFirmware, 500},
		{herd.RolloutPayload{ProfileID: p.ID, Version: 1}, herd.RolloutConfig, herd.DefaultMaxInFlight},
	} {
		ro := &herd.Rollout{TenantID: f.tenant.ID, Name: c.kind, RolloutSpec: herd.RolloutSpec{Target: herd.RolloutTarget{NodeID: f.n1.ID}, Payload: c.payload}}
		if err := e.admin.CreateRollout(ctx, ro); err != nil {
			t.Fatal(err)
		}
		if ro.Kind != c.kind || ro.MaxInFlight != c.want {
			t.Errorf("%s rollout: kind %q, max_in_flight %d, want %d", c.kind, ro.Kind, ro.MaxInFlight, c.want)
		}
	}
}

// TestRolloutsAPI_NotServed: without a RolloutService every rollout route
// is a 404 that says so.
func TestRolloutsAPI_NotServed(t *testing.T) {
	t.Parallel()
	e := mustOpenServer(t, testutil.MustOpenDB(t, sqldb.SQLite))
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/rollouts"}, {"GET", "/v1/rollouts"}, {"GET", "/v1/rollouts/1"}, {"GET", "/v1/rollouts/1/devices"},
		{"POST", "/v1/rollouts/1/pause"}, {"POST", "/v1/rollouts/1/resume"}, {"POST", "/v1/rollouts/1/abort"}, {"POST", "/v1/rollouts/1/cancel"},
	} {
		e.do(c.method, c.path, adminSecret, "{}").wantError(t, http.StatusNotFound, herd.ENOTFOUND, "rollouts are not served here")
	}
}

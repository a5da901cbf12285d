package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sim"
)

// forEachStore runs fn against a herd serve child process on SQLite, and
// on PostgreSQL when HERD_TEST_POSTGRES_URL is set (the subtest skips
// otherwise), in parallel.
func forEachStore(t *testing.T, fn func(t *testing.T, p *herdProc, api *httpapi.Client)) {
	stores := map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return filepath.Join(t.TempDir(), "herd.db") },
		"postgres": func(t *testing.T) string { return testutil.PostgresSchemaDSN(t) },
	}
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := startHerd(t, "", "--store", stores[name](t))
			fn(t, p, httpapi.NewClient(p.url, testAdminToken))
		})
	}
}

// firmwareFleet is a tenant whose devices run firmware 1.0.0: those of the
// model a 2.0.0 image is registered for, and a few of another model that
// no rollout of that image may reach.
type firmwareFleet struct {
	tenant   *herd.Tenant
	devices  []*herd.Device // of the image's model
	others   []*herd.Device // of another model
	sims     []sim.Device   // all of them
	firmware *herd.Firmware
}

func newFirmwareFleet(t *testing.T, api *httpapi.Client, n, others int) *firmwareFleet {
	t.Helper()
	ctx := t.Context()
	f := &firmwareFleet{tenant: &herd.Tenant{Name: "firmware"}}
	if err := api.CreateTenant(ctx, f.tenant); err != nil {
		t.Fatal(err)
	}
	var all []*herd.Device
	for i := range n + others {
		model := "th-2"
		if i >= n {
			model = "th-1"
		}
		all = append(all, &herd.Device{NodeID: f.tenant.RootNodeID, Key: fmt.Sprintf("fw-%d-%d", f.tenant.ID, i), Model: model, Firmware: "1.0.0"})
	}
	if err := api.CreateDevices(ctx, all); err != nil {
		t.Fatal(err)
	}
	f.devices, f.others = all[:n], all[n:]
	for _, d := range all {
		c, err := api.CreateDeviceCredential(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		f.sims = append(f.sims, sim.Device{Key: d.Key, Token: c.Token})
	}
	f.firmware = &herd.Firmware{TenantID: f.tenant.ID, Model: "th-2", Version: "2.0.0", URL: "https://firmware.example/th-2/2.0.0.bin",
		SHA256: strings.Repeat("ab", 32), Size: 1 << 20}
	if err := api.CreateFirmware(ctx, f.firmware); err != nil {
		t.Fatal(err)
	}
	return f
}

// waitOnline polls the device query until n devices of the tenant are
// online: a rollout's offline base is taken when it starts, and these
// tests want it at zero.
func waitOnline(t *testing.T, api *httpapi.Client, tenantID int64, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		page, err := api.QueryDevices(t.Context(), httpapi.DeviceQueryParams{TenantID: tenantID, Filters: []string{"online:eq:true"}, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if page.Count == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d devices online after 30 s", page.Count, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// maxToldUnanswered sweeps the members' intervals [told_at, answered_at)
// (a member not answered stays open) and returns the most that overlap at
// one instant, with that instant. At one millisecond an answer ends its
// interval before a tell starts another: a step takes the answers in
// before it gives their slots away, at one clock reading.
func maxToldUnanswered(ms []*herd.RolloutMember) (int, time.Time) {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, m := range ms {
		if m.ToldAt == nil {
			continue
		}
		edges = append(edges, edge{*m.ToldAt, +1})
		if m.AnsweredAt != nil {
			edges = append(edges, edge{*m.AnsweredAt, -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // -1 first
	})
	n, most, at := 0, 0, time.Time{}
	for _, e := range edges {
		n += e.delta
		if n > most {
			most, at = n, e.at
		}
	}
	return most, at
}

// lastAnswered is the latest answered_at of the members of waves up to w.
func lastAnswered(t *testing.T, ms []*herd.RolloutMember, w int) time.Time {
	t.Helper()
	var last time.Time
	for _, m := range ms {
		if m.Wave > w {
			continue
		}
		if m.AnsweredAt == nil {
			t.Fatalf("member %s of wave %d has no answered_at", m.DeviceKey, m.Wave+1)
		}
		if m.AnsweredAt.After(last) {
			last = *m.AnsweredAt
		}
	}
	return last
}

func findEval(r *herd.Rollout, gate string) *herd.GateEval {
	for i := range r.Evaluations {
		if r.Evaluations[i].Gate == gate {
			return &r.Evaluations[i]
		}
	}
	return nil
}

// TestRollout_Firmware: a firmware rollout of 2.0.0 over 60 simulated
// devices of its model (4 of another model beside them), in waves of 10,
// 50 and 100 percent, 5 in flight, a reboot budget of 1 device (2% of 60)
// and a 1 s bake. The devices download, reboot for 300 ms ±20% and come
// back reporting 2.0.0, which is what makes a member applied. What is
// asserted, from the member rows of GET /v1/rollouts/{id}/devices:
//   - the model filter: the members are the 60 devices of the model;
//   - every member applied, told once;
//   - at no instant were more than max_in_flight members told and not
//     answered (a sweep over [told_at, answered_at));
//   - the waves went in order with their bake between: no member of wave
//     k+1 was told before the last member of waves up to k answered plus
//     bake_s (the bake starts in the step that takes that last answer);
//   - each member's device reports firmware 2.0.0 and is online; the
//     other model's devices still report 1.0.0.
//
// The reboot budget: the member rows have no offline times, so what they
// show of it is only the bound above (offline members beyond the start's
// are told and not answered). The budget is sending paused while more
// than it are offline, not a cap on the offline count (a step under the
// budget may fill every free slot), so it is asserted as the controller
// reports it: polled through the run, the max_offline_percent gate was
// seen failing (sending paused) at least once, and its last evaluation
// has the rollout's threshold.
func TestRollout_Firmware(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, p *herdProc, api *httpapi.Client) {
		start := time.Now()
		const n, others, inFlight, bake = 60, 4, 5, 1
		f := newFirmwareFleet(t, api, n, others)
		runSimsWith(t, sim.Config{Broker: "tcp://" + p.mqtt, Devices: f.sims, Reboot: 300 * time.Millisecond})
		waitOnline(t, api, f.tenant.ID, n+others)
		ro := &herd.Rollout{TenantID: f.tenant.ID, Name: "fw-2.0.0", RolloutSpec: herd.RolloutSpec{
			Target:            herd.RolloutTarget{NodeID: f.tenant.RootNodeID},
			Payload:           herd.RolloutPayload{FirmwareID: f.firmware.ID},
			Waves:             []herd.RolloutWave{{Percent: 10}, {Percent: 50}, {Percent: 100}},
			MaxInFlight:       inFlight,
			MaxOfflinePercent: 2,
			StartJitterS:      1,
			Gates:             herd.RolloutGates{AnswerTimeoutS: 60, BakeS: bake},
			OnAbort:           herd.OnAbortStop,
		}}
		if err := api.CreateRollout(t.Context(), ro); err != nil {
			t.Fatal(err)
		}
		if ro.Members != n || ro.Kind != herd.RolloutFirmware || ro.TargetVersion != "2.0.0" {
			t.Fatalf("created %s rollout of %q with %d members, want firmware 2.0.0 over the %d devices of model th-2", ro.Kind, ro.TargetVersion, ro.Members, n)
		}
		created := time.Now()
		paused := 0           // polls that saw the reboot budget's gate failing
		var mostOffline int64 // the most members offline in one poll
		r := waitRollout(t, api, ro.ID, 50*time.Second, "the rollout to end", func(r *herd.Rollout) bool {
			if e := findEval(r, herd.GateRebootBudget); e != nil && !e.Passed {
				paused++
			}
			var off int64
			for _, w := range r.Progress {
				off += w.Offline
			}
			mostOffline = max(mostOffline, off)
			return !herd.RolloutActive(r.State)
		})
		took := time.Since(created)
		if r.State != herd.RolloutSucceeded {
			t.Fatalf("rollout ended %s (%s), want succeeded", r.State, r.Reason)
		}

		ms := rolloutMembers(t, api, ro.ID)
		if len(ms) != n {
			t.Fatalf("%d members listed, want %d", len(ms), n)
		}
		inModel := map[int64]bool{}
		for _, d := range f.devices {
			inModel[d.ID] = true
		}
		perWave := make([]int, len(ro.Waves))
		for _, m := range ms {
			if !inModel[m.DeviceID] {
				t.Fatalf("member %s is not of model th-2", m.DeviceKey)
			}
			if m.State != herd.MemberApplied || m.Attempts != 1 || m.ToldAt == nil || m.AnsweredAt == nil {
				t.Fatalf("member %s: %s, attempts %d, told %v, answered %v; want applied once", m.DeviceKey, m.State, m.Attempts, m.ToldAt, m.AnsweredAt)
			}
			perWave[m.Wave]++
		}
		if !slices.Equal(perWave, []int{6, 24, 30}) {
			t.Fatalf("members per wave %v, want [6 24 30] (10/50/100%% of %d)", perWave, n)
		}

		most, at := maxToldUnanswered(ms)
		if most > inFlight {
			t.Fatalf("%d members told and not answered at %s, over max_in_flight %d", most, at.Format(time.RFC3339Nano), inFlight)
		}
		if most < 2 {
			t.Fatalf("at most %d member told at a time: the run never had members in flight together, so it tests nothing of max_in_flight", most)
		}

		waveTook := make([]time.Duration, len(ro.Waves))
		prevEnd := *r.StartedAt
		for w := range ro.Waves {
			end := lastAnswered(t, ms, w)
			waveTook[w] = end.Sub(prevEnd).Round(time.Millisecond)
			prevEnd = end
			if w == 0 {
				continue
			}
			gate := lastAnswered(t, ms, w-1).Add(bake * time.Second)
			for _, m := range ms {
				if m.Wave == w && m.ToldAt.Before(gate) {
					t.Fatalf("member %s of wave %d told at %s, before wave %d was done and baked (%s)",
						m.DeviceKey, w+1, m.ToldAt.Format(time.RFC3339Nano), w, gate.Format(time.RFC3339Nano))
				}
			}
		}

		if paused == 0 {
			t.Fatalf("the reboot budget (%d device) never paused sending over the run: it did not bind", r.MaxOffline())
		}
		// Every device was online at the start and only those told
		// reboot, so the offline count is bounded by the slots.
		if mostOffline > inFlight {
			t.Fatalf("%d members offline at once, more than the %d that may be in flight", mostOffline, inFlight)
		}
		if e := findEval(r, herd.GateRebootBudget); e == nil || e.Threshold != ro.MaxOfflinePercent {
			t.Fatalf("reboot budget evaluation %+v, want one with threshold %g", e, ro.MaxOfflinePercent)
		}

		for _, d := range f.devices {
			got, err := api.FindDeviceByID(t.Context(), d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Firmware != "2.0.0" || !got.Online {
				t.Fatalf("device %s reports firmware %q, online %v; want 2.0.0, online", d.Key, got.Firmware, got.Online)
			}
		}
		for _, d := range f.others {
			got, err := api.FindDeviceByID(t.Context(), d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Firmware != "1.0.0" {
				t.Fatalf("device %s of model th-1 reports firmware %q, want 1.0.0: the image reached another model", d.Key, got.Firmware)
			}
		}
		t.Logf("%d members applied in %s (waves %v), at most %d told at once, budget (%d) seen pausing in %d polls, at most %d offline in a poll; whole test %s",
			n, took.Round(time.Millisecond), waveTook, most, r.MaxOffline(), paused, mostOffline, time.Since(start).Round(time.Millisecond))
	})
}

// TestRollout_HealthAbort: a config rollout over 20 simulated devices
// that publish 4 readings a second and whose error_count climbs by one a
// reading once they applied a config (the simulator's ErrorClimb share,
// all of them). Waves of 20 and 100 percent, so that wave 2's members are
// the control group through wave 1's bake (3 s), and a health gate on
// error_count of at most 0.5 rise against the control. The updated
// members climb, the control stays at 0: the rollout aborts (on_abort
// stop) at the end of the bake, with a failed evaluation of the health
// gate, and wave 2 was never told: its members are pending with no
// attempt, and no device.config_desired event names them.
func TestRollout_HealthAbort(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, p *herdProc, api *httpapi.Client) {
		start := time.Now()
		const n, bake = 20, 3
		f := newRolloutFleet(t, api, n, 1)
		runSimsWith(t, sim.Config{Broker: "tcp://" + p.mqtt, Devices: f.sims, Rate: 4, ErrorClimb: 1})
		waitOnline(t, api, f.tenant.ID, n)
		ro := f.configRollout("health", 1, 4, herd.OnAbortStop)
		ro.Waves = []herd.RolloutWave{{Percent: 20}, {Percent: 100}}
		ro.Gates.BakeS = bake
		maxRise := 0.5
		ro.Gates.Health = []herd.HealthGate{{Field: "error_count", MaxIncreaseVsControl: &maxRise}}
		if err := api.CreateRollout(t.Context(), ro); err != nil {
			t.Fatal(err)
		}
		created := time.Now()
		r := waitRollout(t, api, ro.ID, 40*time.Second, "the rollout to end", func(r *herd.Rollout) bool { return !herd.RolloutActive(r.State) })
		took := time.Since(created)
		if r.State != herd.RolloutAborted || !strings.Contains(r.Reason, "health gate") || r.FinishedAt == nil {
			t.Fatalf("rollout ended %s (reason %q, finished %v), want aborted by a health gate", r.State, r.Reason, r.FinishedAt)
		}
		e := findEval(r, herd.GateHealthPrefix+"error_count")
		if e == nil || e.Passed || e.Wave != 0 || e.Threshold != maxRise || !(e.Value > maxRise) {
			t.Fatalf("health gate evaluation %+v, want wave 0 failed with a rise over %g", e, maxRise)
		}

		ms := rolloutMembers(t, api, ro.ID)
		if len(ms) != n {
			t.Fatalf("%d members listed, want %d", len(ms), n)
		}
		wave1 := map[int64]bool{}
		for _, m := range ms {
			switch {
			case m.Wave == 0 && m.State == herd.MemberApplied && m.Attempts == 1:
				wave1[m.DeviceID] = true
			case m.Wave == 1 && (m.State == herd.MemberPending || m.State == herd.MemberCancelled) && m.Attempts == 0 && m.ToldAt == nil:
			default:
				t.Fatalf("member %s of wave %d: %s, attempts %d, told %v; want wave 1 applied once, wave 2 never told",
					m.DeviceKey, m.Wave+1, m.State, m.Attempts, m.ToldAt)
			}
		}
		if len(wave1) != n/5 {
			t.Fatalf("%d members in wave 1, want %d (20%% of %d)", len(wave1), n/5, n)
		}
		// The abort comes at the end of the bake, which starts when wave
		// 1's last member answered, not before.
		if bakeEnd := lastAnswered(t, ms, 0).Add(bake * time.Second); r.FinishedAt.Before(bakeEnd) {
			t.Fatalf("aborted at %s, before the bake ended at %s", r.FinishedAt.Format(time.RFC3339Nano), bakeEnd.Format(time.RFC3339Nano))
		}
		// Only wave 1's devices were ever asked for the version.
		events := configDesiredEvents(t, api, f.tenant.ID, f.profile.ID, 1)
		for id, k := range events {
			if !wave1[id] || k != 1 {
				t.Fatalf("device %d got %d device.config_desired events (in wave 1: %v); want one each for wave 1 only", id, k, wave1[id])
			}
		}
		if len(events) != len(wave1) {
			t.Fatalf("%d devices told, want the %d of wave 1", len(events), len(wave1))
		}
		// What the gate compared: the updated devices climbed, the control
		// group did not.
		for _, m := range ms {
			d, err := api.FindDeviceByID(t.Context(), m.DeviceID)
			if err != nil {
				t.Fatal(err)
			}
			if updated := wave1[m.DeviceID]; updated != (d.ErrorCount > 0) {
				t.Fatalf("device %s (updated %v) reports error_count %d", d.Key, updated, d.ErrorCount)
			}
		}
		t.Logf("aborted %s after creation: %s (%s); whole test %s", took.Round(time.Millisecond), e.Detail, r.Reason, time.Since(start).Round(time.Millisecond))
	})
}

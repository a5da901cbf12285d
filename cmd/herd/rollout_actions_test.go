package main

import (
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
)

// holdsFor polls the rollout for d and fails the test the first time cond
// does not hold. It is for what must NOT happen (a paused rollout telling
// another member): nothing signals an event that never comes, so the test
// watches the controller's polls (every 500 ms) go by.
func holdsFor(t *testing.T, api *httpapi.Client, id int64, d time.Duration, what string, cond func(*herd.Rollout) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		r, err := api.FindRolloutByID(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if !cond(r) {
			t.Fatalf("%s no longer holds: rollout %s, %+v", what, r.State, sumProgress(r))
		}
		time.Sleep(100 * time.Millisecond) // the poll's pace: see above
	}
}

// act runs an action over HTTP and checks the state it answers, or the
// error code when wantCode is set.
func act(t *testing.T, api *httpapi.Client, id int64, action, wantState, wantCode string) *herd.Rollout {
	t.Helper()
	r, err := api.ActOnRollout(t.Context(), id, action)
	if wantCode != "" {
		if herd.ErrorCode(err) != wantCode {
			t.Fatalf("%s: %v (%+v), want %s", action, err, r, wantCode)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	if r.State != wantState {
		t.Fatalf("%s answered state %s, want %s", action, r.State, wantState)
	}
	return r
}

// TestRollout_Actions: pause, resume, abort and cancel over HTTP against a
// running herd with its real controller and simulated devices on its
// gateway. A paused rollout tells nobody new while the answers of those
// told still come in, and resumed it finishes with every member applied
// once; an abort with on_abort rollback gives every device that applied
// its previous config back and ends rolled_back; a cancel stops a running
// rollout for good. Repeated actions change nothing, disallowed ones are
// 409.
func TestRollout_Actions(t *testing.T) {
	t.Parallel()
	start := time.Now()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	f := newRolloutFleet(t, api, 20, 3)
	runSims(t, "tcp://"+m.Gateway.TCPAddr().String(), f.sims)
	ctx := t.Context()

	t.Run("PauseResume", func(t *testing.T) {
		ro := f.configRollout("pause", 1, 3, herd.OnAbortStop)
		if err := api.CreateRollout(ctx, ro); err != nil {
			t.Fatal(err)
		}
		waitRollout(t, api, ro.ID, 20*time.Second, "4 members told", func(r *herd.Rollout) bool {
			return sumProgress(r).told >= 4 || !herd.RolloutActive(r.State)
		})
		act(t, api, ro.ID, herd.RolloutPause, herd.RolloutPaused, "")
		act(t, api, ro.ID, herd.RolloutPause, herd.RolloutPaused, "") // again: no change
		// A pause takes the rollout's row lock, as each step does first,
		// so the told count read after it is final while paused.
		r, err := api.FindRolloutByID(ctx, ro.ID)
		if err != nil {
			t.Fatal(err)
		}
		told := sumProgress(r).told
		if told == 0 || told == r.Members {
			t.Fatalf("paused with %d of %d members told: the pause fell outside the rollout", told, r.Members)
		}
		// Paused, the controller still takes answers: every member told
		// before the pause applies. That is the signal that its steps run.
		waitRollout(t, api, ro.ID, 20*time.Second, "the told members' answers", func(r *herd.Rollout) bool {
			p := sumProgress(r)
			if p.told != told {
				t.Fatalf("told %d while paused, was %d", p.told, told)
			}
			return p.applied == told
		})
		// And over four more polls of the controller (2 s) nobody new is
		// told: a pause has nothing to signal, so the test watches.
		holdsFor(t, api, ro.ID, 2*time.Second, "paused, nobody new told", func(r *herd.Rollout) bool {
			return r.State == herd.RolloutPaused && sumProgress(r).told == told
		})
		act(t, api, ro.ID, herd.RolloutResume, herd.RolloutRunning, "")
		r = waitRollout(t, api, ro.ID, 30*time.Second, "the resumed rollout to end", func(r *herd.Rollout) bool { return !herd.RolloutActive(r.State) })
		if r.State != herd.RolloutSucceeded {
			t.Fatalf("resumed rollout ended %s (%s), want succeeded", r.State, r.Reason)
		}
		checkAppliedOnce(t, api, f, r)
		act(t, api, ro.ID, herd.RolloutResume, "", herd.ECONFLICT)
		act(t, api, ro.ID, herd.RolloutAbort, "", herd.ECONFLICT)
	})

	t.Run("AbortRollback", func(t *testing.T) {
		ro := f.configRollout("abort", 2, 3, herd.OnAbortRollback)
		if err := api.CreateRollout(ctx, ro); err != nil {
			t.Fatal(err)
		}
		waitRollout(t, api, ro.ID, 20*time.Second, "4 members applied", func(r *herd.Rollout) bool {
			return sumProgress(r).applied >= 4 || !herd.RolloutActive(r.State)
		})
		act(t, api, ro.ID, herd.RolloutAbort, herd.RolloutRollingBack, "")
		act(t, api, ro.ID, herd.RolloutAbort, herd.RolloutRollingBack, "") // again: no change
		act(t, api, ro.ID, herd.RolloutResume, "", herd.ECONFLICT)
		r := waitRollout(t, api, ro.ID, 30*time.Second, "the rollback to end", func(r *herd.Rollout) bool { return !herd.RolloutActive(r.State) })
		if r.State != herd.RolloutRolledBack || r.Reason == "" {
			t.Fatalf("aborted rollout ended %s (reason %q), want rolled_back with a reason", r.State, r.Reason)
		}
		// Every member told version 2 applied it (the simulator applies
		// all) and got version 1 back; the others were never told.
		reverted := 0
		for _, mb := range rolloutMembers(t, api, ro.ID) {
			switch {
			case mb.State == herd.MemberReverted && mb.Attempts == 1:
				reverted++
				dc, err := api.FindDeviceConfig(ctx, mb.DeviceID)
				if err != nil {
					t.Fatal(err)
				}
				if dc.Desired == nil || dc.Desired.Version != 1 || !dc.InSync {
					t.Fatalf("reverted %s: desired %+v, reported %+v, in sync %v; want version 1 applied", mb.DeviceKey, dc.Desired, dc.Reported, dc.InSync)
				}
			case (mb.State == herd.MemberPending || mb.State == herd.MemberCancelled) && mb.Attempts == 0:
			default:
				t.Fatalf("member %s %s with %d attempts after the rollback, want reverted once told, or never told", mb.DeviceKey, mb.State, mb.Attempts)
			}
		}
		t.Logf("aborted: %d of %d members reverted to version 1", reverted, len(f.devices))
		if reverted < 4 || reverted == len(f.devices) {
			t.Fatalf("%d of %d members reverted: want those applied before the abort (4 or more), not all", reverted, len(f.devices))
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		ro := f.configRollout("cancel", 3, 3, herd.OnAbortRollback)
		if err := api.CreateRollout(ctx, ro); err != nil {
			t.Fatal(err)
		}
		waitRollout(t, api, ro.ID, 20*time.Second, "a member told", func(r *herd.Rollout) bool {
			return sumProgress(r).told >= 1 || !herd.RolloutActive(r.State)
		})
		r := act(t, api, ro.ID, herd.RolloutCancel, herd.RolloutCancelled, "")
		if r.FinishedAt == nil {
			t.Fatal("a cancelled rollout has no finished_at")
		}
		act(t, api, ro.ID, herd.RolloutCancel, herd.RolloutCancelled, "") // again: no change
		act(t, api, ro.ID, herd.RolloutResume, "", herd.ECONFLICT)
		act(t, api, ro.ID, herd.RolloutPause, "", herd.ECONFLICT)
		act(t, api, ro.ID, herd.RolloutAbort, "", herd.ECONFLICT)
		r, err := api.FindRolloutByID(ctx, ro.ID)
		if err != nil {
			t.Fatal(err)
		}
		// Queued members were cancelled: what is in flight is only what
		// was told and has not answered.
		p := sumProgress(r)
		if p.told == r.Members || p.inFlight != p.told-p.applied {
			t.Fatalf("cancelled with %+v of %d members: want some never told and none queued", p, r.Members)
		}
		told := p.told
		holdsFor(t, api, ro.ID, 2*time.Second, "cancelled, nobody new told", func(r *herd.Rollout) bool {
			return r.State == herd.RolloutCancelled && sumProgress(r).told == told
		})
	})
	t.Logf("pause/resume, abort with rollback, cancel: %s", time.Since(start).Round(time.Millisecond))
}

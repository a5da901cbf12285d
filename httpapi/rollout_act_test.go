package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRolloutsAPI_Actions: pause and abort take the operator role on the
// target node, resume and cancel take admin (sqldb.ActOnRollout); a
// viewer may do none. An action the rollout is in already changes
// nothing, one its state does not allow is a 409, and a rollout that
// stopped frees its devices for the next. Each rollout has a site of its
// own (see rollout_test.go).
func TestRolloutsAPI_Actions(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		e := openRolloutServer(t, db)
		f := e.mustCreateRolloutFleet()
		create := func(name string, mods ...map[string]any) (*herd.Node, int64) {
			t.Helper()
			site, _ := e.mustCreateSite(f.n1, name, 2)
			var ro herd.Rollout
			r := e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutSpec(f.tenant.ID, site.ID, f.fw.ID, mods...))
			r.wantStatus(t, http.StatusCreated)
			r.decode(t, &ro)
			return site, ro.ID
		}
		act := func(t *testing.T, token string, id int64, action string) response {
			t.Helper()
			return e.do("POST", fmt.Sprintf("/v1/rollouts/%d/%s", id, action), token, nil)
		}
		// state checks the answer is the rollout in the state given.
		state := func(t *testing.T, r response, id int64, want string) *herd.Rollout {
			t.Helper()
			r.wantStatus(t, http.StatusOK)
			var ro herd.Rollout
			r.decode(t, &ro)
			if ro.ID != id || ro.State != want {
				t.Fatalf("rollout %d %q, want %d %q: %s", ro.ID, ro.State, id, want, r.Body)
			}
			return &ro
		}
		stored := func(t *testing.T, id int64) string {
			t.Helper()
			ro, err := e.admin.FindRolloutByID(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			return ro.State
		}

		t.Run("PauseResume", func(t *testing.T) {
			_, id := create("pause")
			for _, a := range []string{herd.RolloutPause, herd.RolloutResume, herd.RolloutAbort, herd.RolloutCancel} {
				wantErrorShape(t, act(t, f.aliceToken.Secret, id, a), http.StatusForbidden, herd.EFORBIDDEN)
			}
			state(t, act(t, f.olgaToken, id, herd.RolloutPause), id, herd.RolloutPaused)
			state(t, act(t, f.olgaToken, id, herd.RolloutPause), id, herd.RolloutPaused)
			if n := countEvents(t, db, herd.EventRolloutPaused); n != 1 {
				t.Fatalf("%d rollout.paused events after pausing twice, want 1", n)
			}
			r := act(t, f.olgaToken, id, herd.RolloutResume)
			wantErrorShape(t, r, http.StatusForbidden, herd.EFORBIDDEN)
			r.wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "admin")
			act(t, f.olgaToken, id, herd.RolloutCancel).wantError(t, http.StatusForbidden, herd.EFORBIDDEN, "admin")
			if s := stored(t, id); s != herd.RolloutPaused {
				t.Fatalf("after refused actions the rollout is %s", s)
			}
			// Never started, it resumes as scheduled.
			state(t, act(t, f.bobToken.Secret, id, herd.RolloutResume), id, herd.RolloutScheduled)
			state(t, act(t, f.bobToken.Secret, id, herd.RolloutResume), id, herd.RolloutScheduled)
			if n := countEvents(t, db, herd.EventRolloutResumed); n != 1 {
				t.Fatalf("%d rollout.resumed events, want 1", n)
			}
			// A keyed pause replays its answer.
			first := e.doKey("POST", fmt.Sprintf("/v1/rollouts/%d/pause", id), f.olgaToken, "pause-key", "")
			state(t, first, id, herd.RolloutPaused)
			again := e.doKey("POST", fmt.Sprintf("/v1/rollouts/%d/pause", id), f.olgaToken, "pause-key", "")
			if again.Header.Get(httpapi.HeaderReplayed) != "true" || !bytes.Equal(first.Body, again.Body) {
				t.Fatalf("replayed pause %q %s, first %s", again.Header.Get(httpapi.HeaderReplayed), again.Body, first.Body)
			}
		})
		t.Run("AbortRollback", func(t *testing.T) {
			_, id := create("abort")
			ro := state(t, act(t, f.olgaToken, id, herd.RolloutAbort), id, herd.RolloutRollingBack)
			if ro.Reason == "" || ro.FinishedAt != nil {
				t.Fatalf("aborted with rollback: %+v", ro)
			}
			state(t, act(t, f.olgaToken, id, herd.RolloutAbort), id, herd.RolloutRollingBack)
			act(t, f.olgaToken, id, herd.RolloutPause).wantError(t, http.StatusConflict, herd.ECONFLICT)
			act(t, f.bobToken.Secret, id, herd.RolloutResume).wantError(t, http.StatusConflict, herd.ECONFLICT)
		})
		t.Run("AbortStopFreesDevices", func(t *testing.T) {
			site, id := create("stop", map[string]any{"on_abort": herd.OnAbortStop})
			ro := state(t, act(t, f.olgaToken, id, herd.RolloutAbort), id, herd.RolloutAborted)
			if ro.FinishedAt == nil {
				t.Fatalf("aborted with stop, not finished: %+v", ro)
			}
			e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutSpec(f.tenant.ID, site.ID, f.fw.ID)).wantStatus(t, http.StatusCreated)
		})
		t.Run("CancelFreesDevices", func(t *testing.T) {
			site, id := create("cancel")
			// Until it stops, its devices are taken.
			e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutSpec(f.tenant.ID, site.ID, f.fw.ID)).wantError(t, http.StatusBadRequest, herd.EINVALID, "matches no devices")
			bob := httpapi.NewClient(e.srv.URL(), f.bobToken.Secret)
			ro, err := bob.ActOnRollout(t.Context(), id, herd.RolloutCancel)
			if err != nil || ro.ID != id || ro.State != herd.RolloutCancelled || ro.FinishedAt == nil {
				t.Fatalf("cancel %+v, %v", ro, err)
			}
			state(t, act(t, f.bobToken.Secret, id, herd.RolloutCancel), id, herd.RolloutCancelled)
			for _, a := range []string{herd.RolloutPause, herd.RolloutResume, herd.RolloutAbort} {
				act(t, f.bobToken.Secret, id, a).wantError(t, http.StatusConflict, herd.ECONFLICT, "cancelled")
			}
			e.do("POST", "/v1/rollouts", f.bobToken.Secret, rolloutSpec(f.tenant.ID, site.ID, f.fw.ID)).wantStatus(t, http.StatusCreated)
		})
		t.Run("ErrUnknownAction", func(t *testing.T) {
			_, id := create("unknown")
			e.do("POST", fmt.Sprintf("/v1/rollouts/%d/explode", id), f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND)
			if _, err := e.admin.ActOnRollout(t.Context(), id, "explode"); herd.ErrorCode(err) != herd.EINVALID {
				t.Fatalf("client, unknown action: %v", err)
			}
			e.do("POST", "/v1/rollouts/999999/pause", f.bobToken.Secret, nil).wantError(t, http.StatusNotFound, herd.ENOTFOUND, "rollout 999999 not found")
		})
	})
}

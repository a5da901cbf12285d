package sqldb_test

import (
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRolloutService_ActOnRollout: pause, a repeated pause, resume, abort
// with stop, and the actions a finished rollout refuses.
func TestRolloutService_ActOnRollout(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newRolloutFleet(t, db, 3)
		r := configRollout(f, 2)
		r.OnAbort = herd.OnAbortStop
		mustOK(t, f.rollouts.CreateRollout(f.super, r))
		for _, c := range []struct{ action, want string }{
			{herd.RolloutPause, herd.RolloutPaused},
			{herd.RolloutPause, herd.RolloutPaused},
			{herd.RolloutResume, herd.RolloutScheduled},
			{herd.RolloutAbort, herd.RolloutAborted},
			{herd.RolloutAbort, herd.RolloutAborted},
		} {
			got, err := f.rollouts.ActOnRollout(f.super, r.ID, c.action)
			mustOK(t, err)
			if got.State != c.want {
				t.Fatalf("%s: state %s, want %s", c.action, got.State, c.want)
			}
		}
		for _, a := range []string{herd.RolloutPause, herd.RolloutResume, herd.RolloutCancel} {
			_, err := f.rollouts.ActOnRollout(f.super, r.ID, a)
			wantCode(t, err, herd.ECONFLICT)
		}
	})
}

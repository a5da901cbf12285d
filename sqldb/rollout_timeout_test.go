package sqldb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRollout_AnswerTimeout: a told member whose device never answers is
// timed out once answer_timeout_s has passed since it was told, not
// before; timed-out members count as failures, so enough of them abort the
// rollout; members that answered are never timed out.
func TestRollout_AnswerTimeout(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newRolloutFleet(t, db, 50)
		r := configRollout(f, 2)
		mustOK(t, f.rollouts.CreateRollout(f.super, r))
		keys := map[int64]string{}
		for _, d := range f.devices {
			keys[d.ID] = d.Key
		}
		silent := func(id int64) bool { return rejects(keys[id], 0.3) }
		owner := "test-timeout"
		answered := map[int64]bool{}
		var got *herd.Rollout
		for i := 0; i < 500; i++ {
			ids, err := f.rollouts.ClaimRollouts(context.Background(), owner, time.Minute, 10)
			mustOK(t, err)
			for _, id := range ids {
				_, err := f.rollouts.StepRollout(context.Background(), owner, id, time.Minute)
				mustOK(t, err)
			}
			got, err = f.rollouts.FindRolloutByID(f.super, r.ID)
			mustOK(t, err)
			if !herd.RolloutActive(got.State) {
				break
			}
			for _, m := range f.members(r.ID) {
				if m.State == herd.MemberTold && !silent(m.DeviceID) && !answered[m.DeviceID] {
					answered[m.DeviceID] = true
					f.ack(m.DeviceID, 2, herd.ConfigApplied)
				}
			}
			f.advance(5 * time.Second)
		}
		if herd.RolloutActive(got.State) || !strings.Contains(got.Reason, "failures") {
			t.Fatalf("rollout %s (%s), want ended by the failure gate", got.State, got.Reason)
		}
		timeout := time.Duration(r.Gates.AnswerTimeoutS) * time.Second
		timedOut := 0
		for _, m := range f.members(r.ID) {
			if m.State != herd.MemberTimedOut {
				continue
			}
			timedOut++
			if !silent(m.DeviceID) || answered[m.DeviceID] {
				t.Fatalf("member %s timed out, but its device answered", m.DeviceKey)
			}
			if m.ToldAt == nil || m.AnsweredAt == nil || m.AnsweredAt.Sub(*m.ToldAt) < timeout {
				t.Fatalf("member %s timed out at %v, told at %v: before answer_timeout_s (%s)", m.DeviceKey, m.AnsweredAt, m.ToldAt, timeout)
			}
		}
		if int64(timedOut) < r.Gates.AbortMinDevices {
			t.Fatalf("%d members timed out, fewer than the %d failures the abort needs", timedOut, r.Gates.AbortMinDevices)
		}
	})
}

package sqldb_test

import (
	"context"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRollout_Jitter: members that get their slots together are spread
// over [0, start_jitter_s], each told once its own delay has run out, and
// the step asks to run again when the next delay runs out.
func TestRollout_Jitter(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newRolloutFleet(t, db, 50)
		r := configRollout(f, 2)
		r.Waves, r.MaxInFlight, r.StartJitterS = []herd.RolloutWave{{Percent: 100}}, 100, 10
		mustOK(t, f.rollouts.CreateRollout(f.super, r))
		owner := "test-jitter"
		step := func() herd.RolloutStep {
			t.Helper()
			ids, err := f.rollouts.ClaimRollouts(context.Background(), owner, time.Minute, 10)
			mustOK(t, err)
			if len(ids) != 1 {
				t.Fatalf("claimed %v", ids)
			}
			st, err := f.rollouts.StepRollout(context.Background(), owner, ids[0], time.Minute)
			mustOK(t, err)
			return st
		}
		start := f.db.Now()
		st := step()
		ms := f.members(r.ID)
		seconds := map[int64]bool{}
		var firstFuture time.Time
		for _, m := range ms {
			if m.DueAt == nil {
				t.Fatalf("member %+v has no due time after the first step", m)
			}
			delay := m.DueAt.Sub(start)
			if delay < 0 || delay > 10*time.Second {
				t.Fatalf("member %s due %s after the start, want within [0, 10s]", m.DeviceKey, delay)
			}
			seconds[int64(delay/time.Second)] = true
			switch {
			case m.State == herd.MemberTold:
				if delay > 0 {
					t.Fatalf("member %s told with %s of its delay left", m.DeviceKey, delay)
				}
			case m.State == herd.MemberQueued:
				if firstFuture.IsZero() || m.DueAt.Before(firstFuture) {
					firstFuture = *m.DueAt
				}
			default:
				t.Fatalf("member %+v after the first step", m)
			}
		}
		if len(seconds) < 8 {
			t.Fatalf("100 members' delays fall in %d distinct seconds of 10: the jitter does not spread them", len(seconds))
		}
		if firstFuture.IsZero() || !st.Next.Equal(firstFuture) {
			t.Fatalf("step asks to run again at %s, want %s: when the next member is due", st.Next, firstFuture)
		}
		f.advance(10 * time.Second)
		step()
		for _, m := range f.members(r.ID) {
			if m.State != herd.MemberTold || m.Attempts != 1 {
				t.Fatalf("member %+v after every delay ran out, want told once", m)
			}
		}
	})
}

package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/herd-iot/herd"
)

// maxSendsPerStep bounds the members one step tells, so that a step's
// transaction stays short however large max_in_flight is; the next step
// goes on.
const maxSendsPerStep = 1000

// ClaimRollouts implements herd.RolloutDriver, as ClaimOutbox claims
// tenants: the oldest leases first, SKIP LOCKED on PostgreSQL so that
// controllers claiming at once split the rollouts, and the lease checked
// again on the locked row so that two never both win one.
func (s *RolloutService) ClaimRollouts(ctx context.Context, owner string, lease time.Duration, max int) (_ []int64, err error) {
	defer wrapOp("sqldb.ClaimRollouts", &err)
	if owner == "" || max < 1 {
		return nil, fmt.Errorf("owner and max required")
	}
	tx, err := s.db.beginBgTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	now := tx.now.UnixMilli()
	lock := ""
	if s.db.dialect == Postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	rows, err := tx.QueryContext(ctx, `UPDATE rollouts SET lease_owner = ?, lease_until = ?
WHERE (lease_owner = ? OR lease_until < ?) AND state IN `+activeStates+` AND id IN (
  SELECT id FROM rollouts WHERE state IN `+activeStates+` AND (lease_owner = ? OR lease_until < ?)
  ORDER BY lease_until, id LIMIT ?`+lock+`)
RETURNING id`, owner, now+lease.Milliseconds(), owner, now, owner, now, max)
	if err != nil {
		return nil, fmt.Errorf("claim rollouts: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return ids, tx.Commit()
}

// ReleaseRollouts implements herd.RolloutDriver.
func (s *RolloutService) ReleaseRollouts(ctx context.Context, owner string) (err error) {
	defer wrapOp("sqldb.ReleaseRollouts", &err)
	_, err = s.db.bdb.ExecContext(ctx, s.db.rebind(`UPDATE rollouts SET lease_owner = '', lease_until = 0 WHERE lease_owner = ?`), owner)
	return err
}

// stepper is one step of one rollout, inside its transaction.
type stepper struct {
	tx        *Tx
	r         *rolloutRow
	now       int64
	decisions int
	events    []*herd.Event
	next      time.Time
}

// StepRollout implements herd.RolloutDriver. The step renews the lease in
// the UPDATE that also takes the rollout's row lock, so an API action on
// the rollout waits for the step (and the step for it), and a controller
// whose lease was taken over writes nothing. Everything the step decides
// (member states, the desired configs and update requests it sends, the
// rollout's state, their events) commits at once, or not at all: a crash
// leaves the rollout where its last step left it.
func (s *RolloutService) StepRollout(ctx context.Context, owner string, id int64, lease time.Duration) (_ herd.RolloutStep, err error) {
	defer wrapOp("sqldb.StepRollout", &err)
	tx, err := s.db.beginBgTx(ctx)
	if err != nil {
		return herd.RolloutStep{}, err
	}
	defer tx.Rollback()
	now := tx.now.UnixMilli()
	r, err := scanRollout(now, tx.QueryRowContext(ctx, `UPDATE rollouts SET lease_until = ? WHERE id = ? AND lease_owner = ? RETURNING `+rolloutColumns,
		now+lease.Milliseconds(), id, owner))
	if errors.Is(err, sql.ErrNoRows) {
		return herd.RolloutStep{}, fmt.Errorf("rollout %d: %w", id, herd.ErrRolloutLeaseLost)
	} else if err != nil {
		return herd.RolloutStep{}, err
	}
	st := &stepper{tx: tx, r: r, now: now}
	if err := st.run(ctx); err != nil {
		return herd.RolloutStep{}, fmt.Errorf("rollout %d: %w", id, err)
	}
	if err := tx.saveRollout(ctx, r); err != nil {
		return herd.RolloutStep{}, err
	} else if err := tx.appendEvents(ctx, r.TenantID, st.events...); err != nil {
		return herd.RolloutStep{}, err
	}
	if err := tx.Commit(); err != nil {
		return herd.RolloutStep{}, err
	}
	return herd.RolloutStep{State: r.State, Decisions: st.decisions, Next: st.next}, nil
}

func (st *stepper) emit(typ string) { st.events = append(st.events, rolloutEvent(typ, st.r)) }

func (st *stepper) at() time.Time { return msToTime(st.now) }

func (st *stepper) run(ctx context.Context) error {
	r := st.r
	if r.State == herd.RolloutScheduled {
		if r.StartAt != nil && r.StartAt.UnixMilli() > st.now {
			st.next = *r.StartAt
			return nil
		}
		// The reboot budget is the members the rollout takes offline:
		// those offline already when it starts do not count against it.
		c := &memberCounts{}
		if err := st.tx.countOffline(ctx, r, c); err != nil {
			return err
		}
		r.offlineBase = c.offlineTotal()
		r.State, r.StartedAt = herd.RolloutRunning, ptrTime(st.at())
		st.emit(herd.EventRolloutStarted)
		st.emit(herd.EventRolloutWaveStarted)
	}
	if !herd.RolloutActive(r.State) {
		return nil
	}
	// What the devices answered since the last step, and who ran out of
	// time: the counts the gates read are those of this transaction.
	if err := st.answers(ctx); err != nil {
		return err
	} else if err := st.timeouts(ctx); err != nil {
		return err
	}
	if r.State == herd.RolloutRollingBack {
		return st.rollBack(ctx)
	}
	c, err := st.tx.countMembers(ctx, r)
	if err != nil {
		return err
	}
	told, failed := c.all(toldStates...), c.all(failedStates...)
	if e := r.Gates.FailureGate(r.Wave, told, failed, st.at()); !e.Passed || told > 0 {
		r.setEval(e)
		if !e.Passed {
			return st.abort(ctx, "failures reached the abort threshold: "+e.Detail)
		}
	}
	if r.State == herd.RolloutPaused {
		return nil
	}
	w := r.Wave
	if c.upTo(w, openStates...) == 0 {
		// The wave is done: every member up to it answered or timed out.
		passed, err := st.waveGates(ctx, c)
		if err != nil || !passed || !herd.RolloutActive(r.State) || r.Wave == w {
			return err
		}
	}
	if err := st.queue(ctx, c); err != nil {
		return err
	}
	return st.send(ctx)
}

// waveGates runs the gates of a finished wave: its success share, then
// its bake time, with the health gates evaluated through the bake and
// decided at its end. It reports whether the wave passed; the rollout
// then moves to the next wave, or has succeeded.
func (st *stepper) waveGates(ctx context.Context, c *memberCounts) (bool, error) {
	r := st.r
	w := r.Wave
	members := c.upTo(w, herd.MemberStates...)
	e := r.Gates.SuccessGate(w, members, c.upTo(w, appliedStates...), st.at())
	r.setEval(e)
	if !e.Passed {
		return false, st.abort(ctx, fmt.Sprintf("wave %d: %s, under success_min_percent", w+1, e.Detail))
	}
	if !r.bakeStartedAt.Valid {
		r.bakeStartedAt = sql.NullInt64{Int64: st.now, Valid: true}
	}
	healthy, err := st.health(ctx)
	if err != nil {
		return false, err
	}
	bakeEnd := r.bakeStartedAt.Int64 + r.Gates.BakeS*1000
	if st.now < bakeEnd {
		st.next = msToTime(bakeEnd)
		return false, nil
	}
	if !healthy {
		return false, st.abort(ctx, fmt.Sprintf("wave %d: a health gate failed at the end of the bake", w+1))
	}
	st.emit(herd.EventRolloutWavePassed)
	r.bakeStartedAt = sql.NullInt64{}
	if w+1 >= len(r.Waves) {
		r.State, r.FinishedAt = herd.RolloutSucceeded, ptrTime(st.at())
		st.emit(herd.EventRolloutSucceeded)
		return true, nil
	}
	r.Wave = w + 1
	st.emit(herd.EventRolloutWaveStarted)
	return true, nil
}

// health evaluates the health gates: the updated members (applied) against
// the control group (members not yet told), on the projection.
func (st *stepper) health(ctx context.Context) (bool, error) {
	r := st.r
	healthy := true
	for _, h := range r.Gates.Health {
		if _, ok := herd.DeviceFields[h.Field]; !ok {
			return false, fmt.Errorf("health gate on unknown field %q", h.Field)
		}
		agg := "COUNT(d." + h.Field + "), COALESCE(SUM(d." + h.Field + "), 0)"
		if h.Field == "online" {
			agg = "COUNT(*), COALESCE(SUM(CASE WHEN d.online THEN 1 ELSE 0 END), 0)"
		}
		rows, err := st.tx.QueryContext(ctx, `SELECT m.state, `+agg+` FROM rollout_members m JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
WHERE m.rollout_id = ? AND m.tenant_id = ? AND m.state IN ('applied', 'pending') GROUP BY m.state`, r.ID, r.TenantID)
		if err != nil {
			return false, fmt.Errorf("health gate %s: %w", h.Field, err)
		}
		var updated, control herd.FieldStats
		for rows.Next() {
			var state string
			var fs herd.FieldStats
			if err := rows.Scan(&state, &fs.N, &fs.Sum); err != nil {
				rows.Close()
				return false, err
			}
			if state == herd.MemberApplied {
				updated = fs
			} else {
				control = fs
			}
		}
		if err := rows.Close(); err != nil {
			return false, err
		}
		e := h.Evaluate(r.Wave, updated, control, st.at())
		r.setEval(e)
		healthy = healthy && e.Passed
	}
	return healthy, nil
}

// abort stops the rollout for reason, in this step.
func (st *stepper) abort(ctx context.Context, reason string) error {
	evs, err := st.tx.abortRollout(ctx, st.r, reason)
	st.events = append(st.events, evs...)
	return err
}

func ptrTime(t time.Time) *time.Time { return &t }

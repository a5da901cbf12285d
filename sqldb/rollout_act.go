package sqldb

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/herd-iot/herd"
)

// ActOnRollout implements herd.RolloutService. It takes the rollout's row
// lock, which every controller step takes first too, so an action and a
// step never interleave: the step after a pause sends nothing.
func (s *RolloutService) ActOnRollout(ctx context.Context, id int64, action string) (_ *herd.Rollout, err error) {
	defer wrapOp("sqldb.ActOnRollout", &err)
	a, err := actor(ctx)
	if err != nil {
		return nil, err
	}
	role := herd.RoleAdmin
	switch action {
	case herd.RolloutPause, herd.RolloutAbort:
		role = herd.RoleOperator
	case herd.RolloutResume, herd.RolloutCancel:
	default:
		return nil, herd.Errorf(herd.EINVALID, "action %q is not pause, resume, abort or cancel", action)
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	r, err := tx.findRollout(ctx, a, id)
	if err != nil {
		return nil, err
	}
	if s.db.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `SELECT id FROM rollouts WHERE id = ? AND tenant_id = ? FOR UPDATE`, r.ID, r.TenantID); err != nil {
			return nil, err
		}
		if r, err = tx.findRollout(ctx, a, id); err != nil {
			return nil, err
		}
	}
	if !a.Allows(r.TenantID, r.path, role) {
		return nil, herd.Errorf(herd.EFORBIDDEN, "%s role on the rollout's target node required to %s it", role, action)
	}
	conflict := func() (*herd.Rollout, error) {
		return nil, herd.Errorf(herd.ECONFLICT, "rollout %d is %s: it cannot %s", r.ID, r.State, action)
	}
	var evs []*herd.Event
	switch action {
	case herd.RolloutPause:
		switch r.State {
		case herd.RolloutPaused:
			return &r.Rollout, nil
		case herd.RolloutRunning, herd.RolloutScheduled:
			r.State = herd.RolloutPaused
			evs = append(evs, rolloutEvent(herd.EventRolloutPaused, r))
		default:
			return conflict()
		}
	case herd.RolloutResume:
		switch r.State {
		case herd.RolloutRunning, herd.RolloutScheduled:
			return &r.Rollout, nil
		case herd.RolloutPaused:
			// A rollout paused before it started resumes as scheduled:
			// its first step starts it.
			r.State = herd.RolloutRunning
			if r.StartedAt == nil {
				r.State = herd.RolloutScheduled
			}
			evs = append(evs, rolloutEvent(herd.EventRolloutResumed, r))
		default:
			return conflict()
		}
	case herd.RolloutAbort:
		switch r.State {
		case herd.RolloutAborted, herd.RolloutRollingBack:
			return &r.Rollout, nil
		case herd.RolloutRunning, herd.RolloutPaused, herd.RolloutScheduled:
			if evs, err = tx.abortRollout(ctx, r, "aborted by a user"); err != nil {
				return nil, err
			}
		default:
			return conflict()
		}
	case herd.RolloutCancel:
		switch r.State {
		case herd.RolloutCancelled:
			return &r.Rollout, nil
		case herd.RolloutScheduled, herd.RolloutRunning, herd.RolloutPaused, herd.RolloutRollingBack:
			if err := tx.cancelQueued(ctx, r); err != nil {
				return nil, err
			}
			r.State = herd.RolloutCancelled
			r.FinishedAt = &tx.now
			evs = append(evs, rolloutEvent(herd.EventRolloutCancelled, r))
		default:
			return conflict()
		}
	}
	if err := tx.saveRollout(ctx, r); err != nil {
		return nil, err
	} else if err := tx.appendEvents(ctx, r.TenantID, evs...); err != nil {
		return nil, err
	}
	return &r.Rollout, tx.Commit()
}

// abortRollout stops the rollout: members waiting out their start jitter
// are never told, and with on_abort rollback it goes on to roll back what
// it applied (the controller's next steps do that).
func (tx *Tx) abortRollout(ctx context.Context, r *rolloutRow, reason string) ([]*herd.Event, error) {
	if err := tx.cancelQueued(ctx, r); err != nil {
		return nil, err
	}
	r.State, r.Reason = herd.RolloutAborted, reason
	evs := []*herd.Event{rolloutEvent(herd.EventRolloutAborted, r)}
	if r.OnAbort == herd.OnAbortRollback {
		r.State = herd.RolloutRollingBack
		evs = append(evs, rolloutEvent(herd.EventRolloutRollingBack, r))
	} else {
		r.FinishedAt = &tx.now
	}
	return evs, nil
}

func (tx *Tx) cancelQueued(ctx context.Context, r *rolloutRow) error {
	_, err := tx.ExecContext(ctx, `UPDATE rollout_members SET state = 'cancelled' WHERE rollout_id = ? AND tenant_id = ? AND state = 'queued'`, r.ID, r.TenantID)
	if err != nil {
		return fmt.Errorf("cancel queued members: %w", err)
	}
	return nil
}

// saveRollout writes the controller's columns of the rollout.
func (tx *Tx) saveRollout(ctx context.Context, r *rolloutRow) error {
	evals, err := json.Marshal(r.Evaluations)
	if err != nil {
		return err
	}
	if r.Evaluations == nil {
		evals = []byte("[]")
	}
	toMs := func(p *time.Time) any {
		if p == nil {
			return nil
		}
		return p.UnixMilli()
	}
	var bake any
	if r.bakeStartedAt.Valid {
		bake = r.bakeStartedAt.Int64
	}
	_, err = tx.ExecContext(ctx, `UPDATE rollouts SET state = ?, wave = ?, bake_started_at = ?, reason = ?, offline_base = ?, gate_evals = ?, started_at = ?, finished_at = ?
WHERE id = ? AND tenant_id = ?`, r.State, r.Wave, bake, r.Reason, r.offlineBase, string(evals), toMs(r.StartedAt), toMs(r.FinishedAt), r.ID, r.TenantID)
	if err != nil {
		return fmt.Errorf("save rollout %d: %w", r.ID, err)
	}
	return nil
}

// setEval records a gate's evaluation, replacing the last one of that gate.
func (r *rolloutRow) setEval(e herd.GateEval) {
	for i, old := range r.Evaluations {
		if old.Gate == e.Gate {
			r.Evaluations[i] = e
			return
		}
	}
	r.Evaluations = append(r.Evaluations, e)
}

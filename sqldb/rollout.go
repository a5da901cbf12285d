package sqldb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// RolloutService implements herd.RolloutService and herd.RolloutDriver.
type RolloutService struct{ db *DB }

var (
	_ herd.RolloutService = (*RolloutService)(nil)
	_ herd.RolloutDriver  = (*RolloutService)(nil)
)

// NewRolloutService returns a RolloutService on db.
func NewRolloutService(db *DB) *RolloutService { return &RolloutService{db: db} }

// activeStates is the SQL list of the states a controller works on.
const activeStates = `('scheduled', 'running', 'paused', 'rolling_back')`

const rolloutColumns = `id, tenant_id, path, name, kind, spec, target_version, profile_id, firmware_id, state, wave,
bake_started_at, reason, members, offline_base, gate_evals, start_at, created_at, started_at, finished_at, lease_owner, lease_until`

// rolloutRow is a rollout as the store keeps it.
type rolloutRow struct {
	herd.Rollout
	path                  string
	profileID, firmwareID int64
	bakeStartedAt         sql.NullInt64
	offlineBase           int64
}

// scanRollout reads a rollout row; now (unix ms, the store's clock, which
// wrote the lease) says whether its lease is held.
func scanRollout(now int64, sc rowScanner) (*rolloutRow, error) {
	var r rolloutRow
	var spec, evals string
	var profile, firmware, startAt, started, finished sql.NullInt64
	var created, leaseUntil int64
	var owner string
	if err := sc.Scan(&r.ID, &r.TenantID, &r.path, &r.Name, &r.Kind, &spec, &r.TargetVersion, &profile, &firmware, &r.State, &r.Wave,
		&r.bakeStartedAt, &r.Reason, &r.Members, &r.offlineBase, &evals, &startAt, &created, &started, &finished, &owner, &leaseUntil); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(spec), &r.RolloutSpec); err != nil {
		return nil, fmt.Errorf("rollout %d: spec: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(evals), &r.Evaluations); err != nil {
		return nil, fmt.Errorf("rollout %d: gate evaluations: %w", r.ID, err)
	}
	r.profileID, r.firmwareID = profile.Int64, firmware.Int64
	if herd.RolloutActive(r.State) && leaseUntil > now {
		r.Driver = owner
	}
	r.CreatedAt = msToTime(created)
	r.StartAt, r.StartedAt, r.FinishedAt = msPtr(startAt), msPtr(started), msPtr(finished)
	return &r, nil
}

func msPtr(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := msToTime(v.Int64)
	return &t
}

// CreateRollout implements herd.RolloutService. The members are chosen in
// one INSERT … SELECT over the target's scope and filters: the store
// reads the devices, no list of them travels. Their order spreads each
// wave across sites: the first device of every site comes before the
// second of any, sites in an order mixed by the rollout's id.
func (s *RolloutService) CreateRollout(ctx context.Context, r *herd.Rollout) (err error) {
	defer wrapOp("sqldb.CreateRollout", &err)
	a, err := actor(ctx)
	if err != nil {
		return err
	} else if err := r.Validate(0); err != nil {
		return err
	}
	filters, err := r.Filters()
	if err != nil {
		return err
	}
	tx, err := s.db.beginTx(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	n, err := tx.findNode(ctx, a, r.Target.NodeID)
	if err != nil {
		return err
	} else if n.TenantID != r.TenantID {
		return herd.Errorf(herd.ENOTFOUND, "node %d not found", r.Target.NodeID)
	} else if !a.Allows(n.TenantID, n.Path, herd.RoleAdmin) {
		return herd.Errorf(herd.EFORBIDDEN, "admin role on node %d required to start a rollout under it", n.ID)
	}
	var profileID, firmwareID any
	switch r.Kind {
	case herd.RolloutFirmware:
		f, err := scanFirmware(tx.QueryRowContext(ctx, `SELECT `+firmwareColumns+` FROM firmware WHERE id = ? AND tenant_id = ?`, r.Payload.FirmwareID, r.TenantID))
		if errors.Is(err, sql.ErrNoRows) {
			return herd.Errorf(herd.ENOTFOUND, "firmware %d not found", r.Payload.FirmwareID)
		} else if err != nil {
			return err
		}
		// An image is built for one model: whatever the filters say, it
		// goes to no other.
		filters = append(filters, herd.DeviceFilter{Field: "model", Op: herd.OpEq, Values: []any{f.Model}})
		r.TargetVersion, firmwareID = f.Version, f.ID
	case herd.RolloutConfig:
		if _, err := tx.findVersion(ctx, r.TenantID, r.Payload.ProfileID, r.Payload.Version); err != nil {
			return err
		}
		r.TargetVersion, profileID = strconv.FormatInt(r.Payload.Version, 10), r.Payload.ProfileID
	}
	spec, err := json.Marshal(r.RolloutSpec)
	if err != nil {
		return err
	}
	r.State, r.Wave, r.CreatedAt = herd.RolloutScheduled, 0, tx.now
	var startAt any
	if r.StartAt != nil {
		startAt = r.StartAt.UnixMilli()
	}
	r.ID, err = tx.insertID(ctx, `INSERT INTO rollouts (tenant_id, node_id, path, name, kind, spec, target_version, profile_id, firmware_id, state, start_at, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, r.TenantID, n.ID, n.Path, r.Name, r.Kind, string(spec), r.TargetVersion, profileID, firmwareID, r.State, startAt, tx.now.UnixMilli())
	if err != nil {
		return err
	}
	if r.Members, err = tx.chooseMembers(ctx, r, n.Path, filters); err != nil {
		return err
	} else if r.Members == 0 {
		return herd.Errorf(herd.EINVALID, "the target matches no devices (devices in another active %s rollout are left out)", r.Kind)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE rollouts SET members = ? WHERE id = ? AND tenant_id = ?`, r.Members, r.ID, r.TenantID); err != nil {
		return err
	}
	if err := tx.appendEvents(ctx, r.TenantID, rolloutEvent(herd.EventRolloutCreated, &rolloutRow{Rollout: *r, path: n.Path})); err != nil {
		return err
	}
	return tx.Commit()
}

// chooseMembers records the rollout's members and their waves.
func (tx *Tx) chooseMembers(ctx context.Context, r *herd.Rollout, path string, filters []herd.DeviceFilter) (int64, error) {
	var where strings.Builder
	args := []any{r.ID, r.ID}
	args = append(args, whereScope(&where, herd.Scope{TenantID: r.TenantID, Paths: []string{path}})[0:]...)
	args = whereFilters(&where, filters, args)
	args = append(args, r.Kind)
	res, err := tx.ExecContext(ctx, `INSERT INTO rollout_members (rollout_id, tenant_id, device_id, ord, wave, state)
SELECT ?, tenant_id, id, ROW_NUMBER() OVER (ORDER BY site_rank, site_mix, id), 0, 'pending'
FROM (
  SELECT id, tenant_id, ROW_NUMBER() OVER (PARTITION BY node_id ORDER BY id) AS site_rank,
         ((node_id % 1000003) * 7919 + ?) % 1000003 AS site_mix
  FROM devices
  WHERE `+where.String()+`
    AND NOT EXISTS (SELECT 1 FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id AND r.tenant_id = m.tenant_id
      WHERE m.tenant_id = devices.tenant_id AND m.device_id = devices.id AND r.kind = ? AND r.state IN `+activeStates+`)
) s`, args...)
	if err != nil {
		return 0, fmt.Errorf("choose members: %w", err)
	}
	members, err := res.RowsAffected()
	if err != nil || members == 0 {
		return members, err
	}
	bounds := herd.WaveBounds(r.Waves, members)
	var c strings.Builder
	c.WriteString("CASE")
	wargs := make([]any, 0, 2*len(bounds)+2)
	for i, b := range bounds {
		c.WriteString(" WHEN ord <= ? THEN ?")
		wargs = append(wargs, b, i)
	}
	c.WriteString(" ELSE 0 END")
	if _, err := tx.ExecContext(ctx, `UPDATE rollout_members SET wave = `+c.String()+` WHERE rollout_id = ? AND tenant_id = ?`, append(wargs, r.ID, r.TenantID)...); err != nil {
		return 0, fmt.Errorf("assign waves: %w", err)
	}
	return members, nil
}

// rolloutEventPayload is the payload of every rollout.* event.
type rolloutEventPayload struct {
	RolloutID int64  `json:"rollout_id,string"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	State     string `json:"state"`
	Wave      int    `json:"wave"`
	Members   int64  `json:"members"`
	Target    string `json:"target_version"`
	Reason    string `json:"reason,omitempty"`
}

func rolloutEvent(typ string, r *rolloutRow) *herd.Event {
	ev := newEvent(typ, herd.EventSubjectRollout, r.ID, r.path, rolloutEventPayload{RolloutID: r.ID, Name: r.Name, Kind: r.Kind,
		State: r.State, Wave: r.Wave, Members: r.Members, Target: r.TargetVersion, Reason: r.Reason})
	ev.TenantID = r.TenantID
	return ev
}

// findRollout reads a rollout the actor sees (viewer on its target node).
func (tx *Tx) findRollout(ctx context.Context, a *herd.Actor, id int64) (*rolloutRow, error) {
	cond, args := tenantCond(a, "tenant_id")
	r, err := scanRollout(tx.now.UnixMilli(), tx.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = ?`+cond, append([]any{id}, args...)...))
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !a.Allows(r.TenantID, r.path, herd.RoleViewer)) {
		return nil, herd.Errorf(herd.ENOTFOUND, "rollout %d not found", id)
	}
	return r, err
}

// FindRolloutByID implements herd.RolloutService.
func (s *RolloutService) FindRolloutByID(ctx context.Context, id int64) (_ *herd.Rollout, err error) {
	defer wrapOp("sqldb.FindRolloutByID", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.Rollout, error) {
		r, err := tx.findRollout(ctx, a, id)
		if err != nil {
			return nil, err
		}
		c, err := tx.countMembers(ctx, r)
		if err != nil {
			return nil, err
		} else if err := tx.countOffline(ctx, r, c); err != nil {
			return nil, err
		}
		r.Progress = c.progress(r)
		return &r.Rollout, nil
	})
}

// FindRollouts implements herd.RolloutService.
func (s *RolloutService) FindRollouts(ctx context.Context, tenantID, before int64, limit int) (_ *herd.ConfigPage[*herd.Rollout], err error) {
	defer wrapOp("sqldb.FindRollouts", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigPage[*herd.Rollout], error) {
		if tenantID == 0 && !a.Super {
			tenantID = a.TenantID
		}
		limit, err := checkPage(limit)
		if err != nil {
			return nil, err
		} else if !a.SeesTenant(tenantID) {
			return nil, herd.Errorf(herd.ENOTFOUND, "tenant %d not found", tenantID)
		}
		var where strings.Builder
		var args []any
		if a.Super {
			where.WriteString("tenant_id = ?")
			args = []any{tenantID}
		} else {
			scope := a.Scope(herd.RoleViewer)
			if scope.Empty() {
				return &herd.ConfigPage[*herd.Rollout]{Items: []*herd.Rollout{}}, nil
			}
			args = whereScope(&where, scope)
		}
		if before > 0 {
			where.WriteString(" AND id < ?")
			args = append(args, before)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE `+where.String()+` ORDER BY id DESC LIMIT ?`, append(args, limit+1)...)
		if err != nil {
			return nil, err
		}
		return collectPage(rows, limit, func(sc rowScanner) (*herd.Rollout, error) {
			r, err := scanRollout(tx.now.UnixMilli(), sc)
			if err != nil {
				return nil, err
			}
			return &r.Rollout, nil
		}, func(r *herd.Rollout) int64 { return r.ID })
	})
}

// FindRolloutMembers implements herd.RolloutService.
func (s *RolloutService) FindRolloutMembers(ctx context.Context, id int64, state string, after int64, limit int) (_ *herd.ConfigPage[*herd.RolloutMember], err error) {
	defer wrapOp("sqldb.FindRolloutMembers", &err)
	return asActor(ctx, s.db, func(tx *Tx, a *herd.Actor) (*herd.ConfigPage[*herd.RolloutMember], error) {
		limit, err := checkPage(limit)
		if err != nil {
			return nil, err
		}
		if state != "" && !slices.Contains(herd.MemberStates, state) {
			return nil, herd.Errorf(herd.EINVALID, "state %q is not a member state (%s)", state, strings.Join(herd.MemberStates, " "))
		}
		r, err := tx.findRollout(ctx, a, id)
		if err != nil {
			return nil, err
		}
		q, args := `SELECT `+memberColumns+` FROM rollout_members m JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
WHERE m.rollout_id = ? AND m.tenant_id = ? AND m.ord > ?`, []any{r.ID, r.TenantID, after}
		if state != "" {
			q, args = q+` AND m.state = ?`, append(args, state)
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY m.ord LIMIT ?`, append(args, limit+1)...)
		if err != nil {
			return nil, err
		}
		return collectPage(rows, limit, func(sc rowScanner) (*herd.RolloutMember, error) { return scanMember(sc, r.Kind) }, func(m *herd.RolloutMember) int64 { return m.Ord })
	})
}

const memberColumns = `m.rollout_id, m.device_id, d.key, m.ord, m.wave, m.state, m.attempts, m.error, m.ota_state, m.due_at, m.told_at, m.answered_at,
m.prev_version, m.prev_firmware`

func scanMember(sc rowScanner, kind string) (*herd.RolloutMember, error) {
	var m herd.RolloutMember
	var due, told, answered, prevVersion sql.NullInt64
	var prevFirmware sql.NullString
	if err := sc.Scan(&m.RolloutID, &m.DeviceID, &m.DeviceKey, &m.Ord, &m.Wave, &m.State, &m.Attempts, &m.Error, &m.OTAState,
		&due, &told, &answered, &prevVersion, &prevFirmware); err != nil {
		return nil, err
	}
	m.DueAt, m.ToldAt, m.AnsweredAt = msPtr(due), msPtr(told), msPtr(answered)
	if kind == herd.RolloutConfig && prevVersion.Valid {
		m.Previous = strconv.FormatInt(prevVersion.Int64, 10)
	} else if kind == herd.RolloutFirmware {
		m.Previous = prevFirmware.String
	}
	return &m, nil
}

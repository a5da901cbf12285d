package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"

	"github.com/herd-iot/herd"
)

// What a step does to members. Every statement names the rollout and its
// tenant; the members it touches are chosen by their state and order in
// SQL, never by a list of ids.

// exec runs a member statement and counts the rows it changed as
// decisions.
func (st *stepper) exec(ctx context.Context, what, q string, args ...any) (int64, error) {
	res, err := st.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	st.decisions += int(n)
	return n, err
}

// answers moves told members that answered to applied or failed, and
// reverting members to reverted or revert_failed, from what ingest
// committed: a config's answer is the device's reported version and
// status; a firmware update succeeded when the device is back online
// reporting the new firmware, and failed when it reported failed.
func (st *stepper) answers(ctx context.Context) error {
	r := st.r
	if r.Kind == herd.RolloutConfig {
		target, _ := strconv.ParseInt(r.TargetVersion, 10, 64)
		for _, q := range []struct {
			from, version, applied, failed string
			args                           []any
		}{
			{herd.MemberTold, "?", herd.MemberApplied, herd.MemberFailed, []any{target}},
			{herd.MemberReverting, "rollout_members.prev_version", herd.MemberReverted, herd.MemberRevertFailed, nil},
		} {
			args := append([]any{q.applied, q.failed, st.now}, q.args...)
			if _, err := st.exec(ctx, "config answers", `UPDATE rollout_members SET state = CASE WHEN c.reported_status = 'applied' THEN ? ELSE ? END,
answered_at = ?, error = c.reported_error
FROM device_configs c
WHERE c.device_id = rollout_members.device_id AND c.tenant_id = rollout_members.tenant_id AND c.reported_version = `+q.version+`
  AND rollout_members.rollout_id = ? AND rollout_members.tenant_id = ? AND rollout_members.state = ?`,
				append(args, r.ID, r.TenantID, q.from)...); err != nil {
				return err
			}
		}
		return nil
	}
	for _, q := range []struct{ from, version, applied, failed string }{
		{herd.MemberTold, "?", herd.MemberApplied, herd.MemberFailed},
		{herd.MemberReverting, "rollout_members.prev_firmware", herd.MemberReverted, herd.MemberRevertFailed},
	} {
		args := []any{q.applied, st.now}
		if q.version == "?" {
			args = append(args, r.TargetVersion)
		}
		if _, err := st.exec(ctx, "firmware answers", `UPDATE rollout_members SET state = ?, answered_at = ?
WHERE EXISTS (SELECT 1 FROM devices d WHERE d.id = rollout_members.device_id AND d.tenant_id = rollout_members.tenant_id AND d.online AND d.firmware = `+q.version+`)
  AND rollout_id = ? AND tenant_id = ? AND state = ?`, append(args, r.ID, r.TenantID, q.from)...); err != nil {
			return err
		}
		if _, err := st.exec(ctx, "firmware failures", `UPDATE rollout_members SET state = ?, answered_at = ?
WHERE rollout_id = ? AND tenant_id = ? AND state = ? AND ota_state = 'failed'`, q.failed, st.now, r.ID, r.TenantID, q.from); err != nil {
			return err
		}
	}
	return nil
}

// timeouts fails the members told longer than answer_timeout_s ago.
func (st *stepper) timeouts(ctx context.Context) error {
	r := st.r
	cut := st.now - r.Gates.AnswerTimeoutS*1000
	msg := fmt.Sprintf("no answer within answer_timeout_s (%d s)", r.Gates.AnswerTimeoutS)
	for _, q := range [][2]string{{herd.MemberTold, herd.MemberTimedOut}, {herd.MemberReverting, herd.MemberRevertFailed}} {
		if _, err := st.exec(ctx, "time out members", `UPDATE rollout_members SET state = ?, answered_at = ?, error = ?
WHERE rollout_id = ? AND tenant_id = ? AND state = ? AND told_at < ?`, q[1], st.now, msg, r.ID, r.TenantID, q[0], cut); err != nil {
			return err
		}
	}
	return nil
}

// queue gives free slots to the next pending members of the waves sent so
// far, each with its start jitter, unless more members are offline than
// the reboot budget allows. Queuing also records what a rollback would
// give the device back.
func (st *stepper) queue(ctx context.Context, c *memberCounts) error {
	r := st.r
	room := r.MaxInFlight - c.all(inFlightStates...)
	if room <= 0 || c.upTo(r.Wave, herd.MemberPending) == 0 {
		return nil
	}
	if err := st.tx.countOffline(ctx, r, c); err != nil {
		return err
	}
	offline, budget := c.offlineTotal(), r.MaxOffline()
	gone := max(offline-r.offlineBase, 0)
	e := herd.GateEval{Gate: herd.GateRebootBudget, Wave: r.Wave, Value: pct(gone, r.Members), Threshold: r.MaxOfflinePercent,
		Passed: gone <= budget, At: st.at(), Detail: fmt.Sprintf("%d of %d members offline, %d of them beyond the %d offline at the start (sending pauses over %d)",
			offline, r.Members, gone, r.offlineBase, budget)}
	r.setEval(e)
	if !e.Passed {
		return nil
	}
	room = min(room, maxSendsPerStep)
	// A pseudo-random delay per member, the same whenever it is computed:
	// a multiplicative hash of the device id (within int64 for any id).
	jitter := "0"
	if r.StartJitterS > 0 {
		jitter = "(((rollout_members.device_id + rollout_members.rollout_id * 7919) % 2147483647) * 48271 % 2147483647) % " + strconv.FormatInt(r.StartJitterS*1000+1, 10)
	}
	prev := `prev_profile_id = (SELECT c.profile_id FROM device_configs c WHERE c.device_id = rollout_members.device_id AND c.tenant_id = rollout_members.tenant_id),
  prev_version = (SELECT c.desired_version FROM device_configs c WHERE c.device_id = rollout_members.device_id AND c.tenant_id = rollout_members.tenant_id)`
	if r.Kind == herd.RolloutFirmware {
		prev = `prev_firmware = (SELECT d.firmware FROM devices d WHERE d.id = rollout_members.device_id AND d.tenant_id = rollout_members.tenant_id),
  prev_firmware_id = (SELECT f.id FROM devices d JOIN firmware f ON f.tenant_id = d.tenant_id AND f.model = d.model AND f.version = d.firmware
    WHERE d.id = rollout_members.device_id AND d.tenant_id = rollout_members.tenant_id)`
	}
	// The first room pending members are those up to the room-th one's
	// ord: a scalar subquery, run once, where "ord IN (… LIMIT ?)" lets a
	// planner without statistics (a rollout's members are new) re-run the
	// subquery for every pending member, which at 100,000 members took
	// PostgreSQL minutes a step.
	_, err := st.exec(ctx, "queue members", `UPDATE rollout_members SET state = 'queued', due_at = CAST(? AS BIGINT) + `+jitter+`, `+prev+`
WHERE rollout_id = ? AND tenant_id = ? AND state = 'pending' AND wave <= ? AND ord <= (
  SELECT MAX(ord) FROM (SELECT ord FROM rollout_members WHERE rollout_id = ? AND tenant_id = ? AND state = 'pending' AND wave <= ? ORDER BY ord LIMIT ?) AS first_free)`,
		st.now, r.ID, r.TenantID, r.Wave, r.ID, r.TenantID, r.Wave, room)
	return err
}

func pct(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// sendable is a member due to be told, with what its event needs.
type sendable struct {
	deviceID  int64
	key, path string
	ord       int64
}

// send tells the queued members whose jitter ran out: a config rollout
// sets their desired config, a firmware rollout asks their gateway to
// send the update, each with its event. A member already running the
// target is applied without being told.
func (st *stepper) send(ctx context.Context) error {
	r := st.r
	already := `EXISTS (SELECT 1 FROM devices d WHERE d.id = rollout_members.device_id AND d.tenant_id = rollout_members.tenant_id AND d.firmware = ?)`
	alreadyArgs := []any{r.TargetVersion}
	if r.Kind == herd.RolloutConfig {
		already = `EXISTS (SELECT 1 FROM device_configs c WHERE c.device_id = rollout_members.device_id AND c.tenant_id = rollout_members.tenant_id
  AND c.profile_id = ? AND c.desired_version = ? AND c.reported_version = ? AND c.reported_status = 'applied')`
		alreadyArgs = []any{r.profileID, r.Payload.Version, r.Payload.Version}
	}
	if _, err := st.exec(ctx, "members already on the target", `UPDATE rollout_members SET state = 'applied', told_at = ?, answered_at = ?
WHERE rollout_id = ? AND tenant_id = ? AND state = 'queued' AND due_at <= ? AND `+already,
		append([]any{st.now, st.now, r.ID, r.TenantID, st.now}, alreadyArgs...)...); err != nil {
		return err
	}
	if err := st.wakeForJitter(ctx); err != nil {
		return err
	}
	due, err := st.due(ctx, herd.MemberQueued, "m.due_at <= ?", st.now)
	if err != nil || len(due) == 0 {
		return err
	}
	last := due[len(due)-1].ord
	if r.Kind == herd.RolloutConfig {
		v, err := st.tx.findVersion(ctx, r.TenantID, r.profileID, r.Payload.Version)
		if err != nil {
			return err
		}
		p, err := scanProfile(st.tx.QueryRowContext(ctx, `SELECT `+profileColumns+` FROM config_profiles WHERE id = ? AND tenant_id = ?`, r.profileID, r.TenantID))
		if err != nil {
			return fmt.Errorf("profile %d: %w", r.profileID, err)
		}
		if _, err := st.tx.ExecContext(ctx, `INSERT INTO device_configs (device_id, tenant_id, profile_id, desired_version, desired_at)
SELECT device_id, tenant_id, ?, ?, ? FROM rollout_members WHERE rollout_id = ? AND tenant_id = ? AND state = 'queued' AND due_at <= ? AND ord <= ?
ON CONFLICT (device_id) DO UPDATE SET profile_id = excluded.profile_id, desired_version = excluded.desired_version, desired_at = excluded.desired_at`,
			r.profileID, v.Version, st.now, r.ID, r.TenantID, st.now, last); err != nil {
			return fmt.Errorf("set desired configs: %w", err)
		}
		for _, m := range due {
			st.deviceEvent(herd.EventDeviceConfigDesired, m, herd.ConfigDesiredEvent{DeviceID: m.deviceID, DeviceKey: m.key, ProfileID: p.ID, Profile: p.Name, Version: v.Version, Document: v.Document})
		}
	} else {
		f, err := scanFirmware(st.tx.QueryRowContext(ctx, `SELECT `+firmwareColumns+` FROM firmware WHERE id = ? AND tenant_id = ?`, r.firmwareID, r.TenantID))
		if err != nil {
			return fmt.Errorf("firmware %d: %w", r.firmwareID, err)
		}
		for _, m := range due {
			st.deviceEvent(herd.EventDeviceOTARequested, m, herd.OTARequest{DeviceID: m.deviceID, DeviceKey: m.key, RolloutID: r.ID, Firmware: *f})
		}
	}
	_, err = st.exec(ctx, "tell members", `UPDATE rollout_members SET state = 'told', told_at = ?, attempts = attempts + 1, ota_state = ''
WHERE rollout_id = ? AND tenant_id = ? AND state = 'queued' AND due_at <= ? AND ord <= ?`, st.now, r.ID, r.TenantID, st.now, last)
	return err
}

// wakeForJitter asks for the next step when the next queued member's
// start jitter runs out, so that it is told then rather than at the
// controller's next poll.
func (st *stepper) wakeForJitter(ctx context.Context) error {
	if st.r.StartJitterS == 0 {
		return nil // every member is due when it is queued
	}
	var next sql.NullInt64
	if err := st.tx.QueryRowContext(ctx, `SELECT MIN(due_at) FROM rollout_members WHERE rollout_id = ? AND tenant_id = ? AND state = 'queued' AND due_at > ?`,
		st.r.ID, st.r.TenantID, st.now).Scan(&next); err != nil {
		return fmt.Errorf("next member due: %w", err)
	}
	if t := msToTime(next.Int64); next.Valid && (st.next.IsZero() || t.Before(st.next)) {
		st.next = t
	}
	return nil
}

// due reads the first members in state whose cond holds, in member order.
func (st *stepper) due(ctx context.Context, state, cond string, args ...any) ([]sendable, error) {
	r := st.r
	rows, err := st.tx.QueryContext(ctx, `SELECT m.device_id, d.key, d.path, m.ord FROM rollout_members m JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
WHERE m.rollout_id = ? AND m.tenant_id = ? AND m.state = ? AND `+cond+` ORDER BY m.ord LIMIT ?`,
		append(append([]any{r.ID, r.TenantID, state}, args...), maxSendsPerStep)...)
	if err != nil {
		return nil, fmt.Errorf("members to tell: %w", err)
	}
	defer rows.Close()
	var out []sendable
	for rows.Next() {
		var m sendable
		if err := rows.Scan(&m.deviceID, &m.key, &m.path, &m.ord); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func (st *stepper) deviceEvent(typ string, m sendable, payload any) {
	ev := newEvent(typ, herd.EventSubjectDevice, m.deviceID, m.path, payload)
	ev.TenantID = st.r.TenantID
	st.events = append(st.events, ev)
}

// rollBack gives the members that applied their previous config or
// firmware back, at most max_in_flight at a time, and finishes when none
// is left to give back or waiting for an answer. A config rollout also
// points the desired config of members that failed or timed out back at
// what it was (they get it when they next subscribe), so that no device
// is left wanting the version the rollout aborted.
func (st *stepper) rollBack(ctx context.Context) error {
	r := st.r
	if r.Kind == herd.RolloutConfig {
		if _, err := st.tx.ExecContext(ctx, `UPDATE device_configs SET profile_id = m.prev_profile_id, desired_version = m.prev_version, desired_at = ?
FROM rollout_members m
WHERE m.device_id = device_configs.device_id AND m.tenant_id = device_configs.tenant_id AND m.rollout_id = ? AND m.tenant_id = ?
  AND m.state IN ('failed', 'timed_out') AND device_configs.tenant_id = ? AND device_configs.profile_id = ? AND device_configs.desired_version = ?`,
			st.now, r.ID, r.TenantID, r.TenantID, r.profileID, r.Payload.Version); err != nil {
			return fmt.Errorf("restore desired configs: %w", err)
		}
	}
	noPrev, why := "prev_version IS NULL", "the device had no config before the rollout to give back"
	if r.Kind == herd.RolloutFirmware {
		noPrev, why = "prev_firmware_id IS NULL", "the firmware the device ran before is not registered (POST /v1/firmware), so there is none to send back"
	}
	if _, err := st.exec(ctx, "members with nothing to give back", `UPDATE rollout_members SET state = 'revert_failed', answered_at = ?, error = ?
WHERE rollout_id = ? AND tenant_id = ? AND state = 'applied' AND `+noPrev, st.now, why, r.ID, r.TenantID); err != nil {
		return err
	}
	c, err := st.tx.countMembers(ctx, r)
	if err != nil {
		return err
	}
	if room := min(r.MaxInFlight-c.all(herd.MemberReverting), maxSendsPerStep); room > 0 && c.all(herd.MemberApplied) > 0 {
		if err := st.revert(ctx, room); err != nil {
			return err
		}
		if c, err = st.tx.countMembers(ctx, r); err != nil {
			return err
		}
	}
	if c.all(herd.MemberApplied, herd.MemberReverting, herd.MemberTold, herd.MemberQueued) == 0 {
		r.State, r.FinishedAt = herd.RolloutRolledBack, ptrTime(st.at())
		st.emit(herd.EventRolloutRolledBack)
	}
	return nil
}

// revert tells up to room applied members to go back.
func (st *stepper) revert(ctx context.Context, room int64) error {
	r := st.r
	due, err := st.due(ctx, herd.MemberApplied, "1 = 1")
	if err != nil || len(due) == 0 {
		return err
	}
	due = due[:min(int64(len(due)), room)]
	last := due[len(due)-1].ord
	if r.Kind == herd.RolloutConfig {
		if _, err := st.tx.ExecContext(ctx, `UPDATE device_configs SET profile_id = m.prev_profile_id, desired_version = m.prev_version, desired_at = ?
FROM rollout_members m
WHERE m.device_id = device_configs.device_id AND m.tenant_id = device_configs.tenant_id AND m.rollout_id = ? AND m.tenant_id = ?
  AND m.state = 'applied' AND m.ord <= ? AND device_configs.tenant_id = ?`, st.now, r.ID, r.TenantID, last, r.TenantID); err != nil {
			return fmt.Errorf("restore desired configs: %w", err)
		}
		if err := st.revertEvents(ctx, last, `SELECT m.device_id, d.key, d.path, p.id, p.name, v.version, v.document
FROM rollout_members m
JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
JOIN config_profiles p ON p.id = m.prev_profile_id AND p.tenant_id = m.tenant_id
JOIN config_versions v ON v.profile_id = m.prev_profile_id AND v.version = m.prev_version AND v.tenant_id = m.tenant_id
WHERE m.rollout_id = ? AND m.tenant_id = ? AND m.state = 'applied' AND m.ord <= ?`, func(m sendable, sc rowScanner) error {
			var c herd.ConfigDesiredEvent
			var doc string
			if err := sc.Scan(&c.DeviceID, &c.DeviceKey, &m.path, &c.ProfileID, &c.Profile, &c.Version, &doc); err != nil {
				return err
			}
			c.Document = []byte(doc)
			m.deviceID, m.key = c.DeviceID, c.DeviceKey
			st.deviceEvent(herd.EventDeviceConfigDesired, m, c)
			return nil
		}); err != nil {
			return err
		}
	} else {
		if err := st.revertEvents(ctx, last, `SELECT m.device_id, d.key, d.path, `+firmwareColumnsOf("f")+`
FROM rollout_members m
JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
JOIN firmware f ON f.id = m.prev_firmware_id AND f.tenant_id = m.tenant_id
WHERE m.rollout_id = ? AND m.tenant_id = ? AND m.state = 'applied' AND m.ord <= ?`, func(m sendable, sc rowScanner) error {
			var o herd.OTARequest
			var created int64
			f := &o.Firmware
			if err := sc.Scan(&o.DeviceID, &o.DeviceKey, &m.path, &f.ID, &f.TenantID, &f.Model, &f.Version, &f.URL, &f.SHA256, &f.Size, &created); err != nil {
				return err
			}
			f.CreatedAt, o.RolloutID = msToTime(created), r.ID
			m.deviceID, m.key = o.DeviceID, o.DeviceKey
			st.deviceEvent(herd.EventDeviceOTARequested, m, o)
			return nil
		}); err != nil {
			return err
		}
	}
	_, err = st.exec(ctx, "revert members", `UPDATE rollout_members SET state = 'reverting', told_at = ?, revert_attempts = revert_attempts + 1, ota_state = ''
WHERE rollout_id = ? AND tenant_id = ? AND state = 'applied' AND ord <= ?`, st.now, r.ID, r.TenantID, last)
	return err
}

func (st *stepper) revertEvents(ctx context.Context, last int64, q string, each func(sendable, rowScanner) error) error {
	rows, err := st.tx.QueryContext(ctx, q, st.r.ID, st.r.TenantID, last)
	if err != nil {
		return fmt.Errorf("members to revert: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := each(sendable{}, rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// firmwareColumnsOf is firmwareColumns qualified by a table alias.
func firmwareColumnsOf(alias string) string {
	return alias + "." + strings.ReplaceAll(firmwareColumns, ", ", ", "+alias+".")
}

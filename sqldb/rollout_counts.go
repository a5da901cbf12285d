package sqldb

import (
	"context"
	"fmt"

	"github.com/herd-iot/herd"
)

// memberCounts counts a rollout's members by wave and state.
type memberCounts struct {
	waves   []map[string]int64
	offline []int64 // by wave; nil unless counted
}

// countMembers counts the members by wave and state.
func (tx *Tx) countMembers(ctx context.Context, r *rolloutRow) (*memberCounts, error) {
	c := &memberCounts{waves: make([]map[string]int64, len(r.Waves))}
	for i := range c.waves {
		c.waves[i] = map[string]int64{}
	}
	rows, err := tx.QueryContext(ctx, `SELECT wave, state, COUNT(*) FROM rollout_members WHERE rollout_id = ? AND tenant_id = ? GROUP BY wave, state`, r.ID, r.TenantID)
	if err != nil {
		return nil, fmt.Errorf("count members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var w int
		var state string
		var n int64
		if err := rows.Scan(&w, &state, &n); err != nil {
			return nil, err
		}
		if w >= 0 && w < len(c.waves) {
			c.waves[w][state] += n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count members: %w", err)
	}
	return c, nil
}

// countOffline adds to c the members whose device is offline, by wave.
func (tx *Tx) countOffline(ctx context.Context, r *rolloutRow, c *memberCounts) error {
	c.offline = make([]int64, len(r.Waves))
	rows, err := tx.QueryContext(ctx, `SELECT m.wave, COUNT(*) FROM rollout_members m JOIN devices d ON d.id = m.device_id AND d.tenant_id = m.tenant_id
WHERE m.rollout_id = ? AND m.tenant_id = ? AND NOT d.online GROUP BY m.wave`, r.ID, r.TenantID)
	if err != nil {
		return fmt.Errorf("count offline members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var w int
		var n int64
		if err := rows.Scan(&w, &n); err != nil {
			return err
		}
		if w >= 0 && w < len(c.offline) {
			c.offline[w] = n
		}
	}
	return rows.Err()
}

// upTo sums the members of waves 0 … w in the given states.
func (c *memberCounts) upTo(w int, states ...string) int64 {
	var n int64
	for i := 0; i <= w && i < len(c.waves); i++ {
		for _, s := range states {
			n += c.waves[i][s]
		}
	}
	return n
}

// all sums the members of every wave in the given states.
func (c *memberCounts) all(states ...string) int64 { return c.upTo(len(c.waves)-1, states...) }

func (c *memberCounts) offlineTotal() int64 {
	var n int64
	for _, o := range c.offline {
		n += o
	}
	return n
}

// The member states as the gates group them.
var (
	// toldStates are the members that were told, ever.
	toldStates = []string{herd.MemberTold, herd.MemberApplied, herd.MemberFailed, herd.MemberTimedOut,
		herd.MemberReverting, herd.MemberReverted, herd.MemberRevertFailed}
	failedStates   = []string{herd.MemberFailed, herd.MemberTimedOut}
	appliedStates  = []string{herd.MemberApplied, herd.MemberReverting, herd.MemberReverted, herd.MemberRevertFailed}
	openStates     = []string{herd.MemberPending, herd.MemberQueued, herd.MemberTold}
	inFlightStates = []string{herd.MemberQueued, herd.MemberTold}
)

// progress is the per-wave view of GET /v1/rollouts/{id}.
func (c *memberCounts) progress(r *rolloutRow) []herd.WaveProgress {
	out := make([]herd.WaveProgress, len(r.Waves))
	for i, w := range r.Waves {
		m := c.waves[i]
		p := herd.WaveProgress{Wave: i, Percent: w.Percent, Pending: m[herd.MemberPending],
			InFlight: m[herd.MemberQueued] + m[herd.MemberTold], Applied: m[herd.MemberApplied],
			Failed: m[herd.MemberFailed], TimedOut: m[herd.MemberTimedOut], Cancelled: m[herd.MemberCancelled],
			Reverted: m[herd.MemberReverted]}
		for _, n := range m {
			p.Members += n
		}
		for _, s := range toldStates {
			p.Told += m[s]
		}
		if c.offline != nil {
			p.Offline = c.offline[i]
		}
		switch {
		case r.State == herd.RolloutSucceeded || i < r.Wave:
			p.State = "passed"
		case i > r.Wave && herd.RolloutActive(r.State) && r.State != herd.RolloutRollingBack:
			p.State = "waiting"
		case i > r.Wave || !herd.RolloutActive(r.State) || r.State == herd.RolloutRollingBack:
			p.State = "stopped"
		case r.State == herd.RolloutScheduled:
			p.State = "waiting"
		case r.State == herd.RolloutPaused:
			p.State = "paused"
		case r.bakeStartedAt.Valid:
			p.State = "baking"
		default:
			p.State = "sending"
		}
		out[i] = p
	}
	return out
}

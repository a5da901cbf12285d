package herd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
)

func validRollout() *herd.Rollout {
	return &herd.Rollout{TenantID: 1, Name: "r", RolloutSpec: herd.RolloutSpec{
		Target: herd.RolloutTarget{NodeID: 2}, Payload: herd.RolloutPayload{ProfileID: 3, Version: 4}}}
}

func f64(x float64) *float64 { return &x }

// TestRollout_ValidateDefaults: an empty spec gets every default, and a
// firmware rollout takes its max_in_flight from the connect rate.
func TestRollout_ValidateDefaults(t *testing.T) {
	r := validRollout()
	if err := r.Validate(0); err != nil {
		t.Fatal(err)
	}
	g := r.Gates
	if r.Kind != herd.RolloutConfig || r.MaxInFlight != herd.DefaultMaxInFlight || r.MaxOfflinePercent != herd.DefaultMaxOfflinePercent ||
		len(r.Waves) != 1 || r.Waves[0].Percent != 100 || r.OnAbort != herd.OnAbortRollback ||
		g.AnswerTimeoutS != herd.DefaultAnswerTimeout || g.SuccessMinPercent != herd.DefaultSuccessMinPercent ||
		g.AbortFailurePercent != herd.DefaultAbortFailurePct || g.AbortMinDevices != herd.DefaultAbortMinDevices {
		t.Fatalf("defaults: %+v", r)
	}
	for _, c := range []struct {
		firmware bool
		rate     int64
		want     int64
	}{{true, 500, 500}, {true, 30, 30}, {false, 500, herd.DefaultMaxInFlight}, {false, 30, 30}, {true, 0, herd.DefaultMaxInFlight}} {
		r := validRollout()
		if c.firmware {
			r.Payload = herd.RolloutPayload{FirmwareID: 9}
		}
		if err := r.Validate(c.rate); err != nil || r.MaxInFlight != c.want {
			t.Errorf("firmware %v rate %d: max_in_flight %d, %v; want %d", c.firmware, c.rate, r.MaxInFlight, err, c.want)
		}
	}
}

// TestRollout_ValidateRefusals: each bad spec is EINVALID (or
// EINVALIDFILTER) naming the field at fault.
func TestRollout_ValidateRefusals(t *testing.T) {
	many := make([]herd.RolloutWave, 21)
	for i := range many {
		many[i].Percent = float64(i+1) * 100 / 21
	}
	for name, c := range map[string]struct {
		edit func(r *herd.Rollout)
		want string
	}{
		"waves not increasing": {func(r *herd.Rollout) { r.Waves = []herd.RolloutWave{{Percent: 50}, {Percent: 50}, {Percent: 100}} }, "waves[1]"},
		"waves not 100":        {func(r *herd.Rollout) { r.Waves = []herd.RolloutWave{{Percent: 10}, {Percent: 90}} }, "last wave"},
		"too many waves":       {func(r *herd.Rollout) { r.Waves = many }, "waves"},
		"both payloads":        {func(r *herd.Rollout) { r.Payload.FirmwareID = 5 }, "firmware_id"},
		"missing version":      {func(r *herd.Rollout) { r.Payload.Version = 0 }, "payload.version"},
		"unknown health field": {func(r *herd.Rollout) {
			r.Gates.Health = []herd.HealthGate{{Field: "mood", MaxIncreaseVsControl: f64(1)}}
		}, "gates.health[0].field"},
		"online no min":   {func(r *herd.Rollout) { r.Gates.Health = []herd.HealthGate{{Field: "online"}} }, "gates.health[0]: online"},
		"numeric no max":  {func(r *herd.Rollout) { r.Gates.Health = []herd.HealthGate{{Field: "error_count", MinPercent: f64(5)}} }, "max_increase_vs_control"},
		"bad filter":      {func(r *herd.Rollout) { r.Target.Filter = []string{"nonsense"} }, "target.filter"},
		"negative jitter": {func(r *herd.Rollout) { r.StartJitterS = -1 }, "start_jitter_s"},
		"bad on_abort":    {func(r *herd.Rollout) { r.OnAbort = "explode" }, "on_abort"},
	} {
		r := validRollout()
		c.edit(r)
		err := r.Validate(0)
		if code := herd.ErrorCode(err); code != herd.EINVALID && code != herd.EINVALIDFILTER {
			t.Errorf("%s: got %s (%v), want EINVALID", name, code, err)
		} else if !strings.Contains(herd.ErrorMessage(err), c.want) {
			t.Errorf("%s: message %q does not name %q", name, herd.ErrorMessage(err), c.want)
		}
	}
}

func TestWaveBounds(t *testing.T) {
	ws := []herd.RolloutWave{{Percent: 1}, {Percent: 10}, {Percent: 50}, {Percent: 100}}
	for _, c := range []struct {
		members int64
		want    []int64
	}{{10000, []int64{100, 1000, 5000, 10000}}, {4, []int64{1, 2, 3, 4}}, {2, []int64{1, 2, 2, 2}}, {0, []int64{0, 0, 0, 0}}} {
		got := herd.WaveBounds(ws, c.members)
		for i := range got {
			if got[i] != c.want[i] {
				t.Fatalf("WaveBounds(%d) = %v, want %v", c.members, got, c.want)
			}
		}
	}
}

func TestRolloutGates(t *testing.T) {
	at := time.Unix(0, 0)
	g := herd.RolloutGates{AbortFailurePercent: 5, AbortMinDevices: 10, SuccessMinPercent: 95}
	for _, c := range []struct {
		told, failed int64
		passed       bool
	}{{100, 9, true}, {100, 10, false}, {1000, 40, true}, {1000, 50, false}, {0, 0, true}} {
		if e := g.FailureGate(0, c.told, c.failed, at); e.Passed != c.passed {
			t.Errorf("FailureGate(%d told, %d failed) = %+v, want passed %v", c.told, c.failed, e, c.passed)
		}
	}
	if e := g.SuccessGate(0, 100, 95, at); !e.Passed || e.Value != 95 {
		t.Errorf("SuccessGate 95/100 = %+v", e)
	}
	if e := g.SuccessGate(0, 100, 94, at); e.Passed {
		t.Errorf("SuccessGate 94/100 = %+v", e)
	}
	h := herd.HealthGate{Field: "error_count", MaxIncreaseVsControl: f64(0.5)}
	// Control mean 0 counts as 1: updated mean 0.4 is a rise of 0.4.
	if e := h.Evaluate(0, herd.FieldStats{N: 10, Sum: 4}, herd.FieldStats{N: 10, Sum: 0}, at); !e.Passed || e.Value != 0.4 {
		t.Errorf("floor: %+v", e)
	}
	// Control mean 4, updated 7: (7-4)/4 = 0.75 > 0.5.
	if e := h.Evaluate(0, herd.FieldStats{N: 2, Sum: 14}, herd.FieldStats{N: 2, Sum: 8}, at); e.Passed || e.Value != 0.75 {
		t.Errorf("rise: %+v", e)
	}
	if e := h.Evaluate(0, herd.FieldStats{N: 2, Sum: 14}, herd.FieldStats{}, at); !e.Passed || !strings.Contains(e.Detail, "no comparison") {
		t.Errorf("no control: %+v", e)
	}
	on := herd.HealthGate{Field: "online", MinPercent: f64(98)}
	if e := on.Evaluate(0, herd.FieldStats{N: 100, Sum: 97}, herd.FieldStats{}, at); e.Passed || e.Value != 97 {
		t.Errorf("online 97%%: %+v", e)
	}
}

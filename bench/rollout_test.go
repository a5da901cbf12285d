package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/bench"
)

// TestRunRollout runs the rollout scenarios small, so that they keep
// working; their timings mean nothing here, their checks do: a staged
// firmware rollout keeps the fleet within its offline budget, and the bad
// config reaches no more devices than its first wave and max_in_flight.
func TestRunRollout(t *testing.T) {
	exe := herdBinary(t)
	cfg := bench.RolloutConfig{Herd: exe, Dir: t.TempDir(), Devices: 60, Simulators: 2, InFlight: 6, Reboot: 300 * time.Millisecond,
		ConnectRate: 200, JitterS: 0, ConfigReject: 0.2, AnswerTimeoutS: 20}
	res, err := bench.RunRollout(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Firmware) != 2 {
		t.Fatalf("%d firmware runs, want 2", len(res.Firmware))
	}
	for _, f := range res.Firmware {
		if f.State != herd.RolloutSucceeded || f.Applied != int64(cfg.Devices) || f.RefusedCap != 0 || f.Took <= 0 {
			t.Fatalf("firmware run %+v", f)
		}
	}
	// The sampler may miss a peak, never invent one: a staged run over
	// its budget is a real breach.
	if staged := res.Firmware[0]; staged.PeakOffline > staged.OfflineLimit {
		t.Fatalf("staged rollout had %d devices offline at once, budget %d", staged.PeakOffline, staged.OfflineLimit)
	}
	c := res.Config
	if c.State != herd.RolloutRolledBack || c.Members != int64(cfg.Devices) || c.Affected == 0 || c.Affected > c.FirstWave+c.MaxInFlight {
		t.Fatalf("config run %+v", c)
	}
	md := bench.RolloutMarkdown(res)
	if !strings.Contains(md, "| in waves | 1/10/50/100 | 6 | succeeded | 60 |") || !strings.Contains(md, "| rolled_back |") {
		t.Fatalf("markdown lacks a row:\n%s", md)
	}
}

// TestRunRolloutCost steps a small rollout in process: every member is
// queued, told and answered once, with a few writes a member at most.
func TestRunRolloutCost(t *testing.T) {
	cfg := bench.RolloutCostConfig{Stores: []string{""}, Dir: t.TempDir(), Members: 600, Sites: 3, MaxInFlight: 100, Baseline: 20}
	rs, err := bench.RunRolloutCost(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Decisions < 3*r.Members || r.Steps < 4 || r.Writes <= 0 || r.StepCPU <= 0 || r.BaselineWrites < int64(r.BaselineDevices) {
		t.Fatalf("result %+v", r)
	}
	if perMember := float64(r.Writes) / float64(r.Members); perMember > 1 {
		t.Fatalf("%.2f writes per member: the steps write members one at a time", perMember)
	}
	if md := bench.RolloutCostMarkdown(rs); !strings.Contains(md, "| sqlite | 600 |") {
		t.Fatalf("markdown lacks the row:\n%s", md)
	}
}

package bench

import (
	"fmt"
	"strings"
	"time"
)

// RolloutMarkdown renders the fleet scenarios for bench/README.md.
func RolloutMarkdown(r RolloutResult) string {
	var b strings.Builder
	b.WriteString("| firmware rollout | waves | max_in_flight | state | applied | took | peak offline (sampled) | target | peak connects/s (at least) | connect rate | refused by rate | refused by cap |\n")
	b.WriteString("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range r.Firmware {
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %d | %s | %d | ≤ %d | %.0f | %d | %d | %d |\n",
			f.Name, f.Waves, f.MaxInFlight, f.State, f.Applied, f.Took.Round(100*time.Millisecond), f.PeakOffline, f.OfflineLimit,
			f.PeakConnectRate, f.ConnectRateSetting, f.RefusedRate, f.RefusedCap)
	}
	c := r.Config
	if c.Members > 0 {
		b.WriteString("\n| bad config | members | rejecters | first wave | max_in_flight | affected | target | state | reverted | abort after | rollback took | target |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n")
		fmt.Fprintf(&b, "| waves 1/10/50/100 | %d | %.0f%% | %d | %d | %d | ≤ %d | %s | %d | %s | %s | ≤ %s |\n",
			c.Members, 100*c.Rejecters, c.FirstWave, c.MaxInFlight, c.Affected, c.FirstWave+c.MaxInFlight, c.State, c.Reverted,
			c.AbortIn.Round(100*time.Millisecond), c.RollbackIn.Round(100*time.Millisecond), 2*time.Duration(c.AnswerTimeoutS)*time.Second)
	}
	return b.String()
}

// RolloutCostMarkdown renders the controller's cost for bench/README.md.
func RolloutCostMarkdown(rs []RolloutCostResult) string {
	var b strings.Builder
	b.WriteString("| store | members | steps | decisions | CPU per decision | CPU per member | write statements per member | statements per member | steps' wall time | baseline: CPU per device | baseline: write statements per device |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		perDev, wPerDev := time.Duration(0), 0.0
		if r.BaselineDevices > 0 {
			perDev = r.BaselineCPU / time.Duration(r.BaselineDevices)
			wPerDev = float64(r.BaselineWrites) / float64(r.BaselineDevices)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %.3f | %.3f | %s | %s | %.1f |\n",
			r.Store, r.Members, r.Steps, r.Decisions, r.CPUPerDecision.Round(100*time.Nanosecond), r.CPUPerM.Round(100*time.Nanosecond),
			float64(r.Writes)/float64(r.Members), float64(r.Statements)/float64(r.Members), r.StepWall.Round(10*time.Millisecond),
			perDev.Round(time.Microsecond), wPerDev)
	}
	return b.String()
}

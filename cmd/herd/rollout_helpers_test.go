package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sim"
)

// freeAddr returns a loopback address nothing listens on now, for a herd
// that must come back on the same ports after a kill (its devices know
// only the one broker address).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// rolloutFleet is a tenant with simulated devices and a config profile
// whose versions 1..versions exist, made through the API.
type rolloutFleet struct {
	tenant  *herd.Tenant
	devices []*herd.Device
	sims    []sim.Device
	profile *herd.ConfigProfile
}

func newRolloutFleet(t *testing.T, api *httpapi.Client, n, versions int) *rolloutFleet {
	t.Helper()
	ten, ds, tokens := provisionFleet(t, api, n)
	f := &rolloutFleet{tenant: ten, devices: ds}
	for _, d := range ds {
		f.sims = append(f.sims, sim.Device{Key: d.Key, Token: tokens[d.Key]})
	}
	f.profile = &herd.ConfigProfile{TenantID: ten.ID, Name: "sensor", Schema: []byte(`{"type":"object"}`)}
	if err := api.CreateConfigProfile(t.Context(), f.profile); err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= versions; v++ {
		doc := fmt.Appendf(nil, `{"rate_s":%d}`, v)
		if err := api.CreateConfigVersion(t.Context(), &herd.ConfigVersion{ProfileID: f.profile.ID, Document: doc}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// configRollout is a config rollout of the fleet's profile to version,
// over the whole fleet, in one wave with no bake: the tests here are about
// who is told and when, not about the gates. The answer timeout is long
// enough that no member times out while herd is down and its devices
// reconnect, and the offline budget is the whole fleet, since every
// restart of herd has the fleet offline for a moment (the budget is the
// firmware rollouts' reboot guard, tested elsewhere).
func (f *rolloutFleet) configRollout(name string, version, inFlight int64, onAbort string) *herd.Rollout {
	return &herd.Rollout{TenantID: f.tenant.ID, Name: name, RolloutSpec: herd.RolloutSpec{
		Target:            herd.RolloutTarget{NodeID: f.tenant.RootNodeID},
		Payload:           herd.RolloutPayload{ProfileID: f.profile.ID, Version: version},
		MaxInFlight:       inFlight,
		MaxOfflinePercent: 100,
		StartJitterS:      1,
		Gates:             herd.RolloutGates{AnswerTimeoutS: 120, BakeS: 0},
		OnAbort:           onAbort,
	}}
}

// runSims runs the simulated devices against broker (tcp://host:port)
// until the test ends. They reconnect by themselves, with backoff, when
// the herd under them is killed and comes back.
func runSims(t *testing.T, broker string, devices []sim.Device) {
	t.Helper()
	runSimsWith(t, sim.Config{Broker: broker, Devices: devices})
}

// runSimsWith is runSims with the simulator's behaviour (rate, reboot,
// the shares that fail or climb) taken from cfg; the scenario, duration,
// seed and keepalive are runSims' unless cfg sets them.
func runSimsWith(t *testing.T, cfg sim.Config) {
	t.Helper()
	if cfg.Scenario == "" {
		cfg.Scenario = sim.Steady
	}
	if cfg.Duration == 0 {
		cfg.Duration = 10 * time.Minute
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := sim.Run(ctx, cfg)
		if err != nil && ctx.Err() == nil {
			t.Errorf("simulator: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() }) // before the herd under them is stopped
}

// progress sums a rollout's per-wave counts.
type progress struct{ told, inFlight, applied, pending, cancelled, reverted int64 }

func sumProgress(r *herd.Rollout) progress {
	var p progress
	for _, w := range r.Progress {
		p.told += w.Told
		p.inFlight += w.InFlight
		p.applied += w.Applied
		p.pending += w.Pending
		p.cancelled += w.Cancelled
		p.reverted += w.Reverted
	}
	return p
}

// waitRollout polls the rollout through the API until cond holds, and
// returns it then. A failed read counts as not yet: herd may be starting.
// Polling is the only way: the API has no "tell me when" for a count.
func waitRollout(t *testing.T, api *httpapi.Client, id int64, timeout time.Duration, what string, cond func(*herd.Rollout) bool) *herd.Rollout {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *herd.Rollout
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		r, err := api.FindRolloutByID(ctx, id)
		cancel()
		if err == nil {
			last = r
			if cond(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			if last != nil {
				t.Fatalf("timed out after %s waiting for %s: rollout %s, %+v (last error %v)", timeout, what, last.State, sumProgress(last), err)
			}
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rolloutMembers reads every member of a rollout, page by page.
func rolloutMembers(t *testing.T, api *httpapi.Client, id int64) []*herd.RolloutMember {
	t.Helper()
	var out []*herd.RolloutMember
	after := int64(0)
	for {
		page, err := api.FindRolloutMembers(t.Context(), id, "", after, 100)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Items...)
		if page.Next == 0 || len(page.Items) == 0 {
			return out
		}
		after = page.Next
	}
}

// configDesiredEvents counts the device.config_desired events of the
// tenant's log, per device, that ask for version of the profile.
func configDesiredEvents(t *testing.T, api *httpapi.Client, tenantID, profileID, version int64) map[int64]int {
	t.Helper()
	n := map[int64]int{}
	after := int64(0)
	for {
		page, err := api.FindEvents(t.Context(), tenantID, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Items {
			if ev.Type != herd.EventDeviceConfigDesired {
				continue
			}
			var c herd.ConfigDesiredEvent
			if err := json.Unmarshal(ev.Payload, &c); err != nil {
				t.Fatalf("event %d: %v", ev.ID, err)
			}
			if c.ProfileID == profileID && c.Version == version {
				n[c.DeviceID]++
			}
		}
		if page.NextAfter >= page.Head || page.NextAfter <= after {
			return n
		}
		after = page.NextAfter
	}
}

// checkAppliedOnce asserts that every member of the rollout applied, was
// told once (attempts, and one device.config_desired event of the
// rollout's version per device) and that no device outside it was told.
func checkAppliedOnce(t *testing.T, api *httpapi.Client, f *rolloutFleet, r *herd.Rollout) {
	t.Helper()
	ms := rolloutMembers(t, api, r.ID)
	if len(ms) != len(f.devices) || int64(len(ms)) != r.Members {
		t.Fatalf("%d members listed, rollout says %d, fleet has %d", len(ms), r.Members, len(f.devices))
	}
	events := configDesiredEvents(t, api, f.tenant.ID, f.profile.ID, r.Payload.Version)
	var bad []string
	for _, m := range ms {
		if m.State != herd.MemberApplied || m.Attempts != 1 || events[m.DeviceID] != 1 {
			bad = append(bad, fmt.Sprintf("%s: %s, attempts %d, %d events", m.DeviceKey, m.State, m.Attempts, events[m.DeviceID]))
		}
		delete(events, m.DeviceID)
	}
	if len(bad) > 0 {
		t.Fatalf("%d members not applied once (want state applied, attempts 1, one device.config_desired of version %d):\n%s",
			len(bad), r.Payload.Version, strings.Join(bad, "\n"))
	}
	if len(events) > 0 {
		t.Fatalf("devices outside the rollout told: %v", events)
	}
}

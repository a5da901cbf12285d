package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
)

// RolloutCostConfig configures the controller's cost: a config rollout
// over Members devices, stepped in process as the controller steps it,
// with every told device answering "applied" at once (ingested as the
// gateway ingests a config/ack). Only the steps are measured.
type RolloutCostConfig struct {
	Stores      []string // "" is a fresh SQLite file in Dir
	Dir         string
	Members     int
	Sites       int
	MaxInFlight int64
	// Baseline is how many devices the baseline sets one at a time, as a
	// script over PUT /v1/devices/{id}/config does.
	Baseline int
	Out      io.Writer
}

// DefaultRolloutCostConfig is the scenario of bench/README.md.
func DefaultRolloutCostConfig() RolloutCostConfig {
	return RolloutCostConfig{Members: 100000, Sites: 20, MaxInFlight: 5000, Baseline: 5000}
}

// RolloutCostResult is one store's.
type RolloutCostResult struct {
	Store             string
	Members, Steps    int
	Decisions         int
	StepCPU, StepWall time.Duration
	// Writes counts the statements that write (one may write a thousand
	// members' rows); Statements all of them.
	Writes, Statements      int64
	BaselineDevices         int
	BaselineCPU             time.Duration
	BaselineWrites          int64
	CreateWall              time.Duration
	CPUPerDecision, CPUPerM time.Duration
}

// RunRolloutCost runs the scenario on each store.
func RunRolloutCost(ctx context.Context, cfg RolloutCostConfig) ([]RolloutCostResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	var out []RolloutCostResult
	for _, store := range cfg.Stores {
		r, err := rolloutCostCell(ctx, cfg, store)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rolloutCostCell(ctx context.Context, cfg RolloutCostConfig, store string) (RolloutCostResult, error) {
	dsn, kind, err := freshStore(ctx, store, cfg.Dir, "rollout-cost")
	if err != nil {
		return RolloutCostResult{}, err
	}
	res := RolloutCostResult{Store: kind, Members: cfg.Members}
	db := sqldb.NewDB(dsn)
	if err := db.Open(); err != nil {
		return res, err
	}
	defer db.Close()
	var measuring atomic.Bool
	var writes, statements atomic.Int64
	db.QueryHook = func(q string, _ []any) {
		if !measuring.Load() {
			return
		}
		statements.Add(1)
		switch strings.ToUpper(strings.Fields(q)[0]) {
		case "INSERT", "UPDATE", "DELETE":
			writes.Add(1)
		}
	}
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	ten := &herd.Tenant{Name: fmt.Sprintf("bench-rollout-%d", time.Now().UnixNano())}
	if err := sqldb.NewTenantService(db).CreateTenant(super, ten); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "%s: provisioning %d devices over %d sites\n", kind, cfg.Members+cfg.Baseline, cfg.Sites)
	nodes := sqldb.NewNodeService(db)
	devices := sqldb.NewDeviceService(db)
	// The rollout targets a region of sites; the baseline's devices sit
	// under a node of their own, out of its target.
	target := &herd.Node{TenantID: ten.ID, ParentID: ten.RootNodeID, Kind: "region", Name: "fleet"}
	side := &herd.Node{TenantID: ten.ID, ParentID: ten.RootNodeID, Kind: "site", Name: "baseline"}
	for _, n := range []*herd.Node{target, side} {
		if err := nodes.CreateNode(super, n); err != nil {
			return res, err
		}
	}
	var sites []int64
	for i := range cfg.Sites {
		n := &herd.Node{TenantID: ten.ID, ParentID: target.ID, Kind: "site", Name: fmt.Sprintf("site-%d", i)}
		if err := nodes.CreateNode(super, n); err != nil {
			return res, err
		}
		sites = append(sites, n.ID)
	}
	var baseline []int64
	for start := 0; start < cfg.Members+cfg.Baseline; start += herd.MaxBatchDevices {
		var batch []*herd.Device
		for i := start; i < min(cfg.Members+cfg.Baseline, start+herd.MaxBatchDevices); i++ {
			node := sites[i%len(sites)]
			if i >= cfg.Members {
				node = side.ID
			}
			batch = append(batch, &herd.Device{NodeID: node, Key: fmt.Sprintf("rc-%d-%d", ten.ID, i), Model: benchModel})
		}
		if err := devices.CreateDevices(super, batch); err != nil {
			return res, err
		}
		for _, d := range batch {
			if d.NodeID == side.ID {
				baseline = append(baseline, d.ID)
			}
		}
	}
	configs := sqldb.NewConfigService(db)
	prof := &herd.ConfigProfile{TenantID: ten.ID, Name: "bench", Schema: []byte(`{"type":"object"}`)}
	if err := configs.CreateConfigProfile(super, prof); err != nil {
		return res, err
	}
	if err := configs.CreateConfigVersion(super, &herd.ConfigVersion{ProfileID: prof.ID, Document: []byte(`{"rate_s":1}`)}); err != nil {
		return res, err
	}

	// The baseline: the config set one device at a time.
	res.BaselineDevices = len(baseline)
	measuring.Store(true)
	cpu0 := processCPU()
	for _, id := range baseline {
		if _, err := configs.SetDesiredConfig(super, id, prof.ID, 1); err != nil {
			return res, err
		}
	}
	res.BaselineCPU = processCPU() - cpu0
	measuring.Store(false)
	res.BaselineWrites = writes.Swap(0)
	statements.Store(0)

	rollouts := sqldb.NewRolloutService(db)
	ro := &herd.Rollout{TenantID: ten.ID, Name: "bench cost", RolloutSpec: herd.RolloutSpec{
		Target:  herd.RolloutTarget{NodeID: target.ID},
		Payload: herd.RolloutPayload{ProfileID: prof.ID, Version: 1},
		Waves:   []herd.RolloutWave{{Percent: 1}, {Percent: 10}, {Percent: 50}, {Percent: 100}}, MaxInFlight: cfg.MaxInFlight,
		MaxOfflinePercent: 100, Gates: herd.RolloutGates{AnswerTimeoutS: 3600},
	}}
	t0 := time.Now()
	if err := rollouts.CreateRollout(super, ro); err != nil {
		return res, err
	}
	res.CreateWall = time.Since(t0)
	if ro.Members != int64(cfg.Members) {
		return res, fmt.Errorf("rollout has %d members, want %d", ro.Members, cfg.Members)
	}
	fmt.Fprintf(cfg.Out, "%s: stepping a rollout of %d members\n", kind, ro.Members)
	ingest := sqldb.NewIngestService(db)
	const owner = "bench-rollout-cost"
	for res.Steps < 100000 {
		measuring.Store(true)
		cpu0, wall0 := processCPU(), time.Now()
		ids, err := rollouts.ClaimRollouts(ctx, owner, time.Minute, 1)
		if err != nil {
			return res, err
		}
		var st herd.RolloutStep
		for _, id := range ids {
			if st, err = rollouts.StepRollout(ctx, owner, id, time.Minute); err != nil {
				return res, err
			}
		}
		res.StepCPU += processCPU() - cpu0
		res.StepWall += time.Since(wall0)
		measuring.Store(false)
		res.Steps++
		res.Decisions += st.Decisions
		if len(ids) == 0 || !herd.RolloutActive(st.State) {
			break
		}
		// The told devices answer, as the gateway ingests their acks.
		var items []herd.IngestItem
		var after int64
		for {
			page, err := rollouts.FindRolloutMembers(super, ro.ID, herd.MemberTold, after, 1000)
			if err != nil {
				return res, err
			}
			for _, m := range page.Items {
				items = append(items, herd.IngestItem{Kind: herd.IngestConfigAck, DeviceID: m.DeviceID, TenantID: ten.ID,
					At: time.Now().UnixMilli(), ConfigAck: herd.ConfigAck{Version: 1, Status: herd.ConfigApplied}})
			}
			if page.Next == 0 || len(page.Items) == 0 {
				break
			}
			after = page.Next
		}
		for len(items) > 0 {
			n := min(len(items), 1000)
			if err := ingest.Ingest(ctx, items[:n]); err != nil {
				return res, err
			}
			items = items[n:]
		}
	}
	got, err := rollouts.FindRolloutByID(super, ro.ID)
	if err != nil {
		return res, err
	}
	if got.State != herd.RolloutSucceeded {
		return res, fmt.Errorf("rollout ended %s (%s) after %d steps, want succeeded", got.State, got.Reason, res.Steps)
	}
	res.Writes, res.Statements = writes.Load(), statements.Load()
	if res.Decisions > 0 {
		res.CPUPerDecision = res.StepCPU / time.Duration(res.Decisions)
	}
	res.CPUPerM = res.StepCPU / time.Duration(res.Members)
	return res, nil
}

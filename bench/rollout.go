package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sim"
	"github.com/herd-iot/herd/sqldb"
)

// RolloutConfig configures `herd bench rollout`: a fleet of simulated
// devices in Simulators `herd simulate` processes, against herd serve with
// a real connect rate, takes a firmware rollout in waves and then the same
// fleet takes one all at once (lesson F's storm); then a config that a
// share of the devices rejects.
type RolloutConfig struct {
	Herd       string
	Dir        string
	Devices    int
	Simulators int
	// InFlight is the staged rollout's max_in_flight; its offline budget
	// is the same number of devices.
	InFlight int64
	// Reboot is how long a device is gone after a firmware update (±20%).
	Reboot time.Duration
	// ConnectRate is herd's --mqtt-connect-rate.
	ConnectRate int
	// JitterS is the staged rollout's start_jitter_s.
	JitterS int64
	// ConfigReject is the share of devices that reject every config, and
	// AnswerTimeoutS the config rollout's answer timeout.
	ConfigReject   float64
	AnswerTimeoutS int64
	Out            io.Writer
}

// DefaultRolloutConfig is the scenario of bench/README.md.
func DefaultRolloutConfig() RolloutConfig {
	return RolloutConfig{Devices: 10000, Simulators: 2, InFlight: 500, Reboot: 5 * time.Second, ConnectRate: 500,
		JitterS: 2, ConfigReject: 0.2, AnswerTimeoutS: 30}
}

// FirmwareRun is what one firmware rollout over the fleet showed.
type FirmwareRun struct {
	Name               string
	Waves              string
	MaxInFlight        int64
	State              string
	Took               time.Duration // create to succeeded
	Applied            int64
	PeakOffline        int64   // fewest devices connected, from the fleet
	PeakConnectRate    float64 // most connects admitted in a second, at least
	RefusedRate        int64   // connects refused by the connect rate
	RefusedCap         int64   // connects refused by the connection cap
	OfflineLimit       int64   // max_in_flight + 1% of the fleet: the target
	ConnectRateSetting int
}

// ConfigRun is what the bad config showed.
type ConfigRun struct {
	Members, FirstWave, MaxInFlight int64
	Rejecters                       float64
	State                           string
	// Affected is the members told before the abort: the devices the bad
	// config reached.
	Affected int64
	Reverted int64
	// AbortIn is from create to the abort; RollbackIn from the abort to
	// rolled_back, against 2 × AnswerTimeoutS.
	AbortIn, RollbackIn time.Duration
	AnswerTimeoutS      int64
}

// RolloutResult is the whole scenario's.
type RolloutResult struct {
	Firmware []FirmwareRun
	Config   ConfigRun
}

// RunRollout runs the fleet scenarios against herd serve in a child
// process, with the fleet in cfg.Simulators child processes of
// `herd simulate`.
func RunRollout(ctx context.Context, cfg RolloutConfig) (RolloutResult, error) {
	var res RolloutResult
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	store := filepath.Join(cfg.Dir, fmt.Sprintf("rollout-%d.db", time.Now().UnixNano()))
	fmt.Fprintf(cfg.Out, "provisioning %d devices\n", cfg.Devices)
	f, err := provisionRolloutFleet(ctx, store, cfg.Devices)
	if err != nil {
		return res, err
	}
	p, err := startServer(ctx, cfg.Herd, store, "--mqtt-connect-rate", strconv.Itoa(cfg.ConnectRate))
	if err != nil {
		return res, err
	}
	defer p.stop()
	sims, err := startSimulators(ctx, cfg, p.mqtt, f.keys)
	if err != nil {
		return res, err
	}
	defer sims.stop()
	m := newFleetMeter(p.url + "/metrics")
	defer m.stop()
	fmt.Fprintf(cfg.Out, "connecting %d devices over %d simulators\n", cfg.Devices, cfg.Simulators)
	if err := m.waitConnected(ctx, int64(cfg.Devices), 5*time.Minute, sims); err != nil {
		return res, err
	}
	api := httpapi.NewClient(p.url, benchAdminToken)

	staged := herd.RolloutSpec{
		Target:  herd.RolloutTarget{NodeID: f.ten.RootNodeID},
		Payload: herd.RolloutPayload{FirmwareID: f.firmware[0]},
		Waves:   []herd.RolloutWave{{Percent: 1}, {Percent: 10}, {Percent: 50}, {Percent: 100}}, MaxInFlight: cfg.InFlight,
		MaxOfflinePercent: 100 * float64(cfg.InFlight) / float64(cfg.Devices), StartJitterS: cfg.JitterS,
		Gates: herd.RolloutGates{AnswerTimeoutS: 300},
	}
	storm := herd.RolloutSpec{
		Target:  herd.RolloutTarget{NodeID: f.ten.RootNodeID},
		Payload: herd.RolloutPayload{FirmwareID: f.firmware[1]},
		Waves:   []herd.RolloutWave{{Percent: 100}}, MaxInFlight: int64(cfg.Devices), MaxOfflinePercent: 100,
		Gates: herd.RolloutGates{AnswerTimeoutS: 300},
	}
	for _, run := range []struct {
		name string
		spec herd.RolloutSpec
	}{{"in waves", staged}, {"all at once (baseline)", storm}} {
		fmt.Fprintf(cfg.Out, "firmware rollout %s\n", run.name)
		r, err := firmwareRun(ctx, cfg, api, m, sims, f.ten.ID, run.name, run.spec)
		res.Firmware = append(res.Firmware, r)
		if err != nil {
			return res, err
		}
		if err := m.waitConnected(ctx, int64(cfg.Devices), 5*time.Minute, sims); err != nil {
			return res, fmt.Errorf("after the rollout %s: %w", run.name, err)
		}
	}
	fmt.Fprintf(cfg.Out, "config rollout that %.0f%% of the devices reject\n", 100*cfg.ConfigReject)
	res.Config, err = configRun(ctx, cfg, api, sims, f)
	return res, err
}

// rolloutFleet is the provisioned fleet: two firmware images of its model
// and a config profile whose version 1 every device is to run.
type rolloutFleet struct {
	ten      *herd.Tenant
	keys     string // the simulators' key file
	firmware [2]int64
	profile  int64
}

func provisionRolloutFleet(ctx context.Context, store string, n int) (*rolloutFleet, error) {
	db, ten, devices, err := provisionFleet(ctx, store, n)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	f := &rolloutFleet{ten: ten, keys: store + ".keys"}
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	fws := sqldb.NewFirmwareService(db)
	for i, v := range []string{"2.0.0", "2.1.0"} {
		fw := &herd.Firmware{TenantID: ten.ID, Model: benchModel, Version: v, URL: "https://firmware.example/" + v + ".bin",
			SHA256: fmt.Sprintf("%064x", i+1), Size: 1 << 20}
		if err := fws.CreateFirmware(super, fw); err != nil {
			return nil, fmt.Errorf("create firmware: %w", err)
		}
		f.firmware[i] = fw.ID
	}
	configs := sqldb.NewConfigService(db)
	prof := &herd.ConfigProfile{TenantID: ten.ID, Name: "bench", Schema: []byte(`{"type":"object"}`)}
	if err := configs.CreateConfigProfile(super, prof); err != nil {
		return nil, fmt.Errorf("create config profile: %w", err)
	}
	f.profile = prof.ID
	for v := 1; v <= 2; v++ {
		if err := configs.CreateConfigVersion(super, &herd.ConfigVersion{ProfileID: prof.ID, Document: fmt.Appendf(nil, `{"rate_s":%d}`, v)}); err != nil {
			return nil, fmt.Errorf("create config version: %w", err)
		}
	}
	// Version 1 is what the devices run before the bad config, and what
	// the rollback gives back; the devices get it when they connect.
	for _, d := range devices {
		if _, err := configs.SetDesiredConfig(super, d.id, prof.ID, 1); err != nil {
			return nil, fmt.Errorf("set desired config: %w", err)
		}
	}
	sds := make([]sim.Device, len(devices))
	for i, d := range devices {
		sds[i] = sim.Device{Key: d.key, Token: d.token}
	}
	return f, sim.WriteDevices(f.keys, sds)
}

// simulators are the `herd simulate` child processes.
type simulators struct {
	cmds  []*exec.Cmd
	wg    sync.WaitGroup
	mu    sync.Mutex
	ended error // the first process's end: none may end before the run does
}

func startSimulators(ctx context.Context, cfg RolloutConfig, mqtt, keys string) (*simulators, error) {
	s := &simulators{}
	for i := range cfg.Simulators {
		log, err := os.Create(filepath.Join(cfg.Dir, fmt.Sprintf("rollout-sim-%d.log", i)))
		if err != nil {
			s.stop()
			return nil, err
		}
		cmd := exec.CommandContext(ctx, cfg.Herd, "simulate", "--keys", keys, "--shard", fmt.Sprintf("%d/%d", i, cfg.Simulators),
			"--broker", "tcp://"+mqtt, "--rate", "0", "--reboot", cfg.Reboot.String(), "--config-reject", strconv.FormatFloat(cfg.ConfigReject, 'f', -1, 64),
			"--seed", strconv.Itoa(i+1))
		cmd.Stdout, cmd.Stderr = log, log
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 30 * time.Second
		if err := cmd.Start(); err != nil {
			log.Close()
			s.stop()
			return nil, fmt.Errorf("start simulator: %w", err)
		}
		s.cmds = append(s.cmds, cmd)
		s.wg.Go(func() {
			err := cmd.Wait()
			log.Close()
			s.mu.Lock()
			if s.ended == nil {
				s.ended = fmt.Errorf("simulator %d ended (its log: %s): %w", i, log.Name(), err)
			}
			s.mu.Unlock()
		})
	}
	return s, nil
}

// failed returns the first simulator's end, if one ended.
func (s *simulators) failed() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

func (s *simulators) stop() {
	for _, c := range s.cmds {
		c.Process.Signal(syscall.SIGTERM)
	}
	s.wg.Wait()
}

// firmwareRun creates a firmware rollout and follows it to its end.
func firmwareRun(ctx context.Context, cfg RolloutConfig, api *httpapi.Client, m *fleetMeter, sims *simulators, tenantID int64, name string, spec herd.RolloutSpec) (FirmwareRun, error) {
	run := FirmwareRun{Name: name, MaxInFlight: spec.MaxInFlight, ConnectRateSetting: cfg.ConnectRate,
		OfflineLimit: spec.MaxInFlight + int64(cfg.Devices)/100}
	for i, w := range spec.Waves {
		if i > 0 {
			run.Waves += "/"
		}
		run.Waves += strconv.FormatFloat(w.Percent, 'f', -1, 64)
	}
	ro := &herd.Rollout{TenantID: tenantID, Name: "bench firmware " + name, RolloutSpec: spec}
	from := m.mark()
	start := time.Now()
	if err := api.CreateRollout(ctx, ro); err != nil {
		return run, fmt.Errorf("create rollout: %w", err)
	}
	got, err := followRollout(ctx, api, sims, ro.ID, 10*time.Minute, nil)
	run.Took = time.Since(start)
	if got != nil {
		run.State = got.State
		for _, w := range got.Progress {
			run.Applied += w.Applied
		}
	}
	w := m.window(from, int64(cfg.Devices))
	run.PeakOffline, run.PeakConnectRate, run.RefusedRate, run.RefusedCap = w.peakOffline, w.peakConnectRate, w.refusedRate, w.refusedCap
	if err != nil {
		return run, err
	}
	if got.State != herd.RolloutSucceeded {
		return run, fmt.Errorf("firmware rollout %s ended %s: %s", name, got.State, got.Reason)
	}
	return run, nil
}

// followRollout polls the rollout until it ends, or a simulator does;
// seen, when set, is called with each state read. Polling is the only way: the API has no
// "tell me when" for a rollout's end.
func followRollout(ctx context.Context, api *httpapi.Client, sims *simulators, id int64, timeout time.Duration, seen func(*herd.Rollout)) (*herd.Rollout, error) {
	deadline := time.Now().Add(timeout)
	for {
		r, err := api.FindRolloutByID(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("read rollout %d: %w", id, err)
		}
		if seen != nil {
			seen(r)
		}
		if !herd.RolloutActive(r.State) {
			return r, nil
		}
		if err := sims.failed(); err != nil {
			return r, err
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("rollout %d still %s after %s", id, r.State, timeout)
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// configRun rolls out config version 2, which cfg.ConfigReject of the
// devices reject, with rollback on abort, and reads who it reached.
func configRun(ctx context.Context, cfg RolloutConfig, api *httpapi.Client, sims *simulators, f *rolloutFleet) (ConfigRun, error) {
	spec := herd.RolloutSpec{
		Target:  herd.RolloutTarget{NodeID: f.ten.RootNodeID},
		Payload: herd.RolloutPayload{ProfileID: f.profile, Version: 2},
		Waves:   []herd.RolloutWave{{Percent: 1}, {Percent: 10}, {Percent: 50}, {Percent: 100}}, MaxInFlight: cfg.InFlight,
		MaxOfflinePercent: 100, StartJitterS: cfg.JitterS,
		Gates:   herd.RolloutGates{AnswerTimeoutS: cfg.AnswerTimeoutS, SuccessMinPercent: 95, AbortFailurePercent: 5, AbortMinDevices: 10},
		OnAbort: herd.OnAbortRollback,
	}
	ro := &herd.Rollout{TenantID: f.ten.ID, Name: "bench bad config", RolloutSpec: spec}
	run := ConfigRun{MaxInFlight: cfg.InFlight, Rejecters: cfg.ConfigReject, AnswerTimeoutS: cfg.AnswerTimeoutS}
	start := time.Now()
	if err := api.CreateRollout(ctx, ro); err != nil {
		return run, fmt.Errorf("create rollout: %w", err)
	}
	run.Members = ro.Members
	run.FirstWave = herd.WaveBounds(ro.Waves, ro.Members)[0]
	var abortAt time.Time
	got, err := followRollout(ctx, api, sims, ro.ID, 10*time.Minute, func(r *herd.Rollout) {
		if abortAt.IsZero() && (r.State == herd.RolloutAborted || r.State == herd.RolloutRollingBack || r.State == herd.RolloutRolledBack) {
			abortAt = time.Now()
		}
	})
	if err != nil {
		return run, err
	}
	run.State = got.State
	run.AbortIn = abortAt.Sub(start)
	run.RollbackIn = time.Since(abortAt)
	var after int64
	for {
		page, err := api.FindRolloutMembers(ctx, ro.ID, "", after, 1000)
		if err != nil {
			return run, fmt.Errorf("list members: %w", err)
		}
		for _, m := range page.Items {
			if m.Attempts > 0 {
				run.Affected++
			}
			if m.State == herd.MemberReverted {
				run.Reverted++
			}
		}
		if page.Next == 0 || len(page.Items) == 0 {
			break
		}
		after = page.Next
	}
	if got.State != herd.RolloutRolledBack {
		return run, fmt.Errorf("the bad config's rollout ended %s (%s), want rolled_back", got.State, got.Reason)
	}
	return run, nil
}

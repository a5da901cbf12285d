package sim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sim"
	"github.com/herd-iot/herd/sqldb"
)

// simRun runs the simulator over the devices until the test ends it with
// the returned stop, which gives the run's stats.
func simRun(t *testing.T, gw *mqttgw.Gateway, cfg sim.Config) (stop func() sim.Stats) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cfg.Broker = "tcp://" + gw.TCPAddr().String()
	cfg.Scenario, cfg.Duration, cfg.Seed = sim.Steady, time.Minute, 1
	done := make(chan sim.Stats, 1)
	go func() {
		stats, err := sim.Run(ctx, cfg)
		if err != nil && ctx.Err() == nil {
			t.Error(err)
		}
		done <- stats
	}()
	t.Cleanup(cancel)
	return func() sim.Stats { cancel(); return <-done }
}

// deviceIDs returns the store's ids of the simulated devices and their
// tenant's.
func deviceIDs(t *testing.T, db *sqldb.DB, ds []sim.Device) (tenant int64, ids []int64) {
	t.Helper()
	for _, d := range ds {
		var id int64
		if err := db.SQL().QueryRowContext(t.Context(), `SELECT id, tenant_id FROM devices WHERE key = ?`, d.Key).Scan(&id, &tenant); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return tenant, ids
}

// waitFor polls the store until ok holds: the device's answer is in the
// store when herd has committed it, and the test has no other signal of
// that than the store itself.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// desire creates a profile with one version and makes it every device's
// desired config, as PUT /v1/devices/{id}/config does; the gateway sends
// it when the simulated devices subscribe.
func desire(t *testing.T, db *sqldb.DB, tenant int64, ids []int64) *sqldb.ConfigService {
	t.Helper()
	super := testutil.SuperContext()
	configs := sqldb.NewConfigService(db)
	p := &herd.ConfigProfile{TenantID: tenant, Name: "sensor", Schema: []byte(`{"type":"object"}`)}
	if err := configs.CreateConfigProfile(super, p); err != nil {
		t.Fatal(err)
	}
	if err := configs.CreateConfigVersion(super, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(`{"rate_s":10}`)}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := configs.SetDesiredConfig(super, id, p.ID, 1); err != nil {
			t.Fatal(err)
		}
	}
	return configs
}

// withConfigs has the gateway send devices their desired config.
func withConfigs(db *sqldb.DB, g *mqttgw.Gateway) { g.Configs = sqldb.NewConfigService(db) }

// TestSim_ConfigApplied: simulated devices get their desired config from a
// real gateway, apply it and answer, and herd has them in sync.
func TestSim_ConfigApplied(t *testing.T) {
	db, gw, devices := gateway(t, 3, withConfigs)
	tenant, ids := deviceIDs(t, db, devices)
	configs := desire(t, db, tenant, ids)
	stop := simRun(t, gw, sim.Config{Devices: devices})
	for _, id := range ids {
		waitFor(t, "a device is not in sync", func() bool {
			dc, err := configs.FindDeviceConfig(testutil.SuperContext(), id)
			if err != nil {
				t.Fatal(err)
			}
			return dc.InSync
		})
		dc, _ := configs.FindDeviceConfig(testutil.SuperContext(), id)
		if dc.Reported == nil || dc.Reported.Version != 1 || dc.Reported.Status != herd.ConfigApplied {
			t.Fatalf("reported %+v", dc.Reported)
		}
	}
	if s := stop(); s.ConfigsApplied != 3 || s.ConfigsRejected != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestSim_ConfigRejected: with --config-reject 1 every device rejects, and
// herd records the rejection with the device's error.
func TestSim_ConfigRejected(t *testing.T) {
	db, gw, devices := gateway(t, 2, withConfigs)
	tenant, ids := deviceIDs(t, db, devices)
	configs := desire(t, db, tenant, ids)
	stop := simRun(t, gw, sim.Config{Devices: devices, ConfigReject: 1})
	for _, id := range ids {
		var dc *herd.DeviceConfig
		waitFor(t, "no rejection reported", func() bool {
			var err error
			if dc, err = configs.FindDeviceConfig(testutil.SuperContext(), id); err != nil {
				t.Fatal(err)
			}
			return dc.Reported != nil
		})
		if dc.InSync || dc.Reported.Version != 1 || dc.Reported.Status != herd.ConfigRejected || !strings.Contains(dc.Reported.Error, "rejects") {
			t.Fatalf("config %+v, reported %+v", dc, dc.Reported)
		}
	}
	if s := stop(); s.ConfigsApplied != 0 || s.ConfigsRejected != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestSim_ShareByKey: a share is chosen by key, the same on every run.
func TestSim_ShareByKey(t *testing.T) {
	var ds []sim.Device
	for i := range 1000 {
		ds = append(ds, sim.Device{Key: "dev-" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + time.Duration(i).String()})
	}
	n := 0
	for _, d := range ds {
		if sim.Chosen(d.Key, "config-reject", 0.2) {
			n++
		}
		if sim.Chosen(d.Key, "config-reject", 0.2) != sim.Chosen(d.Key, "config-reject", 0.2) {
			t.Fatal("not deterministic")
		}
	}
	if n < 150 || n > 250 {
		t.Fatalf("%d of 1000 chosen at 0.2", n)
	}
}

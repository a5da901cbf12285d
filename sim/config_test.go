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
	done := make(chan struct{})
	var stats sim.Stats
	go func() {
		defer close(done)
		var err error
		if stats, err = sim.Run(ctx, cfg); err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}()
	// The run ends before the gateway the test closes after it, whether
	// or not the test asked for its stats.
	stop = func() sim.Stats { cancel(); <-done; return stats }
	t.Cleanup(func() { stop() })
	return stop
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

// TestSim_ShareByKey: a share is chosen by key (so the same on every run),
// near its size, nested in larger shares, independent of other shares.
func TestSim_ShareByKey(t *testing.T) {
	var ds []sim.Device
	for i := range 1000 {
		ds = append(ds, sim.Device{Key: "dev-" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + time.Duration(i).String()})
	}
	n, same := 0, 0
	for _, d := range ds {
		in := sim.Chosen(d.Key, "config-reject", 0.2)
		if in {
			n++
		}
		// A larger share takes in the smaller one's devices.
		if in && !sim.Chosen(d.Key, "config-reject", 0.5) {
			t.Fatalf("%s chosen at 0.2 and not at 0.5", d.Key)
		}
		if in && sim.Chosen(d.Key, "bricked", 0.2) {
			same++
		}
	}
	if n < 150 || n > 250 {
		t.Fatalf("%d of 1000 chosen at 0.2", n)
	}
	// Independent shares: about 0.2 of the rejecting devices also brick.
	if same > n/2 {
		t.Fatalf("%d of the %d rejecting devices are also bricked", same, n)
	}
}

// otaRun sends every device a firmware update through the gateway, as
// herd's sender will, until each has reported the last state.
// otaPayload is rollout 7's job: firmware 1.5.0.
const otaPayload = `{"rollout_id":"7","firmware":{"version":"1.5.0","url":"https://fw.example/1.5.0.bin","sha256":"00","size":1}}`

func otaRun(t *testing.T, db *sqldb.DB, gw *mqttgw.Gateway, devices []sim.Device, ids []int64, last string) {
	t.Helper()
	payload := []byte(otaPayload)
	for i, d := range devices {
		// A device subscribes just after it connects: send until it
		// reports; it takes a rollout's job once.
		waitFor(t, "no "+last+" progress from "+d.Key, func() bool {
			if n := progressCount(t, db, ids[i], last); n > 0 {
				return true
			}
			if err := gw.Send(d.Key, "ota", payload); err != nil && err != mqttgw.ErrNotConnected {
				t.Fatal(err)
			}
			return false
		})
	}
}

func progressCount(t *testing.T, db *sqldb.DB, id int64, state string) (n int) {
	t.Helper()
	err := db.SQL().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM events WHERE type = ? AND subject_id = ? AND payload LIKE ?`,
		herd.EventDeviceOTAProgress, id, `%"state":"`+state+`"%`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func findDevice(t *testing.T, db *sqldb.DB, id int64) *herd.Device {
	t.Helper()
	d, err := sqldb.NewDeviceService(db).FindDeviceByID(testutil.SuperContext(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSim_FirmwareUpdated: a device told of new firmware reports
// downloading, installing and rebooting, is gone for its reboot, and comes
// back with the new firmware in its projection.
func TestSim_FirmwareUpdated(t *testing.T) {
	db, gw, devices := gateway(t, 2)
	_, ids := deviceIDs(t, db, devices)
	stop := simRun(t, gw, sim.Config{Devices: devices, Reboot: 200 * time.Millisecond})
	otaRun(t, db, gw, devices, ids, herd.OTARebooting)
	for _, id := range ids {
		for _, st := range []string{herd.OTADownloading, herd.OTAInstalling, herd.OTARebooting} {
			if n := progressCount(t, db, id, st); n != 1 {
				t.Fatalf("device %d reported %s %d times, want once", id, st, n)
			}
		}
		waitFor(t, "no device back on 1.5.0", func() bool {
			d := findDevice(t, db, id)
			return d.Online && d.Firmware == "1.5.0"
		})
	}
	if s := stop(); s.FirmwareUpdated != 2 || s.FirmwareFailed != 0 || s.FirmwareBricked != 0 || s.Reconnects != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// TestSim_FirmwareFailedAndBricked: with --firmware-fail 1 a device
// reports failed and stays on its firmware, connected; with --bricked 1 it
// reboots and never comes back.
func TestSim_FirmwareFailedAndBricked(t *testing.T) {
	t.Run("failed", func(t *testing.T) {
		db, gw, devices := gateway(t, 1)
		_, ids := deviceIDs(t, db, devices)
		stop := simRun(t, gw, sim.Config{Devices: devices, Reboot: 200 * time.Millisecond, FirmwareFail: 1})
		otaRun(t, db, gw, devices, ids, herd.OTAFailed)
		if n := progressCount(t, db, ids[0], herd.OTARebooting); n != 0 {
			t.Fatalf("a failed update rebooted")
		}
		// The same job sent again is not run again; another rollout's is.
		// Both go over one session in order, so once the second has
		// failed the repeat was seen before it.
		if err := gw.Send(devices[0].Key, "ota", []byte(otaPayload)); err != nil {
			t.Fatal(err)
		}
		next := []byte(strings.Replace(otaPayload, `"rollout_id":"7"`, `"rollout_id":"8"`, 1))
		waitFor(t, "no second failed progress", func() bool {
			if progressCount(t, db, ids[0], herd.OTAFailed) == 2 {
				return true
			}
			if err := gw.Send(devices[0].Key, "ota", next); err != nil {
				t.Fatal(err)
			}
			return false
		})
		s := stop()
		if d := findDevice(t, db, ids[0]); d.Firmware != "" {
			t.Fatalf("firmware %q after a failed update", d.Firmware)
		}
		if s.FirmwareFailed != 2 || s.FirmwareUpdated != 0 || s.Reconnects != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("bricked", func(t *testing.T) {
		db, gw, devices := gateway(t, 1)
		_, ids := deviceIDs(t, db, devices)
		stop := simRun(t, gw, sim.Config{Devices: devices, Reboot: 200 * time.Millisecond, Bricked: 1})
		otaRun(t, db, gw, devices, ids, herd.OTARebooting)
		waitFor(t, "the bricked device is online", func() bool { return !findDevice(t, db, ids[0]).Online })
		// Never coming back has no signal: wait out three reboot times
		// (the longest is 240 ms) before asking.
		time.Sleep(600 * time.Millisecond)
		s := stop()
		if s.FirmwareBricked != 1 || s.FirmwareUpdated != 0 || s.Reconnects != 0 {
			t.Fatalf("stats %+v", s)
		}
		if d := findDevice(t, db, ids[0]); d.Online || d.Firmware != "" {
			t.Fatalf("bricked device %+v", d)
		}
	})
}

// TestSim_ErrorClimb: with --error-climb 1 a device's error_count stays at
// 0 until it applies a config, and climbs in its projection after.
func TestSim_ErrorClimb(t *testing.T) {
	db, gw, devices := gateway(t, 1, withConfigs)
	tenant, ids := deviceIDs(t, db, devices)
	stop := simRun(t, gw, sim.Config{Devices: devices, Rate: 50, QoS: 1, ErrorClimb: 1})
	defer stop()
	waitFor(t, "no reading stored", func() bool { return findDevice(t, db, ids[0]).LastSeen != nil })
	if n := findDevice(t, db, ids[0]).ErrorCount; n != 0 {
		t.Fatalf("error_count %d before anything was applied", n)
	}
	desire(t, db, tenant, ids)
	// The config goes on the device's next subscription: have the
	// gateway send it now, as the stream tail does with the event.
	var payload []byte
	waitFor(t, "no climbing error_count", func() bool {
		if payload == nil {
			c, err := sqldb.NewConfigService(db).PendingConfig(t.Context(), tenant, ids[0])
			if err != nil {
				t.Fatal(err)
			}
			payload = c.DevicePayload()
			if err := gw.Send(devices[0].Key, "config", payload); err != nil {
				t.Fatal(err)
			}
		}
		return findDevice(t, db, ids[0]).ErrorCount >= 3
	})
}

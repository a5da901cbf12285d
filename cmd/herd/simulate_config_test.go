package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sim"
)

// TestSimulate_Config: a config PUT through the API of a real herd reaches
// simulated devices over MQTT; those that apply it are in sync, and those
// of a --config-reject 1 run are reported rejected with their error.
func TestSimulate_Config(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten, ds, tokens := provisionFleet(t, api, 4)
	ctx := t.Context()
	p := &herd.ConfigProfile{TenantID: ten.ID, Name: "sensor", Schema: []byte(`{"type":"object"}`)}
	if err := api.CreateConfigProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := api.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(`{"rate_s":5}`)}); err != nil {
		t.Fatal(err)
	}
	var devices []sim.Device
	for _, d := range ds {
		devices = append(devices, sim.Device{Key: d.Key, Token: tokens[d.Key]})
	}
	// Two simulator runs: the first two devices apply, the others reject.
	runCtx, cancel := context.WithCancel(ctx)
	var runs sync.WaitGroup
	defer func() { cancel(); runs.Wait() }() // no run outlives the test, failed or not
	done := make(chan sim.Stats, 2)
	for i, reject := range []float64{0, 1} {
		runs.Go(func() {
			stats, err := sim.Run(runCtx, sim.Config{Broker: "tcp://" + m.Gateway.TCPAddr().String(), Devices: devices[2*i : 2*i+2],
				Scenario: sim.Steady, Duration: time.Minute, Seed: 1, ConfigReject: reject})
			if err != nil && runCtx.Err() == nil {
				t.Error(err)
			}
			done <- stats
		})
	}
	testutil.WaitFor(t, 20*time.Second, "4 devices connected", func() bool { return m.Gateway.Connected() == 4 })
	for _, d := range ds {
		if _, err := api.SetDesiredConfig(ctx, d.ID, p.ID, 1); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range ds {
		var dc *herd.DeviceConfig
		testutil.WaitFor(t, 20*time.Second, "a device's answer", func() bool {
			var err error
			dc, err = api.FindDeviceConfig(ctx, d.ID)
			return err == nil && dc.Reported != nil
		})
		if i < 2 && (!dc.InSync || dc.Reported.Version != 1 || dc.Reported.Status != herd.ConfigApplied) {
			t.Fatalf("device %d: %+v, reported %+v; want applied and in sync", i, dc, dc.Reported)
		}
		if i >= 2 && (dc.InSync || dc.Reported.Version != 1 || dc.Reported.Status != herd.ConfigRejected || !strings.Contains(dc.Reported.Error, "rejects")) {
			t.Fatalf("device %d: %+v, reported %+v; want rejected with its error", i, dc, dc.Reported)
		}
	}
	cancel()
	var applied, rejected int64
	for range 2 {
		s := <-done
		applied, rejected = applied+s.ConfigsApplied, rejected+s.ConfigsRejected
	}
	if applied != 2 || rejected != 2 {
		t.Fatalf("the simulators count %d applied, %d rejected; want 2 and 2", applied, rejected)
	}
}

// TestSimulate_Firmware: a firmware update sent on a device's ota topic
// (by the real herd's gateway: herd has no rollout sender yet) has a
// simulated device reboot and come back with the new firmware in its
// projection; a --bricked 1 device reboots and stays offline.
func TestSimulate_Firmware(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	_, ds, tokens := provisionFleet(t, api, 2)
	ctx := t.Context()
	runCtx, cancel := context.WithCancel(ctx)
	var runs sync.WaitGroup
	defer func() { cancel(); runs.Wait() }() // no run outlives the test, failed or not
	done := make(chan sim.Stats, 2)
	for i, bricked := range []float64{0, 1} {
		runs.Go(func() {
			stats, err := sim.Run(runCtx, sim.Config{Broker: "tcp://" + m.Gateway.TCPAddr().String(),
				Devices:  []sim.Device{{Key: ds[i].Key, Token: tokens[ds[i].Key]}},
				Scenario: sim.Steady, Duration: time.Minute, Seed: 1, Reboot: 200 * time.Millisecond, Bricked: bricked})
			if err != nil && runCtx.Err() == nil {
				t.Error(err)
			}
			done <- stats
		})
	}
	payload := []byte(`{"rollout_id":"1","firmware":{"version":"1.5.0","url":"https://fw.example/1.5.0.bin","sha256":"00","size":1}}`)
	// A device subscribes just after it connects, so the update goes
	// until it has taken it: a device starts an update once.
	sent := false
	testutil.WaitFor(t, 30*time.Second, "the good device on 1.5.0 and the bricked one offline", func() bool {
		for _, d := range ds {
			if err := m.Gateway.Send(d.Key, "ota", payload); err == nil && d == ds[1] {
				sent = true
			}
		}
		good, err1 := api.FindDeviceByID(ctx, ds[0].ID)
		bad, err2 := api.FindDeviceByID(ctx, ds[1].ID)
		return err1 == nil && err2 == nil && good.Online && good.Firmware == "1.5.0" && sent && !bad.Online
	})
	// Never coming back has no signal: wait out three reboot times.
	time.Sleep(600 * time.Millisecond)
	if bad, err := api.FindDeviceByID(ctx, ds[1].ID); err != nil || bad.Online || bad.Firmware == "1.5.0" {
		t.Fatalf("bricked device %+v, %v", bad, err)
	}
	cancel()
	var updated, bricked int64
	for range 2 {
		s := <-done
		updated, bricked = updated+s.FirmwareUpdated, bricked+s.FirmwareBricked
	}
	if updated != 1 || bricked != 1 {
		t.Fatalf("the simulators count %d updated, %d bricked; want 1 and 1", updated, bricked)
	}
}

package sim_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sim"
	"github.com/herd-iot/herd/sqldb"
	"github.com/prometheus/client_golang/prometheus"
)

// gateway starts a store with n provisioned devices and a gateway in front,
// set up by opts before it opens.
func gateway(t *testing.T, n int, opts ...func(*sqldb.DB, *mqttgw.Gateway)) (*sqldb.DB, *mqttgw.Gateway, []sim.Device) {
	t.Helper()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	super := testutil.SuperContext()
	ten := &herd.Tenant{Name: "sim"}
	if err := sqldb.NewTenantService(db).CreateTenant(super, ten); err != nil {
		t.Fatal(err)
	}
	var ds []*herd.Device
	for i := range n {
		ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("sim-%d", i)})
	}
	if err := sqldb.NewDeviceService(db).CreateDevices(super, ds); err != nil {
		t.Fatal(err)
	}
	creds := sqldb.NewCredentialService(db)
	var out []sim.Device
	for _, d := range ds {
		c, err := creds.CreateDeviceCredential(super, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sim.Device{Key: d.Key, Token: c.Token})
	}
	gw := mqttgw.New(creds, sqldb.NewIngestService(db))
	gw.Addr = "127.0.0.1:0"
	for _, o := range opts {
		o(db, gw)
	}
	if err := gw.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return db, gw, out
}

// TestRun_Steady checks the simulator's counts against the store: every
// reading acknowledged is in the history, since the PUBACK follows the
// commit.
func TestRun_Steady(t *testing.T) {
	db, gw, devices := gateway(t, 5)
	stats, err := sim.Run(t.Context(), sim.Config{
		Broker: "tcp://" + gw.TCPAddr().String(), Devices: devices, Rate: 20, QoS: 1,
		Scenario: sim.Steady, Duration: 1500 * time.Millisecond, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Acked < 20 || stats.Failed != 0 || stats.Connects != 5 || stats.Connected != 5 {
		t.Fatalf("stats %+v", stats)
	}
	var stored int64
	if err := db.SQL().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM readings`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	// A reading sent as the run ended may be stored without its PUBACK
	// having been counted, never the other way round.
	if stored < stats.Acked || stored > stats.Sent {
		t.Fatalf("%d readings stored; %d sent, %d acknowledged", stored, stats.Sent, stats.Acked)
	}
	if stats.LatencyP50 <= 0 || stats.LatencyP99 < stats.LatencyP50 {
		t.Fatalf("latencies %+v", stats)
	}
}

// TestRun_RebootStorm drops every device at once: each comes back.
func TestRun_RebootStorm(t *testing.T) {
	_, gw, devices := gateway(t, 8)
	stats, err := sim.Run(t.Context(), sim.Config{
		Broker: "tcp://" + gw.TCPAddr().String(), Devices: devices, Rate: 5, QoS: 1,
		Scenario: sim.RebootStorm, StormShare: 1, StormAt: 300 * time.Millisecond, Duration: 3 * time.Second, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats.StormDropped != 8 || stats.StormBack != 8 || stats.Reconnects < 8 || stats.StormBackIn <= 0 {
		t.Fatalf("stats %+v", stats)
	}
}

func TestDevicesFile(t *testing.T) {
	ds := []sim.Device{{Key: "a", Token: "herd_x"}, {Key: "b", Token: "herd_y"}, {Key: "c", Token: "herd_z"}}
	path := filepath.Join(t.TempDir(), "keys")
	if err := sim.WriteDevices(path, ds); err != nil {
		t.Fatal(err)
	}
	got, err := sim.ReadDevices(path)
	if err != nil || !slices.Equal(got, ds) {
		t.Fatalf("read %v, %v", got, err)
	}
	if a, b := sim.Shard(ds, 0, 2), sim.Shard(ds, 1, 2); len(a) != 2 || len(b) != 1 || a[1] != ds[2] {
		t.Fatalf("shards %v %v", a, b)
	}
}

// TestRun_AnswersCommands sends each simulated device a command through the
// gateway: each answers on its commands/ack topic.
func TestRun_AnswersCommands(t *testing.T) {
	_, gw, devices := gateway(t, 3)
	reg := prometheus.NewRegistry()
	reg.MustRegister(gw.Collectors()...)
	acks := func() (n float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "herd_mqtt_publishes_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" && l.GetValue() != "stored" {
						break // refused answers are not answers
					}
					if l.GetName() == "topic" && l.GetValue() == "commands/ack" {
						n += m.GetCounter().GetValue()
					}
				}
			}
		}
		return n
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan sim.Stats, 1)
	go func() {
		stats, err := sim.Run(ctx, sim.Config{
			Broker: "tcp://" + gw.TCPAddr().String(), Devices: devices, Rate: 1, QoS: 1,
			Scenario: sim.Steady, Duration: time.Minute, Seed: 1,
		})
		if err != nil {
			t.Error(err)
		}
		done <- stats
	}()
	// A device subscribes just after it connects: send until every device
	// has answered at least once.
	deadline := time.Now().Add(30 * time.Second)
	for acks() < float64(len(devices)) {
		if time.Now().After(deadline) {
			t.Fatalf("%v command acks after 30 s, want %d", acks(), len(devices))
		}
		for i, d := range devices {
			if err := gw.Send(d.Key, "commands", []byte(`{"id":"`+fmt.Sprint(i+1)+`","name":"reboot"}`)); err != nil && !errors.Is(err, mqttgw.ErrNotConnected) {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	stats := <-done
	if stats.CommandsAcked < int64(len(devices)) {
		t.Fatalf("the simulator counts %d commands answered, want at least %d", stats.CommandsAcked, len(devices))
	}
}

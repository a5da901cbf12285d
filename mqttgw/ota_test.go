package mqttgw_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// TestGateway_OTA: a device subscribed to its ota topic gets the firmware
// update a device.ota_requested event asks for, and an event of another
// tenant naming its key is not sent to it; a device told by a rollout
// whose publish it missed gets the update when it subscribes.
func TestGateway_OTA(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		configs := sqldb.NewConfigService(db)
		f := newFleet(t, db, 2, func(g *mqttgw.Gateway) { g.Configs, g.OTA = configs, configs })
		live, away := f.devices[0], f.devices[1]
		fws := sqldb.NewFirmwareService(db)
		old := &herd.Firmware{TenantID: f.tenant.ID, Model: "th-200", Version: "1.0.0", URL: "https://fw.example/1.0.0.bin", SHA256: strings.Repeat("10", 32), Size: 1000}
		next := &herd.Firmware{TenantID: f.tenant.ID, Model: "th-200", Version: "1.5.0", URL: "https://fw.example/1.5.0.bin", SHA256: strings.Repeat("15", 32), Size: 1500}
		for _, fw := range []*herd.Firmware{old, next} {
			if err := fws.CreateFirmware(f.super, fw); err != nil {
				t.Fatal(err)
			}
		}

		// subscribe connects the device and subscribes it to its ota topic.
		subscribe := func(d *herd.Device) chan []byte {
			t.Helper()
			c, err := f.client(t, d.Key, f.tokens[d.Key])
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan []byte, 16)
			tok := c.Subscribe("devices/"+d.Key+"/ota", 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() })
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
			return got
		}
		receive := func(got chan []byte, want []byte) {
			t.Helper()
			select {
			case b := <-got:
				if string(b) != string(want) {
					t.Fatalf("ota message %s, want %s", b, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no ota message, want %s", want)
			}
		}
		event := func(tenantID int64, r *herd.OTARequest) *herd.Event {
			t.Helper()
			buf, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			return &herd.Event{TenantID: tenantID, Type: herd.EventDeviceOTARequested, SubjectType: herd.EventSubjectDevice, SubjectID: r.DeviceID, Path: f.node.Path, Payload: buf}
		}

		t.Run("Event", func(t *testing.T) {
			got := subscribe(live)
			foreign := &herd.OTARequest{DeviceID: live.ID, DeviceKey: live.Key, RolloutID: 666, Firmware: *old}
			mine := &herd.OTARequest{DeviceID: live.ID, DeviceKey: live.Key, RolloutID: 7, Firmware: *next}
			// The other tenant's event goes first: publishes to one
			// connection keep their order, so if it were sent it would be
			// the first message the device gets.
			f.gw.OTAEvent(event(f.tenant.ID+1000, foreign))
			f.gw.OTAEvent(&herd.Event{TenantID: f.tenant.ID, Type: herd.EventDeviceConfigDesired, Payload: event(f.tenant.ID, foreign).Payload})
			f.gw.OTAEvent(event(f.tenant.ID, mine))
			receive(got, mine.DevicePayload())
			var m struct {
				RolloutID string `json:"rollout_id"`
				Firmware  struct {
					Version, URL, SHA256 string
					Size                 int64
				} `json:"firmware"`
			}
			if err := json.Unmarshal(mine.DevicePayload(), &m); err != nil || m.RolloutID != "7" || m.Firmware.Version != "1.5.0" || m.Firmware.URL != next.URL || m.Firmware.SHA256 != next.SHA256 || m.Firmware.Size != 1500 {
				t.Fatalf("device payload %s: %+v, %v", mine.DevicePayload(), m, err)
			}
		})

		t.Run("Subscription", func(t *testing.T) {
			// The controller told the device while it was away: the
			// member row is told, and no gateway held it for the event.
			var rollout int64
			err := db.SQL().QueryRowContext(t.Context(), db.Rebind(`INSERT INTO rollouts (tenant_id, node_id, path, name, kind, spec, target_version, firmware_id, state, created_at)
VALUES (?, ?, ?, 'fw 1.5.0', ?, '{}', ?, ?, ?, ?) RETURNING id`), f.tenant.ID, f.node.ID, f.node.Path, herd.RolloutFirmware, next.Version, next.ID, herd.RolloutRunning, time.Now().UnixMilli()).Scan(&rollout)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.SQL().ExecContext(t.Context(), db.Rebind(`INSERT INTO rollout_members (rollout_id, tenant_id, device_id, ord, state, told_at, prev_firmware_id) VALUES (?, ?, ?, 1, ?, ?, ?)`),
				rollout, f.tenant.ID, away.ID, herd.MemberTold, time.Now().UnixMilli(), old.ID); err != nil {
				t.Fatal(err)
			}
			got := subscribe(away)
			want := &herd.OTARequest{DeviceID: away.ID, DeviceKey: away.Key, RolloutID: rollout, Firmware: *next}
			receive(got, want.DevicePayload())
		})
	})
}

package mqttgw_test

import (
	"encoding/json"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// TestGateway_Config: a device subscribed to its config topic gets the
// document when its desired config changes (the committed event, as the
// stream tail hands it over); it acks applied, and its config is in sync
// with the projection's config_version updated; a repeated ack changes
// nothing; a desired version whose publish it missed comes on its next
// subscription; a rejected ack records the error; firmware progress is an
// event; a malformed ack is refused.
func TestGateway_Config(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		configs := sqldb.NewConfigService(db)
		f := newFleet(t, db, 1, func(g *mqttgw.Gateway) { g.Configs = configs })
		d := f.devices[0]
		p := &herd.ConfigProfile{TenantID: f.tenant.ID, Name: "sensor", Schema: []byte(`{"type":"object","properties":{"rate_s":{"type":"integer"}}}`)}
		if err := configs.CreateConfigProfile(f.super, p); err != nil {
			t.Fatal(err)
		}
		for _, doc := range []string{`{"rate_s":10}`, `{"rate_s":20}`} {
			if err := configs.CreateConfigVersion(f.super, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(doc)}); err != nil {
				t.Fatal(err)
			}
		}
		c, err := f.client(t, d.Key, f.tokens[d.Key])
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan []byte, 16)
		topic := "devices/" + d.Key + "/config"
		subscribe := func() {
			t.Helper()
			tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) { got <- m.Payload() })
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
		}
		// receive waits for a version. The same config may come more than
		// once (a subscription's resend can race the event's publish), as
		// devices know: an older version seen again is skipped.
		receive := func(version int64, doc string) {
			t.Helper()
			for {
				select {
				case b := <-got:
					var m struct {
						Version  int64           `json:"version"`
						Profile  string          `json:"profile"`
						Document json.RawMessage `json:"document"`
					}
					if err := json.Unmarshal(b, &m); err == nil && m.Version < version {
						continue
					}
					if err := json.Unmarshal(b, &m); err != nil || m.Version != version || m.Profile != "sensor" || string(m.Document) != doc {
						t.Fatalf("config message %s, want version %d %s", b, version, doc)
					}
					return
				case <-time.After(10 * time.Second):
					t.Fatalf("no config version %d", version)
				}
			}
		}
		ack := func(payload string) {
			t.Helper()
			tok := c.Publish(topic+"/ack", 1, false, payload)
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("ack: %v", tok.Error())
			}
		}
		state := func() *herd.DeviceConfig {
			t.Helper()
			dc, err := configs.FindDeviceConfig(f.super, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			return dc
		}
		subscribe()

		if _, err := configs.SetDesiredConfig(f.super, d.ID, p.ID, 1); err != nil {
			t.Fatal(err)
		}
		evs := f.events(t, d.ID, herd.EventDeviceConfigDesired)
		if len(evs) != 1 {
			t.Fatalf("%d device.config_desired events, want 1", len(evs))
		}
		f.gw.ConfigEvent(evs[0])
		receive(1, `{"rate_s":10}`)

		// The PUBACK comes after the commit: the answer is in the store.
		ack(`{"version":1,"status":"applied"}`)
		if dc := state(); !dc.InSync || dc.Reported == nil || dc.Reported.Version != 1 || dc.Reported.Status != herd.ConfigApplied {
			t.Fatalf("after applied: %+v %+v", dc, dc.Reported)
		}
		if cv := f.device(t, d.ID).ConfigVersion; cv != 1 {
			t.Fatalf("config_version %d, want 1", cv)
		}
		ack(`{"version":1,"status":"applied"}`)
		if n := len(f.events(t, d.ID, herd.EventDeviceConfigReported)); n != 1 {
			t.Fatalf("%d device.config_reported events after a repeated ack, want 1", n)
		}

		// Version 2 is desired; its publish never reached this gateway.
		// The device's next subscription brings it.
		if _, err := configs.SetDesiredConfig(f.super, d.ID, p.ID, 2); err != nil {
			t.Fatal(err)
		}
		if dc := state(); dc.InSync {
			t.Fatalf("in sync with version 2 desired: %+v", dc)
		}
		if tok := c.Unsubscribe(topic); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("unsubscribe: %v", tok.Error())
		}
		subscribe()
		receive(2, `{"rate_s":20}`)
		ack(`{"version":"2","status":"rejected","error":"rate_s 20 is above this model's limit"}`)
		dc := state()
		if dc.InSync || dc.Reported.Version != 2 || dc.Reported.Status != herd.ConfigRejected || dc.Reported.Error != "rate_s 20 is above this model's limit" {
			t.Fatalf("after rejected: %+v %+v", dc, dc.Reported)
		}
		if cv := f.device(t, d.ID).ConfigVersion; cv != 1 {
			t.Fatalf("config_version %d after a rejection, want 1", cv)
		}
		// Still not in sync: every subscription sends it again.
		subscribe()
		receive(2, `{"rate_s":20}`)

		tok := c.Publish("devices/"+d.Key+"/ota/progress", 1, false, `{"rollout_id":"7","state":"downloading","percent":40}`)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("ota progress: %v", tok.Error())
		}
		evs = f.events(t, d.ID, herd.EventDeviceOTAProgress)
		if len(evs) != 1 {
			t.Fatalf("%d device.ota_progress events, want 1", len(evs))
		}
		var prog struct {
			State   string `json:"state"`
			Percent int64  `json:"percent"`
		}
		if err := json.Unmarshal(evs[0].Payload, &prog); err != nil || prog.State != herd.OTADownloading || prog.Percent != 40 {
			t.Fatalf("ota progress event %s", evs[0].Payload)
		}
	})
}

// TestGateway_ConfigAckMalformed: answers on config/ack and ota/progress
// that do not parse are refused (PUBACK 0x99) and change nothing.
func TestGateway_ConfigAckMalformed(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	configs := sqldb.NewConfigService(db)
	f := newFleet(t, db, 1, func(g *mqttgw.Gateway) { g.Configs = configs })
	d := f.devices[0]
	conn, ca := f.rawConnect(t, d.Key, f.tokens[d.Key], 60)
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	for i, c := range []struct{ topic, payload string }{
		{"config/ack", `{"version":0,"status":"applied"}`},
		{"config/ack", `{"version":1,"status":"ok"}`},
		{"config/ack", `[1]`},
		{"ota/progress", `{"state":"done"}`},
		{"ota/progress", `{"state":"failed","percent":300}`},
	} {
		if rc := rawPublish(t, conn, uint16(1+i), "devices/"+d.Key+"/"+c.topic, c.payload); rc != 0x99 {
			t.Errorf("%s %s: PUBACK %#x, want 0x99", c.topic, c.payload, rc)
		}
	}
	if dc, err := configs.FindDeviceConfig(f.super, d.ID); err != nil || dc.Reported != nil {
		t.Fatalf("config after malformed acks: %+v, %v", dc, err)
	}
	if n := len(f.events(t, d.ID, herd.EventDeviceConfigReported)) + len(f.events(t, d.ID, herd.EventDeviceOTAProgress)); n != 0 {
		t.Fatalf("%d events from malformed answers", n)
	}
}

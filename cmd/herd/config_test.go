package main

import (
	"encoding/json"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
)

// TestServe_Config: through the real herd, a PUT of a device's config
// reaches the device on its config topic (the committed event, over the
// stream tail), and its applied answer puts it in sync with config_version
// updated.
func TestServe_Config(t *testing.T) {
	t.Parallel()
	m := runTestMain(t, "--mqtt-addr", "127.0.0.1:0")
	api := httpapi.NewClient(m.HTTPServer.URL(), testAdminToken)
	ten, ds, tokens := provisionFleet(t, api, 1)
	ctx := t.Context()
	d := ds[0]
	p := &herd.ConfigProfile{TenantID: ten.ID, Name: "sensor", Schema: []byte(`{"type":"object"}`)}
	if err := api.CreateConfigProfile(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := api.CreateConfigVersion(ctx, &herd.ConfigVersion{ProfileID: p.ID, Document: []byte(`{"rate_s":5}`)}); err != nil {
		t.Fatal(err)
	}
	c := mqttClient(m.Gateway.TCPAddr().String(), d.Key, tokens[d.Key])
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	got := make(chan []byte, 4)
	if tok := c.Subscribe("devices/"+d.Key+"/config", 1, func(_ paho.Client, msg paho.Message) { got <- msg.Payload() }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if _, err := api.SetDesiredConfig(ctx, d.ID, p.ID, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		var msg struct {
			Version  int64           `json:"version"`
			Profile  string          `json:"profile"`
			Document json.RawMessage `json:"document"`
		}
		if err := json.Unmarshal(b, &msg); err != nil || msg.Version != 1 || msg.Profile != "sensor" || string(msg.Document) != `{"rate_s":5}` {
			t.Fatalf("config message %s", b)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the device got no config")
	}
	if tok := c.Publish("devices/"+d.Key+"/config/ack", 1, false, `{"version":1,"status":"applied"}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ack: %v", tok.Error())
	}
	dc, err := api.FindDeviceConfig(ctx, d.ID)
	if err != nil || !dc.InSync || dc.Reported == nil || dc.Reported.Version != 1 {
		t.Fatalf("config after the ack: %+v, %v", dc, err)
	}
	testutil.WaitFor(t, 10*time.Second, "config_version 1", func() bool {
		dev, err := api.FindDeviceByID(ctx, d.ID)
		return err == nil && dev.ConfigVersion == 1
	})
}

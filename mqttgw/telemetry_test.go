package mqttgw_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// telemetryMaxPayload is the payload limit of the telemetry tests: small,
// so that a payload above it is still a small packet.
const telemetryMaxPayload = 512

// malformed are telemetry payloads that ParseTelemetry refuses as EINVALID.
var malformed = map[string]string{
	"BadJSON":       `{"temperature":`,
	"WrongType":     `{"temperature":"hot"}`,
	"UnknownStatus": `{"status":"melting"}`,
	"Null":          `{"battery":null}`,
	"EmptyArray":    `[]`,
	"NotAnObject":   `42`,
	"ArrayOfJunk":   `[{"temperature":1},"x"]`,
}

// tooLarge is valid telemetry longer than telemetryMaxPayload.
var tooLarge = `{"temperature":1,"note":"` + strings.Repeat("x", telemetryMaxPayload) + `"}`

// viewer returns a context acting as a user who views the fleet's node:
// the scope the device query applies.
func (f *fleet) viewer() context.Context {
	return herd.NewContextWithActor(context.Background(), &herd.Actor{UserID: 1, TenantID: f.tenant.ID, Grants: []*herd.Grant{
		{TenantID: f.tenant.ID, NodeID: f.node.ID, Role: herd.RoleViewer, Path: f.node.Path},
	}})
}

// queryDevice finds a device by key through the scoped device query.
func (f *fleet) queryDevice(t *testing.T, key string) *herd.Device {
	t.Helper()
	page, err := sqldb.NewDeviceService(f.db).QueryDevices(f.viewer(), herd.DeviceQuery{Filters: []herd.DeviceFilter{{Field: "key", Op: herd.OpEq, Values: []any{key}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != 1 {
		t.Fatalf("query for key %s: %d devices", key, len(page.Items))
	}
	return page.Items[0]
}

func TestGateway_Telemetry(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 6, func(g *mqttgw.Gateway) { g.MaxPayload = telemetryMaxPayload })

		// A QoS 1 PUBACK comes after the commit: the reading is in the
		// projection and the device query the moment it arrives.
		t.Run("ObjectMQTT5", func(t *testing.T) {
			d := f.devices[0]
			c := f.mustDialV5(t, d)
			rc, err := c.publish(t, "devices/"+d.Key+"/telemetry", `{"temperature":21.5,"humidity":40,"rssi":-60,"status":"warn","firmware":"1.2.3","site":"north"}`)
			if err != nil || rc >= 0x80 {
				t.Fatalf("PUBACK %#x, %v", rc, err)
			}
			got := f.device(t, d.ID)
			if got.Temperature == nil || *got.Temperature != 21.5 || got.Humidity == nil || *got.Humidity != 40 || got.RSSI == nil || *got.RSSI != -60 ||
				got.Status != herd.StatusWarn || got.Firmware != "1.2.3" || !got.Online || got.LastSeen == nil {
				t.Fatalf("device after PUBACK: %+v", got)
			}
			q := f.queryDevice(t, d.Key)
			if q.ID != d.ID || q.Temperature == nil || *q.Temperature != 21.5 || q.Status != herd.StatusWarn || !q.Online {
				t.Fatalf("device query after PUBACK: %+v", q)
			}
			if n := f.readings(t, d.ID); n != 1 {
				t.Fatalf("%d readings, want 1", n)
			}
		})

		t.Run("ArrayMQTT311", func(t *testing.T) {
			d := f.devices[1]
			c, err := f.client(t, d.Key, f.tokens[d.Key])
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
			payload := fmt.Sprintf(`[{"ts":%d,"temperature":10,"battery":50},{"ts":%d,"temperature":12,"status":"alarm"},{"ts":%q,"temperature":8,"battery":40}]`,
				t0.Add(time.Minute).UnixMilli(), t0.Add(2*time.Minute).UnixMilli(), t0.Format(time.RFC3339))
			tok := c.Publish("devices/"+d.Key+"/telemetry", 1, false, payload)
			if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
			// Each field from the newest reading that has it.
			got := f.device(t, d.ID)
			if got.Temperature == nil || *got.Temperature != 12 || got.Battery == nil || *got.Battery != 50 || got.Status != herd.StatusAlarm {
				t.Fatalf("device after PUBACK: %+v", got)
			}
			if q := f.queryDevice(t, d.Key); q.Temperature == nil || *q.Temperature != 12 || q.Status != herd.StatusAlarm {
				t.Fatalf("device query after PUBACK: %+v", q)
			}
			if n := f.readings(t, d.ID); n != 3 {
				t.Fatalf("%d readings, want 3", n)
			}
		})

		// Readings without ts get the arrival time; two in one message,
		// or in two messages in the same millisecond, are still two rows
		// of history.
		t.Run("WithoutTS", func(t *testing.T) {
			d := f.devices[2]
			c := f.mustDialV5(t, d)
			rc, err := c.publish(t, "devices/"+d.Key+"/telemetry", `[{"temperature":1},{"temperature":2}]`)
			if err != nil || rc >= 0x80 {
				t.Fatalf("PUBACK %#x, %v", rc, err)
			}
			if n := f.readings(t, d.ID); n != 2 {
				t.Fatalf("%d readings after one array of two, want 2", n)
			}
			if got := f.device(t, d.ID).Temperature; got == nil || *got != 2 {
				t.Fatalf("temperature %v, want 2, the later of the two", got)
			}

			// Two PUBLISHes in one write: they arrive together.
			conn, _ := f.rawConnect(t, f.devices[3].Key, f.tokens[f.devices[3].Key], 30)
			var buf strings.Builder
			for i, temp := range []string{"5", "6"} {
				writePublish(t, &buf, uint16(i+1), "devices/"+f.devices[3].Key+"/telemetry", `{"temperature":`+temp+`}`)
			}
			if _, err := conn.Write([]byte(buf.String())); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if rc := readPuback(t, conn, uint16(i+1)); rc >= 0x80 {
					t.Fatalf("PUBACK %d: %#x", i+1, rc)
				}
			}
			if n := f.readings(t, f.devices[3].ID); n != 2 {
				t.Fatalf("%d readings after two messages back to back, want 2", n)
			}
		})

		t.Run("ErrMalformedMQTT5", func(t *testing.T) {
			d := f.devices[0]
			c := f.mustDialV5(t, d)
			// Back online (status ok again) before the state to compare with.
			waitFor(t, 10*time.Second, "the device is online", func() bool { return f.device(t, d.ID).Online })
			before, n := f.device(t, d.ID), f.readings(t, d.ID)
			bad := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "malformed")
			large := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "too_large")
			for name, payload := range malformed {
				if rc, err := c.publish(t, "devices/"+d.Key+"/telemetry", payload); err != nil || rc != 0x99 {
					t.Errorf("%s: PUBACK %#x, %v; want 0x99 payload format invalid", name, rc, err)
				}
			}
			if rc, err := c.publish(t, "devices/"+d.Key+"/telemetry", tooLarge); err != nil || rc != 0x99 {
				t.Errorf("too large: PUBACK %#x, %v; want 0x99 payload format invalid", rc, err)
			}
			if got := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "malformed"); got != bad+float64(len(malformed)) {
				t.Errorf("malformed = %v, want %v", got, bad+float64(len(malformed)))
			}
			if got := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "too_large"); got != large+1 {
				t.Errorf("too_large = %v, want %v", got, large+1)
			}
			// Nothing stored, and the device keeps its connection.
			if got := f.readings(t, d.ID); got != n {
				t.Errorf("%d readings, want %d", got, n)
			}
			if rc, err := c.publish(t, "devices/"+d.Key+"/telemetry", `{"temperature":22}`); err != nil || rc >= 0x80 {
				t.Fatalf("good publish after the bad: PUBACK %#x, %v", rc, err)
			}
			after := f.device(t, d.ID)
			if *after.Temperature != 22 || after.Status != before.Status || *after.Humidity != *before.Humidity {
				t.Fatalf("device after the bad and one good publish: %+v", after)
			}
		})

		// MQTT 3.1.1 has no refusing PUBACK: the message is acked and
		// dropped, so the device does not send it again forever.
		t.Run("ErrMalformedMQTT311", func(t *testing.T) {
			d := f.devices[1]
			c, err := f.client(t, d.Key, f.tokens[d.Key])
			if err != nil {
				t.Fatal(err)
			}
			n := f.readings(t, d.ID)
			bad := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "malformed")
			large := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "too_large")
			for name, payload := range malformed {
				tok := c.Publish("devices/"+d.Key+"/telemetry", 1, false, payload)
				if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
					t.Errorf("%s: no PUBACK: %v", name, tok.Error())
				}
			}
			tok := c.Publish("devices/"+d.Key+"/telemetry", 1, false, tooLarge)
			if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
				t.Errorf("too large: no PUBACK: %v", tok.Error())
			}
			if got := f.readings(t, d.ID); got != n {
				t.Errorf("%d readings, want %d", got, n)
			}
			if got := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "malformed"); got != bad+float64(len(malformed)) {
				t.Errorf("malformed = %v, want %v", got, bad+float64(len(malformed)))
			}
			if got := f.metric(t, "herd_mqtt_publishes_total", "topic", "telemetry", "result", "too_large"); got != large+1 {
				t.Errorf("too_large = %v, want %v", got, large+1)
			}
			if !c.IsConnectionOpen() {
				t.Fatal("connection lost")
			}
		})

		// A device sending garbage costs another device nothing.
		t.Run("GarbageBesideGood", func(t *testing.T) {
			const count = 40
			bad, good := f.devices[4], f.devices[5]
			cb, cg := f.mustDialV5(t, bad), f.mustDialV5(t, good)
			payloads := []string{tooLarge}
			for _, p := range malformed {
				payloads = append(payloads, p)
			}
			t0 := time.Now().Add(-time.Hour).UnixMilli()
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := range count {
					if rc, err := cb.publish(t, "devices/"+bad.Key+"/telemetry", payloads[i%len(payloads)]); err != nil || rc != 0x99 {
						t.Errorf("garbage %d: PUBACK %#x, %v", i, rc, err)
						return
					}
				}
			})
			wg.Go(func() {
				for i := range count {
					payload := fmt.Sprintf(`{"ts":%d,"temperature":%d}`, t0+int64(i), i)
					if rc, err := cg.publish(t, "devices/"+good.Key+"/telemetry", payload); err != nil || rc >= 0x80 {
						t.Errorf("reading %d: PUBACK %#x, %v", i, rc, err)
						return
					}
				}
			})
			wg.Wait()
			if cb.closed(0) || cg.closed(0) {
				t.Fatalf("connections closed: garbage %v, good %v", cb.closed(0), cg.closed(0))
			}
			if n := f.readings(t, good.ID); n != count {
				t.Fatalf("the good device has %d readings, want %d", n, count)
			}
			if got := f.device(t, good.ID).Temperature; got == nil || *got != count-1 {
				t.Fatalf("the good device's temperature is %v, want %d", got, count-1)
			}
			if n := f.readings(t, bad.ID); n != 0 {
				t.Fatalf("the garbage device has %d readings", n)
			}
		})
	})
}

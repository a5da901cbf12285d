package mqttgw_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	pk5 "github.com/eclipse/paho.golang/packets"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// A device may have many QoS 1 publishes in flight. Whatever becomes of
// each (a reading stored, an event stored, refused by the ACL, malformed),
// the PUBACKs come back in the order of the publishes, each with its reason
// code, and exactly the good readings are stored.
func TestGateway_PipelinedPubacksInOrder(t *testing.T) {
	t.Parallel()
	for _, d := range testutil.Dialects() {
		t.Run(string(d), func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, testutil.MustOpenDB(t, d), 2, nil)
			dev, other := f.devices[0], f.devices[1]
			conn, ca := f.rawConnect(t, dev.Key, f.tokens[dev.Key], 60)
			if ca.ReasonCode != 0 {
				t.Fatalf("CONNACK %#x", ca.ReasonCode)
			}
			type sent struct {
				id   uint16
				want byte
			}
			var all []sent
			var buf bytes.Buffer
			stored := 0
			base := time.Now().Add(-time.Hour).UnixMilli()
			// 200 publishes, under the receive maximum of 256, written at
			// once so that many are read before the first commit ends.
			for i := range 200 {
				id := uint16(i + 1)
				topic, payload, want := "devices/"+dev.Key+"/telemetry", fmt.Sprintf(`{"ts":%d,"temperature":%d}`, base+int64(i), i), byte(0)
				switch i % 10 {
				case 3:
					payload, want = `{"temperature":`, 0x99
				case 5:
					topic, want = "devices/"+other.Key+"/telemetry", 0x87
				case 7:
					topic, payload = "devices/"+dev.Key+"/events", `{"kind":"door"}`
				default:
					stored++
				}
				writePublish(t, &buf, id, topic, payload)
				all = append(all, sent{id, want})
			}
			if _, err := conn.Write(buf.Bytes()); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(conn)
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			for _, s := range all {
				p, err := pk5.ReadPacket(r)
				if err != nil {
					t.Fatalf("waiting for the PUBACK of %d: %v", s.id, err)
				}
				pa, ok := p.Content.(*pk5.Puback)
				if !ok {
					t.Fatalf("got %s, want the PUBACK of %d", p, s.id)
				}
				if pa.PacketID != s.id || pa.ReasonCode != s.want {
					t.Fatalf("PUBACK %d reason %#x, want %d reason %#x (out of order or wrong code)", pa.PacketID, pa.ReasonCode, s.id, s.want)
				}
			}
			if n := f.readings(t, dev.ID); n != stored {
				t.Errorf("%d readings stored, want %d", n, stored)
			}
			if n := f.readings(t, other.ID); n != 0 {
				t.Errorf("the other device has %d readings", n)
			}
		})
	}
}

// mochi would publish a will to the subscribers of its topic: a device may
// not leave one on another device's topics, which would reach that device
// as a command.
func TestGateway_WillTopic(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, nil)
	dev, other := f.devices[0], f.devices[1]
	for _, tc := range []struct {
		topic string
		want  byte
	}{
		{"devices/" + other.Key + "/commands", 0x87},
		{"devices/" + dev.Key + "/commands", 0x87}, // its own inbox: not a topic it publishes on
		{"alerts/all", 0x87},
		{"devices/" + dev.Key + "/events", 0},
	} {
		conn, err := net.DialTimeout("tcp", f.addr(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cp := pk5.NewControlPacket(pk5.CONNECT)
		c := cp.Content.(*pk5.Connect)
		c.ClientID, c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = dev.Key, dev.Key, true, []byte(f.tokens[dev.Key]), true
		c.KeepAlive, c.CleanStart = 60, true
		c.WillFlag, c.WillTopic, c.WillMessage, c.WillQOS = true, tc.topic, []byte(`{"kind":"gone"}`), 1
		if _, err := cp.WriteTo(conn); err != nil {
			t.Fatal(err)
		}
		p := readPacket(t, conn, 10*time.Second)
		ca, ok := p.Content.(*pk5.Connack)
		if !ok || ca.ReasonCode != tc.want {
			t.Errorf("will on %s: got %s, want CONNACK %#x", tc.topic, p, tc.want)
		}
		conn.Close()
	}
	if got := f.metric(t, "herd_mqtt_acl_refused_total", "kind", "will"); got != 3 {
		t.Errorf("wills refused = %v, want 3", got)
	}
}

// Readings without ts take the arrival time, one millisecond past the
// last when several arrive in one: a device that sent faster than that is
// ahead of the clock when it disconnects, and its next session must go on
// from there, or its new readings would take the times of stored ones and
// be dropped as repeats. The clock here stands still, the worst case.
func TestGateway_DefaultTimesAcrossSessions(t *testing.T) {
	t.Parallel()
	frozen := time.Now()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 1, func(g *mqttgw.Gateway) {
		g.Now = func() time.Time { return frozen }
	})
	dev := f.devices[0]
	for session := range 3 {
		conn, ca := f.rawConnect(t, dev.Key, f.tokens[dev.Key], 60)
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ca.ReasonCode)
		}
		var buf bytes.Buffer
		for i := range 50 {
			writePublish(t, &buf, uint16(i+1), "devices/"+dev.Key+"/telemetry", `{"temperature":20}`)
		}
		if _, err := conn.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		for i := range 50 {
			p, err := pk5.ReadPacket(r)
			if err != nil {
				t.Fatal(err)
			}
			if pa, ok := p.Content.(*pk5.Puback); !ok || pa.PacketID != uint16(i+1) || pa.ReasonCode != 0 {
				t.Fatalf("got %s, want the PUBACK of %d", p, i+1)
			}
		}
		conn.Close()
		waitFor(t, 10*time.Second, "the session to end", func() bool { return f.gw.Connected() == 0 })
		if n, want := f.readings(t, dev.ID), 50*(session+1); n != want {
			t.Fatalf("after session %d: %d readings stored, want %d", session+1, n, want)
		}
	}
}

// What a device publishes on its events topic becomes a device.reported
// event carrying its object; anything but an object is refused like
// malformed telemetry.
func TestGateway_DeviceEvents(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 1, nil)
	d := f.devices[0]
	conn, ca := f.rawConnect(t, d.Key, f.tokens[d.Key], 60)
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	topic := "devices/" + d.Key + "/events"
	if rc := rawPublish(t, conn, 1, topic, ` {"kind": "door", "open": true} `); rc != 0 {
		t.Fatalf("event: PUBACK %#x", rc)
	}
	for i, bad := range []string{`[{"kind":"door"}]`, `"door"`, `{"kind":`} {
		if rc := rawPublish(t, conn, uint16(2+i), topic, bad); rc != 0x99 {
			t.Errorf("event %s: PUBACK %#x, want 0x99", bad, rc)
		}
	}
	evs := f.events(t, d.ID, herd.EventDeviceReported)
	if len(evs) != 1 {
		t.Fatalf("%d device.reported events, want 1", len(evs))
	}
	var body struct {
		Data json.RawMessage `json:"data"`
		Key  string          `json:"key"`
	}
	if err := json.Unmarshal(evs[0].Payload, &body); err != nil || string(body.Data) != `{"kind":"door","open":true}` || body.Key != d.Key {
		t.Fatalf("event payload %s: %v", evs[0].Payload, err)
	}
	if got := f.metric(t, "herd_mqtt_publishes_total", "topic", "events", "result", "stored"); got != 1 {
		t.Errorf("stored events = %v, want 1", got)
	}
}

// One writer sends every connection's PUBACKs. A device that stopped
// reading while herd sends it commands has its socket full and mochi's
// write to it blocked, holding the client's lock until keepalive ends it:
// that device's PUBACK waits, and nobody else's does.
func TestGateway_StuckReaderHoldsNoOneElse(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, nil)
	stuck, other := f.devices[0], f.devices[1]
	conn, ca := f.rawConnect(t, stuck.Key, f.tokens[stuck.Key], 60)
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	sub := pk5.NewControlPacket(pk5.SUBSCRIBE)
	sc := sub.Content.(*pk5.Subscribe)
	sc.PacketID, sc.Subscriptions = 1, []pk5.SubOptions{{Topic: "devices/" + stuck.Key + "/commands", QoS: 0}}
	if _, err := sub.WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	if p := readPacket(t, conn, 10*time.Second); p.PacketType() != "SUBACK" {
		t.Fatalf("got %s, want SUBACK", p)
	}
	// Far more than the socket holds (4 MiB of send buffer on loopback),
	// never read.
	big := bytes.Repeat([]byte("x"), 256<<10)
	for range 48 {
		if err := f.gw.Send(stuck.Key, "commands", big); err != nil {
			t.Fatal(err)
		}
	}
	// The stuck device publishes: its PUBACK cannot be written.
	writePublish(t, conn, 7, "devices/"+stuck.Key+"/telemetry", `{"temperature":1}`)
	c := f.mustDialV5(t, other)
	for i := range 3 {
		start := time.Now()
		if rc, err := c.publish(t, "devices/"+other.Key+"/telemetry", fmt.Sprintf(`{"temperature":%d}`, i)); err != nil || rc != 0 {
			t.Fatalf("other device: PUBACK %#x, %v", rc, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the other device's PUBACK took %v", d)
		}
	}
	// Its reading is stored all the same (its read loop may come to it
	// after the other device's publishes).
	waitFor(t, 10*time.Second, "the stuck device's reading", func() bool { return f.readings(t, stuck.ID) == 1 })
}

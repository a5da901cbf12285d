package mqttgw_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// Online and offline: a connection marks its device online, and its end,
// clean or not, offline, each with its event.
func TestGateway_OnlineOffline(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 3, nil)
		online := func(d *herd.Device) func() bool {
			return func() bool { got := f.device(t, d.ID); return got.Online }
		}
		offline := func(d *herd.Device) func() bool {
			return func() bool { got := f.device(t, d.ID); return !got.Online }
		}
		for _, d := range f.devices {
			if online(d)() {
				t.Fatalf("%s online before it connected", d.Key)
			}
		}

		t.Run("CleanMQTT311", func(t *testing.T) {
			d := f.devices[0]
			c, err := f.client(t, d.Key, f.tokens[d.Key])
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the device is online", online(d))
			c.Disconnect(250)
			waitFor(t, 10*time.Second, "the device is offline", offline(d))
		})
		t.Run("CleanMQTT5", func(t *testing.T) {
			d := f.devices[1]
			c := f.mustDialV5(t, d)
			waitFor(t, 10*time.Second, "the device is online", online(d))
			if err := c.Disconnect(&paho5.Disconnect{ReasonCode: 0}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the device is offline", offline(d))
		})
		t.Run("ConnectionLost", func(t *testing.T) {
			d := f.devices[2]
			c := f.mustDialV5(t, d)
			waitFor(t, 10*time.Second, "the device is online", online(d))
			// No DISCONNECT: the socket just goes.
			c.conn.Close()
			waitFor(t, 10*time.Second, "the device is offline", offline(d))
		})

		for _, d := range f.devices {
			on, off := f.events(t, d.ID, herd.EventDeviceOnline), f.events(t, d.ID, herd.EventDeviceOffline)
			if len(on) != 1 || len(off) != 1 || on[0].Seq > off[0].Seq {
				t.Fatalf("%s: %d device.online and %d device.offline events, want one of each in that order", d.Key, len(on), len(off))
			}
		}
		if got := f.metric(t, "herd_mqtt_disconnects_total"); got != 3 {
			t.Fatalf("disconnects = %v, want 3", got)
		}
		waitFor(t, 10*time.Second, "no device is connected", func() bool { return f.gw.Connected() == 0 && f.gw.OpenConns() == 0 })
	})
}

// Takeover: a device key that reconnects over and over, each time while
// its previous connection is still open, leaves one connection, no
// leaked files or goroutines, and the device online throughout.
func TestGateway_Takeover(t *testing.T) {
	// Not parallel: it counts the process's files and goroutines.
	const reconnects = 1000
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		// Admit connects at any rate: this is about takeovers.
		f := newFleet(t, db, 1, func(g *mqttgw.Gateway) { g.ConnectRate = 0 })
		d := f.devices[0]
		key, token := d.Key, f.tokens[d.Key]

		// takeover connects anew and checks that the server closed prev,
		// telling it why.
		takeover := func(prev net.Conn) net.Conn {
			t.Helper()
			next, ca := f.rawConnect(t, key, token, 60)
			if ca.ReasonCode != 0 {
				t.Fatalf("reconnect: CONNACK %#x", ca.ReasonCode)
			}
			if prev != nil {
				reason, _, err := readUntilClosed(t, prev, 10*time.Second)
				if reason != 0x8E || !errors.Is(err, io.EOF) {
					t.Fatalf("old connection: DISCONNECT %#x, then %v; want 0x8E session taken over, then EOF", reason, err)
				}
				prev.Close()
			}
			return next
		}
		// Warm up (the store's connection pools, mochi's buffers), then
		// count.
		var c net.Conn
		for range 20 {
			c = takeover(c)
		}
		// The sockets taken over are done with: only the last is open.
		waitFor(t, 10*time.Second, "one connection open", func() bool { return f.gw.OpenConns() <= 1 && f.gw.Connected() == 1 })
		fds, goroutines := openFDs(t), runtime.NumGoroutine()

		start := time.Now()
		for range reconnects {
			c = takeover(c)
		}
		t.Logf("%d takeovers in %v", reconnects, time.Since(start))

		waitFor(t, 30*time.Second, fmt.Sprintf("open files back near %d and goroutines near %d", fds, goroutines), func() bool {
			return openFDs(t) <= fds+20 && runtime.NumGoroutine() <= goroutines+50
		})
		t.Logf("open files %d → %d, goroutines %d → %d", fds, openFDs(t), goroutines, runtime.NumGoroutine())
		waitFor(t, 10*time.Second, "one connection open", func() bool { return f.gw.OpenConns() <= 1 })
		if n := f.gw.Connected(); n != 1 {
			t.Fatalf("Connected() = %d, want 1", n)
		}

		// The last connection works, and its PUBACK comes after
		// everything queued before it has been committed.
		if rc := rawPublish(t, c, 1, "devices/"+key+"/telemetry", `{"temperature":7}`); rc >= 0x80 {
			t.Fatalf("publish on the last connection: PUBACK %#x", rc)
		}
		got := f.device(t, d.ID)
		if !got.Online || got.Temperature == nil || *got.Temperature != 7 {
			t.Fatalf("device after the takeovers: %+v", got)
		}
		on, off := f.events(t, d.ID, herd.EventDeviceOnline), f.events(t, d.ID, herd.EventDeviceOffline)
		if len(on) != 1 || len(off) != 0 {
			t.Fatalf("%d device.online and %d device.offline events, want 1 and 0", len(on), len(off))
		}
		if got := f.metric(t, "herd_mqtt_disconnects_total"); got != 0 {
			t.Fatalf("disconnects = %v, want 0: a takeover is no disconnect", got)
		}
	})
}

// Keepalive: a device that asked for a keepalive of 1 s and then says
// nothing is closed within 1.5 keepalives (mochi computes the deadline in
// whole seconds, keepalive + keepalive/2, which for 1 s is 1 s), not
// before, and goes offline.
func TestGateway_KeepaliveEnforced(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 1, nil)
	d := f.devices[0]
	conn, ca := f.rawConnect(t, d.Key, f.tokens[d.Key], 1)
	connacked := time.Now()
	if ca.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ca.ReasonCode)
	}
	// Nothing written from here on: no PINGREQ.
	_, ended, _ := readUntilClosed(t, conn, 4*time.Second)
	took := ended.Sub(connacked)
	t.Logf("closed %v after the CONNACK", took)
	// The server's deadline starts as it writes the CONNACK, a little
	// before the client has read it.
	if took < 900*time.Millisecond {
		t.Fatalf("closed %v after the CONNACK, before a keepalive", took)
	}
	waitFor(t, 10*time.Second, "the silent device is offline", func() bool {
		got := f.device(t, d.ID)
		return !got.Online
	})
}

// Keepalive ceiling: an MQTT 5 client asking for none, or for more than
// the maximum, is told the maximum in its CONNACK, and held to it.
func TestGateway_KeepaliveCeiling(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, func(g *mqttgw.Gateway) { g.MaxKeepalive = 2 * time.Second })
	for i, asked := range []uint16{0, 600} {
		d := f.devices[i]
		c, ca, err := f.dialV5(t, d.Key, f.tokens[d.Key], asked, false)
		if err != nil {
			t.Fatal(err)
		}
		if ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 2 {
			t.Fatalf("keepalive %d asked: CONNACK %v, want server keepalive 2", asked, ca)
		}
		if asked == 0 {
			// The client does not ping: the server closes it after 3 s.
			start := time.Now()
			if !c.closed(10 * time.Second) {
				t.Fatal("a client asking for no keepalive and silent after is still connected after 10 s")
			}
			if took := time.Since(start); took < 2*time.Second {
				t.Fatalf("closed after %v, before 1.5 × 2 s", took)
			}
		}
	}
	// A client asking for less keeps what it asked: no server keepalive.
	d := f.devices[0]
	_, ca, err := f.dialV5(t, d.Key, f.tokens[d.Key], 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Properties != nil && ca.Properties.ServerKeepAlive != nil {
		t.Fatalf("keepalive 1 asked: CONNACK server keepalive %d, want none", *ca.Properties.ServerKeepAlive)
	}
}

// The connection cap: at the cap a new device is refused, with the code
// each protocol version has for it, while those connected carry on, and a
// device already connected may still reconnect (its old socket goes).
func TestGateway_ConnectionCap(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 5, func(g *mqttgw.Gateway) { g.MaxConnections = 3 })
	if f.gw.Limit() != 3 {
		t.Fatalf("Limit() = %d, want 3", f.gw.Limit())
	}
	var conns []*v5
	for _, d := range f.devices[:3] {
		conns = append(conns, f.mustDialV5(t, d))
	}

	fourth := f.devices[3]
	_, ca, err := f.dialV5(t, fourth.Key, f.tokens[fourth.Key], 30, true)
	if err == nil || ca == nil || ca.ReasonCode != 0x97 {
		t.Fatalf("4th device, MQTT 5: CONNACK %v, %v; want 0x97 quota exceeded", ca, err)
	}
	if _, err := f.client(t, f.devices[4].Key, f.tokens[f.devices[4].Key]); !errors.Is(err, packets.ErrorRefusedServerUnavailable) {
		t.Fatalf("5th device, MQTT 3.1.1: %v, want return code 3 server unavailable", err)
	}
	if got := f.metric(t, "herd_mqtt_connects_total", "result", "cap"); got != 2 {
		t.Fatalf("connects refused at the cap = %v, want 2", got)
	}
	for i, c := range conns {
		if rc, err := c.publish(t, "devices/"+f.devices[i].Key+"/telemetry", `{"voltage":3.3}`); err != nil || rc >= 0x80 {
			t.Fatalf("device %d at the cap: PUBACK %#x, %v", i, rc, err)
		}
	}

	// A reconnect at the cap is a takeover: admitted.
	d := f.devices[0]
	again := f.mustDialV5(t, d)
	select {
	case dc := <-conns[0].disconnect:
		if dc.ReasonCode != 0x8E {
			t.Fatalf("old connection: DISCONNECT %#x, want 0x8E session taken over", dc.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("old connection not told of the takeover")
	}
	if rc, err := again.publish(t, "devices/"+d.Key+"/telemetry", `{"voltage":3.4}`); err != nil || rc >= 0x80 {
		t.Fatalf("reconnected device: PUBACK %#x, %v", rc, err)
	}
	for i, c := range conns[1:] {
		if c.closed(0) {
			t.Fatalf("device %d lost its connection", i+1)
		}
	}
	if got := f.metric(t, "herd_mqtt_connects_total", "result", "cap"); got != 2 {
		t.Fatalf("connects refused at the cap = %v, want still 2", got)
	}
	if got := f.device(t, d.ID); !got.Online || got.Voltage == nil || *got.Voltage != 3.4 {
		t.Fatalf("reconnected device: %+v", got)
	}
}

// The connect rate: a burst beyond it is refused with the code that tells
// a client to back off (MQTT 5) or that the server is unavailable (3.1.1),
// and admitted again once the rate allows.
func TestGateway_ConnectRate(t *testing.T) {
	t.Parallel()
	const burst = 6
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), burst, func(g *mqttgw.Gateway) { g.ConnectRate = 2 })
	type result struct {
		ok      bool
		refused bool // with the rate's code
		err     error
	}
	results := make([]result, burst)
	var wg sync.WaitGroup
	for i, d := range f.devices {
		wg.Go(func() {
			if i%2 == 0 {
				_, ca, err := f.dialV5(t, d.Key, f.tokens[d.Key], 30, true)
				results[i] = result{ok: err == nil, refused: err != nil && ca != nil && ca.ReasonCode == 0x9F, err: err}
				return
			}
			_, err := f.client(t, d.Key, f.tokens[d.Key])
			results[i] = result{ok: err == nil, refused: errors.Is(err, packets.ErrorRefusedServerUnavailable), err: err}
		})
	}
	wg.Wait()
	var ok, refused []int
	for i, r := range results {
		switch {
		case r.ok:
			ok = append(ok, i)
		case r.refused:
			refused = append(refused, i)
		default:
			t.Fatalf("device %d: %v, want admitted or refused for the rate", i, r.err)
		}
	}
	// The bucket holds 2 and refills 2 a second: the burst takes far less.
	if len(ok) < 2 || len(refused) < 1 {
		t.Fatalf("admitted %v, refused %v: want at least 2 admitted and some refused", ok, refused)
	}
	if got := f.metric(t, "herd_mqtt_connects_total", "result", "rate"); got != float64(len(refused)) {
		t.Fatalf("connects refused for the rate = %v, want %d", got, len(refused))
	}
	// Backing off works.
	d := f.devices[refused[0]]
	waitFor(t, 10*time.Second, "a refused device gets in after backing off", func() bool {
		_, _, err := f.dialV5(t, d.Key, f.tokens[d.Key], 30, true)
		return err == nil
	})
}

package mqttgw_test

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pk5 "github.com/eclipse/paho.golang/packets"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// mosquittoSubWithWill starts Mosquitto's subscriber as the device, with a
// will, waits until the device is online and returns the running process.
func (f *fleet) mosquittoSubWithWill(t *testing.T, bin, version string, d *herd.Device, willTopic, willPayload string, extra ...string) *exec.Cmd {
	t.Helper()
	port := strconv.Itoa(f.gw.TCPAddr().(*net.TCPAddr).Port)
	args := append([]string{"-V", version, "-h", "127.0.0.1", "-p", port, "-i", d.Key, "-u", d.Key, "-P", f.tokens[d.Key],
		"-q", "1", "-t", "devices/" + d.Key + "/commands", "--will-topic", willTopic, "--will-payload", willPayload, "--will-qos", "1"}, extra...)
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 15*time.Second, "mosquitto_sub "+version+" is connected ("+out.String()+")", func() bool { return f.device(t, d.ID).Online })
	return cmd
}

// kill ends the device as a power cut would: SIGKILL, no DISCONNECT.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// A will on the device's own topics goes the way of a publish on them when
// the device dies: mosquitto_sub, killed with SIGKILL, leaves a will on
// events that becomes a device.reported event and one on telemetry that
// is stored as a reading, over MQTT 3.1.1 (its retain flag ignored) and 5.
func TestGateway_Will(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not found (Debian package mosquitto-clients): skipping the will test")
	}
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 4, nil)
		for i, version := range []string{"mqttv311", "mqttv5"} {
			t.Run(version, func(t *testing.T) {
				ev, tel := f.devices[2*i], f.devices[2*i+1]

				cmd := f.mosquittoSubWithWill(t, bin, version, ev, "devices/"+ev.Key+"/events", `{"kind":"gone","why":"power"}`)
				kill(t, cmd)
				waitFor(t, 15*time.Second, "the killed device is offline", func() bool { return !f.device(t, ev.ID).Online })
				reported := f.events(t, ev.ID, herd.EventDeviceReported)
				if len(reported) != 1 {
					t.Fatalf("%d device.reported events after the will, want 1", len(reported))
				}
				var p struct {
					Data map[string]string `json:"data"`
				}
				if err := json.Unmarshal(reported[0].Payload, &p); err != nil || p.Data["kind"] != "gone" || p.Data["why"] != "power" {
					t.Fatalf("device.reported payload %s (%v)", reported[0].Payload, err)
				}
				// The will is committed with the disconnect, before it.
				if off := f.events(t, ev.ID, herd.EventDeviceOffline); len(off) != 1 || off[0].Seq < reported[0].Seq {
					t.Fatalf("device.offline %v, want one after the will's event", off)
				}

				var extra []string
				if version == "mqttv311" {
					extra = []string{"--will-retain"} // 3.1.1 cannot be told: ignored
				}
				cmd = f.mosquittoSubWithWill(t, bin, version, tel, "devices/"+tel.Key+"/telemetry", `{"status":"alarm","battery":3}`, extra...)
				kill(t, cmd)
				waitFor(t, 15*time.Second, "the killed device is offline", func() bool { return !f.device(t, tel.ID).Online })
				if n := f.readings(t, tel.ID); n != 1 {
					t.Fatalf("%d readings after the will, want 1", n)
				}
				got := f.device(t, tel.ID)
				if got.Online || got.Status != herd.StatusAlarm || got.Battery == nil || *got.Battery != 3 {
					t.Fatalf("device after its telemetry will: online %v status %q battery %v, want offline alarm 3", got.Online, got.Status, got.Battery)
				}
			})
		}
		for _, kind := range []string{"events", "telemetry"} {
			if got := f.metric(t, "herd_mqtt_wills_total", "topic", kind, "result", "queued"); got != 2 {
				t.Errorf("%s wills queued = %v, want 2", kind, got)
			}
		}
	})
}

// A will is the device's word when it dies, not when it leaves or is
// still there: a clean DISCONNECT, a takeover (the key connected again)
// and herd's own shutdown discard it.
func TestGateway_WillDiscarded(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 3, nil)
	clean, back, shut := f.devices[0], f.devices[1], f.devices[2]
	withWill := func(d *herd.Device) paho.Client {
		t.Helper()
		c, err := f.clientAt(t, "tcp://"+f.addr(), d.Key, d.Key, f.tokens[d.Key], func(o *paho.ClientOptions) {
			o.SetWill("devices/"+d.Key+"/events", `{"kind":"gone"}`, 1, false)
		})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the device is online", func() bool { return f.device(t, d.ID).Online })
		return c
	}
	c := withWill(clean)
	c.Disconnect(250)
	waitFor(t, 10*time.Second, "the device is offline", func() bool { return !f.device(t, clean.ID).Online })
	if evs := f.events(t, clean.ID, herd.EventDeviceReported); len(evs) != 0 {
		t.Fatalf("%d device.reported events after a clean disconnect, want 0", len(evs))
	}

	// A takeover: the old connection's will is not the device's death.
	withWill(back)
	if _, err := f.client(t, back.Key, f.tokens[back.Key]); err != nil {
		t.Fatal(err)
	}
	if got := f.metric(t, "herd_mqtt_wills_total", "topic", "events", "result", "discarded"); got != 2 {
		t.Fatalf("wills discarded after a takeover = %v, want 2", got)
	}
	if evs := f.events(t, back.ID, herd.EventDeviceReported); len(evs) != 0 {
		t.Fatalf("%d device.reported events after a takeover, want 0", len(evs))
	}

	// herd shutting down: no device died.
	withWill(shut)
	if err := f.gw.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.device(t, shut.ID); got.Online {
		t.Fatal("the device is online after Close")
	}
	if evs := f.events(t, shut.ID, herd.EventDeviceReported); len(evs) != 0 {
		t.Fatalf("%d device.reported events after herd's shutdown, want 0", len(evs))
	}
	if got := f.metric(t, "herd_mqtt_wills_total", "topic", "events", "result", "discarded"); got != 3 {
		t.Errorf("wills discarded = %v, want 3", got)
	}
}

// Retain is not available: MQTT 5 devices are told so in the CONNACK, a
// retained MQTT 5 publish is answered DISCONNECT 0x9A and stores nothing,
// and a retained MQTT 5 will is refused at CONNECT with 0x9A. MQTT 3.1.1
// cannot be told: its retained publish is stored as an ordinary reading.
func TestGateway_Retain(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 3, nil)
		v5dev, v3dev, willDev := f.devices[0], f.devices[1], f.devices[2]

		conn, ca := f.rawConnect(t, v5dev.Key, f.tokens[v5dev.Key], 60)
		if ca.ReasonCode != 0 || ca.Properties == nil || ca.Properties.RetainAvailable == nil || *ca.Properties.RetainAvailable != 0 {
			t.Fatalf("CONNACK %+v: want success with Retain Available = 0", ca)
		}
		cp := pk5.NewControlPacket(pk5.PUBLISH)
		p := cp.Content.(*pk5.Publish)
		p.Topic, p.QoS, p.PacketID, p.Retain, p.Payload = "devices/"+v5dev.Key+"/telemetry", 1, 1, true, []byte(`{"temperature":20}`)
		if _, err := cp.WriteTo(conn); err != nil {
			t.Fatal(err)
		}
		if reason, _, _ := readUntilClosed(t, conn, 10*time.Second); reason != 0x9A {
			t.Fatalf("retained MQTT 5 publish: DISCONNECT %#x, want 0x9a", reason)
		}
		if n := f.readings(t, v5dev.ID); n != 0 {
			t.Fatalf("%d readings from a refused retained publish, want 0", n)
		}

		// A real MQTT 5 client, told that retain is not available, sends
		// the message without it (libmosquitto clears the flag: "r0" in
		// its debug line), and it is stored like any other.
		if bin, err := exec.LookPath("mosquitto_pub"); err == nil {
			port := strconv.Itoa(f.gw.TCPAddr().(*net.TCPAddr).Port)
			pub := func(version string, d *herd.Device, payload string) (string, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, bin, "-V", version, "-h", "127.0.0.1", "-p", port, "-i", d.Key, "-u", d.Key, "-P", f.tokens[d.Key],
					"-d", "-q", "1", "-r", "-t", "devices/"+d.Key+"/telemetry", "-m", payload).CombinedOutput()
				return strings.TrimSpace(string(out)), err
			}
			out, err := pub("mqttv5", v5dev, `{"temperature":21}`)
			if err != nil || !strings.Contains(out, "sending PUBLISH (d0, q1, r0,") {
				t.Fatalf("mosquitto_pub -V mqttv5 -r: %v: %s; want its PUBLISH sent without retain", err, out)
			}
			if n := f.readings(t, v5dev.ID); n != 1 {
				t.Fatalf("%d readings after mosquitto_pub -V mqttv5 -r, want 1", n)
			}
			if out, err := pub("mqttv311", v3dev, `{"temperature":22}`); err != nil {
				t.Fatalf("mosquitto_pub -V mqttv311 -r: %v: %s", err, out)
			}
		} else {
			c, err := f.client(t, v3dev.Key, f.tokens[v3dev.Key])
			if err != nil {
				t.Fatal(err)
			}
			if tok := c.Publish("devices/"+v3dev.Key+"/telemetry", 1, true, `{"temperature":22}`); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
				t.Fatalf("retained 3.1.1 publish: %v", tok.Error())
			}
		}
		if got := f.device(t, v3dev.ID); got.Temperature == nil || *got.Temperature != 22 || f.readings(t, v3dev.ID) != 1 {
			t.Fatalf("retained 3.1.1 publish: device %+v, %d readings; want it stored as an ordinary reading", got, f.readings(t, v3dev.ID))
		}
		if got := f.metric(t, "herd_mqtt_retain_ignored_total"); got != 1 {
			t.Errorf("retain ignored = %v, want 1", got)
		}

		// A retained will, on MQTT 5: refused at CONNECT.
		wc, err := net.DialTimeout("tcp", f.addr(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.Close()
		cp = pk5.NewControlPacket(pk5.CONNECT)
		cn := cp.Content.(*pk5.Connect)
		cn.ClientID, cn.Username, cn.UsernameFlag, cn.Password, cn.PasswordFlag = willDev.Key, willDev.Key, true, []byte(f.tokens[willDev.Key]), true
		cn.KeepAlive, cn.CleanStart = 60, true
		cn.WillFlag, cn.WillTopic, cn.WillMessage, cn.WillQOS, cn.WillRetain = true, "devices/"+willDev.Key+"/events", []byte(`{"kind":"gone"}`), 1, true
		if _, err := cp.WriteTo(wc); err != nil {
			t.Fatal(err)
		}
		if ca, ok := readPacket(t, wc, 10*time.Second).Content.(*pk5.Connack); !ok || ca.ReasonCode != 0x9A {
			t.Fatalf("retained MQTT 5 will: CONNACK %+v, want 0x9a", ca)
		}
	})
}

// The quickstart's path: a device reports warn with mosquitto_pub, which
// hangs up cleanly right after its PUBACK. The device is offline, and its
// status is still warn: a disconnect says where the device is, not how it
// is.
func TestGateway_StatusSurvivesDisconnect(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not found (Debian package mosquitto-clients): skipping")
	}
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 1, nil)
		d := f.devices[0]
		port := strconv.Itoa(f.gw.TCPAddr().(*net.TCPAddr).Port)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "-h", "127.0.0.1", "-p", port, "-i", d.Key, "-u", d.Key, "-P", f.tokens[d.Key],
			"-q", "1", "-t", "devices/"+d.Key+"/telemetry", "-m", `{"temperature":71.5,"status":"warn"}`).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
		waitFor(t, 10*time.Second, "the device is offline", func() bool { return len(f.events(t, d.ID, herd.EventDeviceOffline)) == 1 })
		if got := f.device(t, d.ID); got.Online || got.Status != herd.StatusWarn || got.Temperature == nil || *got.Temperature != 71.5 {
			t.Fatalf("after the hang-up: online %v status %q temperature %v, want false warn 71.5", got.Online, got.Status, got.Temperature)
		}
	})
}

// A revoked device's will is not taken: herd closes the connection of a
// device whose credential was revoked (DisconnectDevice, as DELETE
// /v1/devices/{id}/credentials does), and the will that the close would
// otherwise fire is discarded, over MQTT 3.1.1 and 5 with mosquitto_sub.
func TestGateway_WillOfRevokedDevice(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not found (Debian package mosquitto-clients): skipping the will test")
	}
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 2, nil)
		creds := sqldb.NewCredentialService(db)
		for i, version := range []string{"mqttv311", "mqttv5"} {
			t.Run(version, func(t *testing.T) {
				d := f.devices[i]
				f.mosquittoSubWithWill(t, bin, version, d, "devices/"+d.Key+"/events", `{"kind":"gone"}`)
				if err := creds.DeleteDeviceCredential(f.super, d.ID); err != nil {
					t.Fatal(err)
				}
				if !f.gw.DisconnectDevice(d.Key) {
					t.Fatal("DisconnectDevice found no connection")
				}
				waitFor(t, 15*time.Second, "the revoked device is offline", func() bool { return !f.device(t, d.ID).Online })
				if evs := f.events(t, d.ID, herd.EventDeviceReported); len(evs) != 0 {
					t.Fatalf("%d device.reported events from a revoked device's will, want 0", len(evs))
				}
				if off := f.events(t, d.ID, herd.EventDeviceOffline); len(off) != 1 {
					t.Fatalf("%d device.offline events after the revocation, want 1", len(off))
				}
			})
		}
		if got := f.metric(t, "herd_mqtt_wills_total", "topic", "events", "result", "discarded"); got != 2 {
			t.Errorf("wills discarded = %v, want 2", got)
		}
	})
}

// A will that would never parse is refused at CONNECT, where the device
// can still be told, rather than dropped when it dies: with mosquitto_sub,
// a will that is not JSON and one larger than the payload limit are
// refused over MQTT 3.1.1 (code 5) and 5 (0x99 and 0x95), and the device
// never comes online.
func TestGateway_WillRefusedAtConnect(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not found (Debian package mosquitto-clients): skipping the will test")
	}
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 1, func(g *mqttgw.Gateway) { g.MaxPayload = 64 })
	d := f.devices[0]
	port := strconv.Itoa(f.gw.TCPAddr().(*net.TCPAddr).Port)
	for _, tc := range []struct {
		version, topic, payload, want, reason string
	}{
		{"mqttv311", "telemetry", `{"temperature":`, "not authorised", "will_malformed"},
		{"mqttv5", "telemetry", `{"temperature":`, "payload format invalid", "will_malformed"},
		{"mqttv311", "events", `{"kind":"` + strings.Repeat("x", 100) + `"}`, "not authorised", "will_too_large"},
		{"mqttv5", "events", `{"kind":"` + strings.Repeat("x", 100) + `"}`, "packet too large", "will_too_large"},
	} {
		t.Run(tc.version+"/"+tc.reason, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-V", tc.version, "-h", "127.0.0.1", "-p", port, "-i", d.Key, "-u", d.Key, "-P", f.tokens[d.Key],
				"-t", "devices/"+d.Key+"/commands", "-W", "10",
				"--will-topic", "devices/"+d.Key+"/"+tc.topic, "--will-payload", tc.payload, "--will-qos", "1").CombinedOutput()
			if err == nil || !strings.Contains(strings.ToLower(string(out)), tc.want) {
				t.Fatalf("mosquitto_sub: %v, %q; want refused with %q", err, out, tc.want)
			}
		})
	}
	if got := f.metric(t, "herd_mqtt_connects_total", "result", "will_malformed"); got != 2 {
		t.Errorf("connects refused for a malformed will = %v, want 2", got)
	}
	if got := f.metric(t, "herd_mqtt_connects_total", "result", "will_too_large"); got != 2 {
		t.Errorf("connects refused for a will too large = %v, want 2", got)
	}
	if got := f.device(t, d.ID); got.Online {
		t.Fatal("a device refused at CONNECT is online")
	}
}

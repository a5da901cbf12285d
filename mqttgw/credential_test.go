package mqttgw_test

import (
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// Credentials, with both protocol versions: a device connects with its key
// as client id and user name and its token as password; anything else is
// refused with the code each version has for a bad user name or password,
// and counted.
func TestGateway_Credentials(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 2, nil)
		d, other := f.devices[0], f.devices[1]

		t.Run("OK", func(t *testing.T) {
			c3, err := f.client(t, d.Key, f.tokens[d.Key])
			if err != nil {
				t.Fatalf("MQTT 3.1.1 connect: %v", err)
			}
			tok := c3.Publish("devices/"+d.Key+"/telemetry", 1, false, `{"battery":81}`)
			if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
				t.Fatalf("MQTT 3.1.1 publish after connect: %v", tok.Error())
			}
			c5, ca, err := f.dialV5(t, other.Key, f.tokens[other.Key], 30, true)
			if err != nil {
				t.Fatalf("MQTT 5 connect: %v", err)
			}
			if ca.ReasonCode != 0 {
				t.Fatalf("MQTT 5 CONNACK reason %#x, want 0", ca.ReasonCode)
			}
			if rc, err := c5.publish(t, "devices/"+other.Key+"/telemetry", `{"battery":80}`); err != nil || rc >= 0x80 {
				t.Fatalf("publish after connect: %#x, %v", rc, err)
			}
			// Each PUBACK came after its connection's session was set up.
			if got := f.metric(t, "herd_mqtt_connects_total", "result", "ok"); got != 2 {
				t.Fatalf("connects ok = %v, want 2", got)
			}
		})

		ok := f.metric(t, "herd_mqtt_connects_total", "result", "ok")
		refusals := []struct {
			name, key, clientID, token string
		}{
			{"WrongToken", d.Key, d.Key, f.tokens[other.Key]},
			{"NotAToken", d.Key, d.Key, "hunter2"},
			{"NoToken", d.Key, d.Key, ""},
			{"UnknownKey", "nobody", "nobody", f.tokens[d.Key]},
			{"OtherDevicesKey", other.Key, other.Key, f.tokens[d.Key]},
			{"ClientIDNotUserName", d.Key, other.Key, f.tokens[d.Key]},
			{"ClientIDNotUserNameOtherWay", other.Key, d.Key, f.tokens[d.Key]},
			{"InlineClientID", "inline", "inline", f.tokens[d.Key]},
		}
		for _, r := range refusals {
			t.Run("Err"+r.name, func(t *testing.T) {
				before := f.metric(t, "herd_mqtt_connects_total", "result", "bad_credentials")

				_, err := f.clientAs(t, r.clientID, r.key, r.token)
				if !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
					t.Fatalf("MQTT 3.1.1 connect: %v, want return code 4 (%v)", err, packets.ErrorRefusedBadUsernameOrPassword)
				}

				c, ca, err := f.dialV5As(t, r.clientID, r.key, r.token)
				if err == nil {
					c.Disconnect(nil)
					t.Fatal("MQTT 5 connect succeeded")
				}
				if ca == nil || ca.ReasonCode != 0x86 {
					t.Fatalf("MQTT 5 CONNACK %+v (%v), want reason 0x86 bad user name or password", ca, err)
				}

				if got := f.metric(t, "herd_mqtt_connects_total", "result", "bad_credentials"); got != before+2 {
					t.Fatalf("bad_credentials = %v, want %v", got, before+2)
				}
			})
		}
		// None of the refusals connected a device, or marked one online.
		if got := f.metric(t, "herd_mqtt_connects_total", "result", "ok"); got != ok {
			t.Fatalf("connects ok = %v after the refusals, want %v", got, ok)
		}
	})
}

// Revocation: deleting a device's credential and disconnecting its key
// ends its connection (an MQTT 5 client hears why), its old token no
// longer works, and it goes offline.
func TestGateway_Revocation(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 2, nil)
		d, other := f.devices[0], f.devices[1]
		c := f.mustDialV5(t, d)
		c3, err := f.client(t, other.Key, f.tokens[other.Key])
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the device is online", func() bool { return f.device(t, d.ID).Online })

		if f.gw.DisconnectDevice("nobody") {
			t.Fatal("DisconnectDevice of an unknown key reported a disconnect")
		}
		if err := sqldb.NewCredentialService(db).DeleteDeviceCredential(f.super, d.ID); err != nil {
			t.Fatal(err)
		}
		if !f.gw.DisconnectDevice(d.Key) {
			t.Fatal("DisconnectDevice of a connected device reported none")
		}
		select {
		case dc := <-c.disconnect:
			if dc.ReasonCode != 0x87 {
				t.Fatalf("DISCONNECT reason %#x, want 0x87 not authorized", dc.ReasonCode)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no DISCONNECT within 10 s")
		}
		if !c.closed(10 * time.Second) {
			t.Fatal("client still running after the server's DISCONNECT")
		}
		if f.gw.DisconnectDevice(d.Key) {
			t.Fatal("a second DisconnectDevice reported a disconnect")
		}

		_, ca, err := f.dialV5(t, d.Key, f.tokens[d.Key], 30, true)
		if err == nil || ca == nil || ca.ReasonCode != 0x86 {
			t.Fatalf("reconnect with the revoked token: CONNACK %+v, %v; want reason 0x86", ca, err)
		}
		if _, err := f.client(t, d.Key, f.tokens[d.Key]); !errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) {
			t.Fatalf("MQTT 3.1.1 reconnect with the revoked token: %v", err)
		}
		waitFor(t, 10*time.Second, "the revoked device is offline", func() bool {
			got := f.device(t, d.ID)
			return !got.Online
		})
		// The other device was not touched.
		if !c3.IsConnectionOpen() {
			t.Fatal("the other device lost its connection")
		}
		if !f.device(t, other.ID).Online {
			t.Fatal("the other device is offline")
		}
	})
}

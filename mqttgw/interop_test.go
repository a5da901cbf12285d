package mqttgw_test

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// MQTT over WebSocket: Paho connects to the gateway mounted as an HTTP
// handler, as herd mounts it at /mqtt, and its telemetry is stored.
func TestGateway_WebSocket(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 1, nil)
		srv := httptest.NewServer(f.gw)
		t.Cleanup(srv.Close)
		d := f.devices[0]

		c, err := f.clientAt(t, "ws://"+srv.Listener.Addr().String()+"/mqtt", d.Key, d.Key, f.tokens[d.Key], nil)
		if err != nil {
			t.Fatalf("connect over WebSocket: %v", err)
		}
		if n := f.gw.OpenConns(); n != 1 {
			t.Fatalf("OpenConns() = %d, want 1", n)
		}
		tok := c.Publish("devices/"+d.Key+"/telemetry", 1, false, `{"temperature":-4.5,"status":"ok"}`)
		if !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		if got := f.device(t, d.ID); got.Temperature == nil || *got.Temperature != -4.5 || !got.Online {
			t.Fatalf("device after PUBACK: %+v", got)
		}
		if n := f.readings(t, d.ID); n != 1 {
			t.Fatalf("%d readings, want 1", n)
		}
		// The WebSocket goes as a TCP socket goes: offline.
		c.Disconnect(250)
		waitFor(t, 10*time.Second, "the device is offline and its socket closed", func() bool {
			return !f.device(t, d.ID).Online && f.gw.OpenConns() == 0
		})

		// Bad credentials over WebSocket are refused like over TCP.
		if _, err := f.clientAt(t, "ws://"+srv.Listener.Addr().String()+"/mqtt", d.Key, d.Key, "hunter2", nil); err == nil {
			t.Fatal("connect with a bad token over WebSocket succeeded")
		}
	})
}

// Interop with Mosquitto's command-line client, as a device with a shell
// script would publish.
func TestGateway_MosquittoPub(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not found (Debian package mosquitto-clients): skipping the interop test")
	}
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 1, nil)
		d := f.devices[0]
		port := strconv.Itoa(f.gw.TCPAddr().(*net.TCPAddr).Port)
		pub := func(version, token, payload string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-V", version, "-h", "127.0.0.1", "-p", port, "-i", d.Key, "-u", d.Key, "-P", token,
				"-q", "1", "-t", "devices/"+d.Key+"/telemetry", "-m", payload).CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}

		for i, version := range []string{"mqttv311", "mqttv5"} {
			temp := 20 + float64(i)
			if out, err := pub(version, f.tokens[d.Key], `{"temperature":`+strconv.FormatFloat(temp, 'f', -1, 64)+`}`); err != nil {
				t.Fatalf("mosquitto_pub -V %s: %v: %s", version, err, out)
			}
			// mosquitto_pub exits after the PUBACK, which follows the commit.
			if got := f.device(t, d.ID); got.Temperature == nil || *got.Temperature != temp {
				t.Fatalf("device after mosquitto_pub -V %s: %+v", version, got)
			}

			out, err := pub(version, "hunter2", `{"temperature":99}`)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(strings.ToLower(out), "bad user name or password") {
				t.Fatalf("mosquitto_pub -V %s with a wrong password: %v: %s; want a non-zero exit for a bad user name or password", version, err, out)
			}
			t.Logf("mosquitto_pub -V %s with a wrong password: %v: %s", version, err, out)
			if got := f.device(t, d.ID); got.Temperature == nil || *got.Temperature != temp {
				t.Fatalf("device after the refused mosquitto_pub -V %s: %+v", version, got)
			}
		}
		if n := f.readings(t, d.ID); n != 2 {
			t.Fatalf("%d readings, want 2", n)
		}
	})
}

// A device on Mosquitto's command-line subscriber receives what herd sends
// on its commands topic, over MQTT 3.1.1 and 5.
func TestGateway_MosquittoSub(t *testing.T) {
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not found (Debian package mosquitto-clients): skipping the interop test")
	}
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 1, nil)
	d := f.devices[0]
	port := strconv.Itoa(f.gw.TCPAddr().(*net.TCPAddr).Port)
	if err := f.gw.Send(d.Key, "commands", []byte(`{}`)); !errors.Is(err, mqttgw.ErrNotConnected) {
		t.Fatalf("Send to a device not connected: %v, want ErrNotConnected", err)
	}
	if err := f.gw.Send(d.Key, "telemetry", []byte(`{}`)); err == nil {
		t.Fatal("Send on the telemetry topic: no error")
	}
	for _, version := range []string{"mqttv311", "mqttv5"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// -C 1: exit after the first message.
		cmd := exec.CommandContext(ctx, bin, "-V", version, "-h", "127.0.0.1", "-p", port, "-i", d.Key, "-u", d.Key, "-P", f.tokens[d.Key],
			"-q", "1", "-t", "devices/"+d.Key+"/commands", "-C", "1")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		want := `{"name":"reboot","version":"` + version + `"}`
		// Until its subscription is in place the device gets nothing: send
		// again until mosquitto_sub has one and exits.
		tick := time.NewTicker(100 * time.Millisecond)
	wait:
		for {
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("mosquitto_sub -V %s: %v: %s", version, err, out.String())
				}
				break wait
			case <-tick.C:
				if err := f.gw.Send(d.Key, "commands", []byte(want)); err != nil && !errors.Is(err, mqttgw.ErrNotConnected) {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatalf("mosquitto_sub -V %s received nothing: %s", version, out.String())
			}
		}
		tick.Stop()
		if got := strings.TrimSpace(out.String()); got != want {
			t.Fatalf("mosquitto_sub -V %s printed %q, want %q", version, got, want)
		}
	}
}

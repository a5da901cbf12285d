package mqttgw_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pk5 "github.com/eclipse/paho.golang/packets"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// A device that disconnects and at once connects again is online on its
// new connection, whichever of the old connection's end and the new
// CONNECT the gateway handles first.
func TestGateway_ReconnectAfterDisconnect(t *testing.T) {
	const rounds = 200
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 1, func(g *mqttgw.Gateway) { g.ConnectRate = 0 })
		d := f.devices[0]
		conn, _ := f.rawConnect(t, d.Key, f.tokens[d.Key], 60)
		for i := range rounds {
			if _, err := pk5.NewControlPacket(pk5.DISCONNECT).WriteTo(conn); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			var ca *pk5.Connack
			conn, ca = f.rawConnect(t, d.Key, f.tokens[d.Key], 60)
			if ca.ReasonCode != 0 {
				t.Fatalf("round %d: CONNACK %#x", i, ca.ReasonCode)
			}
			// The new connection's reading is stored: the gateway knows
			// whose connection it is.
			if rc := rawPublish(t, conn, 1, "devices/"+d.Key+"/telemetry", `{"error_count":1}`); rc >= 0x80 {
				t.Fatalf("round %d: PUBACK %#x", i, rc)
			}
		}
		waitFor(t, 10*time.Second, "one connection open", func() bool { return f.gw.OpenConns() == 1 })
		// Flush what the old connections' ends queued, then look.
		if rc := rawPublish(t, conn, 2, "devices/"+d.Key+"/telemetry", `{"temperature":5}`); rc >= 0x80 {
			t.Fatalf("PUBACK %#x", rc)
		}
		if got := f.device(t, d.ID); !got.Online {
			t.Fatalf("device connected now is offline: %+v", got)
		}
		if n := f.gw.Connected(); n != 1 {
			t.Fatalf("Connected() = %d, want 1", n)
		}
	})
}

// gatedCredentials holds AuthenticateDevice while closed, so that a test
// can act between a CONNECT and its CONNACK.
type gatedCredentials struct {
	herd.CredentialService
	closed  atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedCredentials) AuthenticateDevice(ctx context.Context, key, token string) (*herd.DeviceIdentity, error) {
	if g.closed.Load() {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.CredentialService.AuthenticateDevice(ctx, key, token)
}

// A reconnect that takes over the device's connection and then dies before
// its CONNACK leaves the device with no connection: it goes offline, and
// the gateway counts nothing connected.
func TestGateway_ReconnectCutBeforeConnack(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		gate := &gatedCredentials{entered: make(chan struct{}), release: make(chan struct{})}
		f := newFleet(t, db, 1, func(g *mqttgw.Gateway) {
			gate.CredentialService = g.Credentials
			g.Credentials = gate
		})
		d := f.devices[0]
		old, _ := f.rawConnect(t, d.Key, f.tokens[d.Key], 60)
		waitFor(t, 10*time.Second, "the device is online", func() bool { return f.device(t, d.ID).Online })

		gate.closed.Store(true)
		conn, err := net.Dial("tcp", f.addr())
		if err != nil {
			t.Fatal(err)
		}
		cp := pk5.NewControlPacket(pk5.CONNECT)
		c := cp.Content.(*pk5.Connect)
		c.ClientID, c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = d.Key, d.Key, true, []byte(f.tokens[d.Key]), true
		c.KeepAlive, c.CleanStart = 60, true
		if _, err := cp.WriteTo(conn); err != nil {
			t.Fatal(err)
		}
		select {
		case <-gate.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the CONNECT never reached authentication")
		}
		// The new connection is reset while its CONNECT is checked: the
		// CONNACK will find no one to go to.
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		gate.closed.Store(false)
		close(gate.release)

		// The old connection was taken over all the same.
		if reason, _, _ := readUntilClosed(t, old, 10*time.Second); reason != 0x8E {
			t.Fatalf("old connection: DISCONNECT %#x, want 0x8E", reason)
		}
		waitFor(t, 10*time.Second, "no connection open", func() bool { return f.gw.OpenConns() == 0 })
		waitFor(t, 10*time.Second, "the device is offline and nothing counted connected", func() bool {
			got := f.device(t, d.ID)
			return !got.Online && f.gw.Connected() == 0
		})
	})
}

// Two clients fighting over one key (a cloned device) end with one
// connection between them, and the device's state follows it.
func TestGateway_ConcurrentSameKey(t *testing.T) {
	const (
		clients = 2
		each    = 50
	)
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 1, func(g *mqttgw.Gateway) { g.ConnectRate = 0 })
		d := f.devices[0]
		var mu sync.Mutex
		var conns []net.Conn
		var acked atomic.Int64
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for range each {
					conn, err := net.Dial("tcp", f.addr())
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					conns = append(conns, conn)
					mu.Unlock()
					cp := pk5.NewControlPacket(pk5.CONNECT)
					c := cp.Content.(*pk5.Connect)
					c.ClientID, c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = d.Key, d.Key, true, []byte(f.tokens[d.Key]), true
					c.KeepAlive, c.CleanStart = 60, true
					if _, err := cp.WriteTo(conn); err != nil {
						continue // taken over already
					}
					conn.SetReadDeadline(time.Now().Add(15 * time.Second))
					// A CONNACK, or the end of a connection taken over
					// before it: both are fine here.
					if p, err := pk5.ReadPacket(conn); err == nil {
						if ca, ok := p.Content.(*pk5.Connack); ok && ca.ReasonCode == 0 {
							acked.Add(1)
						}
					} else if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
						t.Error("no answer to a CONNECT within 15 s")
					}
					conn.SetReadDeadline(time.Time{})
				}
			})
		}
		wg.Wait()
		t.Cleanup(func() {
			for _, c := range conns {
				c.Close()
			}
		})
		if acked.Load() == 0 {
			t.Fatal("no connection was admitted")
		}
		waitFor(t, 15*time.Second, "one connection left", func() bool { return f.gw.OpenConns() == 1 })
		if n := f.gw.Connected(); n != 1 {
			t.Fatalf("Connected() = %d, want 1", n)
		}
		waitFor(t, 10*time.Second, "the device is online", func() bool { return f.device(t, d.ID).Online })

		for _, c := range conns {
			c.Close()
		}
		waitFor(t, 10*time.Second, "the device is offline and nothing connected", func() bool {
			return !f.device(t, d.ID).Online && f.gw.Connected() == 0 && f.gw.OpenConns() == 0
		})
		if off := f.events(t, d.ID, herd.EventDeviceOffline); len(off) != 1 {
			t.Fatalf("%d device.offline events, want 1", len(off))
		}
	})
}

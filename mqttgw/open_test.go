package mqttgw_test

import (
	"errors"
	"net"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pk5 "github.com/eclipse/paho.golang/packets"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// Open fails, saying why, when the address is taken; and the gateway that
// failed to open can still be closed.
func TestGateway_OpenAddrInUse(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	g := mqttgw.New(sqldb.NewCredentialService(db), sqldb.NewIngestService(db))
	g.Addr = ln.Addr().String()
	err = g.Open()
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Open on a taken address: %v, want an error wrapping EADDRINUSE", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("Close after the failed Open: %v", err)
	}
	// The address was left as it was.
	if c, err := net.Dial("tcp", ln.Addr().String()); err != nil {
		t.Fatalf("the listener that held the address: %v", err)
	} else {
		c.Close()
	}
}

// Close tells MQTT 5 clients the server is shutting down, has committed
// every device's going offline (TCP and WebSocket) when it returns, and
// does not wait for sockets that never sent CONNECT. Closing again does
// nothing.
func TestGateway_Close(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, nil)
	srv := httptest.NewServer(f.gw)
	t.Cleanup(srv.Close)
	tcp, ws := f.devices[0], f.devices[1]
	c := f.mustDialV5(t, tcp)
	if _, err := f.clientAt(t, "ws://"+srv.Listener.Addr().String()+"/mqtt", ws.Key, ws.Key, f.tokens[ws.Key], nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both devices are online", func() bool { return f.device(t, tcp.ID).Online && f.device(t, ws.ID).Online })

	silent, err := net.Dial("tcp", f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitFor(t, 10*time.Second, "the silent socket is accepted", func() bool { return f.gw.OpenConns() == 3 })

	start := time.Now()
	if err := f.gw.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Close took %v with a silent socket open", took)
	}
	select {
	case dc := <-c.disconnect:
		if dc.ReasonCode != 0x8B {
			t.Fatalf("DISCONNECT %#x, want 0x8B server shutting down", dc.ReasonCode)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT")
	}
	for _, d := range []*herd.Device{tcp, ws} {
		if got := f.device(t, d.ID); got.Online {
			t.Fatalf("%s after Close: online %v, status %s", d.Key, got.Online, got.Status)
		}
	}
	if n := f.gw.OpenConns(); n != 0 {
		t.Fatalf("OpenConns() = %d after Close", n)
	}
	if err := f.gw.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Close while devices connect and leave all the time returns, and leaves
// every device offline: each connection's end is committed before Close
// returns.
func TestGateway_CloseDuringChurn(t *testing.T) {
	t.Parallel()
	const devices = 6
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), devices, func(g *mqttgw.Gateway) { g.ConnectRate = 0 })
	var connects atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, d := range f.devices {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.DialTimeout("tcp", f.addr(), 5*time.Second)
				if err != nil {
					continue // closed down
				}
				cp := pk5.NewControlPacket(pk5.CONNECT)
				c := cp.Content.(*pk5.Connect)
				c.ClientID, c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = d.Key, d.Key, true, []byte(f.tokens[d.Key]), true
				c.KeepAlive, c.CleanStart = 60, true
				if _, err := cp.WriteTo(conn); err == nil {
					conn.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := pk5.ReadPacket(conn); err == nil {
						connects.Add(1)
					}
				}
				conn.Close()
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	waitFor(t, 20*time.Second, "devices connect", func() bool { return connects.Load() >= 50 })

	closed := make(chan error, 1)
	go func() { closed <- f.gw.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close has not returned after 15 s")
	}
	for _, d := range f.devices {
		if got := f.device(t, d.ID); got.Online {
			t.Fatalf("%s online after Close", d.Key)
		}
	}
}

package mqttgw_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	pk5 "github.com/eclipse/paho.golang/packets"
	paho5 "github.com/eclipse/paho.golang/paho"
	paholog "github.com/eclipse/paho.golang/paho/log"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fleet is a store with one tenant, a node and devices with credentials,
// and a gateway in front of it on a free port.
type fleet struct {
	db      *sqldb.DB
	gw      *mqttgw.Gateway
	tenant  *herd.Tenant
	node    *herd.Node
	devices []*herd.Device
	tokens  map[string]string // key → token
	super   context.Context
	reg     *prometheus.Registry // the gateway's collectors
}

func newFleet(t *testing.T, db *sqldb.DB, n int, configure func(*mqttgw.Gateway)) *fleet {
	t.Helper()
	super := testutil.SuperContext()
	ten := &herd.Tenant{Name: "acme"}
	if err := sqldb.NewTenantService(db).CreateTenant(super, ten); err != nil {
		t.Fatal(err)
	}
	node := &herd.Node{TenantID: ten.ID, ParentID: ten.RootNodeID, Kind: "site", Name: "plant"}
	if err := sqldb.NewNodeService(db).CreateNode(super, node); err != nil {
		t.Fatal(err)
	}
	f := &fleet{db: db, tenant: ten, node: node, tokens: map[string]string{}, super: super, reg: prometheus.NewRegistry()}
	for i := range n {
		f.devices = append(f.devices, &herd.Device{NodeID: node.ID, Key: fmt.Sprintf("dev-%d-%d", ten.ID, i)})
	}
	if err := sqldb.NewDeviceService(db).CreateDevices(super, f.devices); err != nil {
		t.Fatal(err)
	}
	creds := sqldb.NewCredentialService(db)
	for _, d := range f.devices {
		c, err := creds.CreateDeviceCredential(super, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[d.Key] = c.Token
	}
	f.gw = mqttgw.New(creds, sqldb.NewIngestService(db))
	f.gw.Addr = "127.0.0.1:0"
	if configure != nil {
		configure(f.gw)
	}
	if err := f.gw.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.gw.Close() })
	f.reg.MustRegister(f.gw.Collectors()...)
	return f
}

// client returns a connected Paho (MQTT 3.1.1) client, or the connect error.
func (f *fleet) client(t *testing.T, key, token string) (paho.Client, error) {
	t.Helper()
	return f.clientAs(t, key, key, token)
}

// clientAs is client with a client id other than the user name.
func (f *fleet) clientAs(t *testing.T, clientID, user, token string) (paho.Client, error) {
	t.Helper()
	return f.clientAt(t, "tcp://"+f.addr(), clientID, user, token, nil)
}

// clientAt connects a Paho (MQTT 3.1.1) client to the broker URL; edit, if
// not nil, adjusts its options.
func (f *fleet) clientAt(t *testing.T, broker, clientID, user, token string, edit func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(broker).
		SetClientID(clientID).SetUsername(user).SetPassword(token).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetProtocolVersion(4)
	if edit != nil {
		edit(opts)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func TestGateway_TelemetryStored(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 2, nil)
		d := f.devices[0]
		c, err := f.client(t, d.Key, f.tokens[d.Key])
		if err != nil {
			t.Fatal(err)
		}
		tok := c.Publish("devices/"+d.Key+"/telemetry", 1, false, `{"temperature":31.5,"battery":12,"status":"warn","fw_build":"a1"}`)
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		// The PUBACK came after the commit: the reading is there now.
		got, err := sqldb.NewDeviceService(db).FindDeviceByID(f.super, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Temperature == nil || *got.Temperature != 31.5 || got.Battery == nil || *got.Battery != 12 || got.Status != herd.StatusWarn || !got.Online {
			t.Fatalf("device after PUBACK: %+v", got)
		}
		var extra string
		if err := db.SQL().QueryRowContext(t.Context(), db.Rebind(`SELECT extra FROM readings WHERE device_id = ?`), d.ID).Scan(&extra); err != nil {
			t.Fatal(err)
		}
		if extra != `{"fw_build":"a1"}` {
			t.Fatalf("extra %q", extra)
		}
	})
}

func TestGateway_BadCredentials(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		f := newFleet(t, db, 2, nil)
		d, other := f.devices[0], f.devices[1]
		for name, creds := range map[string][2]string{
			"WrongToken":      {d.Key, f.tokens[other.Key]},
			"UnknownKey":      {"nobody", f.tokens[d.Key]},
			"NotAToken":       {d.Key, "hunter2"},
			"OtherDeviceAuth": {other.Key, f.tokens[d.Key]},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := f.client(t, creds[0], creds[1])
				if err == nil || err.Error() != packets.ErrorRefusedBadUsernameOrPassword.Error() {
					t.Fatalf("connect: %v, want %v", err, packets.ErrorRefusedBadUsernameOrPassword)
				}
			})
		}
	})
}

// addr is the gateway's TCP address.
func (f *fleet) addr() string { return f.gw.TCPAddr().String() }

// metric returns the gateway's counter or gauge name with exactly the
// labels given as name, value pairs; 0 when nothing was counted there yet.
func (f *fleet) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels)/2 {
				continue
			}
			for _, l := range m.GetLabel() {
				if !hasLabel(labels, l) {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hasLabel(pairs []string, l *dto.LabelPair) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] == l.GetName() && pairs[i+1] == l.GetValue() {
			return true
		}
	}
	return false
}

// device reads a device as the super-admin.
func (f *fleet) device(t *testing.T, id int64) *herd.Device {
	t.Helper()
	d, err := sqldb.NewDeviceService(f.db).FindDeviceByID(f.super, id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// readings counts a device's rows of history.
func (f *fleet) readings(t *testing.T, deviceID int64) int {
	t.Helper()
	var n int
	if err := f.db.SQL().QueryRowContext(t.Context(), f.db.Rebind(`SELECT COUNT(*) FROM readings WHERE device_id = ?`), deviceID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// events returns the tenant's events of type typ about the device.
func (f *fleet) events(t *testing.T, deviceID int64, typ string) []*herd.Event {
	t.Helper()
	all, err := sqldb.NewOutboxService(f.db).OutboxEvents(t.Context(), f.tenant.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []*herd.Event
	for _, e := range all {
		if e.Type == typ && e.SubjectID == deviceID {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond until it holds, for what has no signal to wait on
// (a commit made after the CONNACK, a socket closed by another goroutine).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// v5 is a paho.golang (MQTT 5) client on a TCP connection the test dialed
// itself, so that the test can also cut it.
type v5 struct {
	*paho5.Client
	conn net.Conn
	// disconnect receives the DISCONNECT the server sent, if it sent one.
	disconnect chan *paho5.Disconnect
}

// dialV5 connects a paho.golang client as key with token. With ping false
// the client never sends PINGREQ. The CONNACK is returned on refusal too.
func (f *fleet) dialV5(t *testing.T, key, token string, keepalive uint16, ping bool) (*v5, *paho5.Connack, error) {
	t.Helper()
	return f.dialV5With(t, key, key, token, keepalive, ping)
}

// dialV5As is dialV5 with a client id other than the user name.
func (f *fleet) dialV5As(t *testing.T, clientID, user, token string) (*v5, *paho5.Connack, error) {
	t.Helper()
	return f.dialV5With(t, clientID, user, token, 30, true)
}

func (f *fleet) dialV5With(t *testing.T, clientID, user, token string, keepalive uint16, ping bool) (*v5, *paho5.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", f.addr(), 10*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c := &v5{conn: conn, disconnect: make(chan *paho5.Disconnect, 1)}
	cfg := paho5.ClientConfig{
		Conn:               conn,
		OnServerDisconnect: func(d *paho5.Disconnect) { c.disconnect <- d },
		PacketTimeout:      15 * time.Second,
	}
	if !ping {
		cfg.PingHandler = noPinger{}
	}
	c.Client = paho5.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho5.Connect{
		ClientID: clientID, Username: user, UsernameFlag: true, Password: []byte(token), PasswordFlag: token != "",
		KeepAlive: keepalive, CleanStart: true,
	})
	if err != nil {
		conn.Close()
		return nil, ca, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho5.Disconnect{}) })
	return c, ca, nil
}

// mustDialV5 is dialV5 for a connection that must succeed.
func (f *fleet) mustDialV5(t *testing.T, d *herd.Device) *v5 {
	t.Helper()
	c, ca, err := f.dialV5(t, d.Key, f.tokens[d.Key], 30, true)
	if err != nil {
		t.Fatalf("connect %s: %v (CONNACK %+v)", d.Key, err, ca)
	}
	return c
}

// publish sends a QoS 1 PUBLISH and returns the PUBACK's reason code.
func (c *v5) publish(t *testing.T, topic, payload string) (byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
	if r == nil {
		return 0, err
	}
	return r.ReasonCode, nil // a refusal is in the code
}

// closed reports whether the client shut down within d.
func (c *v5) closed(d time.Duration) bool {
	select {
	case <-c.Done():
		return true
	case <-time.After(d):
		return false
	}
}

// noPinger is a paho.golang pinger that never pings: a device that went
// quiet.
type noPinger struct{}

func (noPinger) Run(ctx context.Context, _ net.Conn, _ uint16) error { <-ctx.Done(); return nil }
func (noPinger) PacketSent()                                         {}
func (noPinger) PacketReceived()                                     {}
func (noPinger) PingResp()                                           {}
func (noPinger) SetDebug(paholog.Logger)                             {}

// rawConnect dials the gateway and sends an MQTT 5 CONNECT written with
// paho.golang's packet codec, and returns the conn after the CONNACK. No
// client runs on the conn: nothing pings, nothing reads but the test.
func (f *fleet) rawConnect(t *testing.T, key, token string, keepalive uint16) (net.Conn, *pk5.Connack) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", f.addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cp := pk5.NewControlPacket(pk5.CONNECT)
	c := cp.Content.(*pk5.Connect)
	c.ClientID, c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = key, key, true, []byte(token), true
	c.KeepAlive, c.CleanStart = keepalive, true
	if _, err := cp.WriteTo(conn); err != nil {
		t.Fatalf("write CONNECT: %v", err)
	}
	p := readPacket(t, conn, 10*time.Second)
	ca, ok := p.Content.(*pk5.Connack)
	if !ok {
		t.Fatalf("got %s, want CONNACK", p.PacketType())
	}
	return conn, ca
}

// readPacket reads one packet within d.
func readPacket(t *testing.T, conn net.Conn, d time.Duration) *pk5.ControlPacket {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	defer conn.SetReadDeadline(time.Time{})
	p, err := pk5.ReadPacket(conn)
	if err != nil {
		t.Fatalf("read packet: %v", err)
	}
	return p
}

// rawPublish sends a QoS 1 PUBLISH on a raw conn and returns the PUBACK's
// reason code.
func rawPublish(t *testing.T, conn net.Conn, id uint16, topic, payload string) byte {
	t.Helper()
	writePublish(t, conn, id, topic, payload)
	return readPuback(t, conn, id)
}

// readUntilClosed reads from conn until the server closes it, and returns
// the reason code of a DISCONNECT read on the way (-1 when none), when the
// conn ended and the read error. It fails the test when the conn is still
// open after d.
func readUntilClosed(t *testing.T, conn net.Conn, d time.Duration) (int, time.Time, error) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	reason := -1
	for {
		p, err := pk5.ReadPacket(conn)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v", d)
			}
			return reason, time.Now(), err
		}
		if dc, ok := p.Content.(*pk5.Disconnect); ok {
			reason = int(dc.ReasonCode)
		}
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(es)
}

// writePublish appends a QoS 1 PUBLISH to w.
func writePublish(t *testing.T, w io.Writer, id uint16, topic, payload string) {
	t.Helper()
	cp := pk5.NewControlPacket(pk5.PUBLISH)
	p := cp.Content.(*pk5.Publish)
	p.Topic, p.QoS, p.PacketID, p.Payload = topic, 1, id, []byte(payload)
	if _, err := cp.WriteTo(w); err != nil {
		t.Fatalf("write PUBLISH: %v", err)
	}
}

// readPuback reads the PUBACK of id and returns its reason code.
func readPuback(t *testing.T, conn net.Conn, id uint16) byte {
	t.Helper()
	ack := readPacket(t, conn, 15*time.Second)
	pa, ok := ack.Content.(*pk5.Puback)
	if !ok || pa.PacketID != id {
		t.Fatalf("got %s, want the PUBACK of %d", ack, id)
	}
	return pa.ReasonCode
}

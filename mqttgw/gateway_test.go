package mqttgw_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// fleet is a store with one tenant, a node and devices with credentials,
// and a gateway in front of it on a free port.
type fleet struct {
	db      *sqldb.DB
	gw      *mqttgw.Gateway
	devices []*herd.Device
	tokens  map[string]string // key → token
	super   context.Context
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
	f := &fleet{db: db, tokens: map[string]string{}, super: super}
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
	return f
}

// client returns a connected Paho (MQTT 3.1.1) client, or the connect error.
func (f *fleet) client(t *testing.T, key, token string) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + f.gw.TCPAddr().String()).
		SetClientID(key).SetUsername(key).SetPassword(token).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetProtocolVersion(4)
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

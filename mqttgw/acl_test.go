package mqttgw_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// aclTopics returns, for device key and another device other, the topics a
// device may publish and subscribe to, and a list of topics that it may
// use for neither.
func aclTopics(key, other string) (pub, sub, neither []string) {
	own := "devices/" + key + "/"
	pub = []string{own + "telemetry", own + "events", own + "commands/ack"}
	sub = []string{own + "commands", own + "config"}
	neither = []string{
		// Another device's topics.
		"devices/" + other + "/telemetry", "devices/" + other + "/events", "devices/" + other + "/commands/ack",
		"devices/" + other + "/commands", "devices/" + other + "/config",
		// Unknown subtopics and near misses of its own.
		own + "status", own + "telemetry/extra", own + "Telemetry", own + "commands/other", own + "config/",
		own, "devices/" + key, "devices//telemetry", "devices/" + key + "x/telemetry",
		// Not under devices/.
		"telemetry", "commands", key + "/telemetry", "foo/devices/" + key + "/telemetry", "Devices/" + key + "/telemetry",
		"/devices/" + key + "/telemetry",
	}
	return pub, sub, neither
}

// wildcardFilters are subscriptions that would reach other devices' topics,
// or more than the device's own exact topics.
func wildcardFilters(key string) []string {
	return []string{
		"devices/+/telemetry", "devices/+/commands", "devices/#", "#", "+/" + key + "/commands",
		"devices/" + key + "/#", "devices/" + key + "/+", "devices/" + key + "/commands/#",
		"$share/g/devices/" + key + "/commands", "$SYS/#",
	}
}

// ACL with MQTT 5: a device publishes only its telemetry, events and
// command acks, and subscribes only to its commands and config; every other
// topic and every wildcard is refused with 0x87, and counted.
func TestGateway_ACL_MQTT5(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, nil)
	d, other := f.devices[0], f.devices[1]
	pub, sub, neither := aclTopics(d.Key, other.Key)
	c := f.mustDialV5(t, d)

	t.Run("PublishOK", func(t *testing.T) {
		for _, topic := range pub {
			payload := `{"temperature":1}`
			if strings.HasSuffix(topic, "/commands/ack") {
				payload = `{"id":"1","status":"ok"}` // of no command: stored as nothing
			}
			if rc, err := c.publish(t, topic, payload); err != nil || rc >= 0x80 {
				t.Errorf("publish %s: PUBACK %#x, %v; want success", topic, rc, err)
			}
		}
	})
	t.Run("ErrPublishRefused", func(t *testing.T) {
		before := f.metric(t, "herd_mqtt_acl_refused_total", "kind", "publish")
		for _, topic := range append(neither, sub...) {
			rc, err := c.publish(t, topic, `{"temperature":1}`)
			if err != nil || rc != 0x87 {
				t.Errorf("publish %s: PUBACK %#x, %v; want 0x87 not authorized", topic, rc, err)
			}
		}
		if got, want := f.metric(t, "herd_mqtt_acl_refused_total", "kind", "publish"), before+float64(len(neither)+len(sub)); got != want {
			t.Errorf("acl refused publishes = %v, want %v", got, want)
		}
		// Nothing refused reached the store: the other device has no history.
		if n := f.readings(t, other.ID); n != 0 {
			t.Errorf("the other device has %d readings", n)
		}
	})
	t.Run("SubscribeOK", func(t *testing.T) {
		for _, topic := range sub {
			sa, err := c.Subscribe(context.Background(), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: topic, QoS: 1}}})
			if err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
				t.Errorf("subscribe %s: %+v, %v; want granted QoS 1", topic, sa, err)
			}
		}
	})
	t.Run("ErrSubscribeRefused", func(t *testing.T) {
		before := f.metric(t, "herd_mqtt_acl_refused_total", "kind", "subscribe")
		refused := append(append(neither, pub...), wildcardFilters(d.Key)...)
		for _, topic := range refused {
			sa, err := c.Subscribe(context.Background(), &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: topic, QoS: 1}}})
			if err == nil || sa == nil || len(sa.Reasons) != 1 || sa.Reasons[0] != 0x87 {
				t.Errorf("subscribe %s: %+v, %v; want 0x87 not authorized", topic, sa, err)
			}
		}
		// Every filter here is valid MQTT, so each was refused by the ACL
		// and counted there.
		if got := f.metric(t, "herd_mqtt_acl_refused_total", "kind", "subscribe"); got != before+float64(len(refused)) {
			t.Errorf("acl refused subscriptions = %v, want %v", got, before+float64(len(refused)))
		}
	})
	t.Run("SubscribeMixed", func(t *testing.T) {
		// One SUBSCRIBE, one reason per filter.
		s := &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{
			{Topic: sub[0], QoS: 1}, {Topic: "devices/" + other.Key + "/commands", QoS: 1}, {Topic: sub[1], QoS: 0}, {Topic: "devices/+/commands", QoS: 1},
		}}
		sa, _ := c.Subscribe(context.Background(), s)
		if sa == nil || string(sa.Reasons) != "\x01\x87\x00\x87" {
			t.Fatalf("SUBACK %+v, want reasons 01 87 00 87", sa)
		}
	})
	// All of it on one connection: refusals do not cost a device its
	// connection under MQTT 5.
	if c.closed(0) {
		t.Fatal("the connection was closed")
	}
}

// A PUBLISH whose topic holds a wildcard breaks the protocol: the MQTT 5
// client is told so and disconnected, and nothing is stored.
func TestGateway_ACL_PublishWildcard(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, nil)
	d, other := f.devices[0], f.devices[1]
	for _, topic := range []string{"devices/+/telemetry", "devices/#", "#", "devices/" + d.Key + "/+"} {
		c := f.mustDialV5(t, d)
		// Paho keeps a QoS 1 message of a lost connection for the next
		// one, so its Publish waits for the context rather than returning
		// at the DISCONNECT: wait for that instead.
		ctx, cancel := context.WithCancel(context.Background())
		published := make(chan error, 1)
		go func() {
			r, err := c.Publish(ctx, &paho5.Publish{Topic: topic, QoS: 1, Payload: []byte(`{"temperature":1}`)})
			if err == nil && r.ReasonCode < 0x80 {
				err = nil
			} else if err == nil {
				err = fmt.Errorf("PUBACK %#x", r.ReasonCode)
			}
			published <- err
		}()
		select {
		case dc := <-c.disconnect:
			if dc.ReasonCode < 0x80 {
				t.Fatalf("publish %s: DISCONNECT %#x, want an error", topic, dc.ReasonCode)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("publish %s: no DISCONNECT", topic)
		}
		if !c.closed(10 * time.Second) {
			t.Fatalf("publish %s: still connected", topic)
		}
		cancel()
		if err := <-published; err == nil {
			t.Fatalf("publish %s: acknowledged", topic)
		}
	}
	if n := f.readings(t, d.ID) + f.readings(t, other.ID); n != 0 {
		t.Fatalf("%d readings stored", n)
	}
}

// ACL with MQTT 3.1.1, which has fewer ways to say no: a refused
// subscription gets 0x80 in its SUBACK, a refused QoS 1 publish loses the
// connection (mochi's MQTT 3.1.1 behaviour), a refused QoS 0 publish is
// dropped.
func TestGateway_ACL_MQTT311(t *testing.T) {
	t.Parallel()
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 2, nil)
	d, other := f.devices[0], f.devices[1]
	pub, sub, neither := aclTopics(d.Key, other.Key)

	// connect returns a client and a channel closed when it loses its
	// connection.
	connect := func(t *testing.T) (paho.Client, chan struct{}) {
		t.Helper()
		lost := make(chan struct{})
		c, err := f.clientAt(t, "tcp://"+f.addr(), d.Key, d.Key, f.tokens[d.Key], func(o *paho.ClientOptions) {
			o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
		})
		if err != nil {
			t.Fatal(err)
		}
		return c, lost
	}
	wait := func(tok paho.Token) error {
		if !tok.WaitTimeout(15 * time.Second) {
			t.Fatal("no answer within 15 s")
		}
		return tok.Error()
	}

	c, lost := connect(t)
	t.Run("Subscribe", func(t *testing.T) {
		for _, topic := range sub {
			tok := c.Subscribe(topic, 1, nil)
			if err := wait(tok); err != nil || only(tok.(*paho.SubscribeToken).Result()) != 1 {
				t.Errorf("subscribe %s: %v, %v; want granted QoS 1", topic, tok.(*paho.SubscribeToken).Result(), err)
			}
		}
		for _, topic := range append(append(neither, pub...), wildcardFilters(d.Key)...) {
			tok := c.Subscribe(topic, 1, nil)
			if err := wait(tok); only(tok.(*paho.SubscribeToken).Result()) != 0x80 {
				t.Errorf("subscribe %s: %v, %v; want 0x80 failure", topic, tok.(*paho.SubscribeToken).Result(), err)
			}
		}
	})
	t.Run("PublishOK", func(t *testing.T) {
		for _, topic := range pub {
			if err := wait(c.Publish(topic, 1, false, `{"temperature":3}`)); err != nil {
				t.Errorf("publish %s: %v", topic, err)
			}
		}
		if got := f.device(t, d.ID).Temperature; got == nil || *got != 3 {
			t.Errorf("temperature %v, want 3", got)
		}
	})
	t.Run("PublishQoS0Refused", func(t *testing.T) {
		for _, topic := range neither {
			if err := wait(c.Publish(topic, 0, false, `{"temperature":9}`)); err != nil {
				t.Errorf("publish %s: %v", topic, err)
			}
		}
		// Still connected, and what it sent was dropped: a QoS 1 publish
		// after them is answered, and the other device has no history.
		if err := wait(c.Publish(pub[0], 1, false, `{"temperature":4}`)); err != nil {
			t.Fatalf("publish after the refusals: %v", err)
		}
		if n := f.readings(t, other.ID); n != 0 {
			t.Errorf("the other device has %d readings", n)
		}
	})
	select {
	case <-lost:
		t.Fatal("refused subscriptions or QoS 0 publishes cost the connection")
	default:
	}

	for i, topic := range []string{"devices/" + other.Key + "/telemetry", "devices/" + d.Key + "/status", "telemetry", sub[0]} {
		t.Run(fmt.Sprintf("ErrPublishQoS1Refused%d", i), func(t *testing.T) {
			c, lost := connect(t)
			c.Publish(topic, 1, false, `{"temperature":9}`)
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatalf("publish %s: still connected after 10 s", topic)
			}
		})
	}
	if n := f.readings(t, other.ID); n != 0 {
		t.Errorf("the other device has %d readings", n)
	}
}

// only returns the one code of a single-filter SUBACK (Paho keys a shared
// subscription by the filter without its $share/group/ prefix), or -1.
func only(result map[string]byte) int {
	if len(result) != 1 {
		return -1
	}
	for _, code := range result {
		return int(code)
	}
	return -1
}

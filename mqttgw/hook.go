package mqttgw

import (
	"bytes"
	"context"
	"time"

	"github.com/herd-iot/herd"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// hook is the gateway's mochi hook.
type hook struct {
	mqtt.HookBase
	g *Gateway
}

func (h *hook) ID() string { return "herd" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished,
		mqtt.OnPublish, mqtt.OnSubscribed, mqtt.OnQosPublish, mqtt.OnQosComplete}, []byte{b})
}

// refuse writes a refusing CONNACK with the code of the client's protocol
// version and returns the error that makes mochi close the connection.
func (h *hook) refuse(cl *mqtt.Client, v5, v3 packets.Code, reason string) error {
	code := v5
	if cl.Properties.ProtocolVersion < 5 {
		code = v3
	}
	h.g.metrics.connects.WithLabelValues(reason).Inc()
	_ = h.g.server.SendConnack(cl, code, false, nil)
	return code
}

// OnConnect admits or refuses a connection: the rate, the cap, then the
// credentials. mochi runs it before its own authentication and sends no
// CONNACK when it fails, so each refusal writes its own.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	g := h.g
	remote := cl.Net.Remote
	if !g.bucket.take() {
		g.Logger.Debug("connect refused: rate", "remote", remote)
		return h.refuse(cl, packets.ErrConnectionRateExceeded, packets.Err3ServerUnavailable, "rate")
	}
	// A reconnect of a device connected now replaces its old socket, so it
	// does not add to the files open: admit it at the cap.
	if int(g.conns.Load()) > g.limit {
		if old, ok := g.session(cl.ID); !ok || old.link.cl.Closed() {
			g.Logger.Warn("connect refused: connection cap reached", "remote", remote, "cap", g.limit)
			return h.refuse(cl, packets.ErrQuotaExceeded, packets.Err3ServerUnavailable, "cap")
		}
	}
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	if cl.ID == "" || user != cl.ID || cl.ID == "inline" {
		g.Logger.Info("connect refused: client id must be the device key and the user name", "remote", remote)
		return h.refuse(cl, packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword, "bad_credentials")
	}
	// mochi publishes a will to whoever subscribes to its topic, past
	// OnPublish: a will on another device's commands would reach that
	// device as a command. A device's will may use its own publish topics.
	if pk.Connect.WillFlag {
		if _, ok := mayPublish(cl.ID, pk.Connect.WillTopic); !ok {
			g.metrics.refusedACL.WithLabelValues("will").Inc()
			g.Logger.Info("connect refused: will topic not the device's own", "remote", remote, "key", cl.ID, "topic", pk.Connect.WillTopic)
			return h.refuse(cl, packets.ErrNotAuthorized, packets.Err3NotAuthorized, "will_topic")
		}
	}
	ctx, cancel := context.WithTimeout(g.baseCtx, 5*time.Second)
	id, err := g.Credentials.AuthenticateDevice(ctx, user, pass)
	cancel()
	if herd.ErrorCode(err) == herd.EUNAUTHORIZED {
		// Never the token: only who tried from where.
		g.Logger.Info("connect refused: bad credentials", "remote", remote, "key", user)
		return h.refuse(cl, packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword, "bad_credentials")
	} else if err != nil {
		g.Logger.Error("connect refused: credential check failed", "remote", remote, "key", user, "err", err)
		return h.refuse(cl, packets.ErrServerUnavailable, packets.Err3ServerUnavailable, "error")
	}
	maxKA := uint16(min(g.MaxKeepalive/time.Second, 65535))
	if maxKA > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > maxKA) {
		cl.State.Keepalive = maxKA
		cl.State.ServerKeepalive = true
	}
	g.hold(cl, session{deviceID: id.DeviceID, tenantID: id.TenantID})
	return nil
}

// OnConnectAuthenticate admits what OnConnect admitted.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool { return true }

// OnSessionEstablished marks the device online.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	g := h.g
	s, ok := g.session(cl.ID)
	if !ok {
		return
	}
	g.metrics.connects.WithLabelValues("ok").Inc()
	_ = g.batch.submit(g.baseCtx, &pending{items: []herd.IngestItem{{Kind: herd.IngestConnect, DeviceID: s.deviceID, TenantID: s.tenantID, At: g.Now().UnixMilli()}}})
	// A device back on a persistent session keeps its subscriptions and
	// does not subscribe again: its open commands go now.
	if g.Commands != nil {
		if _, subscribed := cl.State.Subscriptions.Get("devices/" + cl.ID + "/" + topicCommands); subscribed {
			go g.deliverOpen(s.deviceID)
		}
	}
}

// OnACLCheck confines a device's subscriptions to its commands and config.
// Wildcards never match: a filter must name the topic exactly. Publishes
// pass here and are checked in OnPublish, where the topic alias is
// resolved and the refusal takes its place in the connection's order of
// PUBACKs.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline || write {
		return true
	}
	key, rest, ok := deviceTopic(topic)
	if ok && key == cl.ID && (rest == topicCommands || rest == topicConfig) {
		return true
	}
	h.g.metrics.refusedACL.WithLabelValues("subscribe").Inc()
	h.g.Logger.Debug("subscription refused", "key", cl.ID, "topic", topic)
	return false
}

// OnPublish stores what a device publishes: telemetry as readings, events
// as device.reported events. A QoS 1 publish gets its PUBACK from the acker
// once the transaction holding its items has committed (mochi is told to do
// nothing more with it), so the device may have several in flight;
// refusals take the same path, so that every PUBACK leaves in the order of
// the publishes. A QoS 2 publish waits here for the commit and mochi
// answers it. Device messages are never retained or forwarded: herd is
// their only reader.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	g := h.g
	if cl.Net.Inline {
		return pk, nil
	}
	s, ok := g.session(cl.ID)
	if !ok || s.link.cl != cl {
		// A socket being taken over: nothing is stored or acknowledged,
		// and the device sends it again on its new connection.
		return handled(pk)
	}
	kind, allowed := mayPublish(cl.ID, pk.TopicName)
	if !allowed {
		g.metrics.refusedACL.WithLabelValues("publish").Inc()
		g.Logger.Debug("publish refused", "key", cl.ID, "topic", pk.TopicName)
		if cl.Properties.ProtocolVersion < 5 && pk.FixedHeader.Qos > 0 {
			// MQTT 3.1.1 cannot refuse a publish: the connection is closed.
			g.disconnect(cl, packets.ErrNotAuthorized)
			return handled(pk)
		}
		return h.answer(cl, s.link, pk, "refused", packets.ErrNotAuthorized.Code)
	}
	now := g.Now()
	var items []herd.IngestItem
	var err error
	switch kind {
	case topicAck:
		var a herd.CommandAck
		if a, err = herd.ParseCommandAck(pk.Payload, g.MaxPayload); err == nil {
			items = []herd.IngestItem{{Kind: herd.IngestCommandAck, DeviceID: s.deviceID, TenantID: s.tenantID, At: now.UnixMilli(), Ack: a}}
		}
	case topicEvents:
		var data []byte
		if data, err = herd.ParseDeviceEvent(pk.Payload, g.MaxPayload); err == nil {
			items = []herd.IngestItem{{Kind: herd.IngestEvent, DeviceID: s.deviceID, TenantID: s.tenantID, At: now.UnixMilli(), Data: data}}
		}
	default:
		items, err = h.readings(s, pk.Payload, now)
	}
	if err != nil {
		reason := "malformed"
		if herd.ErrorCode(err) == herd.ETOOLARGE {
			reason = "too_large"
		}
		g.metrics.publishes.WithLabelValues(kind, reason).Inc()
		g.Logger.Info("publish refused", "key", cl.ID, "topic", kind, "remote", cl.Net.Remote, "err", herd.ErrorMessage(err))
		// MQTT 3.1.1 has no way to refuse a publish: the message is acked
		// and dropped, or the device would send it again forever.
		var code byte
		if cl.Properties.ProtocolVersion >= 5 {
			code = packets.ErrPayloadFormatInvalid.Code
		}
		return h.answer(cl, s.link, pk, kind, code)
	}

	p := &pending{items: items}
	switch pk.FixedHeader.Qos {
	case 0:
		if g.batch.submit(g.baseCtx, p) == nil {
			g.metrics.publishes.WithLabelValues(kind, "queued").Inc()
		}
		return handled(pk)
	case 1:
		p.ack = &ack{link: s.link, id: pk.PacketID, v5: cl.Properties.ProtocolVersion >= 5, kind: kind, start: time.Now()}
		s.link.acquire()
		if g.batch.submit(g.baseCtx, p) != nil {
			s.link.release(1) // closing down: the device sends it again
		}
		return handled(pk)
	}
	start := time.Now()
	p.done = make(chan error, 1)
	if g.batch.submit(g.baseCtx, p) != nil {
		return handled(pk)
	}
	if err := <-p.done; err != nil {
		g.metrics.publishes.WithLabelValues(kind, "store_failed").Inc()
		g.Logger.Error("telemetry not stored", "key", cl.ID, "err", err)
		if cl.Properties.ProtocolVersion >= 5 {
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, ReasonCode: packets.ErrUnspecifiedError.Code})
		}
		// MQTT 3.1.1: no PUBREC; the device sends it again when it reconnects.
		return handled(pk)
	}
	g.metrics.pubackLatency.Observe(time.Since(start).Seconds())
	g.metrics.publishes.WithLabelValues(kind, "stored").Inc()
	return pk, packets.CodeSuccessIgnore // mochi sends the PUBREC
}

// readings parses a telemetry payload into the device's ingest items.
func (h *hook) readings(s session, payload []byte, now time.Time) ([]herd.IngestItem, error) {
	readings, err := herd.ParseTelemetry(payload, now, h.g.MaxPayload)
	if err != nil {
		return nil, err
	}
	at := now.UnixMilli()
	s.link.defaultTimes(readings, at)
	items := make([]herd.IngestItem, len(readings))
	for i, r := range readings {
		items[i] = herd.IngestItem{Kind: herd.IngestReading, DeviceID: s.deviceID, TenantID: s.tenantID, At: at, Reading: r}
	}
	return items, nil
}

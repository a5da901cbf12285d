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
		mqtt.OnPublish, mqtt.OnSubscribed, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnPacketEncode}, []byte{b})
}

// OnPacketEncode tells MQTT 5 devices in their CONNACK that retain is not
// available (Retain Available = 0): herd is the only reader of what a
// device publishes and keeps no retained messages. mochi's SendConnack
// never writes the property itself, and its own RetainAvailable = 0 would
// answer a 3.1.1 CONNECT with a retained will by 0x9A, which is not a
// 3.1.1 return code; herd refuses retain itself instead (OnConnect,
// OnPublish).
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode == packets.CodeSuccess.Code && cl.Properties.ProtocolVersion >= 5 {
		pk.Properties.RetainAvailable, pk.Properties.RetainAvailableFlag = 0, true
	}
	return pk
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
	willKind, err := h.checkWill(cl, pk)
	if err != nil {
		return err
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
	g.hold(cl, session{deviceID: id.DeviceID, tenantID: id.TenantID}, takeWill(cl, willKind))
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
	if s.link.cl == cl {
		s.link.established.Store(true) // its will counts from here
	}
	g.metrics.connects.WithLabelValues("ok").Inc()
	_ = g.batch.submit(g.baseCtx, &pending{items: []herd.IngestItem{{Kind: herd.IngestConnect, DeviceID: s.deviceID, TenantID: s.tenantID, At: g.Now().UnixMilli()}}})
	// A device back on a persistent session keeps its subscriptions and
	// does not subscribe again: its open commands go now.
	if g.Commands != nil {
		if _, subscribed := cl.State.Subscriptions.Get("devices/" + cl.ID + "/" + topicCommands); subscribed {
			g.work.start(func() { g.deliverOpen(s.tenantID, s.deviceID) })
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
	if maySubscribe(cl.ID, topic) {
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
	if pk.FixedHeader.Retain {
		if cl.Properties.ProtocolVersion >= 5 {
			// It was told Retain Available = 0 in its CONNACK: a retained
			// PUBLISH is a protocol error, answered with DISCONNECT 0x9A
			// (MQTT 5 3.3.1.3; a PUBACK has no such reason code).
			g.metrics.publishes.WithLabelValues(publishKind(cl.ID, pk.TopicName), "retain_refused").Inc()
			g.Logger.Info("retained publish refused: disconnecting", "key", cl.ID, "remote", cl.Net.Remote, "topic", pk.TopicName)
			g.disconnect(cl, packets.ErrRetainNotSupported)
			return handled(pk)
		}
		// MQTT 3.1.1 cannot be told: the message is taken as if it were
		// not retained (herd keeps the device's latest state anyway).
		g.metrics.retainIgnored.Inc()
		pk.FixedHeader.Retain = false
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
	items, err := g.parse(s, kind, pk.Payload, g.Now())
	if err != nil {
		g.metrics.publishes.WithLabelValues(kind, refusalReason(err)).Inc()
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

// parse turns what a device sent on one of its topics (kind), a publish
// or its will, into its ingest items: telemetry into readings, events into
// a device.reported event, commands/ack into a command's answer, config/ack
// into the device's reported config, ota/progress into an event. A session
// without a link (a will checked at CONNECT) only checks the payload.
func (g *Gateway) parse(s session, kind string, payload []byte, now time.Time) ([]herd.IngestItem, error) {
	at := now.UnixMilli()
	switch kind {
	case topicConfigAck:
		a, err := herd.ParseConfigAck(payload, g.MaxPayload)
		if err != nil {
			return nil, err
		}
		return []herd.IngestItem{{Kind: herd.IngestConfigAck, DeviceID: s.deviceID, TenantID: s.tenantID, At: at, ConfigAck: a}}, nil
	case topicProgress:
		p, err := herd.ParseOTAProgress(payload, g.MaxPayload)
		if err != nil {
			return nil, err
		}
		return []herd.IngestItem{{Kind: herd.IngestOTAProgress, DeviceID: s.deviceID, TenantID: s.tenantID, At: at, OTA: p}}, nil
	case topicAck:
		a, err := herd.ParseCommandAck(payload, g.MaxPayload)
		if err != nil {
			return nil, err
		}
		return []herd.IngestItem{{Kind: herd.IngestCommandAck, DeviceID: s.deviceID, TenantID: s.tenantID, At: at, Ack: a}}, nil
	case topicEvents:
		data, err := herd.ParseDeviceEvent(payload, g.MaxPayload)
		if err != nil {
			return nil, err
		}
		return []herd.IngestItem{{Kind: herd.IngestEvent, DeviceID: s.deviceID, TenantID: s.tenantID, At: at, Data: data}}, nil
	}
	readings, err := herd.ParseTelemetry(payload, now, g.MaxPayload)
	if err != nil {
		return nil, err
	}
	if s.link != nil {
		s.link.defaultTimes(readings, at)
	}
	items := make([]herd.IngestItem, len(readings))
	for i, r := range readings {
		items[i] = herd.IngestItem{Kind: herd.IngestReading, DeviceID: s.deviceID, TenantID: s.tenantID, At: at, Reading: r}
	}
	return items, nil
}

// refusalReason is the metrics' name for a payload that did not parse.
func refusalReason(err error) string {
	if herd.ErrorCode(err) == herd.ETOOLARGE {
		return "too_large"
	}
	return "malformed"
}

// publishKind is the topic kind of a publish for the metrics: the kind of
// one of the device's own topics, or "refused".
func publishKind(key, topic string) string {
	if kind, ok := mayPublish(key, topic); ok {
		return kind
	}
	return "refused"
}

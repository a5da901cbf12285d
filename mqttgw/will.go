package mqttgw

import (
	"errors"

	"github.com/herd-iot/herd"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Wills. mochi publishes a client's will to the subscribers of its topic,
// past OnPublish, and no one subscribes to a device's publish topics: left
// to mochi, a will is accepted and goes nowhere. herd takes the will out of
// mochi's hands when it admits the connection and, when the connection
// ends because the device went away unannounced, sends it down the path a
// publish on its topic takes: the same parse, the same group
// commit, the same events (a will on events becomes a device.reported
// event, one on telemetry readings), committed with the device's
// disconnect and before it.
//
// The rules:
//   - A will must be on one of the device's own publish topics; any other
//     is refused at CONNECT (MQTT 5 0x87, 3.1.1 code 5), counted
//     (herd_mqtt_acl_refused_total{kind="will"}) and logged. Refusing it
//     then tells the device at once, where dropping it later would be
//     silent at the one moment no one is watching.
//   - The will's QoS (0, 1 or 2) changes nothing: herd is its only
//     reader and commits it once, with the disconnect, or not at all.
//   - An MQTT 5 will with Will Retain is refused at CONNECT with 0x9A
//     (retain is not available); on 3.1.1, which cannot be told, the
//     retain flag is ignored, as for a publish.
//   - A will that does not parse (malformed, larger than the payload
//     limit) is refused at CONNECT (MQTT 5 0x99 payload format invalid or
//     0x95 packet too large, 3.1.1 code 5), counted
//     (herd_mqtt_connects_total{result="will_malformed"|"will_too_large"})
//     and logged, for the same reason: when it is due there is no one left
//     to tell. (A CONNECT beyond the broker's packet limit, the payload
//     limit and 1 KiB, is closed by mochi unanswered, as any packet that
//     large is: the will inside it never reaches herd.) It is parsed
//     again when due (its default times are the
//     time of death), and cannot fail then; if it did, it would be dropped
//     and counted (herd_mqtt_wills_total{result="malformed"}).
//   - The will goes when the connection ends without the device's clean
//     DISCONNECT (0x00): a crash, a power cut, a lost network, a keepalive
//     run out, a connection herd closed for a protocol error, or MQTT 5
//     DISCONNECT 0x04 "with will message". It is discarded when the
//     device is in fact still there or did not die: a takeover (the key
//     has connected again, which is what a Will Delay Interval waits for;
//     herd honours no delay otherwise) and herd's own shutdown (a restart
//     of herd would otherwise report every device's death). It is
//     discarded too when herd closes the connection because the device's
//     credential was revoked (DisconnectDevice): the operator has cut the
//     device off, and a will committed after that would be the one
//     message of a revoked device that herd still takes (a stolen
//     credential's last word among them).

// will is a device's last will, held by herd instead of mochi.
type will struct {
	s       session // whose (the link is set by hold)
	kind    string  // the topic kind: telemetry, events or commands/ack
	payload []byte
}

// checkWill refuses a CONNECT whose will herd would not take, writing the
// CONNACK; it returns the will's topic kind, or "" for no will.
func (h *hook) checkWill(cl *mqtt.Client, pk packets.Packet) (string, error) {
	g := h.g
	if !pk.Connect.WillFlag {
		return "", nil
	}
	kind, ok := mayPublish(cl.ID, pk.Connect.WillTopic)
	if !ok {
		g.metrics.refusedACL.WithLabelValues("will").Inc()
		g.Logger.Info("connect refused: will topic not the device's own", "remote", cl.Net.Remote, "key", cl.ID, "topic", pk.Connect.WillTopic)
		return "", h.refuse(cl, packets.ErrNotAuthorized, packets.Err3NotAuthorized, "will_topic")
	}
	if pk.Connect.WillRetain && cl.Properties.ProtocolVersion >= 5 {
		g.Logger.Info("connect refused: retained will", "remote", cl.Net.Remote, "key", cl.ID)
		// (The 3.1.1 code is never used: 3.1.1 wills keep their place,
		// retain ignored.)
		return "", h.refuse(cl, packets.ErrRetainNotSupported, packets.Err3NotAuthorized, "will_retain")
	}
	// The parse again at death cannot fail where this one passed: a
	// reading's ts may not be ahead of its arrival, and death comes later.
	if _, err := g.parse(session{}, kind, pk.Connect.WillPayload, g.Now()); err != nil {
		reason, code := "will_malformed", packets.ErrPayloadFormatInvalid
		if herd.ErrorCode(err) == herd.ETOOLARGE {
			reason, code = "will_too_large", packets.ErrPacketTooLarge
		}
		g.Logger.Info("connect refused: will does not parse", "remote", cl.Net.Remote, "key", cl.ID, "topic", kind, "err", herd.ErrorMessage(err))
		return "", h.refuse(cl, code, packets.Err3NotAuthorized, reason)
	}
	return kind, nil
}

// takeWill takes the client's will, if it has one, from mochi, which then
// has none to publish.
func takeWill(cl *mqtt.Client, kind string) *will {
	if kind == "" {
		return nil
	}
	w := &will{kind: kind, payload: cl.Properties.Will.Payload}
	cl.Properties.Will = mqtt.Will{}
	return w
}

// willItems returns the ingest items of a link's will if it is due: the
// device got its CONNACK, and its connection ended other than by its own
// clean DISCONNECT, a takeover, herd's shutdown or a revoked credential
// (see above).
func (g *Gateway) willItems(l *link) []herd.IngestItem {
	w := l.will
	if w == nil {
		return nil
	}
	cause := l.cl.StopCause()
	if !l.established.Load() || l.revoked.Load() || errors.Is(cause, packets.CodeDisconnect) || errors.Is(cause, packets.ErrSessionTakenOver) || errors.Is(cause, packets.ErrServerShuttingDown) {
		g.metrics.wills.WithLabelValues(w.kind, "discarded").Inc()
		return nil
	}
	items, err := g.parse(w.s, w.kind, w.payload, g.Now())
	if err != nil {
		g.metrics.wills.WithLabelValues(w.kind, refusalReason(err)).Inc()
		g.Logger.Info("will dropped", "key", l.key, "topic", w.kind, "remote", l.cl.Net.Remote, "err", herd.ErrorMessage(err))
		return nil
	}
	g.metrics.wills.WithLabelValues(w.kind, "queued").Inc()
	return items
}

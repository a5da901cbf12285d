package mqttgw

import (
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// receiveMaximum is how many QoS 1 publishes of one connection may wait
// for their PUBACK at once; MQTT 5 clients are told so in the CONNACK.
const receiveMaximum = 256

// ackWriteTimeout bounds the write of a connection's PUBACKs. One writer
// serves every connection, so a device that stops reading must not hold
// it: its connection is closed instead.
const ackWriteTimeout = time.Second

func (l *link) acquire() {
	l.mu.Lock()
	for l.inflight >= receiveMaximum {
		l.room.Wait()
	}
	l.inflight++
	l.mu.Unlock()
}

func (l *link) release(n int) {
	l.mu.Lock()
	l.inflight -= n
	l.mu.Unlock()
	l.room.Broadcast()
}

// queueAcks appends n PUBACKs, b, to the socket's unsent ones and sends
// them, unless a send is under way, which takes them too. The socket is
// written under the client's lock, as mochi writes it; the acker never
// waits for that lock: while mochi holds it (its write to a device that
// stopped reading can block for up to 1.5 × keepalive), a goroutine of the
// link's own waits instead, and the other devices' PUBACKs go on.
func (l *link) queueAcks(b []byte, n int, log *slog.Logger) {
	l.mu.Lock()
	l.unsent = append(l.unsent, b...)
	l.unsentN += n
	if l.sending {
		l.mu.Unlock()
		return
	}
	l.sending = true
	l.mu.Unlock()
	if l.cl.TryLock() {
		l.sendLocked(log)
		return
	}
	if !l.writers.start(func() {
		l.cl.Lock()
		l.sendLocked(log)
	}) {
		// Closing down, past the last commit: nothing is left to wait
		// for the lock but this.
		l.cl.Lock()
		l.sendLocked(log)
	}
}

// sendLocked writes the unsent PUBACKs until none are left, holding the
// client's lock, which it releases. Each write is bounded by
// ackWriteTimeout; a device that does not take its PUBACKs within it is
// disconnected. The publishes they answer leave the receive window only
// once written, so a device that stops reading soon stops being read.
func (l *link) sendLocked(log *slog.Logger) {
	cl := l.cl
	defer cl.Unlock()
	for {
		l.mu.Lock()
		b, n := l.unsent, l.unsentN
		l.unsent, l.unsentN = nil, 0
		if n == 0 {
			l.sending = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if !cl.Closed() {
			_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(ackWriteTimeout))
			_, err := cl.Net.Conn.Write(b)
			// Back to the deadline mochi keeps on the socket (1.5 ×
			// keepalive from now, as its refresh on every packet read
			// would set): with none, its own writes to a device that
			// stopped reading would block for good, holding this lock.
			_ = cl.Net.Conn.SetWriteDeadline(keepaliveDeadline(cl.State.Keepalive))
			if err != nil && !cl.Closed() {
				log.Info("closing a connection whose PUBACKs could not be written", "key", l.key, "remote", cl.Net.Remote, "err", err)
				// Stop closes the socket; it takes no lock.
				cl.Stop(err)
			}
		}
		l.release(n)
	}
}

// keepaliveDeadline is the deadline mochi gives a socket: 1.5 × keepalive
// from now, none for keepalive 0.
func keepaliveDeadline(keepalive uint16) time.Time {
	if keepalive == 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(keepalive+keepalive/2) * time.Second)
}

// handled tells mochi that herd has dealt with a publish (see the package
// doc): as an ignored QoS 0 message, it gets no PUBACK from mochi and goes
// nowhere.
func handled(pk packets.Packet) (packets.Packet, error) {
	pk.FixedHeader.Qos, pk.FixedHeader.Retain, pk.Ignore = 0, false, true
	return pk, nil
}

// answer acknowledges a publish that stores nothing: code 0 is success,
// anything else an MQTT 5 refusal. A QoS 1 PUBACK goes through the acker,
// behind the connection's earlier ones.
func (h *hook) answer(cl *mqtt.Client, l *link, pk packets.Packet, kind string, code byte) (packets.Packet, error) {
	switch pk.FixedHeader.Qos {
	case 0:
		return handled(pk)
	case 1:
		l.acquire()
		a := &ack{link: l, id: pk.PacketID, v5: cl.Properties.ProtocolVersion >= 5, code: code, decided: true, kind: kind}
		if h.g.batch.submit(h.g.baseCtx, &pending{ack: a}) != nil {
			l.release(1)
		}
		return handled(pk)
	}
	if code == 0 {
		return pk, packets.CodeSuccessIgnore // mochi sends the PUBREC
	}
	_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID, ReasonCode: code})
	return handled(pk)
}

// writeAcks sends the PUBACKs of a batch whose commit is over: all of a
// connection's in one write, in the order they were published. A commit
// that failed is answered 0x80 to MQTT 5 devices; MQTT 3.1.1 has no failing
// PUBACK, so those connections are closed and their devices send again.
func (g *Gateway) writeAcks(batch []*pending, err error) {
	type out struct {
		buf   []byte
		n     int
		close bool
	}
	outs := map[*link]*out{}
	var order []*link
	now := time.Now()
	for _, p := range batch {
		a := p.ack
		if a == nil {
			continue
		}
		o := outs[a.link]
		if o == nil {
			o = &out{}
			outs[a.link] = o
			order = append(order, a.link)
		}
		o.n++
		code := a.code
		if !a.decided {
			if err != nil {
				g.metrics.publishes.WithLabelValues(a.kind, "store_failed").Inc()
				if !a.v5 {
					o.close = true
					continue
				}
				code = packets.ErrUnspecifiedError.Code
			} else {
				g.metrics.publishes.WithLabelValues(a.kind, "stored").Inc()
				g.metrics.pubackLatency.Observe(now.Sub(a.start).Seconds())
			}
		}
		if code == 0 {
			o.buf = append(o.buf, packets.Puback<<4, 2, byte(a.id>>8), byte(a.id))
		} else {
			o.buf = append(o.buf, packets.Puback<<4, 3, byte(a.id>>8), byte(a.id), code)
		}
	}
	if err != nil && len(order) > 0 {
		g.Logger.Error("telemetry not stored", "connections", len(order), "err", err)
	}
	for _, l := range order {
		o := outs[l]
		if o.close {
			// 3.1.1 has no DISCONNECT from the server: close it, without
			// the client's lock, which the acker must never wait for.
			l.cl.Stop(packets.ErrUnspecifiedError)
			l.release(o.n)
			continue
		}
		l.queueAcks(o.buf, o.n, g.Logger)
	}
}

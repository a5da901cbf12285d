package mqttgw

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-iot/herd"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// session is what the gateway keeps of a connected device.
type session struct {
	deviceID int64
	tenantID int64
	link     *link // the socket that holds the key
}

// link is a socket that got past OnConnect with a device key.
type link struct {
	key   string
	cl    *mqtt.Client
	ended chan struct{} // closed when mochi is done with the socket

	// inflight counts the PUBACKs this socket is owed and not yet sent; a
	// device with receiveMaximum of them waits for room (its read loop
	// stops, and TCP pushes back).
	mu       sync.Mutex
	room     sync.Cond
	inflight int
	// unsent are PUBACKs (unsentN of them) waiting for the socket; sending
	// is set while someone writes them.
	unsent  []byte
	unsentN int
	sending bool
	// lastTS is the last default time given to a reading of the device, so
	// that two readings without ts in one millisecond get distinct times
	// (the history keeps one reading per device and time). It carries over
	// to the key's next socket.
	lastTS int64

	// writers owns the goroutine that waits for the socket's lock to
	// write its PUBACKs (the gateway's writers).
	writers *owned
	// will is the device's will (see will.go), nil for none; established
	// is set once the device has had its CONNACK, from when a will counts.
	will        *will
	established atomic.Bool
	// revoked is set when herd closes the socket because the device's
	// credential was revoked (DisconnectDevice): its will is not taken.
	revoked atomic.Bool
}

// defaultTimes gives the readings the device sent without ts (those whose
// TS is the arrival time at) distinct times, each past the last.
func (l *link) defaultTimes(readings []herd.Reading, at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range readings {
		// (A ts the device sent that happens to equal the arrival
		// millisecond is treated the same: it moves by a millisecond at
		// most, and only when it would collide.)
		if r := &readings[i]; r.TS == at {
			r.TS = max(r.TS, l.lastTS+1)
			l.lastTS = r.TS
		}
	}
}

func (l *link) lastDefaultTime() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastTS
}

func newLink(key string, cl *mqtt.Client, writers *owned) *link {
	l := &link{key: key, cl: cl, ended: make(chan struct{}), writers: writers}
	l.room.L = &l.mu
	return l
}

// disconnectWait bounds the telling of a client that it is disconnected.
const disconnectWait = time.Second

// disconnect closes a client's connection, telling an MQTT 5 client why.
// mochi writes that DISCONNECT under the client's lock, which its write to
// a device that stopped reading holds until the socket's deadline: the
// telling is bounded, and a client that cannot be told is closed anyway.
func (g *Gateway) disconnect(cl *mqtt.Client, code packets.Code) {
	done := make(chan struct{})
	// The teller may outlive the wait: it ends when the socket is closed,
	// and Close waits for it then.
	if !g.writers.start(func() {
		defer close(done)
		_ = g.server.DisconnectClient(cl, code)
	}) {
		cl.Stop(code)
		return
	}
	timer := time.NewTimer(disconnectWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		cl.Stop(code)
	}
}

// takeoverWait bounds the wait of a new connection for its key's old one
// to end; a QoS 1 publish of the old one waiting on a slow commit is the
// one thing that holds it.
const takeoverWait = 10 * time.Second

// hold gives the key of cl to its socket, after the key's old socket, if
// any, has ended: it closes that one (DISCONNECT 0x8E) and waits until
// mochi is done with it. The old socket's end thus comes before the new
// one's start, in the store as in mochi.
func (g *Gateway) hold(cl *mqtt.Client, s session, w *will) {
	var lastTS int64 // of the sockets taken over
	for {
		g.mu.Lock()
		prev, held := g.sessions[cl.ID]
		if !held {
			s.link = newLink(cl.ID, cl, &g.writers)
			if w != nil {
				w.s = s
				s.link.will = w
			}
			s.link.lastTS = max(lastTS, g.ahead[cl.ID])
			delete(g.ahead, cl.ID)
			g.sessions[cl.ID] = s
			g.links[cl.Net.Conn] = s.link
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if !prev.link.cl.Closed() {
			g.disconnect(prev.link.cl, packets.ErrSessionTakenOver)
		}
		timer := time.NewTimer(takeoverWait)
		select {
		case <-prev.link.ended:
		case <-timer.C:
			g.Logger.Warn("takeover: the old connection has not ended, going ahead", "key", cl.ID, "remote", cl.Net.Remote)
		case <-g.baseCtx.Done():
		}
		timer.Stop()
		lastTS = max(lastTS, prev.link.lastDefaultTime())
		// Its end, if it comes later, is not the device's.
		g.mu.Lock()
		if cur, ok := g.sessions[cl.ID]; ok && cur.link == prev.link {
			delete(g.sessions, cl.ID)
		}
		g.mu.Unlock()
	}
}

// connEnded runs when mochi is done with a socket, however it ended: it
// sends the device's will if it is due, and marks the device offline if the
// socket held its key, unless a new connection of the key took over (that
// one is online now).
func (g *Gateway) connEnded(conn net.Conn) {
	g.mu.RLock()
	l, ok := g.links[conn]
	g.mu.RUnlock()
	if !ok {
		return // refused, or never spoke
	}
	// The will first: its readings take default times past the link's
	// last, which the key's next socket goes on from.
	items := g.willItems(l)
	g.mu.Lock()
	delete(g.links, conn)
	s, held := g.sessions[l.key]
	held = held && s.link == l
	if held {
		delete(g.sessions, l.key)
		if now, last := g.Now().UnixMilli(), l.lastDefaultTime(); last >= now {
			if len(g.ahead) >= 1024 {
				for k, ts := range g.ahead {
					if ts < now {
						delete(g.ahead, k)
					}
				}
			}
			g.ahead[l.key] = last
		}
	}
	g.mu.Unlock()
	g.forgetInflight(l.cl)
	if held && !errors.Is(l.cl.StopCause(), packets.ErrSessionTakenOver) {
		g.metrics.disconnects.Inc()
		items = append(items, herd.IngestItem{Kind: herd.IngestDisconnect, DeviceID: s.deviceID, TenantID: s.tenantID, At: g.Now().UnixMilli()})
	}
	// Queued before a new connection of the key may go on (it waits for
	// ended): the will and the end come before the next connect.
	if len(items) > 0 {
		_ = g.batch.submit(g.baseCtx, &pending{items: items})
	}
	close(l.ended)
}

func (g *Gateway) session(key string) (session, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	s, ok := g.sessions[key]
	return s, ok
}

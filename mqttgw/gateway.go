// Package mqttgw is herd's device edge: an embedded MQTT broker
// (mochi-mqtt) that authenticates devices by key and token, confines each to
// its own topics, turns telemetry into readings committed by group commit,
// and keeps connections in check (one session per key, keepalive enforced, a
// connection cap under the file limit, a connect rate).
//
// What mochi does and herd relies on (v2.7.9):
//   - OnPublish runs in the publishing client's read goroutine, before
//     mochi writes the PUBACK. A packet returned as QoS 0 with Ignore set
//     (and no retain flag) is neither acknowledged, retained nor forwarded
//     by mochi. herd returns every QoS 1 publish so and writes the PUBACK
//     itself once the reading's transaction has committed, so a device may
//     have many publishes in flight and its read loop never waits on the
//     store. (packets.ErrRejectPacket would do as much, but mochi first
//     builds a debug record of the whole packet: an allocation of half a
//     kilobyte per message.) Client.Lock is the lock mochi writes a
//     socket under.
//   - mochi publishes a client's will without a hook that could refuse
//     it, so herd refuses a CONNECT whose will topic is not the device's.
//   - A second CONNECT with a taken client id closes the old socket
//     (DISCONNECT 0x8E, then Close) if it finds the old client in its
//     client registry. A client ending deletes its id from that registry
//     unless it was taken over, but it checks before the taker marks it
//     so: ending just as a new connection of its id arrives, it can delete
//     the new client, whose own successor then finds nothing to close and
//     leaves it open. herd therefore takes over itself: in OnConnect a new
//     connection closes the old one and waits until mochi is done with
//     it, so that mochi has nothing left to race with.
//   - OnDisconnect comes only for a client that got its CONNACK; one whose
//     CONNACK could not be written just ends. herd ends a device's session
//     when the listener's call into mochi returns instead, whatever the
//     path.
//   - Server.Close has each listener close its clients, found with
//     Clients.GetByListener, which read-locks the registry twice and so
//     deadlocks against a client added or deleted in between. herd's
//     listeners skip that; the gateway disconnects its devices itself.
//   - OnConnect runs before authentication and sends nothing when it
//     refuses, so herd authenticates there and writes its own CONNACK, with
//     the reason code each protocol version has for it.
//   - The read deadline is 1.5 × keepalive (in whole seconds, rounded
//     down: 1 s for a keepalive of 1 s), refreshed on every packet, and
//     none at all for keepalive 0, so herd replaces 0 and anything above the
//     server maximum with the maximum.
//   - A hook error that is not a bare packets.Code is ignored for v3 and
//     the message published anyway; herd returns only bare codes.
package mqttgw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of a Gateway.
const (
	DefaultAddr         = ":1883"
	DefaultMaxKeepalive = 5 * time.Minute
	// DefaultBatchItems is large enough that a device publishing fast has
	// several readings in one commit: they cost one projection update and
	// one PUBACK write between them.
	DefaultBatchItems  = 4000
	DefaultBatchWait   = 2 * time.Millisecond
	DefaultConnectRate = 1000 // new connections per second
	// DefaultFileReserve is what the connection cap leaves of the open-file
	// limit for everything else: store connections, listeners, NATS, logs.
	DefaultFileReserve = 256
)

// Gateway is the MQTT device edge. Set its fields, then Open it.
type Gateway struct {
	// Addr is the TCP listen address; empty means no TCP listener (the
	// WebSocket endpoint still works).
	Addr        string
	Credentials herd.CredentialService
	Ingest      herd.IngestService
	Logger      *slog.Logger
	Now         func() time.Time

	// MaxPayload is the largest telemetry payload accepted, in bytes.
	MaxPayload int
	// MaxKeepalive is the longest keepalive a client may have; a client
	// asking for none or more gets this (MQTT 5 clients are told so in the
	// CONNACK).
	MaxKeepalive time.Duration
	// MaxConnections caps the open device connections; 0 derives it from the
	// open-file limit minus FileReserve.
	MaxConnections int
	FileReserve    int
	// ConnectRate is the number of new connections accepted per second, with
	// a burst of as many; more are refused with a reason code that tells a
	// well-behaved client to back off.
	ConnectRate float64
	// BatchItems and BatchWait bound one group commit: it takes what has
	// queued, up to BatchItems items, waiting at most BatchWait for more.
	BatchItems int
	BatchWait  time.Duration
	// Commands, when set, delivers commands to the devices held here
	// (see CommandEvent).
	Commands herd.CommandQueue

	routes   commandRoutes
	marked   chan struct{} // closed when the delivered-marker is done
	server   *mqtt.Server
	tcp      *tcpListener
	ws       *wsListener
	batch    *batcher
	conns    atomic.Int64 // open sockets, TCP and WebSocket
	limit    int          // the connection cap in force
	bucket   *tokenBucket
	metrics  *metrics
	mu       sync.RWMutex
	sessions map[string]session // by device key
	// ahead keeps, past a session's end, the last default reading time of
	// a device whose readings outran the clock (more than one a
	// millisecond), so that its next session's readings do not land on
	// the same times and get dropped as repeats of stored ones.
	ahead   map[string]int64
	links   map[net.Conn]*link // sockets past OnConnect
	baseCtx context.Context
	cancel  context.CancelFunc
	closed  atomic.Bool
	stopped sync.Once // the group commit
}

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

func newLink(key string, cl *mqtt.Client) *link {
	l := &link{key: key, cl: cl, ended: make(chan struct{})}
	l.room.L = &l.mu
	return l
}

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
	go func() {
		l.cl.Lock()
		l.sendLocked(log)
	}()
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

// disconnectWait bounds the telling of a client that it is disconnected.
const disconnectWait = time.Second

// disconnect closes a client's connection, telling an MQTT 5 client why.
// mochi writes that DISCONNECT under the client's lock, which its write to
// a device that stopped reading holds until the socket's deadline: the
// telling is bounded, and a client that cannot be told is closed anyway.
func (g *Gateway) disconnect(cl *mqtt.Client, code packets.Code) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.server.DisconnectClient(cl, code)
	}()
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

// New returns a Gateway with the default settings.
func New(creds herd.CredentialService, ingest herd.IngestService) *Gateway {
	return &Gateway{
		Addr:         DefaultAddr,
		Credentials:  creds,
		Ingest:       ingest,
		Logger:       slog.New(slog.DiscardHandler),
		Now:          time.Now,
		MaxPayload:   herd.DefaultTelemetryMaxBytes,
		MaxKeepalive: DefaultMaxKeepalive,
		FileReserve:  DefaultFileReserve,
		ConnectRate:  DefaultConnectRate,
		BatchItems:   DefaultBatchItems,
		BatchWait:    DefaultBatchWait,
		metrics:      newMetrics(),
	}
}

// Collectors returns the gateway's Prometheus collectors.
func (g *Gateway) Collectors() []prometheus.Collector { return g.metrics.collectors(g) }

// Limit returns the connection cap in force (after Open).
func (g *Gateway) Limit() int { return g.limit }

// TCPAddr returns the address the TCP listener is bound to, or nil.
func (g *Gateway) TCPAddr() net.Addr {
	if g.tcp == nil {
		return nil
	}
	return g.tcp.ln.Addr()
}

// Open starts the broker, the TCP listener and the group commit.
func (g *Gateway) Open() (err error) {
	if g.Credentials == nil || g.Ingest == nil {
		return errors.New("mqttgw: Credentials and Ingest are required")
	}
	g.limit = g.MaxConnections
	if g.limit <= 0 {
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return fmt.Errorf("mqttgw: open-file limit: %w", err)
		}
		g.limit = int(min(rl.Cur, 1<<30)) - g.FileReserve
		if g.limit < 1 {
			return fmt.Errorf("mqttgw: the open-file limit %d leaves no room for connections after a reserve of %d: raise it (ulimit -n)", rl.Cur, g.FileReserve)
		}
	}
	g.bucket = newTokenBucket(g.ConnectRate, g.Now)
	g.sessions = map[string]session{}
	g.ahead = map[string]int64{}
	g.links = map[net.Conn]*link{}
	g.baseCtx, g.cancel = context.WithCancel(context.Background())
	g.batch = newBatcher(g.Ingest, g.BatchItems, g.BatchWait, g.metrics.observeCommit, g.writeAcks)
	go g.batch.run()
	g.routes = commandRoutes{inflight: map[inflightKey]int64{}, delivered: make(chan int64, 4096)}
	g.marked = make(chan struct{})
	if g.Commands != nil {
		go func() {
			defer close(g.marked)
			g.markDelivered()
		}()
		go g.resendPending()
	} else {
		close(g.marked)
	}
	defer func() {
		if err != nil {
			// Nothing was served: stop the group commit, and leave Close
			// nothing to do.
			g.stopBatch()
			g.server = nil
		}
	}()

	caps := mqtt.NewDefaultServerCapabilities()
	// A device sends to the server, and the server sends it a few commands:
	// a small outbound queue per client (mochi's default holds 8,192 packet
	// pointers, 64 KiB a client) and no sessions kept for a century.
	caps.MaximumClientWritesPending = 64
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60
	caps.MaximumPacketSize = uint32(g.MaxPayload + 1024)
	caps.MaximumInflight = receiveMaximum
	caps.ReceiveMaximum = receiveMaximum
	g.server = mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		InlineClient:             true,
		Logger:                   g.Logger,
		ClientNetReadBufferSize:  1024,
		ClientNetWriteBufferSize: 1024,
	})
	if err := g.server.AddHook(&hook{g: g}, nil); err != nil {
		return err
	}
	g.ws = &wsListener{id: "ws"}
	if err := g.server.AddListener(g.ws); err != nil {
		return err
	}
	if g.Addr != "" {
		ln, err := net.Listen("tcp", g.Addr)
		if err != nil {
			return fmt.Errorf("mqttgw: listen %s: %w", g.Addr, err)
		}
		g.tcp = &tcpListener{id: "tcp", ln: ln, conns: &g.conns, log: g.Logger, onBack: g.metrics.acceptBackoffs.Inc, onEnd: g.connEnded}
		if err := g.server.AddListener(g.tcp); err != nil {
			ln.Close()
			return err
		}
	}
	if err := g.server.Serve(); err != nil {
		return err
	}
	g.Logger.Info("mqtt gateway listening", "addr", g.TCPAddr(), "connection_cap", g.limit, "max_keepalive", g.MaxKeepalive)
	return nil
}

// Close disconnects every device (MQTT 5 clients are told the server is
// shutting down), then commits what has queued. Closing again, or after a
// failed Open, does nothing.
func (g *Gateway) Close() error {
	if g.server == nil || !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	// mochi's own way to find the clients to tell, Clients.GetByListener,
	// read-locks its registry twice over, and deadlocks when a client is
	// added or deleted in between: a device connecting or leaving during
	// shutdown would hang Close for good. The listeners leave it out, and
	// the gateway tells the devices it knows; the listeners then close
	// every socket left, and wait until each is done with.
	g.mu.RLock()
	clients := make([]*mqtt.Client, 0, len(g.links))
	for _, l := range g.links {
		clients = append(clients, l.cl)
	}
	g.mu.RUnlock()
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Go(func() { g.disconnect(cl, packets.ErrServerShuttingDown) })
	}
	wg.Wait()
	err := g.server.Close() // the listeners close what is left, and wait for it
	g.stopBatch()
	return err
}

func (g *Gateway) stopBatch() {
	g.stopped.Do(func() {
		if g.cancel != nil {
			g.cancel()
		}
		close(g.batch.in)
		<-g.batch.done
		close(g.routes.delivered)
		<-g.marked
	})
}

// ServeHTTP serves MQTT over WebSocket (subprotocol "mqtt"), for herd's HTTP
// server to mount at /mqtt.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The HTTP server's request deadlines stay on a hijacked connection;
	// mochi keeps the connection's deadlines from here on.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		return // Accept has answered
	}
	// The connection outlives the request's context, which the server
	// cancels when the handler returns.
	nc := websocket.NetConn(g.baseCtx, c, websocket.MessageBinary)
	remote, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	conn := &wsConn{Conn: nc, ws: c, remote: remote}
	if !g.ws.open.add(conn) {
		conn.Close() // closing down
		return
	}
	defer g.ws.open.done(conn)
	_ = conn.SetDeadline(time.Now().Add(connectTimeout))
	g.conns.Add(1)
	defer g.conns.Add(-1)
	defer conn.Close()
	_ = g.server.EstablishConnection(g.ws.id, conn)
	g.connEnded(conn)
}

// DisconnectDevice closes the device's connection, if it has one here; a
// revoked credential calls it. MQTT 5 clients are told why.
func (g *Gateway) DisconnectDevice(key string) bool {
	s, ok := g.session(key)
	if !ok || s.link.cl.Closed() {
		return false
	}
	g.disconnect(s.link.cl, packets.ErrNotAuthorized)
	return true
}

// ErrNotConnected is returned by Send for a device with no connection here.
var ErrNotConnected = errors.New("mqttgw: device not connected here")

// Send publishes payload at QoS 1 on one of a device's inbound topics,
// kind "commands" or "config", if the device is connected here; the device
// gets it if it subscribed. Delivery after that is mochi's: resent until the
// device acknowledges it or its session ends.
func (g *Gateway) Send(key, kind string, payload []byte) error {
	if kind != topicCommands && kind != topicConfig {
		return fmt.Errorf("mqttgw: %q is not a topic herd sends devices on", kind)
	}
	if s, ok := g.session(key); !ok || s.link.cl.Closed() {
		return ErrNotConnected
	}
	return g.server.Publish("devices/"+key+"/"+kind, payload, false, 1)
}

// Connected returns the number of devices connected now.
func (g *Gateway) Connected() int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return len(g.sessions)
}

// OpenConns returns the number of open sockets now, TCP and WebSocket.
func (g *Gateway) OpenConns() int64 { return g.conns.Load() }

// topic kinds a device may use.
const (
	topicTelemetry = "telemetry"
	topicEvents    = "events"
	topicAck       = "commands/ack"
	topicCommands  = "commands"
	topicConfig    = "config"
)

// deviceTopic splits devices/{key}/{rest}; ok is false for anything else.
func deviceTopic(topic string) (key, rest string, ok bool) {
	after, found := strings.CutPrefix(topic, "devices/")
	if !found {
		return "", "", false
	}
	key, rest, found = strings.Cut(after, "/")
	return key, rest, found && key != ""
}

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

// hold gives the key of cl to its socket, after the key's old socket, if
// any, has ended: it closes that one (DISCONNECT 0x8E) and waits until
// mochi is done with it. The old socket's end thus comes before the new
// one's start, in the store as in mochi.
func (g *Gateway) hold(cl *mqtt.Client, s session) {
	var lastTS int64 // of the sockets taken over
	for {
		g.mu.Lock()
		prev, held := g.sessions[cl.ID]
		if !held {
			s.link = newLink(cl.ID, cl)
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

// connEnded runs when mochi is done with a socket, however it ended: it
// marks the device offline if the socket held its key, unless a new
// connection of the key took over (that one is online now).
func (g *Gateway) connEnded(conn net.Conn) {
	g.mu.Lock()
	l, ok := g.links[conn]
	if !ok {
		g.mu.Unlock()
		return // refused, or never spoke
	}
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
	close(l.ended)
	g.forgetInflight(l.cl)
	if !held || errors.Is(l.cl.StopCause(), packets.ErrSessionTakenOver) {
		return
	}
	g.metrics.disconnects.Inc()
	_ = g.batch.submit(g.baseCtx, &pending{items: []herd.IngestItem{{Kind: herd.IngestDisconnect, DeviceID: s.deviceID, TenantID: s.tenantID, At: g.Now().UnixMilli()}}})
}

func (g *Gateway) session(key string) (session, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	s, ok := g.sessions[key]
	return s, ok
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

// mayPublish says whether a device may publish on topic, and its kind.
func mayPublish(deviceKey, topic string) (kind string, ok bool) {
	key, rest, ok := deviceTopic(topic)
	return rest, ok && key == deviceKey && (rest == topicTelemetry || rest == topicEvents || rest == topicAck)
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

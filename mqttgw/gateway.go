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
//   - mochi publishes a client's will past OnPublish, to the subscribers
//     of its topic, and there are none for a device's publish topics: herd
//     takes the will from mochi in OnConnect and sends it down the
//     publish path itself when the connection ends (see will.go).
//   - mochi's SendConnack never writes Retain Available, so MQTT 5 clients
//     would take retain to work: herd adds Retain Available = 0 to the
//     CONNACK (OnPacketEncode) and refuses what is retained itself. It
//     leaves mochi's own RetainAvailable on, since mochi answers a 3.1.1
//     CONNECT with a retained will by 0x9A, no 3.1.1 return code; nothing
//     reaches mochi retained (handled clears the flag, herd holds wills).
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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
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
	Addr string
	// Listener, when set, is the TCP listener instead of one on Addr: a
	// process that bound its address early (to fail before it does any
	// work) hands it over without letting go of the port in between.
	// Close closes it.
	Listener    net.Listener
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
	// Configs, when set, sends the devices held here their desired config
	// (see ConfigEvent).
	Configs herd.ConfigQueue
	// OTA, when set, sends the devices held here the firmware updates
	// rollouts ask for (see OTAEvent).
	OTA herd.OTAQueue
	// OriginChecked says the HTTP server that mounts ServeHTTP has
	// checked the handshake's Origin against its policy (herd's
	// --allowed-origins, as for its other sockets, so that a browser's
	// MQTT client on an allowed origin can connect). Unset, coder/websocket's
	// rule applies: the Origin's host must be the Host.
	OriginChecked bool

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
	// work is the gateway's goroutines of its own: the command resender
	// and the deliveries of open commands. Close cancels them (baseCtx)
	// and waits for them before the group commit stops.
	work owned
	// writers are the goroutines that write to a socket on another's
	// behalf (PUBACKs waiting for mochi's lock, a DISCONNECT being told):
	// each ends once its socket is closed, and Close waits for them when
	// every socket is and the group commit, which starts them, is done.
	writers owned
}

// owned is a set of goroutines with an owner who waits for them: once it
// is closed no more start, and wait returns when the last has ended.
type owned struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// start runs f in a goroutine of the set; it returns false, and runs
// nothing, once the set is closed.
func (o *owned) start(f func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.wg.Go(f)
	return true
}

// closeAndWait refuses new goroutines and waits for those running.
func (o *owned) closeAndWait() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.wg.Wait()
}

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
		g.work.start(g.resendPending)
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
	if ln := g.Listener; ln != nil || g.Addr != "" {
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", g.Addr); err != nil {
				return fmt.Errorf("mqttgw: listen %s: %w", g.Addr, err)
			}
		}
		g.tcp = &tcpListener{id: "tcp", ln: ln, stop: make(chan struct{}), conns: &g.conns, log: g.Logger, onBack: g.metrics.acceptBackoffs.Inc, onEnd: g.connEnded}
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
		g.work.closeAndWait()
		close(g.batch.in)
		<-g.batch.done
		g.writers.closeAndWait()
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
	opts := &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}}
	opts.InsecureSkipVerify = g.OriginChecked // the mount's policy holds
	c, err := websocket.Accept(w, r, opts)
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
// revoked credential and a deleted device call it. MQTT 5 clients are told why. The device's
// will is discarded: once its credential is revoked, nothing more the
// device says is taken, its last word included.
func (g *Gateway) DisconnectDevice(key string) bool {
	s, ok := g.session(key)
	if !ok || s.link.cl.Closed() {
		return false
	}
	s.link.revoked.Store(true)
	g.disconnect(s.link.cl, packets.ErrNotAuthorized)
	return true
}

// ErrNotConnected is returned by Send for a device with no connection here.
var ErrNotConnected = errors.New("mqttgw: device not connected here")

// Send publishes payload at QoS 1 on one of a device's inbound topics,
// kind "commands", "config" or "ota", if the device is connected here; the device
// gets it if it subscribed. Delivery after that is mochi's: resent until the
// device acknowledges it or its session ends.
func (g *Gateway) Send(key, kind string, payload []byte) error {
	if kind != topicCommands && kind != topicConfig && kind != topicOTA {
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

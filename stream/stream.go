// Package stream serves GET /v1/stream: a WebSocket that tells a client
// *that* something changed (a hint: the event's sequence number, type and
// subject), never *what*, and carries no writes. A hint may be lost like
// any socket write; the event log (GET /v1/events) is the truth, and each
// hint carries the sequence number of the previous hint sent on the same
// connection, so a client sees a gap and reads the log instead of trusting
// the socket.
//
// Hints come from the event stream (JetStream) after commit, never from a
// handler: nothing uncommitted is hinted. Every herd process tails the
// stream and serves its own connections, so a change committed through one
// process reaches the clients of all.
package stream

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/wsconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults.
const (
	DefaultQueue = 1024
	DefaultPing  = 25 * time.Second
	// DefaultReauth is how often a connection's token and grants are read
	// again besides after every change of access the stream carries (which
	// is when a revoke takes effect): a backstop for a change whose event
	// the tail missed. Each connection reads the store each time, so it is
	// not short.
	DefaultReauth = time.Minute
	// maxBatch bounds the hints written in one frame.
	maxBatch = 256
)

// Hint says that an event was committed.
type Hint struct {
	Seq int64 `json:"seq,string"`
	// PrevSeq is the seq of the hint sent before this one on this
	// connection (0 for the first): the caller's view of the tenant's
	// sequence is sparse, so a gap shows as PrevSeq not being the last seq
	// the client saw.
	PrevSeq     int64  `json:"prev_seq,string"`
	EventID     int64  `json:"event_id,string"`
	Type        string `json:"type"`
	SubjectType string `json:"subject_type"`
	SubjectID   int64  `json:"subject_id,string"`
}

// Frames from the server.
type helloFrame struct {
	Type           string `json:"type"` // "hello"
	TenantID       int64  `json:"tenant_id,string"`
	Head           int64  `json:"head,string"`
	PingIntervalMS int64  `json:"ping_interval_ms"`
}

type hintsFrame struct {
	Type  string `json:"type"` // "hints"
	Hints []Hint `json:"hints"`
}

type resyncFrame struct {
	Type   string `json:"type"` // "resync"
	Reason string `json:"reason"`
	After  int64  `json:"after,string"` // the last seq sent on this connection
}

// NoWrites is the close reason for a client frame other than a ping (a
// close reason holds at most 123 bytes); an error frame before the close
// says it at length.
const NoWrites = "the stream carries no writes: use the HTTP API"

const noWritesMessage = `the stream carries no writes; its only client frame is {"type":"ping"}: send changes to the HTTP API (for example POST /v1/devices/{id}/commands with an Idempotency-Key) and read the truth from GET /v1/events`

// accessChanging are the event types after which a tenant's connections
// read their grants again before they filter another hint.
var accessChanging = map[string]bool{
	herd.EventGrantCreated: true,
	herd.EventGrantDeleted: true,
	herd.EventNodeMoved:    true,
	herd.EventTokenDeleted: true,
	// A user disabled (or enabled): its tokens authenticate no more.
	herd.EventUserUpdated: true,
	// A password set: the user's sessions ended with it.
	herd.EventUserPasswordSet: true,
}

// Hub holds the connections of this process and fans hints out to them.
type Hub struct {
	// Head returns a tenant's last committed seq, for the hello.
	Head   func(ctx context.Context, tenantID int64) (int64, error)
	Queue  int
	Ping   time.Duration
	Reauth time.Duration
	Logger *slog.Logger

	mu      sync.RWMutex
	tenants map[int64]map[*conn]struct{}
	closed  bool
	wg      sync.WaitGroup
	metrics *metrics
}

// NewHub returns a hub with the defaults.
func NewHub(head func(ctx context.Context, tenantID int64) (int64, error)) *Hub {
	return &Hub{
		Head:    head,
		Queue:   DefaultQueue,
		Ping:    DefaultPing,
		Reauth:  DefaultReauth,
		Logger:  slog.New(slog.DiscardHandler),
		tenants: map[int64]map[*conn]struct{}{},
		metrics: newMetrics(),
	}
}

// item is one entry of a connection's queue: an event, or the order to
// read the grants again before the next one.
type item struct {
	ev     *herd.Event
	reauth bool
}

type conn struct {
	ws     *wsconn.Conn
	tenant int64
	peer   wsconn.Peer
	actor  atomic.Pointer[herd.Actor]
	// stale counts the reauth orders queued and not yet carried out: while
	// there are any, the hub queues events unfiltered and the writer
	// filters them with the grants as they are by then.
	stale atomic.Int64
	q     *wsconn.Queue[item]
	// fresh says whether the last refresh read the grants (the writer's).
	fresh bool
}

// Publish fans an event out to the connections of its tenant. It is called
// in stream order by one goroutine (the tail) and never blocks on a client:
// a connection whose queue is full is too slow, and is told to resync and
// dropped.
func (h *Hub) Publish(ev *herd.Event) {
	reauth := accessChanging[ev.Type]
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.tenants[ev.TenantID] {
		if reauth {
			c.stale.Add(1)
			if !c.q.Push(item{reauth: true}) {
				h.metrics.dropped.Inc()
				continue
			}
		}
		if c.stale.Load() == 0 && !c.actor.Load().Allows(ev.TenantID, ev.Path, herd.RoleViewer) {
			continue
		}
		if !c.q.Push(item{ev: ev}) {
			h.metrics.dropped.Inc()
		}
	}
}

// ServeConn serves a connection the API accepted and authenticated, until
// the client, the server or a failure ends it, and closes it.
func (h *Hub) ServeConn(ws *wsconn.Conn, p wsconn.Peer) {
	c := &conn{ws: ws, tenant: p.TenantID, peer: p, q: wsconn.NewQueue[item](ws.Context(), h.Queue)}
	defer c.q.Stop()
	c.actor.Store(p.Actor)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ws.Close(wsconn.StatusGoingAway, "server shutting down; reconnect to another")
		return
	}
	if h.tenants[c.tenant] == nil {
		h.tenants[c.tenant] = map[*conn]struct{}{}
	}
	h.tenants[c.tenant][c] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	h.metrics.connections.Inc()
	defer h.wg.Done()
	status, reason := h.run(c)
	// Out of the hub before the close handshake, which waits up to 5 s for
	// a client that may never answer.
	h.mu.Lock()
	delete(h.tenants[c.tenant], c)
	if len(h.tenants[c.tenant]) == 0 {
		delete(h.tenants, c.tenant)
	}
	h.mu.Unlock()
	h.metrics.connections.Dec()
	h.metrics.closed.WithLabelValues(wsconn.CloseLabel(status)).Inc()
	ws.Close(status, reason)
}

const (
	resyncReason = "too slow: hints were dropped; read GET /v1/events after the last seq you have"
	slowClose    = "too slow; resync from GET /v1/events"
)

// run serves a registered connection and returns how to close it.
func (h *Hub) run(c *conn) (websocket.StatusCode, string) {
	ctx := c.ws.Context()
	// The grants are read again now that the connection is in the hub: a
	// change of access that passed between the request's authentication
	// and the joining would otherwise go unseen by it.
	if status, reason, ok := h.refresh(ctx, c); !ok {
		return status, reason
	} else if !c.fresh {
		return wsconn.StatusTryAgainLater, "store unavailable; reconnect later"
	}
	// The hello comes first: hints queued meanwhile wait. The head is read
	// after the connection joined the hub, so every event is either at or
	// below the head (read it from the log) or hinted.
	head, err := h.Head(ctx, c.tenant)
	if err != nil {
		return wsconn.StatusTryAgainLater, "store unavailable; reconnect later"
	}
	if err := c.ws.WriteJSON(helloFrame{Type: "hello", TenantID: c.tenant, Head: head, PingIntervalMS: h.Ping.Milliseconds()}); err != nil {
		return wsconn.StatusGoingAway, "write failed"
	}
	// Reader: pings, and nothing else.
	c.ws.Read(func(typ websocket.MessageType, data []byte) bool {
		var f struct {
			Type string `json:"type"`
		}
		if typ != websocket.MessageText || json.Unmarshal(data, &f) != nil || f.Type != "ping" {
			h.metrics.refused.Inc()
			c.ws.WriteJSON(map[string]string{"type": "error", "code": "no_writes", "message": noWritesMessage})
			c.ws.End(wsconn.StatusPolicyViolation, NoWrites)
			return false
		}
		c.ws.WriteJSON(map[string]string{"type": "pong"})
		return true
	})
	c.ws.Ping(h.Ping, h.metrics.pingFailed.Inc)

	var prev int64
	reauth := time.NewTicker(h.Reauth)
	defer reauth.Stop()
	batch := make([]Hint, 0, maxBatch)
	resync := func() (websocket.StatusCode, string) {
		h.metrics.resyncs.Inc()
		c.ws.WriteJSON(resyncFrame{Type: "resync", Reason: resyncReason, After: prev})
		return wsconn.StatusTryAgainLater, slowClose
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-c.q.Overflowed():
			return resync()
		case <-reauth.C:
			if status, reason, ok := h.refresh(ctx, c); !ok {
				return status, reason
			}
		case it := <-c.q.C():
			batch = batch[:0]
			for {
				select {
				case <-c.q.Overflowed():
					// A reauth order may be among what was dropped: nothing
					// more is written, whatever is queued.
					return resync()
				default:
				}
				if it.reauth {
					// Access changed: the grants must be read before the next
					// hint is filtered; without them the connection ends.
					if status, reason, ok := h.refresh(ctx, c); !ok {
						return status, reason
					} else if !c.fresh {
						return wsconn.StatusTryAgainLater, "grants could not be read after a change of access; reconnect"
					}
					c.stale.Add(-1)
				} else if c.actor.Load().Allows(it.ev.TenantID, it.ev.Path, herd.RoleViewer) {
					ev := it.ev
					batch = append(batch, Hint{Seq: ev.Seq, PrevSeq: prev, EventID: ev.ID, Type: ev.Type, SubjectType: ev.SubjectType, SubjectID: ev.SubjectID})
					prev = ev.Seq
				}
				if len(batch) == maxBatch {
					break
				}
				select {
				case it = <-c.q.C():
					continue
				default:
				}
				break
			}
			if len(batch) == 0 {
				continue
			}
			// The write is cut short as soon as the connection is marked
			// slow (its queue overflowed while this write waited on a
			// client that reads nothing): waiting out the write timeout
			// would keep a dead connection in the hub.
			if err := c.ws.WriteJSONWithin(c.q.Context(), hintsFrame{Type: "hints", Hints: batch}); err != nil {
				select {
				case <-c.q.Overflowed():
					h.metrics.resyncs.Inc()
					return wsconn.StatusTryAgainLater, slowClose
				default:
				}
				c.ws.End(wsconn.StatusGoingAway, "write failed")
				break loop
			}
			h.metrics.hints.Add(float64(len(batch)))
			h.metrics.frames.Inc()
		}
	}
	return c.ws.EndedWith(wsconn.StatusGoingAway, "server shutting down; reconnect with backoff, then read GET /v1/events")
}

// refresh reads the connection's grants again; a token that no longer
// works ends the connection.
func (h *Hub) refresh(ctx context.Context, c *conn) (websocket.StatusCode, string, bool) {
	a, revoked, err := c.peer.Refresh(ctx)
	c.fresh = a != nil
	switch {
	case a != nil:
		c.actor.Store(a)
	case revoked:
		return wsconn.StatusPolicyViolation, wsconn.ReasonRevoked, false
	default:
		// The store is down: keep the grants we have, try again later.
		h.Logger.Debug("stream reauth", "err", err)
	}
	return 0, "", true
}

// Close ends every connection with 1001 (going away), so that clients
// reconnect with backoff and read the log, and waits for them.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	for _, cs := range h.tenants {
		for c := range cs {
			c.ws.End(wsconn.StatusGoingAway, "server shutting down; reconnect with backoff, then read GET /v1/events")
		}
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// Connections counts the open connections.
func (h *Hub) Connections() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for _, cs := range h.tenants {
		n += len(cs)
	}
	return n
}

type metrics struct {
	connections prometheus.Gauge
	hints       prometheus.Counter
	frames      prometheus.Counter
	dropped     prometheus.Counter
	resyncs     prometheus.Counter
	refused     prometheus.Counter
	pingFailed  prometheus.Counter
	closed      *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herd_stream_connections", Help: "Open connections of GET /v1/stream in this process."}),
		hints:       prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_stream_hints_total", Help: "Hints written to stream connections."}),
		frames:      prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_stream_frames_total", Help: "Frames of hints written (a frame carries the hints waiting for a connection, up to 256)."}),
		dropped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_stream_dropped_hints_total", Help: "Hints dropped because a connection's queue was full (it is then told to resync and closed)."}),
		resyncs:     prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_stream_resyncs_total", Help: "Connections told to resync and dropped for reading too slowly."}),
		refused:     prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_stream_refused_frames_total", Help: "Client frames other than ping: the connection is closed with 1008."}),
		pingFailed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_stream_ping_failures_total", Help: "Connections closed for answering no ping within two intervals (half-open or stalled)."}),
		closed:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_stream_closed_total", Help: "Stream connections closed, by why: client, shutdown, policy, slow, error."}, []string{"reason"}),
	}
}

// Collectors returns the hub's Prometheus collectors.
func (h *Hub) Collectors() []prometheus.Collector {
	m := h.metrics
	return []prometheus.Collector{m.connections, m.hints, m.frames, m.dropped, m.resyncs, m.refused, m.pingFailed, m.closed}
}

// Package appsocket serves GET /v1/apps/socket: herd's events pushed to an
// app over a WebSocket, for receivers that cannot expose a URL to webhooks
// (as Slack's Socket Mode does). Each event arrives in an envelope with an
// envelope_id that the app must acknowledge within the ack timeout (3 s);
// one not acknowledged is delivered again, to this connection or another
// of the same app, with retry_attempt counting up. So delivery is at least
// once, and the app deduplicates by the event's id.
//
// An app is a token: the feed belongs to the token, so events committed
// while the app is away (up to 72 hours) wait for it, and several
// connections of one token share the work. Events outside the token's
// grants are never sent.
package appsocket

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
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
	DefaultAckTimeout = 3 * time.Second
	DefaultPing       = 25 * time.Second
	// Reauth is how often a connection's token and grants are read again:
	// a revoked token or grant takes effect within it.
	DefaultReauth = 10 * time.Second
)

// Frames. The server sends hello once, then events; the app sends acks.
type hello struct {
	Type         string `json:"type"` // "hello"
	AckTimeoutMS int64  `json:"ack_timeout_ms"`
}

type envelope struct {
	Type         string      `json:"type"` // "event"
	EnvelopeID   string      `json:"envelope_id"`
	RetryAttempt int         `json:"retry_attempt"`
	Event        *herd.Event `json:"event"`
}

type ack struct {
	EnvelopeID string `json:"envelope_id"`
}

// Handler serves the socket behind the API, which accepts and
// authenticates the connection and hands it over (ServeConn).
type Handler struct {
	Source     herd.AppEventSource
	AckTimeout time.Duration
	Ping       time.Duration
	Reauth     time.Duration
	Logger     *slog.Logger

	mu     sync.Mutex
	conns  map[*wsconn.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
	seq    atomic.Int64

	metrics *metrics
}

// NewHandler returns a handler with the defaults.
func NewHandler(src herd.AppEventSource) *Handler {
	return &Handler{
		Source:     src,
		AckTimeout: DefaultAckTimeout,
		Ping:       DefaultPing,
		Reauth:     DefaultReauth,
		Logger:     slog.New(slog.DiscardHandler),
		conns:      map[*wsconn.Conn]struct{}{},
		metrics:    newMetrics(),
	}
}

const shutdownReason = "server shutting down; reconnect"

// ServeConn runs a connection the API accepted for a user's token until
// the app, the server or a failure ends it, and closes it.
func (h *Handler) ServeConn(ws *wsconn.Conn, p wsconn.Peer) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ws.Close(wsconn.StatusGoingAway, shutdownReason)
		return
	}
	h.conns[ws] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	h.metrics.connections.Inc()
	defer func() {
		h.mu.Lock()
		delete(h.conns, ws)
		h.mu.Unlock()
		h.metrics.connections.Dec()
		h.wg.Done()
	}()
	status, reason := h.run(ws, p)
	ws.Close(status, reason)
}

// run serves one connection and returns how to close it.
func (h *Handler) run(ws *wsconn.Conn, p wsconn.Peer) (websocket.StatusCode, string) {
	ctx := ws.Context()
	a := p.Actor
	log := h.Logger.With("token", a.TokenID, "user", a.UserID)
	feed, err := h.Source.OpenAppFeed(ctx, "app-"+strconv.FormatInt(a.TokenID, 10), a.TenantID, h.AckTimeout)
	if err != nil {
		log.Warn("app feed not opened", "err", err)
		return wsconn.StatusTryAgainLater, "events unavailable; reconnect later"
	}
	defer feed.Close()
	if err := ws.WriteJSON(hello{Type: "hello", AckTimeoutMS: h.AckTimeout.Milliseconds()}); err != nil {
		return wsconn.StatusInternalError, "write failed"
	}

	// Envelopes waiting for their ack, and the envelope of each event: an
	// event sent again replaces its earlier envelope, so an app that never
	// acks holds at most the feed's unacknowledged events (1,000) here.
	var mu sync.Mutex
	pending := map[string]*herd.AckedEvent{}
	envelopeOf := map[int64]string{}
	actor := atomic.Pointer[herd.Actor]{}
	actor.Store(a)

	// Reader: acks, and nothing else.
	ws.Read(func(typ websocket.MessageType, data []byte) bool {
		var m ack
		if typ != websocket.MessageText || json.Unmarshal(data, &m) != nil || m.EnvelopeID == "" {
			ws.End(wsconn.StatusPolicyViolation, `the app sends only acks: {"envelope_id":"…"}`)
			return false
		}
		mu.Lock()
		ev, ok := pending[m.EnvelopeID]
		delete(pending, m.EnvelopeID)
		if ok && envelopeOf[ev.Event.ID] == m.EnvelopeID {
			delete(envelopeOf, ev.Event.ID)
		}
		mu.Unlock()
		if !ok {
			h.metrics.acks.WithLabelValues("unknown").Inc()
			return true // late (already delivered again) or never sent
		}
		if err := ev.Ack(); err != nil {
			log.Debug("ack", "err", err)
		}
		h.metrics.acks.WithLabelValues("ok").Inc()
		return true
	})
	ws.Ping(h.Ping, nil)
	// The periodic check of the token and its grants.
	ws.Go(func(ctx context.Context) {
		t := time.NewTicker(h.Reauth)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			na, revoked, err := p.Refresh(ctx)
			if revoked {
				ws.End(wsconn.StatusPolicyViolation, wsconn.ReasonRevoked)
				return
			} else if err != nil {
				continue // the store is down: keep the grants we have
			}
			actor.Store(na)
		}
	})
	// Writer: events of the feed within the actor's grants.
	for {
		d, err := h.nextFor(ctx, feed, &actor)
		if err != nil {
			break
		}
		id := strconv.FormatInt(h.seq.Add(1), 36) + "-" + strconv.FormatInt(d.Event.ID, 10)
		mu.Lock()
		if old, ok := envelopeOf[d.Event.ID]; ok {
			delete(pending, old)
		}
		pending[id], envelopeOf[d.Event.ID] = d, id
		mu.Unlock()
		if d.Attempt > 0 {
			h.metrics.redelivered.Inc()
		}
		if err := ws.WriteJSON(envelope{Type: "event", EnvelopeID: id, RetryAttempt: d.Attempt, Event: d.Event}); err != nil {
			ws.End(wsconn.StatusGoingAway, "write failed")
			break
		}
		h.metrics.envelopes.Inc()
	}
	return ws.EndedWith(wsconn.StatusInternalError, "event feed failed; reconnect")
}

// nextFor returns the feed's next event that the actor may see; the others
// are acknowledged unseen, as not this app's.
func (h *Handler) nextFor(ctx context.Context, feed herd.AckedFeed, actor *atomic.Pointer[herd.Actor]) (*herd.AckedEvent, error) {
	for {
		d, err := feed.Next(ctx)
		if err != nil {
			return nil, err
		}
		if actor.Load().Allows(d.Event.TenantID, d.Event.Path, herd.RoleViewer) {
			return d, nil
		}
		d.Ack()
	}
}

// Close ends every connection with 1001 (going away), so apps reconnect,
// and waits for them. Unacknowledged events are delivered again.
func (h *Handler) Close() error {
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.End(wsconn.StatusGoingAway, shutdownReason)
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

type metrics struct {
	connections prometheus.Gauge
	envelopes   prometheus.Counter
	redelivered prometheus.Counter
	acks        *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herd_appsocket_connections", Help: "Open connections of the apps socket."}),
		envelopes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_appsocket_envelopes_total", Help: "Event envelopes sent on the apps socket, redeliveries included."}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "herd_appsocket_envelopes_redelivered_total", Help: "Envelopes of events sent before and not acknowledged within the ack timeout."}),
		acks:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "herd_appsocket_acks_total", Help: "Acks received, by result: ok, or unknown (late, after the event was sent again, or never sent)."}, []string{"result"}),
	}
}

// Collectors returns the socket's Prometheus collectors.
func (h *Handler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{h.metrics.connections, h.metrics.envelopes, h.metrics.redelivered, h.metrics.acks}
}

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
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults.
const (
	DefaultAckTimeout = 3 * time.Second
	DefaultPing       = 25 * time.Second
	// Reauth is how often a connection's token and grants are read again:
	// a revoked token or grant takes effect within it.
	DefaultReauth = 10 * time.Second
	writeTimeout  = 10 * time.Second
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

// Handler serves the socket. Mount it behind the API's authentication:
// it reads the actor from the request context.
type Handler struct {
	Source herd.AppEventSource
	// Authenticate reads a token's actor again, for the periodic check.
	Authenticate func(ctx context.Context, token string) (*herd.Actor, error)
	AckTimeout   time.Duration
	Ping         time.Duration
	Reauth       time.Duration
	Logger       *slog.Logger

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup
	seq    atomic.Int64

	metrics *metrics
}

// NewHandler returns a handler with the defaults.
func NewHandler(src herd.AppEventSource, auth func(ctx context.Context, token string) (*herd.Actor, error)) *Handler {
	return &Handler{
		Source:       src,
		Authenticate: auth,
		AckTimeout:   DefaultAckTimeout,
		Ping:         DefaultPing,
		Reauth:       DefaultReauth,
		Logger:       slog.New(slog.DiscardHandler),
		conns:        map[*conn]struct{}{},
		metrics:      newMetrics(),
	}
}

type conn struct {
	ws     *websocket.Conn
	cancel context.CancelFunc
}

// ServeSocket upgrades a request the API authenticated (a user's token)
// and runs the connection until the app, the server or a failure ends it.
func (h *Handler) ServeSocket(w http.ResponseWriter, r *http.Request, a *herd.Actor, token string, _ int64) {
	// The request's deadline would end the socket; the server's shutdown
	// reaches it through Close instead.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	c := &conn{ws: ws, cancel: cancel}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		cancel()
		ws.Close(websocket.StatusGoingAway, "server shutting down")
		return
	}
	h.conns[c] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	h.metrics.connections.Inc()
	defer func() {
		cancel()
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		h.metrics.connections.Dec()
		h.wg.Done()
	}()
	status, reason := h.run(ctx, ws, a, token)
	ws.Close(status, reason)
}

// run serves one connection and returns how to close it.
func (h *Handler) run(ctx context.Context, ws *websocket.Conn, a *herd.Actor, token string) (websocket.StatusCode, string) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	log := h.Logger.With("token", a.TokenID, "user", a.UserID)
	feed, err := h.Source.OpenAppFeed(ctx, "app-"+strconv.FormatInt(a.TokenID, 10), a.TenantID, h.AckTimeout)
	if err != nil {
		log.Warn("app feed not opened", "err", err)
		return websocket.StatusTryAgainLater, "events unavailable; reconnect later"
	}
	defer feed.Close()
	if err := h.write(ctx, ws, hello{Type: "hello", AckTimeoutMS: h.AckTimeout.Milliseconds()}); err != nil {
		return websocket.StatusInternalError, "write failed"
	}

	// Envelopes waiting for their ack, and the envelope of each event: an
	// event sent again replaces its earlier envelope, so an app that never
	// acks holds at most the feed's unacknowledged events (1,000) here.
	var mu sync.Mutex
	pending := map[string]*herd.AckedEvent{}
	envelopeOf := map[int64]string{}
	actor := atomic.Pointer[herd.Actor]{}
	actor.Store(a)
	type closing struct {
		status websocket.StatusCode
		reason string
	}
	var closeWith atomic.Pointer[closing]
	end := func(status websocket.StatusCode, reason string) {
		closeWith.CompareAndSwap(nil, &closing{status, reason})
		cancel(errors.New(reason))
	}

	// Reader: acks, and nothing else. Its context is never cancelled:
	// coder/websocket drops the connection without a close frame when a
	// read's context ends, and a shutdown must send 1001.
	go func() {
		for {
			typ, data, err := ws.Read(context.Background())
			if err != nil {
				end(websocket.StatusNormalClosure, "")
				return
			}
			var m ack
			if typ != websocket.MessageText || json.Unmarshal(data, &m) != nil || m.EnvelopeID == "" {
				end(websocket.StatusPolicyViolation, `the app sends only acks: {"envelope_id":"…"}`)
				return
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
				continue // late (already delivered again) or never sent
			}
			if err := ev.Ack(); err != nil {
				log.Debug("ack", "err", err)
			}
			h.metrics.acks.WithLabelValues("ok").Inc()
		}
	}()
	// Pings and the periodic check of the token and its grants.
	go func() {
		ping := time.NewTicker(h.Ping)
		reauth := time.NewTicker(h.Reauth)
		defer ping.Stop()
		defer reauth.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ping.C:
				pctx, pcancel := context.WithTimeout(context.Background(), 2*h.Ping)
				err := ws.Ping(pctx)
				pcancel()
				if err != nil && ctx.Err() == nil {
					end(websocket.StatusGoingAway, "no pong")
					return
				}
			case <-reauth.C:
				na, err := h.Authenticate(ctx, token)
				if err != nil {
					if herd.ErrorCode(err) == herd.EUNAUTHORIZED {
						end(websocket.StatusPolicyViolation, "token revoked")
						return
					}
					continue // the store is down: keep the grants we have
				}
				actor.Store(na)
			}
		}
	}()
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
		if err := h.write(ctx, ws, envelope{Type: "event", EnvelopeID: id, RetryAttempt: d.Attempt, Event: d.Event}); err != nil {
			end(websocket.StatusGoingAway, "write failed")
			break
		}
		h.metrics.envelopes.Inc()
	}
	if c := closeWith.Load(); c != nil {
		return c.status, c.reason
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return websocket.StatusGoingAway, "server shutting down; reconnect"
	}
	return websocket.StatusInternalError, "event feed failed; reconnect"
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

func (h *Handler) write(ctx context.Context, ws *websocket.Conn, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// Not ctx: a write cut by a shutdown would drop the connection
	// without its close frame.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	return ws.Write(wctx, websocket.MessageText, buf)
}

// Close ends every connection with 1001 (going away), so apps reconnect,
// and waits for them. Unacknowledged events are delivered again.
func (h *Handler) Close() error {
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.cancel()
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

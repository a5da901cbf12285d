// Package wsconn is the WebSocket connection core that herd's two sockets,
// the hint stream (package stream) and the apps socket (package appsocket),
// share: the origin policy and the upgrade, the peer a connection serves
// (its actor and the way to read it again), JSON writes with a deadline,
// the reader and pinger goroutines, a queue that never blocks its producer,
// and the close codes. The sockets keep only what is theirs: which frames
// they send and what a client frame means.
//
// Every goroutine a Conn starts (Read, Ping, Go) is its own: Close waits
// for each before it returns, so a socket that returned from serving a
// connection has nothing of it still running.
package wsconn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
)

// WriteTimeout bounds one write to a client.
const WriteTimeout = 10 * time.Second

// ErrOrigin says that the Origin of a request is not allowed; Accept then
// answers nothing, so that the caller can render its own error.
var ErrOrigin = errors.New("origin not allowed")

// Peer is whom a connection serves, as the API authenticated the request:
// by a bearer token or by a ticket of one.
type Peer struct {
	Actor *herd.Actor
	// Reauth reads the token's actor again, for a change of access.
	Reauth herd.Reauthenticator
	// TenantID is the tenant the connection is about (a super-admin names
	// one; a user's is their own).
	TenantID int64
}

// Conn is an accepted WebSocket and the goroutines that serve it.
type Conn struct {
	ws     *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	ended  atomic.Pointer[closing]
	wg     sync.WaitGroup
	closed atomic.Bool
}

type closing struct {
	status websocket.StatusCode
	reason string
}

// Accept upgrades the request after checking its Origin against the
// policy; a refused one gets ErrOrigin and nothing is written. The
// connection outlives the request: its context keeps the request's values
// but not its deadline or cancellation, and the server's read and write
// deadlines are lifted.
func Accept(w http.ResponseWriter, r *http.Request, origins *Origins) (*Conn, error) {
	if !origins.Allows(r) {
		return nil, ErrOrigin
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// The policy above is herd's; coder/websocket's own check (the Origin's
	// host must be the Host) would refuse what it allows.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, fmt.Errorf("websocket accept: %w", err) // Accept answered
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	return &Conn{ws: ws, ctx: ctx, cancel: cancel}, nil
}

// Context ends when the connection is ended (End, Close).
func (c *Conn) Context() context.Context { return c.ctx }

// End asks for the connection to close with status and reason: the first
// call's win, and the context ends. The serving loop then returns and
// closes it.
func (c *Conn) End(status websocket.StatusCode, reason string) {
	c.ended.CompareAndSwap(nil, &closing{status, reason})
	c.cancel()
}

// EndedWith returns the status and reason of the first End, or the given
// ones when nothing ended the connection (the server shut it down).
func (c *Conn) EndedWith(status websocket.StatusCode, reason string) (websocket.StatusCode, string) {
	if e := c.ended.Load(); e != nil {
		return e.status, e.reason
	}
	return status, reason
}

// WriteJSON writes v as a text frame within WriteTimeout. The write is not
// cut when the connection ends: the last frames before a close (a resync,
// an error) must go out, and a write cut short drops the connection
// without its close frame.
func (c *Conn) WriteJSON(v any) error {
	return c.WriteJSONWithin(context.WithoutCancel(c.ctx), v)
}

// WriteJSONWithin writes v as a text frame, cut short when ctx ends or
// after WriteTimeout.
func (c *Conn) WriteJSONWithin(ctx context.Context, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("websocket write: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, WriteTimeout)
	defer cancel()
	return c.ws.Write(wctx, websocket.MessageText, buf)
}

// Read starts the reader: handle gets each message the client sends and
// returns false to stop reading (after calling End). A read that fails
// (the client went away or closed) ends the connection with 1000. The
// reads are never cancelled, as coder/websocket drops a connection whose
// read is cancelled without sending its close frame; the reader ends when
// Close closes the connection.
func (c *Conn) Read(handle func(typ websocket.MessageType, data []byte) bool) {
	c.wg.Go(func() {
		for {
			typ, data, err := c.ws.Read(context.Background())
			if err != nil {
				c.End(websocket.StatusNormalClosure, "")
				return
			}
			if !handle(typ, data) {
				return
			}
		}
	})
}

// Ping starts the pinger: a connection that answers no ping within two
// intervals is closed with 1001 (and failed is called), whatever its TCP
// connection says, so a half-open one does not stay forever.
func (c *Conn) Ping(interval time.Duration, failed func()) {
	c.Go(func(ctx context.Context) {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// Not ctx: a ping write cut short drops the connection without
			// its close frame. Close ends the wait for the pong.
			pctx, cancel := context.WithTimeout(context.Background(), 2*interval)
			err := c.ws.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				if failed != nil {
					failed()
				}
				c.End(websocket.StatusGoingAway, "no pong within two ping intervals")
				return
			}
		}
	})
}

// Go runs f in a goroutine of the connection, with its context; Close
// waits for it.
func (c *Conn) Go(f func(ctx context.Context)) {
	c.wg.Go(func() { f(c.ctx) })
}

// Close ends the connection, sends the close frame with status and reason
// (waiting up to 5 s for the client's), and waits for every goroutine of
// the connection. Only the first Close does anything.
func (c *Conn) Close(status websocket.StatusCode, reason string) {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	c.End(status, reason)
	c.ws.Close(status, reason)
	// The close handshake ended the reader's read, or the 5 s after it
	// closed the TCP connection under it.
	c.ws.CloseNow()
	c.wg.Wait()
}

// Close codes of herd's sockets, by what a client should do next.
const (
	// StatusPolicyViolation (1008): the token was revoked, or the client
	// sent what the socket does not take. Do not reconnect as before.
	StatusPolicyViolation = websocket.StatusPolicyViolation
	// StatusGoingAway (1001): the server shuts down, or the connection
	// stalled. Reconnect with backoff.
	StatusGoingAway = websocket.StatusGoingAway
	// StatusTryAgainLater (1013): too slow, or the store is unavailable.
	// Reconnect later and read the log.
	StatusTryAgainLater = websocket.StatusTryAgainLater
	// StatusNormalClosure (1000): the client closed.
	StatusNormalClosure = websocket.StatusNormalClosure
	// StatusInternalError (1011): the server failed.
	StatusInternalError = websocket.StatusInternalError
)

// ReasonRevoked is the close reason when a connection's token stops
// working.
const ReasonRevoked = "token revoked"

// CloseLabel names a close status for metrics: client, shutdown, policy,
// slow or error.
func CloseLabel(s websocket.StatusCode) string {
	switch s {
	case websocket.StatusNormalClosure:
		return "client"
	case websocket.StatusGoingAway:
		return "shutdown"
	case websocket.StatusPolicyViolation:
		return "policy"
	case websocket.StatusTryAgainLater:
		return "slow"
	}
	return "error"
}

// Refresh reads the peer's actor again. It returns the new actor, or nil
// when the store could not be read (keep the grants you have and try
// again later; err says why), and revoked when the token no longer works:
// close with StatusPolicyViolation and ReasonRevoked.
func (p *Peer) Refresh(ctx context.Context) (a *herd.Actor, revoked bool, err error) {
	a, err = p.Reauth(ctx)
	switch {
	case err == nil:
		return a, false, nil
	case herd.ErrorCode(err) == herd.EUNAUTHORIZED:
		return nil, true, err
	}
	return nil, false, err
}

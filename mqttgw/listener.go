package mqttgw

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectTimeout bounds the wait for CONNECT on a new socket. mochi sets no
// deadline until CONNECT has been read, so without one a socket that never
// speaks would hold a file descriptor and two goroutines forever.
const connectTimeout = 10 * time.Second

// tcpListener is a mochi listener with its own accept loop: mochi's stops
// for good at the first Accept error, and EMFILE in a reconnect storm is
// exactly when it must not. A temporary error backs off, 5 ms doubling to
// 1 s, instead of spinning.
type tcpListener struct {
	id     string
	ln     net.Listener
	conns  *atomic.Int64 // sockets open now, for the connection cap
	log    *slog.Logger
	onBack func() // counts accept back-offs
	closed atomic.Bool
	wg     sync.WaitGroup
}

func (l *tcpListener) ID() string                  { return l.id }
func (l *tcpListener) Address() string             { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string            { return "tcp" }
func (l *tcpListener) Init(log *slog.Logger) error { return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	var backoff time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed, backing off", "err", err, "backoff", backoff)
			l.onBack()
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.conns.Add(1)
		_ = conn.SetDeadline(time.Now().Add(connectTimeout))
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.conns.Add(-1)
			defer conn.Close()
			_ = establish(l.id, conn)
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	if l.closed.CompareAndSwap(false, true) {
		l.ln.Close()
		closeClients(l.id)
	}
}

// wsListener stands for the connections that the HTTP server upgrades at
// /mqtt and hands to mochi: it accepts nothing itself, but mochi needs a
// registered listener of that id to close those clients at shutdown.
type wsListener struct {
	id     string
	closed atomic.Bool
}

func (l *wsListener) ID() string                  { return l.id }
func (l *wsListener) Address() string             { return "/mqtt" }
func (l *wsListener) Protocol() string            { return "ws" }
func (l *wsListener) Init(*slog.Logger) error     { return nil }
func (l *wsListener) Serve(listeners.EstablishFn) {}
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if l.closed.CompareAndSwap(false, true) {
		closeClients(l.id)
	}
}

// wsConn is a WebSocket as a net.Conn for mochi. Close skips the close
// handshake, which can wait up to ten seconds for a peer that is gone:
// mochi closes the old connection of a takeover inside the new CONNECT.
type wsConn struct {
	net.Conn
	ws     *websocket.Conn
	remote net.Addr
}

func (c *wsConn) Close() error {
	err := c.ws.CloseNow()
	c.Conn.Close()
	return err
}

func (c *wsConn) RemoteAddr() net.Addr { return c.remote }

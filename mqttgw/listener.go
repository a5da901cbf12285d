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

// connSet is the sockets a listener has handed to mochi. Closing the
// listener closes them all, and waits until the gateway is done with each
// (onEnd included): the gateway has told its devices it is shutting down
// by then; mochi's shutdown waits for every socket it reads from, even one
// that has not sent CONNECT yet and would hold it for connectTimeout; and
// mochi counts a socket in that wait only once it is handed over (its
// WaitGroup.Add is in the call), so no socket may be handed over once its
// Wait has begun.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// add records c; it returns false, and records nothing, once the set is
// closed.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

// done forgets c, whose handling has ended.
func (s *connSet) done(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// close closes the sockets still open and refuses new ones.
func (s *connSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
}

// wait waits until every socket added has been handled to its end.
func (s *connSet) wait() { s.wg.Wait() }

// tcpListener is a mochi listener with its own accept loop: mochi's stops
// for good at the first Accept error, and EMFILE in a reconnect storm is
// exactly when it must not. A temporary error backs off, 5 ms doubling to
// 1 s, instead of spinning.
type tcpListener struct {
	id     string
	ln     net.Listener
	conns  *atomic.Int64 // sockets open now, for the connection cap
	log    *slog.Logger
	onBack func()         // counts accept back-offs
	onEnd  func(net.Conn) // called when mochi is done with a socket
	closed atomic.Bool
	open   connSet
	// mochi runs Serve in a goroutine it does not wait for: Close waits
	// for it through served, closed when Serve returns (nil until Serve
	// starts), and stop cuts an accept back-off short.
	mu     sync.Mutex
	served chan struct{}
	stop   chan struct{}
}

func (l *tcpListener) ID() string                  { return l.id }
func (l *tcpListener) Address() string             { return l.ln.Addr().String() }
func (l *tcpListener) Protocol() string            { return "tcp" }
func (l *tcpListener) Init(log *slog.Logger) error { return nil }

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed.Load() || l.served != nil {
		l.mu.Unlock()
		return
	}
	l.served = make(chan struct{})
	defer close(l.served)
	l.mu.Unlock()
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
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.stop:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		if !l.open.add(conn) {
			conn.Close() // closing down
			return
		}
		l.conns.Add(1)
		_ = conn.SetDeadline(time.Now().Add(connectTimeout))
		go func() {
			defer l.open.done(conn)
			defer l.conns.Add(-1)
			defer conn.Close()
			_ = establish(l.id, conn)
			l.onEnd(conn)
		}()
	}
}

// Close stops accepting, closes the sockets and waits until they are
// done with. It leaves out mochi's closeClients, which can deadlock (see
// Gateway.Close).
func (l *tcpListener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if !l.closed.CompareAndSwap(false, true) {
		l.mu.Unlock()
		return
	}
	served := l.served
	l.mu.Unlock()
	close(l.stop)
	l.ln.Close()
	if served != nil {
		<-served // no socket is handed over past this
	}
	l.open.close()
	l.open.wait()
}

// wsListener stands for the connections that the HTTP server upgrades at
// /mqtt and hands to mochi: it accepts nothing itself, but closes those
// sockets at shutdown.
type wsListener struct {
	id     string
	closed atomic.Bool
	open   connSet
}

func (l *wsListener) ID() string                  { return l.id }
func (l *wsListener) Address() string             { return "/mqtt" }
func (l *wsListener) Protocol() string            { return "ws" }
func (l *wsListener) Init(*slog.Logger) error     { return nil }
func (l *wsListener) Serve(listeners.EstablishFn) {}
func (l *wsListener) Close(listeners.CloseFn) {
	if l.closed.CompareAndSwap(false, true) {
		l.open.close()
		l.open.wait()
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

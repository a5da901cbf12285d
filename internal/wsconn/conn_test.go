package wsconn_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd/internal/wsconn"
)

// serve accepts one connection with the policy and runs fn on it, then
// closes it with what ended it; it returns the URL to dial and a channel
// that is closed once the handler has returned.
func serve(t *testing.T, origins *wsconn.Origins, fn func(c *wsconn.Conn)) (string, <-chan struct{}) {
	t.Helper()
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		c, err := wsconn.Accept(w, r, origins)
		if errors.Is(err, wsconn.ErrOrigin) {
			http.Error(w, "origin", http.StatusForbidden)
			return
		} else if err != nil {
			return
		}
		fn(c)
	}))
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "http://", "ws://", 1), done
}

// TestConn_CloseWaitsForItsGoroutines: when Close returns, the reader's
// handler and every goroutine of the connection have returned, and the
// client got the status of the first End.
func TestConn_CloseWaitsForItsGoroutines(t *testing.T) {
	var handled, worked atomic.Bool
	entered := make(chan struct{})
	url, done := serve(t, nil, func(c *wsconn.Conn) {
		c.Read(func(typ websocket.MessageType, data []byte) bool {
			close(entered)
			<-c.Context().Done()
			time.Sleep(20 * time.Millisecond) // work after the end, which Close must wait out
			handled.Store(true)
			return false
		})
		c.Go(func(ctx context.Context) {
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond)
			worked.Store(true)
		})
		<-entered
		c.End(wsconn.StatusPolicyViolation, "first")
		c.End(wsconn.StatusGoingAway, "second")
		c.Close(c.EndedWith(wsconn.StatusInternalError, "none"))
		if !handled.Load() || !worked.Load() {
			t.Errorf("Close returned with goroutines running: reader done %v, worker done %v", handled.Load(), worked.Load())
		}
	})
	ws, _, err := websocket.Dial(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(t.Context(), websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.Read(t.Context())
	if s := websocket.CloseStatus(err); s != websocket.StatusPolicyViolation {
		t.Fatalf("closed with %v (%v), want the first End's 1008", s, err)
	}
	<-done
}

// TestAccept_Origin: a refused origin gets ErrOrigin before any upgrade.
func TestAccept_Origin(t *testing.T) {
	url, _ := serve(t, nil, func(c *wsconn.Conn) { c.Close(wsconn.StatusNormalClosure, "") })
	_, resp, err := websocket.Dial(t.Context(), url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("dial from another origin: %v %v, want 403", resp, err)
	}
	allowed, _ := wsconn.ParseOrigins("https://app.example")
	url, _ = serve(t, allowed, func(c *wsconn.Conn) { c.Close(wsconn.StatusNormalClosure, "") })
	ws, _, err := websocket.Dial(t.Context(), url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://app.example"}}})
	if err != nil {
		t.Fatalf("dial from an allowed origin: %v", err)
	}
	ws.CloseNow()
}

// TestQueue_Overflow: Push never blocks; the first item that does not fit
// marks the queue, cuts its context and refuses what follows.
func TestQueue_Overflow(t *testing.T) {
	q := wsconn.NewQueue[int](context.Background(), 2)
	defer q.Stop()
	if !q.Push(1) || !q.Push(2) {
		t.Fatal("the first two did not fit")
	}
	if q.Push(3) {
		t.Fatal("a third fit in a queue of two")
	}
	select {
	case <-q.Overflowed():
	default:
		t.Fatal("not marked overflowed")
	}
	if q.Context().Err() == nil {
		t.Fatal("the queue's context did not end")
	}
	<-q.C()
	if q.Push(4) {
		t.Fatal("took an item after overflowing")
	}
}

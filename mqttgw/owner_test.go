package mqttgw_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/mqttgw"
	"github.com/herd-iot/herd/sqldb"
)

// stuckQueue is a command queue whose reads of open commands hang on past
// their context's end, as a store call that does not answer would, until
// the test releases them.
type stuckQueue struct {
	herd.CommandQueue
	entered   chan struct{} // a read has begun
	cancelled chan struct{} // its context has ended
	release   chan struct{}
	once      sync.Once
}

func (q *stuckQueue) OpenCommands(ctx context.Context, tenantID, deviceID int64) ([]*herd.Command, error) {
	select {
	case q.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	q.once.Do(func() { close(q.cancelled) })
	<-q.release
	return nil, ctx.Err()
}

func (q *stuckQueue) PendingCommands(ctx context.Context, before time.Time, limit int) ([]*herd.Command, error) {
	return nil, nil
}

// ownGoroutines are the gateway's own goroutines, as they show in a
// goroutine dump.
var ownGoroutines = []string{
	"mqttgw.(*Gateway).resendPending", "mqttgw.(*Gateway).deliverOpen", "mqttgw.(*Gateway).markDelivered",
	"mqttgw.(*Gateway).disconnect", "mqttgw.(*link).sendLocked", "mqttgw.(*tcpListener).Serve", "mqttgw.(*batcher).run",
}

// Every goroutine of the gateway has an owner that waits for it: once
// Close has returned none is left, not even a delivery of open commands
// stuck on a store that does not answer, or the accept loop mochi starts
// and does not wait for.
//
// Not parallel: the goroutine dump must hold no other gateway.
func TestGateway_CloseWaitsForItsGoroutines(t *testing.T) {
	q := &stuckQueue{entered: make(chan struct{}, 1), cancelled: make(chan struct{}), release: make(chan struct{})}
	f := newFleet(t, testutil.MustOpenDB(t, sqldb.SQLite), 1, func(g *mqttgw.Gateway) { g.Commands = q })
	d := f.devices[0]
	c, err := f.client(t, d.Key, f.tokens[d.Key])
	if err != nil {
		t.Fatal(err)
	}
	if tok := c.Subscribe("devices/"+d.Key+"/commands", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	select {
	case <-q.entered: // the delivery of its open commands is under way
	case <-time.After(10 * time.Second):
		t.Fatal("the subscription read no open commands")
	}

	closed := make(chan error, 1)
	go func() { closed <- f.gw.Close() }()
	<-q.cancelled // Close has told the delivery to stop; it has not yet
	// With an owner, Close cannot return before the delivery has: there
	// is no signal for "did not return", so the wrong outcome is given a
	// second to show.
	select {
	case <-closed:
		t.Fatal("Close returned while the delivery of open commands was still running")
	case <-time.After(time.Second):
	}
	close(q.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(dump, "\n\n") {
		for _, fn := range ownGoroutines {
			if strings.Contains(g, "herd/"+fn) {
				t.Errorf("after Close a goroutine of the gateway is left:\n%s", g)
			}
		}
	}
}

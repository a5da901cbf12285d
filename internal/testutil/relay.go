package testutil

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/natsbus"
	"github.com/herd-iot/herd/relay"
	"github.com/herd-iot/herd/sqldb"
)

// RunRelay runs r until stop is called or the test ends; stop returns once
// Run has, so a test can stop a relay to stand for a crash.
func RunRelay(tb testing.TB, r *relay.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	tb.Cleanup(stop)
	return stop
}

// StartRelay runs a relay from db's outbox to bus, woken by db's commits,
// until the test ends. It returns once the outbox is empty, so the events
// the fixture wrote so far are on the bus before anything reads it.
func StartRelay(tb testing.TB, db *sqldb.DB, bus *natsbus.Bus) {
	tb.Helper()
	r := relay.New(sqldb.NewOutboxService(db), bus)
	wake, unsub := db.EventsCommitted()
	r.Wake = wake
	tb.Cleanup(unsub) // after the relay stops: cleanups run last first
	RunRelay(tb, r)
	WaitPublished(tb, sqldb.NewOutboxService(db))
}

// WaitPublished waits until the outbox holds no event left to publish.
func WaitPublished(tb testing.TB, outbox herd.OutboxService) {
	tb.Helper()
	WaitFor(tb, 60*time.Second, "the outbox to drain", func() bool {
		st, err := outbox.OutboxStats(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		return st.Pending == 0
	})
}

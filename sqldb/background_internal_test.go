package sqldb

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBackground_CloseCancelsAndWaits checks the owner that state cache
// loads and statement preparation (preparePending) run under: Close cancels
// their context, waits for them, and refuses new ones.
func TestBackground_CloseCancelsAndWaits(t *testing.T) {
	db := NewDB(filepath.Join(t.TempDir(), "herd.db"))
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	cancelled, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	if !db.bg.Go(func(ctx context.Context) {
		defer close(done)
		<-ctx.Done()
		close(cancelled)
		<-release // still running after the cancel: Close must wait
	}) {
		t.Fatal("Go refused before Close")
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		db.Close()
	}()
	<-cancelled
	deadline := time.Now().Add(30 * time.Second)
	for !stackHolds("sqldb.(*background).stop", "sync.(*WaitGroup).Wait") {
		select {
		case <-closed:
			close(release)
			t.Fatal("Close returned while a goroutine it owns was running")
		default:
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("Close neither returned nor waited")
		}
		time.Sleep(time.Millisecond) // there is no signal for "blocked in Wait"
	}
	close(release)
	<-closed
	select {
	case <-done:
	default:
		t.Fatal("Close returned before the goroutine did")
	}
	if db.bg.Go(func(context.Context) { t.Error("started after Close") }) {
		t.Fatal("Go accepted work after Close")
	}
}

func stackHolds(funcs ...string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		all := true
		for _, fn := range funcs {
			all = all && strings.Contains(g, fn)
		}
		if all {
			return true
		}
	}
	return false
}

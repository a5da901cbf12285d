package sqldb

import (
	"context"
	"sync"
)

// background owns the goroutines a DB starts for itself (state cache loads,
// statement preparation): each runs with a context that Close cancels, and
// Close waits for every one to return before it closes the pools they use.
type background struct {
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	stopped bool
	wg      sync.WaitGroup
}

// Go runs fn in a goroutine of its own, unless the DB is closing; it reports
// whether fn was started.
func (b *background) Go(fn func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	if b.ctx == nil {
		b.ctx, b.cancel = context.WithCancel(context.Background())
	}
	// Add under the lock: stop cannot begin its Wait between the check of
	// stopped and the Add.
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn(b.ctx)
	}()
	return true
}

// stop cancels the goroutines' context, refuses new ones and waits for the
// running ones to return.
func (b *background) stop() {
	b.mu.Lock()
	b.stopped = true
	if b.cancel != nil {
		b.cancel()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

package wsconn

import (
	"context"
	"sync"
)

// Queue is a connection's bounded write queue for a producer that must
// never wait on a client (the stream's fan-out): Push does not block, and
// the first item that does not fit marks the connection too slow. Nothing
// is taken after that, since what follows a lost item may depend on it; the
// writer sees Overflowed, tells the client to resync and closes.
type Queue[T any] struct {
	c    chan T
	over chan struct{}
	once sync.Once
	// ctx ends on overflow: it cuts a write stuck on a client that stopped
	// reading, instead of waiting out the write timeout.
	ctx    context.Context
	cancel context.CancelFunc
}

// NewQueue returns a queue of n items whose Context derives from parent.
func NewQueue[T any](parent context.Context, n int) *Queue[T] {
	q := &Queue[T]{c: make(chan T, n), over: make(chan struct{})}
	q.ctx, q.cancel = context.WithCancel(context.WithoutCancel(parent))
	return q
}

// Push queues v, or marks the queue overflowed and reports false.
func (q *Queue[T]) Push(v T) bool {
	select {
	case <-q.over:
		return false
	default:
	}
	select {
	case q.c <- v:
		return true
	default:
		q.once.Do(func() {
			close(q.over)
			q.cancel()
		})
		return false
	}
}

// C is where the writer takes the items.
func (q *Queue[T]) C() <-chan T { return q.c }

// Overflowed is closed once an item did not fit.
func (q *Queue[T]) Overflowed() <-chan struct{} { return q.over }

// Context ends on overflow (or Stop): writes of the queue's items use it.
func (q *Queue[T]) Context() context.Context { return q.ctx }

// Stop releases the queue's context.
func (q *Queue[T]) Stop() { q.cancel() }

package mqttgw

import (
	"context"
	"time"

	"github.com/herd-iot/herd"
)

// pending is one message's items on their way to the store. done, when not
// nil, receives the commit's outcome: a QoS 1 publish waits on it before its
// PUBACK is sent.
type pending struct {
	items []herd.IngestItem
	done  chan error
}

// batcher is the group commit: one goroutine takes what has queued, up to
// maxItems items or maxWait after the first, and commits it in one
// transaction. While one commit runs the next batch forms, so the batch
// size follows the load without a timer deciding it.
type batcher struct {
	ingest   herd.IngestService
	in       chan *pending
	maxItems int
	maxWait  time.Duration
	observe  func(items int, took time.Duration, err error)
	done     chan struct{}
}

func newBatcher(ingest herd.IngestService, maxItems int, maxWait time.Duration, observe func(int, time.Duration, error)) *batcher {
	return &batcher{
		ingest:   ingest,
		in:       make(chan *pending, 4*maxItems),
		maxItems: maxItems,
		maxWait:  maxWait,
		observe:  observe,
		done:     make(chan struct{}),
	}
}

// submit queues a message's items; when the queue is full it blocks, and
// so does the publishing client's read loop: back-pressure reaches the
// device through TCP instead of growing memory here.
func (b *batcher) submit(ctx context.Context, p *pending) error {
	select {
	case b.in <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run commits batches until the input is closed and drained.
func (b *batcher) run() {
	defer close(b.done)
	var batch []*pending
	var items []herd.IngestItem
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		first, ok := <-b.in
		if !ok {
			return
		}
		batch, items = append(batch[:0], first), append(items[:0], first.items...)
		open := true
		if b.maxWait > 0 {
			timer.Reset(b.maxWait)
		}
	fill:
		for len(items) < b.maxItems {
			select {
			case p, ok := <-b.in:
				if !ok {
					open = false
					break fill
				}
				batch, items = append(batch, p), append(items, p.items...)
			default:
				if b.maxWait <= 0 {
					break fill
				}
				select {
				case p, ok := <-b.in:
					if !ok {
						open = false
						break fill
					}
					batch, items = append(batch, p), append(items, p.items...)
				case <-timer.C:
					break fill
				}
			}
		}
		timer.Stop()
		start := time.Now()
		// The commit must not be cut short by a client that went away: its
		// reading may be in the same transaction as others'.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := b.ingest.Ingest(ctx, items)
		cancel()
		b.observe(len(items), time.Since(start), err)
		for _, p := range batch {
			if p.done != nil {
				p.done <- err
			}
		}
		clear(items) // drop references to payload strings
		if !open {
			return
		}
	}
}

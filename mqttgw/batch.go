package mqttgw

import (
	"context"
	"time"

	"github.com/herd-iot/herd"
)

// pending is one message's items on their way to the store. A QoS 1
// publish carries the PUBACK it is owed in ack, written once the commit
// holding its items is done; a QoS 2 publish waits on done instead.
type pending struct {
	items []herd.IngestItem
	ack   *ack
	done  chan error
}

// ack is a PUBACK owed to a device. When decided, code is its reason code
// (0 for success), known before the store; otherwise the commit's outcome
// decides.
type ack struct {
	link    *link
	id      uint16
	v5      bool
	decided bool
	code    byte
	kind    string // the topic kind, for the metrics
	start   time.Time
}

// committed is a batch whose commit is over, on its way to the acker.
type committed struct {
	batch []*pending
	err   error
}

// batcher is the group commit: one goroutine takes what has queued, up to
// maxItems items or maxWait after the first, and commits it in one
// transaction. While one commit runs the next batch forms, so the batch
// size follows the load without a timer deciding it. A second goroutine
// writes the batch's PUBACKs while the next commit runs; batches reach it
// in commit order, so each device gets its PUBACKs in the order it
// published, as MQTT requires.
type batcher struct {
	ingest   herd.IngestService
	in       chan *pending
	acks     chan committed
	maxItems int
	maxWait  time.Duration
	observe  func(items int, took time.Duration, err error)
	writeAck func([]*pending, error)
	done     chan struct{}
}

func newBatcher(ingest herd.IngestService, maxItems int, maxWait time.Duration, observe func(int, time.Duration, error), writeAck func([]*pending, error)) *batcher {
	return &batcher{
		ingest:   ingest,
		in:       make(chan *pending, 4*maxItems),
		acks:     make(chan committed, 2),
		maxItems: maxItems,
		maxWait:  maxWait,
		observe:  observe,
		writeAck: writeAck,
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

// run commits batches until the input is closed and drained, and the
// acker has written every PUBACK.
func (b *batcher) run() {
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for c := range b.acks {
			b.writeAck(c.batch, c.err)
		}
	}()
	defer func() {
		close(b.acks)
		<-acked
		close(b.done)
	}()
	var items []herd.IngestItem
	for {
		first, ok := <-b.in
		if !ok {
			return
		}
		// A fresh slice each time: the acker reads the last one while this
		// one fills.
		batch := append(make([]*pending, 0, 64), first)
		items = append(items[:0], first.items...)
		open := true
		// Take what has queued, and with a wait, what comes until it ends.
		// This goroutine is the only receiver, so a queued item is there
		// to take.
		var timer *time.Timer
		var deadline <-chan time.Time
		if b.maxWait > 0 {
			timer = time.NewTimer(b.maxWait)
			deadline = timer.C
		}
	fill:
		for len(items) < b.maxItems {
			var p *pending
			switch {
			case len(b.in) > 0:
				p, ok = <-b.in
			case deadline == nil:
				break fill
			default:
				select {
				case p, ok = <-b.in:
				case <-deadline:
					break fill
				}
			}
			if !ok {
				open = false
				break
			}
			batch, items = append(batch, p), append(items, p.items...)
		}
		if timer != nil {
			timer.Stop()
		}
		var err error
		if len(items) > 0 {
			start := time.Now()
			// The commit must not be cut short by a client that went away:
			// its reading may be in the same transaction as others'.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = b.ingest.Ingest(ctx, items)
			cancel()
			b.observe(len(items), time.Since(start), err)
		}
		for _, p := range batch {
			if p.done != nil {
				p.done <- err
			}
		}
		b.acks <- committed{batch: batch, err: err}
		clear(items) // drop references to payload strings
		if !open {
			return
		}
	}
}

package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/herd-iot/herd"
	"github.com/nats-io/nats.go/jetstream"
)

// AppFeedIdle is how long an app's feed outlives its last connection:
// events wait for an app that comes back within it.
const AppFeedIdle = 72 * time.Hour

var _ herd.AppEventSource = (*Bus)(nil)

// OpenAppFeed implements herd.AppEventSource with a durable JetStream
// consumer per app over its tenant's subjects: the app's connections share
// it (each event goes to one of them), and JetStream delivers an event
// again when its acknowledgement does not come within ackWait.
func (b *Bus) OpenAppFeed(ctx context.Context, app string, tenantID int64, ackWait time.Duration) (herd.AckedFeed, error) {
	cons, err := b.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:           app,
		FilterSubject:     b.SubjectPrefix + "." + strconv.FormatInt(tenantID, 10) + ".>",
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           ackWait,
		MaxDeliver:        -1,
		MaxAckPending:     1000,
		DeliverPolicy:     jetstream.DeliverNewPolicy,
		InactiveThreshold: AppFeedIdle,
	})
	if err != nil {
		return nil, fmt.Errorf("app feed %s: %w", app, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return nil, fmt.Errorf("app feed %s: %w", app, err)
	}
	return &appFeed{it: it}, nil
}

type appFeed struct{ it jetstream.MessagesContext }

func (f *appFeed) Next(ctx context.Context) (*herd.AckedEvent, error) {
	stop := context.AfterFunc(ctx, f.it.Stop)
	defer stop()
	for {
		msg, err := f.it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		} else if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue // a missed heartbeat; the iterator goes on
		}
		ev, err := decodeEvent(msg)
		if err != nil {
			msg.Term()
			continue
		}
		attempt := 0
		if md, err := msg.Metadata(); err == nil {
			attempt = int(md.NumDelivered) - 1
		}
		return &herd.AckedEvent{Event: ev, Attempt: attempt, Ack: msg.Ack}, nil
	}
}

func (f *appFeed) Close() { f.it.Stop() }

// Tail hands every event stored in the stream from now on to fn, in stream
// order, until ctx ends: an ordered consumer of this process alone, with
// no acknowledgements, for hints that may be lost (the event log is the
// truth). After a failure of the bus it goes on from the last event it
// handed over.
// ready, when set, is called once the consumer exists: events stored from
// then on reach fn.
func (b *Bus) Tail(ctx context.Context, fn func(*herd.Event), ready func()) error {
	cons, err := b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{b.SubjectPrefix + ".>"},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	if ready != nil {
		ready()
	}
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return ctx.Err()
		} else if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if ev, err := decodeEvent(msg); err == nil {
			fn(ev)
		}
	}
}

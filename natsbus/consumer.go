package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/herd-iot/herd"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler applies one event. It must be idempotent by event id: applied is
// false when the event had been applied before (a redelivery or a replay),
// which is counted and acknowledged like a success. sqldb's ApplyOnce is
// the way to write one: the record of the event and its effect commit in
// one transaction.
type Handler func(ctx context.Context, ev *herd.Event) (applied bool, err error)

// BatchHandler applies the events that have arrived together, at most
// MaxBatch, in one transaction: applied[i] says whether evs[i] was new.
// An error hands them all back for a later delivery.
type BatchHandler func(ctx context.Context, evs []*herd.Event) (applied []bool, err error)

// MaxBatch bounds the events given to a BatchHandler at once.
const MaxBatch = 256

// Consumer is a durable JetStream consumer of the event stream.
type Consumer struct {
	// Name is the durable name and the name its effects are recorded
	// under; it never changes for a consumer, or it would see every event
	// again as new.
	Name string
	// Handler or Batch applies the events; with Batch, the events that
	// are waiting when one arrives go together.
	Handler Handler
	Batch   BatchHandler
}

// consumerMetrics are shared by every consumer of a bus, by name.
type consumerMetrics struct {
	messages     *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	redeliveries *prometheus.CounterVec
	pending      *prometheus.GaugeVec
}

func newConsumerMetrics() *consumerMetrics {
	return &consumerMetrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_consumer_messages_total",
			Help: "Events delivered to a consumer, by outcome: applied, duplicate (applied before, skipped), error (handed back for a later delivery), undecodable (dropped).",
		}, []string{"consumer", "outcome"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_dedupe_duplicates_total",
			Help: "Events a consumer had applied before and skipped: redeliveries, replays and repeats the stream let through.",
		}, []string{"consumer"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_consumer_redeliveries_total",
			Help: "Deliveries of an event the consumer was given before (not acknowledged in time, or handed back).",
		}, []string{"consumer"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herd_consumer_pending",
			Help: "Events in the stream the consumer has not been given yet (its lag), as of its last check.",
		}, []string{"consumer"}),
	}
}

// Collectors returns the bus's Prometheus collectors.
func (b *Bus) Collectors() []prometheus.Collector {
	m := b.cm
	return []prometheus.Collector{m.messages, m.duplicates, m.redeliveries, m.pending}
}

// Consume runs c until ctx ends: each event goes to the handler, and is
// acknowledged only after the handler returned, so an effect that did not
// commit is delivered again. Events of one consumer are handled one at a
// time, in stream order.
func (b *Bus) Consume(ctx context.Context, c Consumer) error {
	if c.Name == "" || (c.Handler == nil) == (c.Batch == nil) {
		return errors.New("natsbus: a consumer needs a name and one of a handler or a batch handler")
	}
	if c.Batch == nil {
		h := c.Handler
		c.Batch = func(ctx context.Context, evs []*herd.Event) ([]bool, error) {
			applied, err := h(ctx, evs[0])
			return []bool{applied}, err
		}
	}
	// Every event, from the stream's start for a consumer made now; an
	// unacknowledged delivery comes again after AckWait.
	cfg := jetstream.ConsumerConfig{
		Durable:       c.Name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1024,
		MaxDeliver:    -1,
	}
	cons, err := b.stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", c.Name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(MaxBatch))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", c.Name, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	lagCtx, cancelLag := context.WithCancel(ctx)
	defer cancelLag()
	go b.watchLag(lagCtx, cons, c.Name)
	// The iterator hands messages over one by one; a goroutine feeds them
	// into a channel so that the loop can take what is waiting without
	// blocking and apply it as one batch.
	msgs := make(chan jetstream.Msg, MaxBatch)
	go func() {
		defer close(msgs)
		for {
			msg, err := it.Next()
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			} else if err != nil {
				if ctx.Err() != nil {
					return
				}
				b.Logger.Debug("consumer fetch", "consumer", c.Name, "err", err)
				continue
			}
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return // JetStream delivers it again after AckWait
			}
		}
	}()
	batchSize := 1
	if c.Handler == nil {
		batchSize = MaxBatch
	}
	for {
		msg, ok := <-msgs
		if !ok {
			return ctx.Err()
		}
		batch := []jetstream.Msg{msg}
	more:
		for len(batch) < batchSize {
			select {
			case msg, ok := <-msgs:
				if !ok {
					break more
				}
				batch = append(batch, msg)
			default:
				break more
			}
		}
		if err := b.handle(ctx, c, batch); err != nil {
			return err
		}
	}
}

// handle applies one batch and acknowledges it, or hands it back.
func (b *Bus) handle(ctx context.Context, c Consumer, batch []jetstream.Msg) error {
	m := b.cm
	log := b.Logger.With("consumer", c.Name)
	evs := make([]*herd.Event, 0, len(batch))
	good := batch[:0:0]
	maxDelivered := uint64(1)
	for _, msg := range batch {
		md, _ := msg.Metadata()
		if md != nil && md.NumDelivered > 1 {
			m.redeliveries.WithLabelValues(c.Name).Inc()
			maxDelivered = max(maxDelivered, md.NumDelivered)
		}
		ev, err := decodeEvent(msg)
		if err != nil {
			// Nothing herd publishes looks like this; delivering it again
			// would not help.
			log.Error("undecodable event dropped", "subject", msg.Subject(), "err", err)
			m.messages.WithLabelValues(c.Name, "undecodable").Inc()
			msg.Term()
			continue
		}
		evs, good = append(evs, ev), append(good, msg)
	}
	if len(evs) == 0 {
		return nil
	}
	applied, err := c.Batch(ctx, evs)
	if err == nil && len(applied) != len(evs) {
		err = fmt.Errorf("natsbus: batch handler answered %d results for %d events", len(applied), len(evs))
	}
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down: JetStream delivers them again after AckWait.
			return ctx.Err()
		}
		delay := min(100*time.Millisecond<<min(maxDelivered-1, 10), 30*time.Second)
		log.Warn("events not applied; delivering them again later", "events", len(evs), "first", evs[0].ID, "delivery", maxDelivered, "retry_in", delay, "err", err)
		m.messages.WithLabelValues(c.Name, "error").Add(float64(len(evs)))
		for _, msg := range good {
			msg.NakWithDelay(delay)
		}
		return nil
	}
	for i, msg := range good {
		outcome := "applied"
		if !applied[i] {
			outcome = "duplicate"
			m.duplicates.WithLabelValues(c.Name).Inc()
		}
		m.messages.WithLabelValues(c.Name, outcome).Inc()
		if err := msg.Ack(); err != nil {
			// The effect is committed; a redelivery will be a duplicate.
			log.Debug("ack", "event", evs[i].ID, "err", err)
		}
	}
	return nil
}

// watchLag keeps the consumer's pending gauge current.
func (b *Bus) watchLag(ctx context.Context, cons jetstream.Consumer, name string) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err == nil {
			b.cm.pending.WithLabelValues(name).Set(float64(info.NumPending + uint64(info.NumAckPending)))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// decodeEvent reads an event herd published; anything else is an error.
func decodeEvent(msg jetstream.Msg) (*herd.Event, error) {
	var ev herd.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return nil, err
	}
	if ev.ID == 0 {
		return nil, errors.New("an event without an id")
	}
	return &ev, nil
}

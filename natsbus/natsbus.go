// Package natsbus carries herd's committed events over NATS JetStream: the
// stream the outbox relay publishes to, and the consumers that apply each
// event once. herd embeds a NATS server (with JetStream on files under the
// data directory) unless it is given the URL of one, and then runs the very
// same code against it.
package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of the stream.
const (
	DefaultStream          = "HERD_EVENTS"
	DefaultSubjectPrefix   = "herd.events"
	DefaultMaxAge          = 7 * 24 * time.Hour
	DefaultDuplicateWindow = 2 * time.Minute
)

// Bus is a connection to NATS and herd's event stream on it. Set its fields,
// then Open it.
type Bus struct {
	// URL names an external NATS server or cluster (comma-separated URLs);
	// empty starts an embedded server that keeps JetStream's files in
	// StoreDir and listens on no port.
	URL      string
	StoreDir string
	// Stream and SubjectPrefix name the stream and its subjects
	// (prefix.<tenant id>.<event type>); tests give each run its own.
	Stream        string
	SubjectPrefix string
	// MaxAge is how long the stream keeps events: the longest replay a
	// consumer can make. DuplicateWindow is how long the stream remembers
	// the event ids it stored, to drop a relay's repeats.
	MaxAge          time.Duration
	DuplicateWindow time.Duration
	// Replicas of the stream on a cluster; 1 on a single server.
	Replicas int
	// PublishTimeout bounds the wait for the stream's acknowledgement of
	// one batch.
	PublishTimeout time.Duration

	Logger *slog.Logger

	server *server.Server
	nc     *nats.Conn
	cm     *consumerMetrics
	js     jetstream.JetStream
	stream jetstream.Stream
}

// NewBus returns a Bus with the default stream settings.
func NewBus(url, storeDir string) *Bus {
	return &Bus{
		URL:             url,
		StoreDir:        storeDir,
		Stream:          DefaultStream,
		SubjectPrefix:   DefaultSubjectPrefix,
		MaxAge:          DefaultMaxAge,
		DuplicateWindow: DefaultDuplicateWindow,
		Replicas:        1,
		PublishTimeout:  10 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
		cm:              newConsumerMetrics(),
	}
}

// Open starts the embedded server when no URL is set, connects, and creates
// the stream or brings its settings up to date.
func (b *Bus) Open(ctx context.Context) error {
	if b.DuplicateWindow <= 0 || b.DuplicateWindow > b.MaxAge {
		return fmt.Errorf("natsbus: duplicate window %s must be positive and no longer than the retention %s", b.DuplicateWindow, b.MaxAge)
	}
	opts := []nats.Option{
		nats.Name("herd"),
		// Reconnect for ever: an outage of the bus holds events in the
		// outbox, it must not end the process.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.Logger.Warn("NATS connection lost; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { b.Logger.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	url := b.URL
	if url == "" {
		if err := b.startEmbedded(); err != nil {
			return err
		}
		opts = append(opts, nats.InProcessServer(b.server))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return fmt.Errorf("connect to NATS %s: %w", RedactURL(url), err)
	}
	b.nc = nc
	b.js, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b.stream, err = b.js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
		Name:        b.Stream,
		Description: "herd's committed events, published by the outbox relay",
		Subjects:    []string{b.SubjectPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      b.MaxAge,
		Duplicates:  b.DuplicateWindow,
		Storage:     jetstream.FileStorage,
		Replicas:    max(b.Replicas, 1),
	})
	if err != nil {
		b.Close()
		return fmt.Errorf("create stream %s on NATS %s: %w", b.Stream, RedactURL(url), err)
	}
	return nil
}

func (b *Bus) startEmbedded() error {
	if b.StoreDir == "" {
		return errors.New("natsbus: a store directory is required for the embedded NATS server")
	}
	if err := os.MkdirAll(b.StoreDir, 0o700); err != nil {
		return fmt.Errorf("NATS store directory: %w", err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "herd-embedded",
		JetStream:  true,
		StoreDir:   b.StoreDir,
		// The process talks to it in-process; nothing else needs a port,
		// and a fixed one would clash with the machine's own NATS.
		DontListen: true,
		NoSigs:     true,
		NoLog:      true,
		// JetStream acknowledges a write before it reaches the disk and
		// syncs every so often (by default every two minutes). A sync on
		// every write costs the relay 90% of its rate, so the embedded
		// server syncs every second and the relay holds its marks past
		// that (MarkDelay): a power cut takes back only events the outbox
		// still holds as unpublished.
		SyncInterval: EmbeddedSyncInterval,
	})
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return errors.New("embedded NATS did not start within 30s")
	}
	b.server = ns
	return nil
}

// Close closes the connection and stops the embedded server.
func (b *Bus) Close() error {
	if b.nc != nil {
		// Flush what was published; consumers were stopped by their contexts.
		b.nc.FlushTimeout(5 * time.Second)
		b.nc.Close()
		b.nc = nil
	}
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
		b.server = nil
	}
	return nil
}

// EmbeddedSyncInterval is how often the embedded server writes JetStream's
// files to disk.
const EmbeddedSyncInterval = time.Second

// MarkDelay is how long a relay should hold a mark after the stream's
// acknowledgement: past the embedded server's sync, none for an external
// one (run it with replicas or sync_interval: always for the same promise).
func (b *Bus) MarkDelay() time.Duration {
	if b.Embedded() {
		return EmbeddedSyncInterval + 500*time.Millisecond
	}
	return 0
}

// Embedded reports whether the bus runs its own server.
func (b *Bus) Embedded() bool { return b.URL == "" }

// JetStream returns the JetStream context, for tests and tools that look at
// the stream.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// DeleteStream removes the stream and everything in it; tests clean up the
// machine's NATS with it.
func (b *Bus) DeleteStream(ctx context.Context) error {
	return b.js.DeleteStream(ctx, b.Stream)
}

// Subject returns the subject of an event: prefix.<tenant id>.<type>, so a
// consumer may filter by tenant and by type with NATS wildcards.
func (b *Bus) Subject(ev *herd.Event) string {
	return b.SubjectPrefix + "." + strconv.FormatInt(ev.TenantID, 10) + "." + ev.Type
}

// Publish implements herd.EventBus: it publishes every event at once (each
// under its id as Nats-Msg-Id, so the stream drops one it stored within the
// window) and waits for all the acknowledgements. On one connection the
// stream stores them in the order sent. An error means some may be stored
// and some not: the caller publishes them all again, and the stream or the
// consumers drop the repeats.
func (b *Bus) Publish(ctx context.Context, evs []*herd.Event) (duplicates int, err error) {
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		data, err := json.Marshal(ev)
		if err != nil {
			return 0, fmt.Errorf("encode event %d: %w", ev.ID, err)
		}
		msg := &nats.Msg{Subject: b.Subject(ev), Data: data, Header: nats.Header{}}
		msg.Header.Set(HeaderSeq, strconv.FormatInt(ev.Seq, 10))
		f, err := b.js.PublishMsgAsync(msg, jetstream.WithMsgID(strconv.FormatInt(ev.ID, 10)), jetstream.WithExpectStream(b.Stream))
		if err != nil {
			return duplicates, fmt.Errorf("publish event %d: %w", ev.ID, err)
		}
		futures = append(futures, f)
	}
	timer := time.NewTimer(b.PublishTimeout)
	defer timer.Stop()
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				duplicates++
			}
		case err := <-f.Err():
			return duplicates, fmt.Errorf("publish event %d: %w", evs[i].ID, err)
		case <-timer.C:
			return duplicates, fmt.Errorf("publish event %d: no acknowledgement from the stream within %s", evs[i].ID, b.PublishTimeout)
		case <-ctx.Done():
			return duplicates, ctx.Err()
		}
	}
	return duplicates, nil
}

// HeaderSeq carries the event's tenant sequence number, so a consumer can
// see order without decoding the body.
const HeaderSeq = "Herd-Seq"

// redactURL hides the password of a nats:// URL in messages.
func RedactURL(u string) string {
	if u == "" {
		return "(embedded)"
	}
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "…@" + u[i+1:]
		}
	}
	return u
}

package natsbus_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/natsbus"
	"github.com/herd-iot/herd/sqldb"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// effectHandler is an idempotent consumer whose effect is a row per event;
// it counts the calls that applied something.
func effectHandler(t *testing.T, db *sqldb.DB, name string, applied *atomic.Int64) natsbus.Handler {
	if _, err := db.SQL().Exec(`CREATE TABLE IF NOT EXISTS effects (consumer TEXT NOT NULL, event_id BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, ev *herd.Event) (bool, error) {
		ok, err := db.ApplyOnce(ctx, name, ev.ID, func(ctx context.Context, tx *sqldb.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO effects (consumer, event_id) VALUES (?, ?)`, name, ev.ID)
			return err
		})
		if ok {
			applied.Add(1)
		}
		return ok, err
	}
}

func effectRows(t *testing.T, db *sqldb.DB, name string) int {
	var n int
	if err := db.SQL().QueryRow(db.Rebind(`SELECT COUNT(*) FROM effects WHERE consumer = ?`), name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// metricValue reads one labelled series from the bus's collectors.
func metricValue(t *testing.T, bus *natsbus.Bus, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(bus.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// publishRaw puts an event on the stream n times, each under an id of its
// own, as repeats past the duplicate window arrive.
func publishRaw(t *testing.T, bus *natsbus.Bus, ev *herd.Event, n int) {
	t.Helper()
	data, _ := json.Marshal(ev)
	for i := range n {
		msg := &nats.Msg{Subject: bus.Subject(ev), Data: data, Header: nats.Header{}}
		msg.Header.Set(nats.MsgIdHdr, strconv.FormatInt(ev.ID, 10)+"-"+strconv.Itoa(i))
		if _, err := bus.JetStream().PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsumer_SameEventManyTimesConcurrently: one event reaches the stream
// 20 times and three instances of the consumer take deliveries at once;
// its effect is applied once and the other 19 are counted as duplicates.
func TestConsumer_SameEventManyTimesConcurrently(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		testutil.RunWithBuses(t, func(t *testing.T, bus *natsbus.Bus) {
			const n = 20
			name := "many-" + bus.Stream // the store outlives this subtest
			ev := &herd.Event{ID: 7, TenantID: 1, Seq: 1, Type: "device.online", Payload: json.RawMessage(`{}`)}
			publishRaw(t, bus, ev, n)
			var applied atomic.Int64
			h := effectHandler(t, db, name, &applied)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for range 3 {
				go bus.Consume(ctx, natsbus.Consumer{Name: name, Handler: h})
			}
			testutil.WaitFor(t, 30*time.Second, "20 deliveries", func() bool {
				return metricValue(t, bus, "herd_consumer_messages_total", map[string]string{"consumer": name, "outcome": "duplicate"}) == n-1
			})
			if got := applied.Load(); got != 1 {
				t.Errorf("applied %d times, want 1", got)
			}
			if got := effectRows(t, db, name); got != 1 {
				t.Errorf("%d effect rows, want 1", got)
			}
			if got := metricValue(t, bus, "herd_dedupe_duplicates_total", map[string]string{"consumer": name}); got != n-1 {
				t.Errorf("herd_dedupe_duplicates_total %v, want %d", got, n-1)
			}
		})
	})
}

// TestConsumer_ReplayChangesNothing: a consumer that reads the whole stream
// again (its position reset, as a replay or a redrive does) applies nothing
// twice.
func TestConsumer_ReplayChangesNothing(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	bus := testutil.MustOpenBus(t, "embedded", nil)
	for id := range int64(50) {
		publishRaw(t, bus, &herd.Event{ID: id + 1, TenantID: 1, Seq: id + 1, Type: "device.online"}, 1)
	}
	var applied atomic.Int64
	h := effectHandler(t, db, "replay", &applied)
	run := func(what string, done func() bool) {
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			bus.Consume(ctx, natsbus.Consumer{Name: "replay", Handler: h})
		}()
		testutil.WaitFor(t, 30*time.Second, what, done)
		cancel()
		<-stopped
	}
	run("the first pass", func() bool { return applied.Load() == 50 })
	if err := bus.JetStream().DeleteConsumer(context.Background(), bus.Stream, "replay"); err != nil {
		t.Fatal(err)
	}
	run("the replay", func() bool {
		return metricValue(t, bus, "herd_dedupe_duplicates_total", map[string]string{"consumer": "replay"}) == 50
	})
	if applied.Load() != 50 || effectRows(t, db, "replay") != 50 {
		t.Fatalf("after a replay: applied %d, %d rows; want 50 and 50", applied.Load(), effectRows(t, db, "replay"))
	}
}

// TestConsumer_FailedEffectIsDeliveredAgain: an effect that fails is handed
// back and applied on a later delivery, counted as a redelivery.
func TestConsumer_FailedEffectIsDeliveredAgain(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	bus := testutil.MustOpenBus(t, "embedded", nil)
	publishRaw(t, bus, &herd.Event{ID: 1, TenantID: 1, Seq: 1, Type: "device.online"}, 1)
	var applied, calls atomic.Int64
	h := effectHandler(t, db, "flaky", &applied)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go bus.Consume(ctx, natsbus.Consumer{Name: "flaky", Handler: func(ctx context.Context, ev *herd.Event) (bool, error) {
		if calls.Add(1) <= 2 {
			return false, errors.New("store down")
		}
		return h(ctx, ev)
	}})
	testutil.WaitFor(t, 30*time.Second, "the third delivery", func() bool { return applied.Load() == 1 })
	if got := metricValue(t, bus, "herd_consumer_redeliveries_total", map[string]string{"consumer": "flaky"}); got != 2 {
		t.Errorf("redeliveries %v, want 2", got)
	}
	if got := metricValue(t, bus, "herd_consumer_messages_total", map[string]string{"consumer": "flaky", "outcome": "error"}); got != 2 {
		t.Errorf("errors %v, want 2", got)
	}
}

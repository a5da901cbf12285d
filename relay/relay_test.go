package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/natsbus"
	"github.com/herd-iot/herd/relay"
	"github.com/herd-iot/herd/sqldb"
	"github.com/nats-io/nats.go/jetstream"
)

// makeEvents creates tenants with devices through the services, as any
// writer of the store would, and returns each tenant with its event count.
func makeEvents(t *testing.T, db *sqldb.DB, tenants, devicesPerTenant int) map[int64]int64 {
	t.Helper()
	ctx := testutil.SuperContext()
	out := map[int64]int64{}
	for i := range tenants {
		tn := &herd.Tenant{Name: fmt.Sprintf("t%d", i)}
		if err := sqldb.NewTenantService(db).CreateTenant(ctx, tn); err != nil {
			t.Fatal(err)
		}
		ds := make([]*herd.Device, devicesPerTenant)
		for j := range ds {
			ds[j] = &herd.Device{NodeID: tn.RootNodeID, Key: fmt.Sprintf("relay-%d-%d-%d", tn.ID, j, time.Now().UnixNano())}
		}
		if len(ds) > 0 {
			if err := sqldb.NewDeviceService(db).CreateDevices(ctx, ds); err != nil {
				t.Fatal(err)
			}
		}
		evs, err := sqldb.NewOutboxService(db).OutboxEvents(context.Background(), tn.ID, 0, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		out[tn.ID] = int64(len(evs))
	}
	return out
}

// streamEvents reads the whole stream, in stream order.
func streamEvents(t *testing.T, bus *natsbus.Bus) []*herd.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := bus.JetStream()
	st, err := js.Stream(ctx, bus.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*herd.Event
	for len(out) < want {
		batch, err := cons.Fetch(min(want-len(out), 500), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			var ev herd.Event
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, &ev)
			n++
		}
		if n == 0 {
			t.Fatalf("stream holds %d messages, read %d", want, len(out))
		}
	}
	return out
}

// checkStream proves that the stream holds every event of every tenant,
// and that each tenant's events come in sequence order. It returns how
// many messages were repeats of an event already seen.
func checkStream(t *testing.T, bus *natsbus.Bus, want map[int64]int64) (repeats int) {
	t.Helper()
	seen := map[int64]bool{}
	last := map[int64]int64{}
	for _, ev := range streamEvents(t, bus) {
		if seen[ev.ID] {
			repeats++
			continue
		}
		seen[ev.ID] = true
		if ev.Seq != last[ev.TenantID]+1 {
			t.Fatalf("tenant %d: event seq %d follows %d in the stream", ev.TenantID, ev.Seq, last[ev.TenantID])
		}
		last[ev.TenantID] = ev.Seq
	}
	for tenant, n := range want {
		if last[tenant] != n {
			t.Errorf("tenant %d: stream holds its events up to seq %d, want %d", tenant, last[tenant], n)
		}
	}
	return repeats
}

func TestRelay_PublishesEveryEventInOrder(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		testutil.RunWithBuses(t, func(t *testing.T, bus *natsbus.Bus) {
			want := makeEvents(t, db, 3, 50)
			store := sqldb.NewOutboxService(db)
			r := relay.New(store, bus)
			r.Batch = 32 // several batches a tenant
			wake, unsub := db.EventsCommitted()
			defer unsub()
			r.Wake = wake
			r.Poll = time.Hour // only the wake-ups may move it
			stop := testutil.RunRelay(t, r)
			defer stop()
			testutil.WaitPublished(t, store)
			// A commit while the relay waits wakes it.
			more := makeEvents(t, db, 1, 3)
			testutil.WaitPublished(t, store)
			for k, v := range more {
				want[k] = v
			}
			if repeats := checkStream(t, bus, want); repeats != 0 {
				t.Errorf("%d repeats in the stream, want none", repeats)
			}
		})
	})
}

// TestRelay_CrashAfterCommit: events committed by a process that died
// before any relay ran are published by the next process's relay.
func TestRelay_CrashAfterCommit(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		want := makeEvents(t, db, 2, 20)
		reopened := sqldb.NewDB(db.DSN)
		if err := reopened.Open(); err != nil {
			t.Fatal(err)
		}
		defer reopened.Close()
		db.Close()
		bus := testutil.MustOpenBus(t, "embedded", nil)
		store := sqldb.NewOutboxService(reopened)
		stop := testutil.RunRelay(t, relay.New(store, bus))
		defer stop()
		testutil.WaitPublished(t, store)
		if repeats := checkStream(t, bus, want); repeats != 0 {
			t.Errorf("%d repeats, want none", repeats)
		}
	})
}

// crashingStore is the store of a relay that dies: once dead it writes
// nothing more, neither marks nor the release of its leases, as a killed
// process would not.
type crashingStore struct {
	herd.OutboxService
	dead atomic.Bool
}

func (s *crashingStore) MarkPublished(ctx context.Context, owner string, tenantID, seq int64, lease time.Duration) error {
	if s.dead.Load() {
		return errors.New("dead")
	}
	return s.OutboxService.MarkPublished(ctx, owner, tenantID, seq, lease)
}

func (s *crashingStore) ReleaseOutbox(context.Context, string) error { return nil }

// TestRelay_CrashBetweenPublishAndMark: a relay dies after the stream
// acknowledged a batch and before it marked it. Once its lease runs out,
// another relay publishes the batch again: inside the duplicate window the
// stream drops the repeats; past it they reach the stream, and a consumer
// that dedupes by event id applies every event once.
func TestRelay_CrashBetweenPublishAndMark(t *testing.T) {
	t.Parallel()
	for _, window := range []string{"inside", "past"} {
		t.Run(window+" the window", func(t *testing.T) {
			t.Parallel()
			testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
				const dupWindow = 300 * time.Millisecond
				bus := testutil.MustOpenBus(t, "embedded", func(b *natsbus.Bus) {
					if window == "past" {
						b.DuplicateWindow = dupWindow
					}
				})
				want := makeEvents(t, db, 1, 40)
				var total int64
				for _, n := range want {
					total += n
				}
				store := sqldb.NewOutboxService(db)

				crashing := &crashingStore{OutboxService: store}
				dying := relay.New(crashing, bus)
				dying.Batch, dying.Lease = 10, 500*time.Millisecond
				ctx, kill := context.WithCancel(context.Background())
				published := make(chan int, 1)
				relay.SetAfterPublish(dying, func(_ int64, evs []*herd.Event) {
					crashing.dead.Store(true) // the process dies here, before any mark
					kill()
					published <- len(evs)
				})
				dying.Run(ctx)
				lost := <-published
				if st, _ := store.OutboxStats(context.Background()); st.Pending != total {
					t.Fatalf("after the crash %d events pending, want all %d", st.Pending, total)
				}
				if window == "past" {
					time.Sleep(dupWindow + 100*time.Millisecond) // no signal says a window has passed
				}

				next := relay.New(store, bus)
				stop := testutil.RunRelay(t, next)
				testutil.WaitPublished(t, store)
				stop()
				repeats := checkStream(t, bus, want)
				dups := int(testutil.CounterValue(t, relay.Duplicates(next)))
				switch window {
				case "inside":
					if repeats != 0 || dups != lost {
						t.Errorf("stream repeats %d, stream-dropped duplicates %d; want 0 and %d", repeats, dups, lost)
					}
				case "past":
					if repeats != lost || dups != 0 {
						t.Errorf("stream repeats %d, stream-dropped duplicates %d; want %d and 0", repeats, dups, lost)
					}
				}

				// Once in effect: an idempotent consumer over the whole stream.
				effects := consumeAll(t, db, bus, "crash-test", total)
				if effects.applied != total || effects.duplicates != int64(repeats) {
					t.Errorf("consumer applied %d and skipped %d; want %d and %d", effects.applied, effects.duplicates, total, repeats)
				}
			})
		})
	}
}

type effects struct{ applied, duplicates int64 }

// consumeAll runs an idempotent consumer whose effect is a row per event,
// until it has applied want events, and checks that no event has two rows.
func consumeAll(t *testing.T, db *sqldb.DB, bus *natsbus.Bus, name string, want int64) effects {
	t.Helper()
	if _, err := db.SQL().Exec(`CREATE TABLE IF NOT EXISTS test_effects (consumer TEXT NOT NULL, event_id BIGINT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	var e effects
	var mu sync.Mutex
	done := make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info, err := bus.JetStream().Stream(ctx, bus.Stream)
	if err != nil {
		t.Fatal(err)
	}
	st, err := info.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	go bus.Consume(ctx, natsbus.Consumer{Name: name, Handler: func(ctx context.Context, ev *herd.Event) (bool, error) {
		applied, err := db.ApplyOnce(ctx, name, ev.ID, func(ctx context.Context, tx *sqldb.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO test_effects (consumer, event_id) VALUES (?, ?)`, name, ev.ID)
			return err
		})
		if err == nil {
			mu.Lock()
			if applied {
				e.applied++
			} else {
				e.duplicates++
			}
			mu.Unlock()
			if handled.Add(1) == int64(st.State.Msgs) {
				once.Do(func() { close(done) })
			}
		}
		return applied, err
	}})
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("consumer handled %d of %d messages", handled.Load(), st.State.Msgs)
	}
	var rows, distinct int64
	if err := db.SQL().QueryRow(db.Rebind(`SELECT COUNT(*), COUNT(DISTINCT event_id) FROM test_effects WHERE consumer = ?`), name).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != distinct || rows != want {
		t.Errorf("effects: %d rows for %d events, want one each for %d", rows, distinct, want)
	}
	mu.Lock()
	defer mu.Unlock()
	return e
}

// TestRelay_TwoRelaysOnPostgres: two relays over 10,000 events of several
// tenants split the tenants between them; every event reaches the stream,
// once in effect, each tenant's in order, also when one relay stops half way
// and the other takes its tenants over.
func TestRelay_TwoRelaysOnPostgres(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.Postgres)
	bus := testutil.MustOpenBus(t, "embedded", nil)
	want := makeEvents(t, db, 8, 1248) // 8 × (1,248 devices + 2) = 10,000 events
	var total int64
	for _, n := range want {
		total += n
	}
	if total != 10000 {
		t.Fatalf("made %d events, want 10,000", total)
	}
	store := sqldb.NewOutboxService(db)
	a, b := relay.New(store, bus), relay.New(store, bus)
	for _, r := range []*relay.Relay{a, b} {
		r.Batch, r.MaxTenants, r.Lease = 100, 4, 2*time.Second
	}
	var aBatches atomic.Int64
	aStopped := make(chan struct{})
	relay.SetAfterPublish(a, func(int64, []*herd.Event) {
		if aBatches.Add(1) == 20 {
			close(aStopped)
		}
	})
	stopA := testutil.RunRelay(t, a)
	stopB := testutil.RunRelay(t, b)
	<-aStopped
	stopA() // releases its tenants; b takes them over
	testutil.WaitPublished(t, store)
	stopB()
	pa := testutil.CounterValue(t, relay.Published(a))
	pb := testutil.CounterValue(t, relay.Published(b))
	if pa == 0 || pb == 0 {
		t.Errorf("relay a published %.0f, b %.0f: want both to work", pa, pb)
	}
	repeats := checkStream(t, bus, want)
	t.Logf("a published %.0f, b %.0f, stream repeats %d", pa, pb, repeats)
	effects := consumeAll(t, db, bus, "two-relays", total)
	if effects.applied != total {
		t.Errorf("applied %d, want %d", effects.applied, total)
	}
}

// TestRelay_MarkDelay: with a stream that writes to disk every so often, a
// relay marks a batch only once the stream has held it for MarkDelay, so a
// power cut cannot take back events the outbox counts as published.
func TestRelay_MarkDelay(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	bus := testutil.MustOpenBus(t, "embedded", nil)
	want := makeEvents(t, db, 1, 30)
	store := sqldb.NewOutboxService(db)
	r := relay.New(store, bus)
	r.MarkDelay = 2 * time.Second
	stop := testutil.RunRelay(t, r)
	defer stop()
	testutil.WaitFor(t, 30*time.Second, "the stream to hold every event", func() bool {
		return int64(len(streamEvents(t, bus))) == want[firstKey(want)]
	})
	if st, _ := store.OutboxStats(context.Background()); st.Pending != want[firstKey(want)] {
		t.Fatalf("%d pending right after the stream acknowledged them all, want all %d: marked before the delay", st.Pending, want[firstKey(want)])
	}
	testutil.WaitPublished(t, store)
}

func firstKey(m map[int64]int64) int64 {
	for k := range m {
		return k
	}
	return 0
}

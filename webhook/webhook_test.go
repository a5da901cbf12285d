package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
	"github.com/herd-iot/herd/webhook"
)

// pipeline is the whole path of an event: store, relay, embedded NATS, the
// webhook consumer and a dispatcher, with a tenant to make events in.
type pipeline struct {
	db     *sqldb.DB
	hooks  *sqldb.WebhookService
	disp   *webhook.Dispatcher
	tenant *herd.Tenant
	super  context.Context
}

func newPipeline(t *testing.T, db *sqldb.DB, configure func(*webhook.Dispatcher)) *pipeline {
	t.Helper()
	bus := testutil.MustOpenBus(t, "embedded", nil)
	p := &pipeline{db: db, hooks: sqldb.NewWebhookService(db), super: testutil.SuperContext()}
	p.tenant = &herd.Tenant{Name: "acme"}
	if err := sqldb.NewTenantService(db).CreateTenant(p.super, p.tenant); err != nil {
		t.Fatal(err)
	}
	testutil.StartRelay(t, db, bus)
	p.disp = webhook.NewDispatcher(p.hooks)
	p.disp.RetryBase, p.disp.RetryCap, p.disp.Poll = 5*time.Millisecond, 20*time.Millisecond, 20*time.Millisecond
	if configure != nil {
		configure(p.disp)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.disp.Run(ctx) })
	wg.Go(func() { bus.Consume(ctx, webhook.Consumer(p.hooks, p.disp)) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return p
}

func (p *pipeline) subscribe(t *testing.T, nodeID int64, url string, types ...string) *herd.Webhook {
	t.Helper()
	w := &herd.Webhook{NodeID: nodeID, URL: url, EventTypes: types}
	if err := p.hooks.CreateWebhook(p.super, w); err != nil {
		t.Fatal(err)
	}
	if w.Secret == "" {
		t.Fatal("no secret in the create answer")
	}
	return w
}

func (p *pipeline) device(t *testing.T, nodeID int64) *herd.Device {
	t.Helper()
	d := &herd.Device{NodeID: nodeID, Key: fmt.Sprintf("wh-%d", time.Now().UnixNano())}
	if err := sqldb.NewDeviceService(p.db).CreateDevices(p.super, []*herd.Device{d}); err != nil {
		t.Fatal(err)
	}
	return d
}

// request is what a receiver got.
type request struct {
	header http.Header
	body   []byte
	event  herd.Event
}

// receiver answers with the statuses given, in turn (the last one for
// ever after), and hands each request it got to the test.
func receiver(t *testing.T, statuses ...int) (*httptest.Server, <-chan request) {
	ch := make(chan request, 100)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev herd.Event
		json.Unmarshal(body, &ev)
		ch <- request{header: r.Header.Clone(), body: body, event: ev}
		i := min(int(n.Add(1))-1, len(statuses)-1)
		w.WriteHeader(statuses[i])
	}))
	t.Cleanup(srv.Close)
	return srv, ch
}

func next(t *testing.T, ch <-chan request) request {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery within 30s")
	}
	return request{}
}

func deliveries(t *testing.T, p *pipeline, w *herd.Webhook, status string) []*herd.WebhookDelivery {
	t.Helper()
	ds, err := p.hooks.FindDeliveries(p.super, w.ID, status, 100)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// TestWebhook_RetriedUntilSuccess: a receiver that answers 500, 500, then
// 200 sees three attempts of the same event, numbered and signed, and one
// success is recorded.
func TestWebhook_RetriedUntilSuccess(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		p := newPipeline(t, db, nil)
		srv, got := receiver(t, 500, 500, 200)
		w := p.subscribe(t, p.tenant.RootNodeID, srv.URL, "device.created")
		d := p.device(t, p.tenant.RootNodeID)
		wantReasons := []string{"none", "http_500", "http_500"}
		var eventID string
		for i := range 3 {
			r := next(t, got)
			if r.event.Type != herd.EventDeviceCreated || r.event.SubjectID != d.ID {
				t.Fatalf("attempt %d delivered %s of %d, want device.created of %d", i, r.event.Type, r.event.SubjectID, d.ID)
			}
			id := r.header.Get(herd.HeaderWebhookEventID)
			if i == 0 {
				eventID = id
			} else if id != eventID {
				t.Fatalf("attempt %d has event id %s, the first had %s", i, id, eventID)
			}
			if id != strconv.FormatInt(r.event.ID, 10) {
				t.Fatalf("Herd-Event-Id %s, body's id %d", id, r.event.ID)
			}
			if n, reason := r.header.Get(herd.HeaderWebhookRetryNum), r.header.Get(herd.HeaderWebhookRetryReason); n != strconv.Itoa(i) || reason != wantReasons[i] {
				t.Fatalf("attempt %d: Herd-Retry-Num %q, reason %q; want %d, %q", i, n, reason, i, wantReasons[i])
			}
			if err := httpapi.VerifyWebhook(w.Secret, r.header, r.body, time.Now()); err != nil {
				t.Fatalf("attempt %d: %v", i, err)
			}
		}
		testutil.WaitFor(t, 30*time.Second, "the success to be recorded", func() bool {
			return len(deliveries(t, p, w, herd.DeliveryDelivered)) == 1
		})
		ds := deliveries(t, p, w, "")
		if len(ds) != 1 || ds[0].Attempts != 3 || ds[0].LastStatus != 200 || ds[0].DeliveredAt == nil {
			t.Fatalf("deliveries %+v; want one, delivered on its third attempt", ds[0])
		}
		select {
		case r := <-got:
			t.Fatalf("a fourth attempt: %s", r.header)
		default:
		}
	})
}

// TestWebhook_SlowReceiver: a receiver that does the work but answers
// only after the sender's timeout (3 s) is sent the event again, as retry 1 for a timeout; deduplicating
// by Herd-Event-Id, it applies the event once.
func TestWebhook_SlowReceiver(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	p := newPipeline(t, db, nil) // the default 3 s timeout
	var mu sync.Mutex
	applied := map[string]int{}
	attempts := make(chan http.Header, 10)
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(herd.HeaderWebhookEventID)
		mu.Lock()
		if applied[id] == 0 { // the receiver's own dedupe
			applied[id]++
		}
		mu.Unlock()
		attempts <- r.Header.Clone()
		if calls.Add(1) == 1 {
			// The work is done; the answer comes after the sender gave up.
			// (The server notices a closed connection only once the body
			// has been read.)
			io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		}
	}))
	defer srv.Close()
	p.subscribe(t, p.tenant.RootNodeID, srv.URL, "device.*")
	p.device(t, p.tenant.RootNodeID)
	next := func() http.Header {
		select {
		case h := <-attempts:
			return h
		case <-time.After(30 * time.Second):
			t.Fatal("no delivery attempt within 30 s")
			return nil
		}
	}
	first, retry := next(), next()
	if first.Get(herd.HeaderWebhookRetryNum) != "0" || retry.Get(herd.HeaderWebhookRetryNum) != "1" || retry.Get(herd.HeaderWebhookRetryReason) != "timeout" {
		t.Fatalf("retry headers: num %q reason %q, want 1 and timeout", retry.Get(herd.HeaderWebhookRetryNum), retry.Get(herd.HeaderWebhookRetryReason))
	}
	if first.Get(herd.HeaderWebhookEventID) != retry.Get(herd.HeaderWebhookEventID) {
		t.Fatal("the retry carries another event id")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 1 || applied[first.Get(herd.HeaderWebhookEventID)] != 1 {
		t.Fatalf("applied %v, want the event once", applied)
	}
}

// TestWebhook_GoneDisables: 410 disables the subscription, with an event,
// and nothing more is sent to it.
func TestWebhook_GoneDisables(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		p := newPipeline(t, db, nil)
		srv, got := receiver(t, http.StatusGone)
		w := p.subscribe(t, p.tenant.RootNodeID, srv.URL, "device.created")
		p.device(t, p.tenant.RootNodeID)
		next(t, got)
		testutil.WaitFor(t, 30*time.Second, "the subscription to be disabled", func() bool {
			wh, err := p.hooks.FindWebhookByID(p.super, w.ID)
			return err == nil && wh.Status == herd.WebhookDisabled
		})
		evs, _ := sqldb.NewOutboxService(db).OutboxEvents(context.Background(), p.tenant.ID, 0, 1000)
		if last := evs[len(evs)-1]; last.Type != herd.EventWebhookDisabled || last.SubjectID != w.ID {
			t.Fatalf("last event %s of %d, want webhook.disabled of %d", last.Type, last.SubjectID, w.ID)
		}
		p.device(t, p.tenant.RootNodeID)
		// The second device's event reaches the consumer after the
		// webhook.disabled one; once both are through, nothing was sent.
		sentinel, sentinelGot := receiver(t, 200)
		p.subscribe(t, p.tenant.RootNodeID, sentinel.URL, "device.created")
		p.device(t, p.tenant.RootNodeID)
		next(t, sentinelGot)
		select {
		case r := <-got:
			t.Fatalf("a disabled subscription got %s", r.event.Type)
		default:
		}
	})
}

// TestWebhook_DeadLetterAndRedrive: a delivery out of retries goes to the
// dead-letter list; a redrive sends it again.
func TestWebhook_DeadLetterAndRedrive(t *testing.T) {
	t.Parallel()
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		p := newPipeline(t, db, func(d *webhook.Dispatcher) { d.RetryFor = 50 * time.Millisecond })
		srv, got := receiver(t, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 200)
		w := p.subscribe(t, p.tenant.RootNodeID, srv.URL, "device.created")
		p.device(t, p.tenant.RootNodeID)
		testutil.WaitFor(t, 30*time.Second, "the delivery to die", func() bool {
			return len(deliveries(t, p, w, herd.DeliveryDead)) == 1
		})
		dead := deliveries(t, p, w, herd.DeliveryDead)[0]
		if dead.LastStatus != 503 || dead.LastReason != "http_503" || dead.Attempts < 1 {
			t.Fatalf("dead letter %+v", dead)
		}
		for len(got) > 0 {
			<-got
		}
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
		n, err := p.hooks.RedriveWebhook(p.super, w.ID)
		if err != nil || n != 1 {
			t.Fatalf("redrive: %d, %v", n, err)
		}
		testutil.WaitFor(t, 30*time.Second, "the redriven delivery", func() bool {
			return len(deliveries(t, p, w, herd.DeliveryDelivered)) == 1
		})
	})
}

// TestWebhook_DisabledAfterSustainedFailure: a subscription whose every
// attempt fails for the disable period is disabled, and its waiting
// deliveries go to the dead-letter list.
func TestWebhook_DisabledAfterSustainedFailure(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	p := newPipeline(t, db, func(d *webhook.Dispatcher) { d.DisableAfter = 100 * time.Millisecond })
	srv, _ := receiver(t, 500)
	w := p.subscribe(t, p.tenant.RootNodeID, srv.URL, "device.created")
	p.device(t, p.tenant.RootNodeID)
	p.device(t, p.tenant.RootNodeID)
	testutil.WaitFor(t, 30*time.Second, "the subscription to be disabled", func() bool {
		wh, err := p.hooks.FindWebhookByID(p.super, w.ID)
		return err == nil && wh.Status == herd.WebhookDisabled
	})
	if ds := deliveries(t, p, w, herd.DeliveryDead); len(ds) != 2 {
		t.Fatalf("%d dead letters, want both deliveries", len(ds))
	}
}

// TestWebhook_Scope: a subscription gets the events of its types under its
// node, and no others.
func TestWebhook_Scope(t *testing.T) {
	t.Parallel()
	db := testutil.MustOpenDB(t, sqldb.SQLite)
	p := newPipeline(t, db, nil)
	nodes := sqldb.NewNodeService(db)
	a := &herd.Node{ParentID: p.tenant.RootNodeID, Kind: "site", Name: "a"}
	b := &herd.Node{ParentID: p.tenant.RootNodeID, Kind: "site", Name: "b"}
	for _, n := range []*herd.Node{a, b} {
		if err := nodes.CreateNode(p.super, n); err != nil {
			t.Fatal(err)
		}
	}
	srvA, gotA := receiver(t, 200)
	srvAll, gotAll := receiver(t, 200)
	p.subscribe(t, a.ID, srvA.URL, "device.*")
	p.subscribe(t, p.tenant.RootNodeID, srvAll.URL, "device.created")
	p.device(t, b.ID)
	inA := p.device(t, a.ID)
	// The root subscription sees both (deliveries run in parallel: in no
	// promised order); a's only its own.
	paths := map[string]bool{next(t, gotAll).event.Path: true, next(t, gotAll).event.Path: true}
	if !paths[a.Path] || !paths[b.Path] {
		t.Fatalf("root subscription got %v, want %s and %s", paths, a.Path, b.Path)
	}
	if r := next(t, gotA); r.event.SubjectID != inA.ID {
		t.Fatalf("a's subscription got device %d, want %d", r.event.SubjectID, inA.ID)
	}
	select {
	case r := <-gotA:
		t.Fatalf("a's subscription also got %s of %d", r.event.Type, r.event.SubjectID)
	default:
	}
}

func TestWebhook_Validate(t *testing.T) {
	for _, tt := range []struct {
		name string
		w    herd.Webhook
		ok   bool
	}{
		{"ok", herd.Webhook{URL: "https://example.com/h", EventTypes: []string{"device.online", "node.*", "*"}, NodeID: 1}, true},
		{"ftp", herd.Webhook{URL: "ftp://example.com", EventTypes: []string{"*"}, NodeID: 1}, false},
		{"relative", herd.Webhook{URL: "/hook", EventTypes: []string{"*"}, NodeID: 1}, false},
		{"credentials", herd.Webhook{URL: "https://u:p@example.com", EventTypes: []string{"*"}, NodeID: 1}, false},
		{"no types", herd.Webhook{URL: "https://example.com", NodeID: 1}, false},
		{"bad type", herd.Webhook{URL: "https://example.com", EventTypes: []string{"Device Online"}, NodeID: 1}, false},
		{"star inside", herd.Webhook{URL: "https://example.com", EventTypes: []string{"device.*.x"}, NodeID: 1}, false},
		{"no node", herd.Webhook{URL: "https://example.com", EventTypes: []string{"*"}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.w.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok %v", err, tt.ok)
			}
			if err != nil && herd.ErrorCode(err) != herd.EINVALID {
				t.Fatalf("code %s", herd.ErrorCode(err))
			}
		})
	}
}

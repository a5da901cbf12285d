package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/natsbus"
	"github.com/herd-iot/herd/relay"
	"github.com/herd-iot/herd/sqldb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RelayConfig configures the relay scenario: events committed to the
// outbox, then published to JetStream by herd's relay, against a relay
// that moves one row per transaction with a synchronous publish (the shape
// of a polling SQL subscriber).
type RelayConfig struct {
	// Stores are SQLite paths (a fresh file in Dir when empty) or
	// postgres:// URLs whose search_path names a schema starting with
	// "herd_", which the run drops and makes again.
	Stores []string
	Dir    string
	// NATSURL is an external NATS server; empty runs an embedded one.
	NATSURL string
	// Events is how many events herd's relay publishes; Tenants spreads
	// them.
	Events, Tenants int
	// BaselineFor is how long the baseline runs.
	BaselineFor time.Duration
	Out         io.Writer
}

// RelayResult is one store's figures.
type RelayResult struct {
	Store          string
	Events         int
	Elapsed        time.Duration
	Rate           float64 // herd, events/s from commit to JetStream ack
	BaselineEvents int
	BaselineRate   float64
	StreamMessages uint64
}

// RunRelay runs the scenario on each store.
func RunRelay(ctx context.Context, cfg RelayConfig) ([]RelayResult, error) {
	var out []RelayResult
	for _, store := range cfg.Stores {
		r, err := relayCell(ctx, cfg, store)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// freshStore returns a DSN for an empty store: a new SQLite file in dir,
// or the PostgreSQL schema of the URL dropped and made again.
func freshStore(ctx context.Context, store, dir, name string) (string, string, error) {
	if !sqldb.IsPostgresDSN(store) {
		if store == "" {
			store = filepath.Join(dir, fmt.Sprintf("%s-%d.db", name, time.Now().UnixNano()))
		}
		return store, "sqlite", nil
	}
	u, err := url.Parse(store)
	if err != nil {
		return "", "", err
	}
	schema := u.Query().Get("search_path")
	if !strings.HasPrefix(schema, "herd_") || strings.ContainsAny(schema, `"; `) {
		return "", "", fmt.Errorf("the PostgreSQL URL needs search_path=herd_<name>: a schema of the benchmark's own, which it drops and makes again")
	}
	admin, err := sql.Open("pgx", store)
	if err != nil {
		return "", "", err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE; CREATE SCHEMA `+schema); err != nil {
		return "", "", fmt.Errorf("reset schema %s: %w", schema, err)
	}
	return store, "postgres", nil
}

func relayCell(ctx context.Context, cfg RelayConfig, store string) (RelayResult, error) {
	dsn, kind, err := freshStore(ctx, store, cfg.Dir, "relay")
	if err != nil {
		return RelayResult{}, err
	}
	res := RelayResult{Store: kind}
	db := sqldb.NewDB(dsn)
	db.StateCache.MinTenantDevices = 0
	if err := db.Open(); err != nil {
		return res, err
	}
	defer db.Close()
	natsDir, err := os.MkdirTemp("", "herd-bench-nats-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(natsDir)
	bus := natsbus.NewBus(cfg.NATSURL, natsDir)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	bus.Stream, bus.SubjectPrefix = "HERD_BENCH_"+strings.ToUpper(run), "herdbench."+run
	if err := bus.Open(ctx); err != nil {
		return res, err
	}
	defer func() {
		bus.DeleteStream(context.Background())
		bus.Close()
	}()

	fmt.Fprintf(cfg.Out, "relay %s: committing %d events in %d tenants\n", kind, cfg.Events, cfg.Tenants)
	if err := commitEvents(ctx, db, cfg.Events, cfg.Tenants); err != nil {
		return res, err
	}
	outbox := sqldb.NewOutboxService(db)
	st, err := outbox.OutboxStats(ctx)
	if err != nil {
		return res, err
	}
	res.Events = int(st.Pending)

	// herd's relay, from a standing start over the whole outbox.
	r := relay.New(outbox, bus)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		r.Run(rctx)
	}()
	for {
		st, err := outbox.OutboxStats(ctx)
		if err != nil {
			stop()
			return res, err
		}
		if st.Pending == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond) // a poll: the outbox gives no signal when it is empty
	}
	res.Elapsed = time.Since(start)
	stop()
	<-done
	res.Rate = float64(res.Events) / res.Elapsed.Seconds()
	info, err := bus.JetStream().Stream(ctx, bus.Stream)
	if err != nil {
		return res, err
	}
	si, err := info.Info(ctx)
	if err != nil {
		return res, err
	}
	res.StreamMessages = si.State.Msgs
	fmt.Fprintf(cfg.Out, "relay %s: herd published %d events in %s: %.0f/s (stream holds %d)\n", kind, res.Events, res.Elapsed.Round(time.Millisecond), res.Rate, res.StreamMessages)

	// The baseline, on the same store and bus, from the start of the same
	// events, into a stream of its own.
	res.BaselineEvents, err = rowAtATime(ctx, db, bus, "herdbase."+run, cfg.BaselineFor)
	if err != nil {
		return res, err
	}
	res.BaselineRate = float64(res.BaselineEvents) / cfg.BaselineFor.Seconds()
	fmt.Fprintf(cfg.Out, "relay %s: row-at-a-time baseline published %d in %s: %.0f/s\n", kind, res.BaselineEvents, cfg.BaselineFor, res.BaselineRate)
	return res, nil
}

// commitEvents commits about n events through the device service, in
// batches of a transaction each, spread over tenants.
func commitEvents(ctx context.Context, db *sqldb.DB, n, tenants int) error {
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	var roots []int64
	for i := range tenants {
		t := &herd.Tenant{Name: fmt.Sprintf("bench-relay-%d", i)}
		if err := sqldb.NewTenantService(db).CreateTenant(super, t); err != nil {
			return err
		}
		roots = append(roots, t.RootNodeID)
	}
	devices := sqldb.NewDeviceService(db)
	const batch = 1000
	for made := 2 * tenants; made < n; made += batch {
		ds := make([]*herd.Device, min(batch, n-made))
		for i := range ds {
			ds[i] = &herd.Device{NodeID: roots[(made/batch)%tenants], Key: fmt.Sprintf("relay-%d-%d", made, i)}
		}
		if err := devices.CreateDevices(super, ds); err != nil {
			return err
		}
	}
	return nil
}

// rowAtATime is the baseline relay: per event, one transaction that reads
// the next unpublished row, publishes it and waits for the stream's ack,
// then moves its cursor. It runs for d and returns how many it published.
func rowAtATime(ctx context.Context, db *sqldb.DB, bus *natsbus.Bus, subject string, d time.Duration) (int, error) {
	js := bus.JetStream()
	name := "HERD_BASE_" + strings.ToUpper(strings.TrimPrefix(subject, "herdbase."))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject + ".>"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), name)
	conn := db.SQL()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE bench_cursor (id BIGINT NOT NULL)`); err != nil {
		return 0, err
	}
	defer conn.ExecContext(context.Background(), `DROP TABLE bench_cursor`)
	if _, err := conn.ExecContext(ctx, `INSERT INTO bench_cursor (id) VALUES (0)`); err != nil {
		return 0, err
	}
	pgLock := ""
	if db.Dialect() == sqldb.Postgres {
		pgLock = " FOR UPDATE"
	}
	end := time.Now().Add(d)
	n := 0
	for time.Now().Before(end) {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return n, err
		}
		var cursor int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM bench_cursor`+pgLock).Scan(&cursor); err != nil {
			tx.Rollback()
			return n, err
		}
		var id, tenant int64
		var typ, payload string
		err = tx.QueryRowContext(ctx, db.Rebind(`SELECT id, tenant_id, type, payload FROM events WHERE id > ? ORDER BY id LIMIT 1`), cursor).Scan(&id, &tenant, &typ, &payload)
		if err == sql.ErrNoRows {
			tx.Rollback()
			break
		} else if err != nil {
			tx.Rollback()
			return n, err
		}
		msg := &nats.Msg{Subject: subject + "." + strconv.FormatInt(tenant, 10) + "." + typ, Data: []byte(payload)}
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(strconv.FormatInt(id, 10))); err != nil {
			tx.Rollback()
			return n, err
		}
		if _, err := tx.ExecContext(ctx, db.Rebind(`UPDATE bench_cursor SET id = ?`), id); err != nil {
			tx.Rollback()
			return n, err
		}
		if err := tx.Commit(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// RelayMarkdown formats the results.
func RelayMarkdown(rs []RelayResult) string {
	var b strings.Builder
	b.WriteString("| store | events | herd relay | events/s | row-at-a-time baseline events/s | herd ÷ baseline |\n|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		ratio := 0.0
		if r.BaselineRate > 0 {
			ratio = r.Rate / r.BaselineRate
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %.0f | %.0f | %.0f× |\n", r.Store, r.Events, r.Elapsed.Round(time.Millisecond), r.Rate, r.BaselineRate, ratio)
	}
	return b.String()
}

// WebhookConfig configures the webhook latency scenario: herd serve in a
// child process, one subscription to every device.created event, a
// receiver in this process, and an open-loop writer creating devices
// through the API at Rate a second.
type WebhookConfig struct {
	Herd     string
	Stores   []string
	Dir      string
	Rate     float64
	Duration time.Duration
	// Tenants share the load, each with a subscription.
	Tenants int
	Out     io.Writer
}

// WebhookResult is one store's figures.
type WebhookResult struct {
	Store              string
	Offered, Committed int
	Delivered          int
	Rate               float64 // committed a second
	P50, P99, Max      time.Duration
}

// RunWebhook runs the scenario on each store.
func RunWebhook(ctx context.Context, cfg WebhookConfig) ([]WebhookResult, error) {
	var out []WebhookResult
	for _, store := range cfg.Stores {
		r, err := webhookCell(ctx, cfg, store)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

const benchAdminToken = "herd_bench_admin_token_0123456789abcdef"

func webhookCell(ctx context.Context, cfg WebhookConfig, store string) (WebhookResult, error) {
	dsn, kind, err := freshStore(ctx, store, cfg.Dir, "webhook")
	if err != nil {
		return WebhookResult{}, err
	}
	res := WebhookResult{Store: kind}

	// The receiver: the arrival time of each device's event.
	var mu sync.Mutex
	arrived := map[int64]time.Time{}
	var dupes atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		var ev herd.Event
		if json.Unmarshal(body, &ev) == nil {
			mu.Lock()
			if _, ok := arrived[ev.SubjectID]; ok {
				dupes.Add(1)
			} else {
				arrived[ev.SubjectID] = now
			}
			mu.Unlock()
		}
	})}
	go recv.Serve(ln)
	defer recv.Close()

	srv, err := startServer(ctx, cfg.Herd, dsn)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	c := httpapi.NewClient(srv.url, benchAdminToken)
	// Several tenants, each with its subscription: one tenant's writes
	// are serialised by its event sequence, and on PostgreSQL that alone
	// holds one tenant below 1,000 commits a second on this machine.
	var roots []int64
	for i := range cfg.Tenants {
		ten := &herd.Tenant{Name: fmt.Sprintf("bench-webhook-%d", i)}
		if err := c.CreateTenant(ctx, ten); err != nil {
			return res, err
		}
		if err := c.CreateWebhook(ctx, &herd.Webhook{NodeID: ten.RootNodeID, URL: "http://" + ln.Addr().String() + "/hook", EventTypes: []string{herd.EventDeviceCreated}}); err != nil {
			return res, err
		}
		roots = append(roots, ten.RootNodeID)
	}

	m0, err := scrape(srv.url + "/metrics")
	if err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "webhook %s: creating devices at %.0f/s for %s\n", kind, cfg.Rate, cfg.Duration)
	committed := map[int64]time.Time{}
	var cmu sync.Mutex
	var failed atomic.Int64
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now()
	for i := 0; time.Since(start) < cfg.Duration; i++ {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		res.Offered++
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			d := &herd.Device{NodeID: roots[i%len(roots)], Key: fmt.Sprintf("wh-%d", i)}
			if err := c.CreateDevice(ctx, d); err != nil {
				failed.Add(1)
				return
			}
			now := time.Now()
			cmu.Lock()
			committed[d.ID] = now
			cmu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Committed = len(committed)
	res.Rate = float64(res.Committed) / elapsed.Seconds()
	// Wait for the stragglers (at most 30 s) before counting.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(arrived)
		mu.Unlock()
		if n >= res.Committed {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m1, err := scrape(srv.url + "/metrics"); err == nil {
		// herd's own view of the stages, to see where the time goes.
		fmt.Fprintf(cfg.Out, "webhook %s: herd's p99: commit → stream ack %s; commit → delivered %s; HTTP request %s\n", kind,
			fmtBound(histQuantile(m0, m1, "herd_relay_commit_to_ack_seconds", 0.99)),
			fmtBound(histQuantile(m0, m1, "herd_webhook_commit_to_delivered_seconds", 0.99)),
			fmtBound(histQuantile(m0, m1, "herd_http_request_duration_seconds", 0.99)))
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for id, at := range committed {
		if got, ok := arrived[id]; ok {
			lat = append(lat, max(got.Sub(at), 0))
		}
	}
	res.Delivered = len(lat)
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50, res.P99, res.Max = percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1]
	}
	fmt.Fprintf(cfg.Out, "webhook %s: %d committed (%d failed), %d delivered, %d repeats; p50 %s p99 %s max %s\n",
		kind, res.Committed, failed.Load(), res.Delivered, dupes.Load(), fmtDur(res.P50), fmtDur(res.P99), fmtDur(res.Max))
	if res.Delivered < res.Committed {
		return res, fmt.Errorf("webhook %s: %d events committed, %d delivered within 30 s", kind, res.Committed, res.Delivered)
	}
	return res, nil
}

// WebhookMarkdown formats the results.
func WebhookMarkdown(rs []WebhookResult) string {
	var b strings.Builder
	b.WriteString("| store | offered/s | committed | delivered | commit → delivered p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.0f | %d | %d | %s | %s | %s |\n", r.Store, r.Rate, r.Committed, r.Delivered, fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.Max))
	}
	return b.String()
}

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
	Marked         time.Duration
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

	// herd's relay, from a standing start over the whole outbox, holding
	// its marks as herd serve does on this bus (past the embedded
	// server's sync to disk).
	r := relay.New(outbox, bus)
	r.MarkDelay = bus.MarkDelay()
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		r.Run(rctx)
	}()
	js, err := bus.JetStream().Stream(ctx, bus.Stream)
	if err != nil {
		stop()
		return res, err
	}
	for res.Elapsed == 0 || res.Marked == 0 {
		// Polls: neither the stream nor the outbox announces it is done.
		time.Sleep(5 * time.Millisecond)
		if res.Elapsed == 0 {
			si, err := js.Info(ctx)
			if err != nil {
				stop()
				return res, err
			}
			if si.State.Msgs >= uint64(res.Events) {
				res.Elapsed = time.Since(start)
			}
		}
		st, err := outbox.OutboxStats(ctx)
		if err != nil {
			stop()
			return res, err
		}
		if st.Pending == 0 {
			res.Marked = time.Since(start)
		}
	}
	stop()
	<-done
	res.Rate = float64(res.Events) / res.Elapsed.Seconds()
	si, err := js.Info(ctx)
	if err != nil {
		return res, err
	}
	res.StreamMessages = si.State.Msgs
	fmt.Fprintf(cfg.Out, "relay %s: herd published %d events in %s: %.0f/s (stream holds %d; all marked after %s, marks held %s)\n",
		kind, res.Events, res.Elapsed.Round(time.Millisecond), res.Rate, res.StreamMessages, res.Marked.Round(time.Millisecond), r.MarkDelay)

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
	b.WriteString("| store | events | herd: all acked by the stream | events/s | all marked | row-at-a-time baseline events/s | herd ÷ baseline |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		ratio := 0.0
		if r.BaselineRate > 0 {
			ratio = r.Rate / r.BaselineRate
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %.0f | %s | %.0f | %.0f× |\n", r.Store, r.Events, r.Elapsed.Round(time.Millisecond), r.Rate, r.Marked.Round(time.Millisecond), r.BaselineRate, ratio)
	}
	return b.String()
}

// WebhookConfig configures the webhook latency scenario: herd serve in a
// child process, one subscription to its tenant's device.reported events,
// a receiver in this process, and devices reporting events over MQTT (QoS
// 1) at Rate a second in all. An event's latency runs from its PUBACK
// (herd acknowledges a publish only once it is committed) to its arrival
// at the receiver.
type WebhookConfig struct {
	Herd     string
	Stores   []string
	Dir      string
	Rate     float64
	Duration time.Duration
	// Devices share the rate.
	Devices int
	Out     io.Writer
}

// WebhookResult is one store's figures.
type WebhookResult struct {
	Store                string
	Committed, Delivered int
	Repeats              int64
	Rate                 float64 // committed a second
	P50, P99, Max        time.Duration
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

// eventKey names one reported event: the device and its number.
type eventKey struct {
	key string
	n   int64
}

func webhookCell(ctx context.Context, cfg WebhookConfig, store string) (WebhookResult, error) {
	dsn, kind, err := freshStore(ctx, store, cfg.Dir, "webhook")
	if err != nil {
		return WebhookResult{}, err
	}
	res := WebhookResult{Store: kind}
	db, ten, devices, err := provisionFleet(ctx, dsn, cfg.Devices)
	if err != nil {
		return res, err
	}
	db.Close()

	// The receiver: the arrival time of each event.
	var mu sync.Mutex
	arrived := map[eventKey]time.Time{}
	var repeats atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		var ev struct {
			Payload struct {
				Key  string `json:"key"`
				Data struct {
					N int64 `json:"n"`
				} `json:"data"`
			} `json:"payload"`
		}
		if json.Unmarshal(body, &ev) == nil {
			k := eventKey{ev.Payload.Key, ev.Payload.Data.N}
			mu.Lock()
			if _, ok := arrived[k]; ok {
				repeats.Add(1)
			} else {
				arrived[k] = now
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
	if err := c.CreateWebhook(ctx, &herd.Webhook{NodeID: ten.RootNodeID, URL: "http://" + ln.Addr().String() + "/hook", EventTypes: []string{herd.EventDeviceReported}}); err != nil {
		return res, err
	}
	m0, err := scrape(srv.url + "/metrics")
	if err != nil {
		return res, err
	}

	fmt.Fprintf(cfg.Out, "webhook %s: %d devices reporting %.0f events/s in all for %s\n", kind, len(devices), cfg.Rate, cfg.Duration)
	var cmu sync.Mutex
	committed := map[eventKey]time.Time{}
	lctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(devices))
	start := time.Now()
	for i, dev := range devices {
		dev.topic = "devices/" + dev.key + "/events"
		wg.Go(func() {
			err := reportEvents(lctx, srv.mqtt, dev, cfg.Rate/float64(len(devices)), time.Duration(i)*time.Second/time.Duration(len(devices)), func(n int64, at time.Time) {
				cmu.Lock()
				committed[eventKey{dev.key, n}] = at
				cmu.Unlock()
			})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
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
		time.Sleep(20 * time.Millisecond) // a poll: deliveries announce nothing
	}
	if m1, err := scrape(srv.url + "/metrics"); err == nil {
		// herd's own view of the stages, to see where the time goes.
		fmt.Fprintf(cfg.Out, "webhook %s: herd's p99 (histogram bucket): commit → stream ack %s; commit → delivered %s\n", kind,
			fmtBound(histQuantile(m0, m1, "herd_relay_commit_to_ack_seconds", 0.99)),
			fmtBound(histQuantile(m0, m1, "herd_webhook_commit_to_delivered_seconds", 0.99)))
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	for k, at := range committed {
		if got, ok := arrived[k]; ok {
			lat = append(lat, max(got.Sub(at), 0))
		}
	}
	res.Delivered, res.Repeats = len(lat), repeats.Load()
	slices.Sort(lat)
	if len(lat) > 0 {
		res.P50, res.P99, res.Max = percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1]
	}
	fmt.Fprintf(cfg.Out, "webhook %s: %d committed (%.0f/s), %d delivered, %d repeats; p50 %s p99 %s max %s\n",
		kind, res.Committed, res.Rate, res.Delivered, res.Repeats, fmtDur(res.P50), fmtDur(res.P99), fmtDur(res.Max))
	if res.Delivered < res.Committed {
		return res, fmt.Errorf("webhook %s: %d events committed, %d delivered within 30 s", kind, res.Committed, res.Delivered)
	}
	return res, nil
}

// reportEvents connects one device and publishes a QoS 1 event
// {"n": N} every 1/rate seconds, starting after offset, until ctx ends;
// acked is told each event's number and the time its PUBACK arrived.
func reportEvents(ctx context.Context, addr string, dev loadDevice, rate float64, offset time.Duration, acked func(n int64, at time.Time)) error {
	c, err := dialLoad(addr, dev)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	var mu sync.Mutex
	sent := map[uint16]int64{}
	go func() {
		var p [4]byte
		for {
			if _, err := io.ReadFull(c.r, p[:]); err != nil || p[0] != 0x40 {
				return
			}
			now := time.Now()
			id := uint16(p[2])<<8 | uint16(p[3])
			mu.Lock()
			n, ok := sent[id]
			delete(sent, id)
			mu.Unlock()
			if ok {
				acked(n, now)
			}
		}
	}()
	select {
	case <-time.After(offset % time.Duration(float64(time.Second)/rate)):
	case <-ctx.Done():
		return nil
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	var id uint16
	for n := int64(1); ; n++ {
		id++
		if id == 0 {
			id = 1
		}
		mu.Lock()
		sent[id] = n
		mu.Unlock()
		payload := fmt.Appendf(nil, `{"n":%d}`, n)
		c.w.WriteByte(0x32)
		c.w.Write(appendVarint(nil, 2+len(c.topic)+2+len(payload)))
		c.w.Write(appendString(nil, c.topic))
		c.w.Write([]byte{byte(id >> 8), byte(id)})
		c.w.Write(payload)
		if err := c.w.Flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			// Let the last acknowledgements arrive.
			time.Sleep(500 * time.Millisecond)
			return nil
		case <-t.C:
		}
	}
}

// WebhookMarkdown formats the results.
func WebhookMarkdown(rs []WebhookResult) string {
	var b strings.Builder
	b.WriteString("| store | events/s | committed | delivered | repeats | commit → delivered p50 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %.0f | %d | %d | %d | %s | %s | %s |\n", r.Store, r.Rate, r.Committed, r.Delivered, r.Repeats, fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.Max))
	}
	return b.String()
}

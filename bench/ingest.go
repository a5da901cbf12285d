package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
)

// IngestConfig configures the end-to-end ingest scenario: devices publish
// QoS 1 telemetry to a herd process over MQTT, and each PUBACK means the
// reading is committed. The baseline is the machine's Mosquitto relaying the
// same load to one subscriber: a broker that stores nothing.
type IngestConfig struct {
	// Herd is the herd binary to run as the server, in a child process so
	// that its file descriptors and CPU are its own.
	Herd string
	// Stores are SQLite paths (a fresh file is made in Dir when empty) or
	// postgres:// URLs of empty schemas.
	Stores []string
	Dir    string
	// Devices are the fleet sizes to run, each with that many connections.
	Devices []int
	// Inflight are the closed loop's windows to run: how many readings
	// each device keeps in flight (1: it waits for each PUBACK). MQTT lets
	// a client have as many as the server's receive maximum.
	Inflight []int
	// Duration of each measured phase.
	Duration time.Duration
	// Mosquitto is the baseline broker's address, SpawnMosquitto to start
	// one, or empty to skip it.
	Mosquitto string
	// ServeArgs are more flags for herd serve, to try its settings.
	ServeArgs []string
	Out       io.Writer
}

// IngestResult is one fleet size on one store.
type IngestResult struct {
	Store    string
	Devices  int
	Inflight int
	// MaxRate is readings committed per second with every device sending
	// its next reading as soon as the last was acknowledged.
	MaxRate float64
	// At80 is the rate offered at 80% of MaxRate and what it achieved, with
	// the PUBACK latency there.
	At80Offered, At80Rate float64
	P50, P99, Max         time.Duration
	// Stored is the count of readings in the store after the run, checked
	// against the acknowledged ones.
	Stored, Acked int64
	// BatchMean, CommitMean and ServerPubackMean are herd's own metrics
	// over the 80% phase: items a commit, time a commit, and time from
	// reading a publish to its commit.
	BatchMean                    float64
	CommitMean, ServerPubackMean time.Duration
	// CommitP99 and ServerPubackP99 are the upper bounds of the histogram
	// buckets that hold the 99th percentile, -1 past the largest bucket.
	CommitP99, ServerPubackP99 time.Duration
	// MosquittoRate is the baseline's relay rate for the same load.
	MosquittoRate float64
}

// RunIngest runs the scenario.
func RunIngest(ctx context.Context, cfg IngestConfig) ([]IngestResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	maxN := 0
	for _, n := range cfg.Devices {
		maxN = max(maxN, n)
	}
	if len(cfg.Inflight) == 0 {
		cfg.Inflight = []int{1}
	}
	var results []IngestResult
	type shape struct{ devices, inflight int }
	mosq := map[shape]float64{}
	if cfg.Mosquitto == SpawnMosquitto {
		m, err := startMosquitto(ctx, cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("mosquitto baseline: %w", err)
		}
		defer m.stop()
		cfg.Mosquitto = m.addr
	}
	if cfg.Mosquitto != "" {
		for _, n := range cfg.Devices {
			for _, w := range cfg.Inflight {
				fmt.Fprintf(cfg.Out, "mosquitto %s: %d devices, %d in flight each, closed loop\n", cfg.Mosquitto, n, w)
				rate, err := mosquittoRelay(ctx, cfg, n, w)
				if err != nil {
					return nil, fmt.Errorf("mosquitto baseline: %w", err)
				}
				mosq[shape{n, w}] = rate
				fmt.Fprintf(cfg.Out, "mosquitto relayed %.0f messages/s to its subscriber\n", rate)
			}
		}
	}
	for _, store := range cfg.Stores {
		if store == "" {
			store = filepath.Join(cfg.Dir, fmt.Sprintf("ingest-%d.db", time.Now().UnixNano()))
		}
		name := "sqlite"
		if sqldb.IsPostgresDSN(store) {
			name = "postgres"
		}
		fmt.Fprintf(cfg.Out, "%s: provisioning %d devices\n", name, maxN)
		db, devices, err := provisionIngest(ctx, store, maxN)
		if err != nil {
			return nil, err
		}
		p, err := startServer(ctx, cfg.Herd, store, cfg.ServeArgs...)
		if err != nil {
			db.Close()
			return nil, err
		}
		for _, n := range cfg.Devices {
			for _, w := range cfg.Inflight {
				res, err := ingestCell(ctx, cfg, p, db, devices[:n], w)
				if err != nil {
					p.stop()
					db.Close()
					return nil, err
				}
				res.Store, res.MosquittoRate = name, mosq[shape{n, w}]
				results = append(results, res)
			}
		}
		p.stop()
		db.Close()
	}
	return results, nil
}

// ingestCell measures one fleet size and window on a running server: the
// closed loop's rate, then the PUBACK latency at 80% of it, then that every
// acknowledged reading is in the store.
func ingestCell(ctx context.Context, cfg IngestConfig, p *server, db *sqldb.DB, devices []loadDevice, window int) (IngestResult, error) {
	res := IngestResult{Devices: len(devices), Inflight: window}
	before, err := countReadings(ctx, db)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "%d devices, %d in flight each: closed loop for %s\n", len(devices), window, cfg.Duration)
	st, err := runLoad(ctx, p.mqtt, devices, 0, window, cfg.Duration, nil)
	if err == nil {
		err = st.check()
	}
	if err != nil {
		return res, err
	}
	res.MaxRate = float64(st.acked) / st.elapsed.Seconds()
	res.Acked = st.acked
	res.At80Offered = 0.8 * res.MaxRate
	fmt.Fprintf(cfg.Out, "%.0f readings/s committed; now %.0f/s (80%%) for %s\n", res.MaxRate, res.At80Offered, cfg.Duration)
	// herd's own figures are taken from the moment every device is back.
	var m0 map[string]float64
	st, err = runLoad(ctx, p.mqtt, devices, res.At80Offered/float64(len(devices)), window, cfg.Duration, func() (err error) {
		m0, err = scrape(p.url + "/metrics")
		return err
	})
	if err == nil {
		err = st.check()
	}
	if err != nil {
		return res, err
	}
	m1, err := scrape(p.url + "/metrics")
	if err != nil {
		return res, err
	}
	res.At80Rate = float64(st.acked) / st.elapsed.Seconds()
	res.P50, res.P99, res.Max = st.lat.quantiles()
	res.Acked += st.acked
	// herd's own view of the phase: what a commit held and took, and the
	// time from reading a publish to its commit.
	mean := func(name string) float64 {
		n := m1[name+"_count"] - m0[name+"_count"]
		if n <= 0 {
			return 0
		}
		return (m1[name+"_sum"] - m0[name+"_sum"]) / n
	}
	res.BatchMean = mean("herd_ingest_batch_items")
	res.CommitP99 = histQuantile(m0, m1, "herd_ingest_commit_seconds", 0.99)
	res.ServerPubackP99 = histQuantile(m0, m1, "herd_mqtt_puback_seconds", 0.99)
	res.CommitMean = time.Duration(mean("herd_ingest_commit_seconds") * float64(time.Second))
	res.ServerPubackMean = time.Duration(mean("herd_mqtt_puback_seconds") * float64(time.Second))
	fmt.Fprintf(cfg.Out, "achieved %.0f/s, PUBACK p50 %s p99 %s; herd: %.0f items a commit, %s a commit (p99 %s), %s from read to commit (p99 %s)\n",
		res.At80Rate, res.P50, res.P99, res.BatchMean, res.CommitMean, fmtBound(res.CommitP99), res.ServerPubackMean, fmtBound(res.ServerPubackP99))
	after, err := countReadings(ctx, db)
	if err != nil {
		return res, err
	}
	res.Stored = after - before
	return res, nil
}

// histQuantile returns the upper bound of the bucket of a Prometheus
// histogram that holds quantile q of what it observed between two scrapes.
func histQuantile(m0, m1 map[string]float64, name string, q float64) time.Duration {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + "_bucket/"
	for k, v := range m1 {
		le, ok := strings.CutPrefix(k, prefix)
		if !ok || le == "+Inf" {
			continue
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{bound, v - m0[k]})
	}
	total := m1[name+"_count"] - m0[name+"_count"]
	if total <= 0 {
		return 0
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	for _, b := range bs {
		if b.n >= q*total {
			return time.Duration(b.le * float64(time.Second))
		}
	}
	return -1 // past the largest bucket
}

// fmtBound prints a bound from histQuantile.
func fmtBound(d time.Duration) string {
	if d < 0 {
		return "over the largest bucket"
	}
	return "≤ " + d.String()
}

func countReadings(ctx context.Context, db *sqldb.DB) (int64, error) {
	var n int64
	err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM readings`).Scan(&n)
	return n, err
}

// provisionIngest makes a tenant with n devices and their credentials in
// the store, directly: ten thousand API calls would take longer than the
// benchmark.
func provisionIngest(ctx context.Context, store string, n int) (*sqldb.DB, []loadDevice, error) {
	db, _, devices, err := provisionFleet(ctx, store, n)
	return db, devices, err
}

// benchModel is the model of every bench device: firmware targets one.
const benchModel = "bench-th"

// provisionFleet is provisionIngest that also returns the tenant.
func provisionFleet(ctx context.Context, store string, n int) (*sqldb.DB, *herd.Tenant, []loadDevice, error) {
	return provisionFleetOn(ctx, store, n, 0)
}

// provisionFleetOn is provisionFleet with perSite devices on each site
// under the root, or all on the root when perSite is 0.
func provisionFleetOn(ctx context.Context, store string, n, perSite int) (*sqldb.DB, *herd.Tenant, []loadDevice, error) {
	db := sqldb.NewDB(store)
	db.StateCache.MinTenantDevices = 0
	if err := db.Open(); err != nil {
		return nil, nil, nil, err
	}
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	ten := &herd.Tenant{Name: fmt.Sprintf("bench-ingest-%d", time.Now().UnixNano())}
	if err := sqldb.NewTenantService(db).CreateTenant(super, ten); err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	devices := sqldb.NewDeviceService(db)
	creds := sqldb.NewCredentialService(db)
	nodeOf := func(int) int64 { return ten.RootNodeID }
	if perSite > 0 {
		var sites []int64
		for s := 0; s*perSite < n; s++ {
			site := &herd.Node{TenantID: ten.ID, ParentID: ten.RootNodeID, Kind: "site", Name: fmt.Sprintf("site-%d", s)}
			if err := sqldb.NewNodeService(db).CreateNode(super, site); err != nil {
				db.Close()
				return nil, nil, nil, err
			}
			sites = append(sites, site.ID)
		}
		// Device i on site i mod the sites: devices next to each other in
		// the load are on different sites, as a fleet's clocks spread them.
		nodeOf = func(i int) int64 { return sites[i%len(sites)] }
	}
	var out []loadDevice
	for start := 0; start < n; start += herd.MaxBatchDevices {
		var batch []*herd.Device
		for i := start; i < min(n, start+herd.MaxBatchDevices); i++ {
			batch = append(batch, &herd.Device{NodeID: nodeOf(i), Key: fmt.Sprintf("ingest-%d-%d", ten.ID, i), Model: benchModel})
		}
		if err := devices.CreateDevices(super, batch); err != nil {
			db.Close()
			return nil, nil, nil, err
		}
		ids := make([]int64, len(batch))
		for i, d := range batch {
			ids[i] = d.ID
		}
		cs, err := creds.CreateDeviceCredentials(super, ids)
		if err != nil {
			db.Close()
			return nil, nil, nil, err
		}
		for _, c := range cs {
			out = append(out, loadDevice{id: c.DeviceID, key: c.Key, token: c.Token, topic: "devices/" + c.Key + "/telemetry"})
		}
	}
	return db, ten, out, nil
}

// server is herd serve in a child process.
type server struct {
	cmd   *exec.Cmd
	dir   string // its data dir: the embedded NATS server's files
	mqtt  string
	url   string
	debug string // the profiler's address, when asked for
}

func startServer(ctx context.Context, exe, store string, extra ...string) (*server, error) {
	dir, err := os.MkdirTemp("", "herd-bench-")
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--store", store, "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--mqtt-connect-rate", "1000000", "--log-format", "json", "--state-cache-min-devices", "0"}, extra...)
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), "HERD_ADMIN_TOKEN=herd_bench_admin_token_0123456789abcdef")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	lines := bufio.NewScanner(pipe)
	s := &server{cmd: cmd, dir: dir}
	deadline := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	var log strings.Builder
	for s.mqtt == "" && lines.Scan() {
		log.WriteString(lines.Text() + "\n")
		var rec struct {
			Msg  string `json:"msg"`
			MQTT string `json:"mqtt"`
			URL  string `json:"url"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(lines.Bytes(), &rec) == nil {
			switch rec.Msg {
			case "herd listening":
				s.mqtt, s.url = rec.MQTT, rec.URL
			case "profiler listening":
				s.debug = rec.Addr
			}
		}
	}
	if s.mqtt == "" {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("herd serve did not start:\n%s", log.String())
	}
	go io.Copy(io.Discard, pipe)
	return s, nil
}

func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	os.RemoveAll(s.dir)
}

// mosquittoRelay measures the baseline: the same devices, closed loop at
// QoS 1, through Mosquitto to one QoS 1 subscriber of all their topics.
// The rate counts what the subscriber received: a broker that drops what
// it cannot relay must not count as fast.
func mosquittoRelay(ctx context.Context, cfg IngestConfig, n, window int) (float64, error) {
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	prefix := "herdbench/" + run + "/"
	sub, err := subscribe(cfg.Mosquitto, "herd-bench-sub-"+run, prefix+"+/telemetry")
	if err != nil {
		return 0, fmt.Errorf("subscribe at %s: %w", cfg.Mosquitto, err)
	}
	defer sub.close()
	devices := make([]loadDevice, n)
	for i := range devices {
		key := fmt.Sprintf("hb-%s-%d", run, i)
		devices[i] = loadDevice{key: key, token: "-", topic: prefix + key + "/telemetry"}
	}
	before := sub.received.Load()
	st, err := runLoad(ctx, cfg.Mosquitto, devices, 0, window, cfg.Duration, nil)
	if err != nil {
		return 0, err
	}
	got := sub.received.Load() - before
	return float64(min(got, st.acked)) / st.elapsed.Seconds(), nil
}

// IngestMarkdown renders the results as the table in bench/README.md.
func IngestMarkdown(results []IngestResult) string {
	var b strings.Builder
	b.WriteString("| store | devices | in flight each | max committed/s | Mosquitto relay/s | herd ÷ Mosquitto | at 80%: offered/s | achieved/s | PUBACK p50 | PUBACK p99 | max | acked = stored |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range results {
		ratio := "–"
		if r.MosquittoRate > 0 {
			ratio = fmt.Sprintf("%.2f", r.MaxRate/r.MosquittoRate)
		}
		check := "yes"
		if r.Stored < r.Acked {
			check = fmt.Sprintf("NO: %d of %d", r.Stored, r.Acked)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %s | %s | %s |\n", r.Store, r.Devices, r.Inflight, r.MaxRate, r.MosquittoRate, ratio,
			r.At80Offered, r.At80Rate, fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.Max), check)
	}
	return b.String()
}

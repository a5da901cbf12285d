package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd/bench"
	"github.com/herd-iot/herd/seed"
	"github.com/herd-iot/herd/sqldb"
)

// runBench runs `herd bench <scenario>`.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return &usageError{msg: "bench needs a scenario: scoped, ingest, idle, storm, relay, webhook, stream, rollout, history, doctor, or all"}
	}
	scenario, args := args[0], args[1:]
	switch scenario {
	case "scoped":
		return runBenchScoped(ctx, args, stdout, stderr)
	case "ingest":
		return runBenchIngest(ctx, args, stdout, stderr)
	case "idle":
		return runBenchIdle(ctx, args, stdout, stderr)
	case "storm":
		return runBenchStorm(ctx, args, stdout, stderr)
	case "relay":
		return runBenchRelay(ctx, args, stdout, stderr)
	case "webhook":
		return runBenchWebhook(ctx, args, stdout, stderr)
	case "stream":
		return runBenchStream(ctx, args, stdout, stderr)
	case "rollout":
		return runBenchRollout(ctx, args, stdout, stderr)
	case "history":
		return runBenchHistory(ctx, args, stdout, stderr)
	case "doctor":
		return runBenchDoctor(ctx, args, stdout, stderr)
	case "all":
		for _, run := range []func(context.Context, []string, io.Writer, io.Writer) error{runBenchScoped, runBenchIngest, runBenchIdle, runBenchStorm, runBenchRelay, runBenchWebhook, runBenchStream, runBenchRollout, runBenchHistory} {
			if err := run(ctx, nil, stdout, stderr); err != nil {
				return err
			}
		}
		return nil
	}
	return &usageError{msg: fmt.Sprintf("unknown bench scenario %q (scoped, ingest, idle, storm, relay, webhook, stream, rollout, history, doctor, all)", scenario)}
}

// runBenchRelay measures the outbox relay: commit to JetStream ack.
func runBenchRelay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (a fresh one per run)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL with search_path=herd_<name>, a schema the run drops and makes again (env HERD_BENCH_POSTGRES_URL)")
	natsURL := fs.String("nats-url", "", "NATS server with JetStream to publish to; empty runs an embedded one")
	events := fs.Int("events", 100000, "events committed and then relayed")
	tenants := fs.Int("tenants", 10, "tenants the events are spread over")
	baseline := fs.Duration("baseline-for", 5*time.Second, "how long the row-at-a-time baseline runs")
	markdown := fs.String("markdown", "", "also write the result table in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	if *events < 100 || *tenants < 1 || *tenants > 1000 {
		return &usageError{msg: "--events must be 100 or more and --tenants from 1 to 1,000"}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	stores := benchStores(*pg)
	rs, err := bench.RunRelay(ctx, bench.RelayConfig{Stores: stores, Dir: *dir, NATSURL: *natsURL, Events: *events, Tenants: *tenants, BaselineFor: *baseline, Out: stderr})
	return emitMarkdown(stdout, *markdown, bench.RelayMarkdown(rs), err)
}

// runBenchWebhook measures commit to webhook delivered at a steady rate.
func runBenchWebhook(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench webhook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (a fresh one per run)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL with search_path=herd_<name>, a schema the run drops and makes again (env HERD_BENCH_POSTGRES_URL)")
	rate := fs.Float64("rate", 1000, "events a second, reported by devices over MQTT")
	duration := fs.Duration("duration", 10*time.Second, "how long the load runs")
	devices := fs.Int("devices", 100, "devices sharing the rate")
	markdown := fs.String("markdown", "", "also write the result table in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	if *rate < 1 || *rate > 20000 || *devices < 1 || *devices > 10000 || *rate/float64(*devices) > 1000 {
		return &usageError{msg: "--rate must be from 1 to 20,000, --devices from 1 to 10,000, at most 1,000 events a second each"}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	stores := benchStores(*pg)
	rs, err := bench.RunWebhook(ctx, bench.WebhookConfig{Herd: exe, Stores: stores, Dir: *dir, Rate: *rate, Duration: *duration, Devices: *devices, Out: stderr})
	return emitMarkdown(stdout, *markdown, bench.WebhookMarkdown(rs), err)
}

// runBenchStorm runs the reboot storm against herd serve.
func runBenchStorm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (a fresh one per run)")
	devices := fs.Int("devices", 15000, "devices connected (this process holds their sockets: at most 19,000)")
	reboot := fs.Int("reboot", 4000, "devices that drop and reconnect at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *devices < 1 || *devices > 19000 || *reboot < 1 || *reboot > *devices {
		return &usageError{msg: "--devices must be from 1 to 19,000 and --reboot from 1 to --devices"}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	res, err := bench.RunStorm(ctx, bench.StormConfig{Herd: exe, Dir: *dir, Devices: *devices, Reboot: *reboot, Out: stderr})
	fmt.Fprint(stdout, bench.StormMarkdown(res))
	return err
}

// runBenchRollout runs the rollout scenarios: a firmware rollout in waves
// against the same fleet sent everything at once, a config that a share
// of the devices reject, and the controller's cost per member.
func runBenchRollout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench rollout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, cost := bench.DefaultRolloutConfig(), bench.DefaultRolloutCostConfig()
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench stores, key files and simulator logs (fresh ones per run)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL with search_path=herd_<name>, a schema the cost run drops and makes again (env HERD_BENCH_POSTGRES_URL)")
	fs.IntVar(&cfg.Devices, "devices", cfg.Devices, "simulated devices (spread over --simulators processes)")
	fs.IntVar(&cfg.Simulators, "simulators", cfg.Simulators, "herd simulate processes")
	fs.Int64Var(&cfg.InFlight, "max-in-flight", cfg.InFlight, "max_in_flight of the staged rollouts (and the firmware rollout's offline budget, in devices)")
	fs.DurationVar(&cfg.Reboot, "reboot", cfg.Reboot, "how long a simulated device reboots after a firmware update (±20%)")
	fs.IntVar(&cfg.ConnectRate, "connect-rate", cfg.ConnectRate, "herd's --mqtt-connect-rate")
	fs.Int64Var(&cfg.JitterS, "jitter", cfg.JitterS, "start_jitter_s of the staged rollouts")
	fs.Float64Var(&cfg.ConfigReject, "config-reject", cfg.ConfigReject, "share of the devices that reject the bad config")
	fs.Int64Var(&cfg.AnswerTimeoutS, "answer-timeout", cfg.AnswerTimeoutS, "answer_timeout_s of the bad config's rollout")
	fs.IntVar(&cost.Members, "members", cost.Members, "members of the controller-cost rollout (stepped in process, answers simulated)")
	only := fs.String("only", "", "run one part: fleet or cost (default both)")
	markdown := fs.String("markdown", "", "also write the result tables in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	switch {
	case cfg.Devices < 10 || cfg.Devices > 40000 || cfg.Simulators < 1 || cfg.Devices/cfg.Simulators > 19000:
		return &usageError{msg: "--devices must be from 10 to 40,000, at most 19,000 per simulator (--simulators 1 or more)"}
	case cfg.InFlight < 1 || cfg.InFlight > int64(cfg.Devices):
		return &usageError{msg: "--max-in-flight must be from 1 to --devices"}
	case cfg.Reboot <= 0 || cfg.ConnectRate < 1 || cfg.JitterS < 0 || cfg.AnswerTimeoutS < 1:
		return &usageError{msg: "--reboot, --connect-rate and --answer-timeout must be over 0, --jitter 0 or more"}
	case cfg.ConfigReject <= 0 || cfg.ConfigReject > 1:
		return &usageError{msg: "--config-reject must be over 0 and at most 1"}
	case cost.Members < 100 || cost.Members > 1000000:
		return &usageError{msg: "--members must be from 100 to 1,000,000"}
	case *only != "" && *only != "fleet" && *only != "cost":
		return &usageError{msg: fmt.Sprintf("--only %q: want fleet or cost", *only)}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	cfg.Herd, cfg.Dir, cfg.Out = exe, *dir, stderr
	cost.Stores, cost.Dir, cost.Out = benchStores(*pg), *dir, stderr
	var md string
	var runErr error
	if *only != "cost" {
		res, err := bench.RunRollout(ctx, cfg)
		md, runErr = bench.RolloutMarkdown(res), err
	}
	if *only != "fleet" && runErr == nil {
		rs, err := bench.RunRolloutCost(ctx, cost)
		md, runErr = md+"\n"+bench.RolloutCostMarkdown(rs), err
	}
	return emitMarkdown(stdout, *markdown, md, runErr)
}

// runBenchIdle measures herd's memory per idle connected device.
func runBenchIdle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (a fresh one per run)")
	devices := fs.Int("devices", 15000, "idle devices to connect (this process holds their sockets: at most 19,000)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *devices < 1 || *devices > 19000 {
		return &usageError{msg: "--devices must be from 1 to 19,000"}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	res, err := bench.RunIdle(ctx, bench.IdleConfig{Herd: exe, Dir: *dir, Devices: *devices, Out: stderr})
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, bench.IdleMarkdown(res))
	return nil
}

// runBenchIngest runs the end-to-end ingest scenario against herd serve in
// a child process, with Mosquitto as the baseline.
func runBenchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench ingest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench stores (a fresh one per run)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL of an empty schema to bench as well (env HERD_BENCH_POSTGRES_URL)")
	devicesFlag := fs.String("devices", "1000,10000", "fleet sizes, comma-separated")
	inflightFlag := fs.String("inflight", "1,16", "readings each device keeps in flight in the closed loop, comma-separated (1: it waits for each PUBACK)")
	duration := fs.Duration("duration", 10*time.Second, "length of each measured phase")
	mosquitto := fs.String("mosquitto", bench.SpawnMosquitto, `baseline broker: "spawn" starts the machine's mosquitto on a free port with unbounded queues; an address uses a running one (the stock 127.0.0.1:1883 drops past 1,000 queued messages); "" skips it`)
	markdown := fs.String("markdown", "", "also write the result table in Markdown to this file")
	serveArgs := fs.String("serve-args", "", "more flags for the herd serve under test, space-separated (e.g. \"--ingest-batch-items 1000\")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	var sizes []int
	for _, f := range strings.Split(*devicesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 15000 {
			return &usageError{msg: fmt.Sprintf("--devices %q: want sizes from 1 to 15,000 (one process holds the clients)", *devicesFlag)}
		}
		sizes = append(sizes, n)
	}
	var windows []int
	for _, f := range strings.Split(*inflightFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 256 {
			return &usageError{msg: fmt.Sprintf("--inflight %q: want windows from 1 to 256 (herd's receive maximum)", *inflightFlag)}
		}
		windows = append(windows, n)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	stores := benchStores(*pg)
	res, err := bench.RunIngest(ctx, bench.IngestConfig{Herd: exe, Stores: stores, Dir: *dir, Devices: sizes, Inflight: windows, Duration: *duration, Mosquitto: *mosquitto, Out: stderr, ServeArgs: strings.Fields(*serveArgs)})
	if err != nil {
		return err
	}
	return emitMarkdown(stdout, *markdown, bench.IngestMarkdown(res), nil)
}

// runBenchScoped runs the scoped-query scenario on SQLite and, when a
// PostgreSQL URL is given, on PostgreSQL in the same run.
func runBenchScoped(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench scoped", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.DefaultScopedConfig()
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (reused between runs)")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL to bench as well (env HERD_BENCH_POSTGRES_URL); the fleet is kept there for reuse")
	devices := fs.Int64("devices", def.Devices, "fleet size")
	shapeFlag := fs.String("shape", "5x2x10x10", "tree shape; the first node of each level is one scope")
	pages := fs.Int("pages", def.Pages, "pages timed per scope and query")
	naive := fs.Int("naive-pages", def.NaivePages, "pages timed per scope and query the naive way")
	smallPages := fs.Int("small-pages", def.SmallPages, "first pages timed per limit for a small scope at each end of the id order (0: none)")
	searchPages := fs.Int("search-pages", def.SearchPages, "pages timed per search query (q, label and contains) over the 200k scope; the baselines a tenth as many (0: none)")
	markdown := fs.String("markdown", "", "also write the result tables in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	shape, err := seed.ParseShape(*shapeFlag)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	stores := []string{filepath.Join(*dir, fmt.Sprintf("scoped-%d-%s.db", *devices, *shapeFlag))}
	if *pg != "" {
		stores = append(stores, *pg)
	}
	var all []bench.ScopedResult
	for _, store := range stores {
		cfg := def
		cfg.Store, cfg.Devices, cfg.Shape, cfg.Pages, cfg.NaivePages, cfg.Out = store, *devices, shape, *pages, *naive, stdout
		cfg.SmallPages = *smallPages
		cfg.SearchPages = *searchPages
		res, err := bench.RunScoped(ctx, cfg)
		if err != nil {
			return fmt.Errorf("bench scoped on %s: %w", redactDSN(store), err)
		}
		all = append(all, res...)
	}
	fmt.Fprintln(stdout)
	return emitMarkdown(stdout, *markdown, bench.ScopedMarkdown(all), nil)
}

// runBenchStream measures hints (commit to client) and commands (POST to
// device).
func runBenchStream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench stream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", filepath.Join("bench", "out"), "directory for the SQLite bench store (a fresh one per run)")
	sites := fs.Int("sites", 100, "sites, each with a device and a viewer")
	clients := fs.Int("clients", 1000, "stream connections, spread over the sites' viewers")
	rate := fs.Float64("rate", 1000, "events a second for the latency run")
	sat := fs.Float64("saturation-rate", 300, "events a second for the saturation run, every client seeing every event (0 skips it)")
	commands := fs.Float64("commands", 500, "commands a second (0 skips them)")
	duration := fs.Duration("duration", 10*time.Second, "length of each run")
	markdown := fs.String("markdown", "", "also write the result table in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sites < 1 || *clients < 1 || *clients > 15000 || *rate <= 0 {
		return &usageError{msg: "--sites and --rate must be positive, --clients from 1 to 15,000"}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	res, err := bench.RunStream(ctx, bench.StreamConfig{Herd: exe, Dir: *dir, Sites: *sites, Clients: *clients, Rate: *rate, SaturationRate: *sat, Commands: *commands, Duration: *duration, Out: stderr})
	return emitMarkdown(stdout, *markdown, bench.StreamMarkdown(res), err)
}

// runBenchDoctor measures the id doctor: a scan of many tables, and the
// copy of a large table after a swap.
func runBenchDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd bench doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	my := fs.String("mysql", os.Getenv("HERD_BENCH_MYSQL_DSN"), "MariaDB/MySQL DSN whose user may create databases (env HERD_BENCH_MYSQL_DSN), e.g. mysql://root@127.0.0.1:3306/test")
	pg := fs.String("postgres", os.Getenv("HERD_BENCH_POSTGRES_URL"), "PostgreSQL URL with search_path=herd_<name>, a schema the run drops and makes again (env HERD_BENCH_POSTGRES_URL)")
	tables := fs.Int("tables", 2000, "tables in the scanned schema")
	rows := fs.Int64("rows", 500000, "rows of the table copied after the swap")
	markdown := fs.String("markdown", "", "also write the result table in Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkBenchPostgres(pg); err != nil {
		return err
	}
	if *my == "" && *pg == "" {
		return &usageError{msg: "bench doctor needs --mysql, --postgres, or both"}
	}
	rs, err := bench.RunDoctor(ctx, bench.DoctorConfig{MySQL: *my, Postgres: *pg, Tables: *tables, Rows: *rows, Out: stderr})
	return emitMarkdown(stdout, *markdown, bench.DoctorMarkdown(rs), err)
}

// benchStores is a fresh SQLite store, and the PostgreSQL one when given.
func benchStores(pg string) []string {
	if pg == "" {
		return []string{""}
	}
	return []string{"", pg}
}

// emitMarkdown prints a scenario's table, writes it to path when one is
// given, and returns the run's error, else the write's.
func emitMarkdown(stdout io.Writer, path, md string, runErr error) error {
	fmt.Fprint(stdout, md)
	if path == "" {
		return runErr
	}
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil && runErr == nil {
		return err
	}
	return runErr
}

// checkBenchPostgres reads --postgres as herd serve reads --store: the
// scheme in any case. Anything but a PostgreSQL URL is refused; it used to
// be taken for a SQLite file named after the URL.
func checkBenchPostgres(pg *string) error {
	if *pg == "" {
		return nil
	}
	dsn, err := normalizeStore(*pg)
	if err == nil && !sqldb.IsPostgresDSN(dsn) {
		err = errors.New("not a PostgreSQL URL")
	}
	if err != nil {
		return &usageError{msg: fmt.Sprintf("--postgres %s: %v: want postgres://user@host:5432/db?…", redactDSN(*pg), err)}
	}
	*pg = dsn
	return nil
}

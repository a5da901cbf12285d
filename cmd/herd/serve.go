package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/herd-iot/herd/mqttgw"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/appsocket"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/internal/wsconn"
	"github.com/herd-iot/herd/natsbus"
	"github.com/herd-iot/herd/relay"
	"github.com/herd-iot/herd/rollout"
	"github.com/herd-iot/herd/sqldb"
	"github.com/herd-iot/herd/stream"
	"github.com/herd-iot/herd/webhook"
)

// Main is the herd server process: it reads its configuration, opens the
// store and the HTTP server in Run, and closes them in reverse order in
// Close. Tests run it in-process on :0.
type Main struct {
	Config Config

	// Getenv reads the environment; tests replace it so that they can run
	// in parallel without touching the process environment.
	Getenv func(string) string
	// Stderr receives the logs and the one-time admin token.
	Stderr io.Writer

	Logger     *slog.Logger
	DB         *sqldb.DB
	Gateway    *mqttgw.Gateway
	HTTPServer *httpapi.Server
	Bus        *natsbus.Bus
	Relay      *relay.Relay
	Rollouts   *rollout.Controller
	Dispatcher *webhook.Dispatcher
	AppSocket  *appsocket.Handler
	Hub        *stream.Hub

	stopEvents context.CancelFunc
	eventsCtx  context.Context
	events     sync.WaitGroup
	// The stream tail feeds the hub and the gateway: it stops before them.
	stopTail context.CancelFunc
	tail     sync.WaitGroup
	lock     *os.File // the data dir's instance lock

	debug    *http.Server
	serving  sync.WaitGroup // the profiler's server
	ports    *ports         // the listen addresses, bound before the store opens
	stopWarm context.CancelFunc
	warmed   chan struct{}

	// listen binds the listen addresses: net.Listen, unless a test watches.
	listen func(network, addr string) (net.Listener, error)
}

// NewMain returns a Main with the default configuration, reading the
// process environment and writing to os.Stderr.
func NewMain() *Main {
	return &Main{
		Config: DefaultConfig(),
		Getenv: os.Getenv,
		Stderr: os.Stderr,
	}
}

// ParseFlags reads the configuration from the environment and then from
// the command line arguments of `herd serve`.
func (m *Main) ParseFlags(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("herd serve", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	c := &m.Config
	storeFlags(fs, m.Getenv, c)
	stringFlag(fs, m.Getenv, &c.HTTPAddr, "http-addr", "listen address of the REST API")
	stringFlag(fs, m.Getenv, &c.LogLevel, "log-level", "log level: debug, info, warn or error")
	stringFlag(fs, m.Getenv, &c.LogFormat, "log-format", "log format: text or json")
	stringFlag(fs, m.Getenv, &c.DebugAddr, "debug-addr", "listen address of the Go profiler (/debug/pprof/), off when empty; keep it on loopback")
	stringFlag(fs, m.Getenv, &c.NATSURL, "nats-url", `NATS server or cluster with JetStream for events (nats://host:4222, comma-separated for several); empty embeds one (files in the data dir's "nats"); every process sharing a PostgreSQL store must name the same one`)
	stringFlag(fs, m.Getenv, &c.NATSStream, "nats-stream", "name of the JetStream stream of events")
	stringFlag(fs, m.Getenv, &c.NATSSubjectPrefix, "nats-subject-prefix", "subject prefix of the events (prefix.<tenant id>.<event type>)")
	stringFlag(fs, m.Getenv, &c.AllowedOrigins, "allowed-origins", `web origins (https://app.example.com, comma-separated) whose pages may open /v1/stream, /v1/apps/socket and /mqtt and read /v1 (CORS), or "*" for any (then without credentials); empty allows herd's own origin only`)
	stringFlag(fs, m.Getenv, &c.SecureCookies, "secure-cookies", `auto or on: "auto" marks the session cookie Secure when the request came over TLS or with X-Forwarded-Proto: https; "on" always, for herd behind a proxy that ends TLS without saying so`)
	stringFlag(fs, m.Getenv, &c.Rollups, "rollups", "on or off: whether ingest keeps the rollups fleet aggregates read; off only to measure their cost, as aggregates then miss the readings committed meanwhile")
	stringFlag(fs, m.Getenv, &c.MQTTAddr, "mqtt-addr", `listen address of the MQTT gateway, or "off"; MQTT over WebSocket is at /mqtt on the HTTP address`)
	for _, err := range []error{
		durationFlag(fs, m.Getenv, &c.MQTTMaxKeepalive, "mqtt-max-keepalive", "longest keepalive a device may use; devices asking for none or more get this"),
		int64Flag(fs, m.Getenv, &c.MQTTConnectRate, "mqtt-connect-rate", "new device connections admitted per second; more are refused with a reason code"),
		int64Flag(fs, m.Getenv, &c.MQTTMaxConnections, "mqtt-max-connections", "device connections admitted at most; 0 derives it from the open-file limit"),
		int64Flag(fs, m.Getenv, &c.IngestBatchItems, "ingest-batch-items", "most readings, device events, connects and disconnects committed in one transaction"),
		durationFlag(fs, m.Getenv, &c.IngestBatchWait, "ingest-batch-wait", "longest a group commit waits for more items once it has one"),
		durationFlag(fs, m.Getenv, &c.EventsRetention, "events-retention", "how long the event stream keeps events: the longest replay a consumer can make"),
		durationFlag(fs, m.Getenv, &c.EventsDuplicateWindow, "events-duplicate-window", "how long the event stream remembers event ids, to drop repeats a relay publishes"),
		retentionFlag(fs, m.Getenv, &c.ReadingsRetention, "readings-retention", "how long the telemetry history keeps readings, and their minute rollups, such as 30d or 720h (on PostgreSQL up to a day more: whole days go)"),
		retentionFlag(fs, m.Getenv, &c.RollupRetention, "rollup-retention", "how long the hourly rollups are kept, for aggregates past the readings retention; at least --readings-retention"),
		durationFlag(fs, m.Getenv, &c.RolloutLease, "rollout-lease", "how long a process holds a rollout it stopped renewing: how long another waits to take over after a crash"),
		durationFlag(fs, m.Getenv, &c.IDWatchInterval, "id-watch-interval", "how often herd checks its own store's id columns (herd_id_headroom_ratio; an event at 70%)"),
		int64Flag(fs, m.Getenv, &c.APIRateLimit, "api-rate-limit", "requests a second each API token may make (per process); more get 429 with Retry-After; 0 turns it off"),
		int64Flag(fs, m.Getenv, &c.APIRateBurst, "api-rate-burst", "requests an API token may make at once, above its rate"),
		int64Flag(fs, m.Getenv, &c.StateCacheMinDevices, "state-cache-min-devices",
			"tenants with at least this many devices are kept in memory for fast filtered queries, about 250 bytes per device; 0 turns it off"),
	} {
		if err != nil {
			return err
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd serve [flags]\n\nRuns the herd server. Every flag can also be set by its environment\nvariable; a flag wins. On first start the admin token is %s\nif set, otherwise a generated one printed once.\n\nFlags:\n", AdminTokenEnv)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("serve takes no arguments, got %q", fs.Args())}
	}
	return c.Validate()
}

// Run opens the store (applying migrations), makes sure an admin token
// exists and starts the HTTP server. It returns once everything listens;
// Close stops it.
func (m *Main) Run(ctx context.Context) error {
	level, _ := parseLevel(m.Config.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if m.Config.LogFormat == "json" {
		m.Logger = slog.New(slog.NewJSONHandler(m.Stderr, opts))
	} else {
		m.Logger = slog.New(slog.NewTextHandler(m.Stderr, opts))
	}

	// What can be checked without the store is checked first: a start that
	// fails leaves no store behind (a bad admin token would leave one
	// without a token), and no generated token printed for nothing.
	if want := m.Getenv(AdminTokenEnv); want != "" && !herd.IsTokenSecret(want) {
		return fmt.Errorf("%s must start with %q and carry at least 21 more characters; nothing was written", AdminTokenEnv, herd.TokenPrefix)
	}
	var err error
	if m.ports, err = reservePorts(m.Config, m.listen); err != nil {
		return err
	}
	dsn := m.Config.StoreDSN()
	m.DB = sqldb.NewDB(dsn)
	m.DB.Logger = m.Logger.With("component", "sqldb")
	m.DB.StateCache.MinTenantDevices = m.Config.StateCacheMinDevices
	m.DB.NoRollups = m.Config.Rollups == "off"
	m.DB.ReadingsRetention = m.Config.ReadingsRetention
	if err := m.DB.Open(); err != nil {
		m.DB = nil
		return fmt.Errorf("open store %s: %w", redactDSN(dsn), err)
	}
	// Readings of today and the next days get their partitions before
	// ingest starts (PostgreSQL); a failure is no reason not to serve, as
	// the default partition takes what has none.
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	if err := m.DB.EnsurePartitions(pctx); err != nil {
		m.Logger.Warn("readings partitions not created ahead; the hourly retention tries again", "err", err)
	}
	pcancel()
	// Large tenants' state caches load in the background; until one is
	// ready its queries read the database.
	warmCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.stopWarm = cancel
	m.warmed = make(chan struct{})
	go func() {
		defer close(m.warmed)
		if err := m.DB.WarmStateCaches(warmCtx); err != nil && warmCtx.Err() == nil {
			m.Logger.Warn("state caches not loaded; queries read the database", "err", err)
		}
	}()
	if err := m.ensureAdminToken(ctx); err != nil {
		return err
	}

	if ln := m.ports.debug; ln != nil {
		m.ports.debug = nil // the profiler's server closes it
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		m.debug = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		m.serving.Go(func() { m.debug.Serve(ln) })
		m.Logger.Info("profiler listening", "addr", ln.Addr().String())
	}
	if err := m.openEvents(ctx); err != nil {
		return err
	}
	creds := sqldb.NewCredentialService(m.DB)
	gw := mqttgw.New(creds, sqldb.NewIngestService(m.DB))
	gw.Logger = m.Logger.With("component", "mqtt")
	gw.Addr = m.Config.MQTTAddr
	if gw.Addr == "off" {
		gw.Addr = ""
	}
	gw.MaxKeepalive = m.Config.MQTTMaxKeepalive
	gw.ConnectRate = float64(m.Config.MQTTConnectRate)
	gw.MaxConnections = int(m.Config.MQTTMaxConnections)
	gw.BatchItems, gw.BatchWait = int(m.Config.IngestBatchItems), m.Config.IngestBatchWait
	commands := sqldb.NewCommandService(m.DB)
	gw.Commands = commands
	configs := sqldb.NewConfigService(m.DB)
	gw.Configs = configs
	gw.OTA = configs
	// The reserved listener is handed over, never closed and bound again:
	// in between, another process could take the port after the store was
	// opened. Until the gateway has it, Close closes it.
	gw.Listener = m.ports.mqtt
	if err := gw.Open(); err != nil {
		return fmt.Errorf("start MQTT gateway: %w", err)
	}
	m.ports.mqtt = nil
	m.Gateway = gw

	s := httpapi.NewServer()
	s.Addr = m.Config.HTTPAddr
	s.RateLimit, s.RateBurst = float64(m.Config.APIRateLimit), int(m.Config.APIRateBurst)
	s.Logger = m.Logger.With("component", "http")
	s.TenantService = sqldb.NewTenantService(m.DB)
	s.NodeService = sqldb.NewNodeService(m.DB)
	s.DeviceService = sqldb.NewDeviceService(m.DB)
	s.UserService = sqldb.NewUserService(m.DB)
	s.SessionService = sqldb.NewSessionService(m.DB)
	s.SecureCookies = m.Config.SecureCookies == "on"
	s.GrantService = sqldb.NewGrantService(m.DB)
	s.ListService = sqldb.NewListService(m.DB)
	s.CredentialService = creds
	s.Disconnecter = gw
	s.MQTT = gw
	s.Ready = m.DB.Ping
	s.Registry().MustRegister(m.DB.Collectors()...)
	s.Registry().MustRegister(gw.Collectors()...)
	s.Registry().MustRegister(m.Bus.Collectors()...)
	s.Registry().MustRegister(m.Relay.Collectors()...)
	s.Registry().MustRegister(m.Dispatcher.Collectors()...)
	s.Registry().MustRegister(m.Rollouts.Collectors()...)
	s.WebhookService = sqldb.NewWebhookService(m.DB)
	s.CommandService = commands
	s.ConfigService = configs
	s.FirmwareService = sqldb.NewFirmwareService(m.DB)
	s.RolloutService = sqldb.NewRolloutService(m.DB)
	s.HistoryService = sqldb.NewHistoryService(m.DB)
	s.RolloutMaxInFlight = m.Config.MQTTConnectRate * 10
	s.Idempotency = sqldb.NewIdempotencyService(m.DB)
	if testServerHook != nil {
		testServerHook(s)
	}
	events := sqldb.NewEventService(m.DB)
	s.EventService = events
	s.TicketService = sqldb.NewTicketService(m.DB)
	s.Origins, _ = wsconn.ParseOrigins(m.Config.AllowedOrigins) // Validate read it
	gw.OriginChecked = true                                     // httpapi checks /mqtt's Origin too
	m.Hub = stream.NewHub(events.Head)
	m.Hub.Logger = m.Logger.With("component", "stream")
	s.Stream = m.Hub
	s.Registry().MustRegister(m.Hub.Collectors()...)
	hub := m.Hub
	tailCtx, stopTail := context.WithCancel(m.eventsCtx)
	m.stopTail = stopTail
	// Every process tails the stream for its own connections: hints for
	// the stream's clients, and commands and configs for the devices this
	// gateway holds.
	fanout := func(ev *herd.Event) {
		hub.Publish(ev)
		gw.CommandEvent(ev)
		gw.ConfigEvent(ev)
		gw.OTAEvent(ev)
	}
	m.tail.Go(func() {
		m.Bus.Keep(tailCtx, "stream tail", func(ctx context.Context) error { return m.Bus.Tail(ctx, fanout, nil) })
	})
	m.AppSocket = appsocket.NewHandler(m.Bus)
	m.AppSocket.Logger = m.Logger.With("component", "appsocket")
	s.AppSocket = m.AppSocket
	s.Registry().MustRegister(m.AppSocket.Collectors()...)
	ids := sqldb.NewIDWatch(m.DB)
	ids.Logger = m.Logger.With("component", "idwatch")
	s.Registry().MustRegister(ids.Collectors()...)
	m.events.Go(func() {
		ids.Check(m.eventsCtx)
		every(m.eventsCtx, m.Config.IDWatchInterval, ids.Check)
	})
	s.Listener = m.ports.http // handed over as the gateway's is
	if err := s.Open(); err != nil {
		return fmt.Errorf("start HTTP server: %w", err)
	}
	m.ports.http = nil
	m.HTTPServer = s
	mqttAddr := "off"
	if a := gw.TCPAddr(); a != nil {
		mqttAddr = a.String()
	}
	m.Logger.Info("herd listening", "version", herd.Version, "addr", s.ListenAddr(), "url", s.URL(), "mqtt", mqttAddr,
		"store", m.DB.Dialect(), "dsn", redactDSN(dsn), "nats", natsbus.RedactURL(m.Config.NATSURL))
	return nil
}

// openEvents connects the event bus (starting the embedded NATS server
// unless --nats-url names one) and starts the outbox relay.
func (m *Main) openEvents(ctx context.Context) error {
	bus := natsbus.NewBus(m.Config.NATSURL, filepath.Join(m.Config.DataDir, "nats"))
	bus.MaxAge, bus.DuplicateWindow = m.Config.EventsRetention, m.Config.EventsDuplicateWindow
	bus.Stream, bus.SubjectPrefix = m.Config.NATSStream, m.Config.NATSSubjectPrefix
	bus.Logger = m.Logger.With("component", "nats")
	if err := bus.Open(ctx); err != nil {
		if m.Config.NATSURL != "" {
			return fmt.Errorf("event bus (--nats-url or %s): %w", envName("nats-url"), err)
		}
		return fmt.Errorf("embedded event bus: %w", err)
	}
	m.Bus = bus
	name, err := m.instanceName()
	if err != nil {
		return err
	}
	r := relay.New(sqldb.NewOutboxService(m.DB), bus)
	r.Owner, r.MarkDelay = name, bus.MarkDelay()
	r.Logger = m.Logger.With("component", "relay")
	wake, unsubscribe := m.DB.EventsCommitted()
	r.Wake = wake
	hooks := sqldb.NewWebhookService(m.DB)
	d := webhook.NewDispatcher(hooks)
	d.Owner = name
	d.Logger = m.Logger.With("component", "webhook")
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.Relay, m.Dispatcher, m.stopEvents, m.eventsCtx = r, d, cancel, ectx
	m.events.Go(func() {
		defer unsubscribe()
		r.Run(ectx)
	})
	m.events.Go(func() { d.Run(ectx) })
	// Every process runs the rollout controller; the leases give each
	// rollout one driver at a time. This process's commits (devices'
	// answers and connects among them) wake it; another's reach it by its
	// poll.
	rc := rollout.New(sqldb.NewRolloutService(m.DB))
	rc.Owner, rc.Lease = name, m.Config.RolloutLease
	rc.Logger = m.Logger.With("component", "rollout")
	rwake, runsubscribe := m.DB.EventsCommitted()
	rc.Wake = rwake
	m.Rollouts = rc
	m.events.Go(func() {
		defer runsubscribe()
		rc.Run(ectx)
	})
	m.events.Go(func() {
		every(ectx, time.Hour, func(ctx context.Context) { m.DB.Prune(ctx, m.Config.EventsRetention) })
	})
	// The telemetry history's retention, at start and hourly: partitions
	// ahead, old readings and rollups out (docs/history.md, "Retention").
	m.events.Go(func() {
		prune := func(ctx context.Context) {
			if err := m.DB.PruneReadings(ctx, m.Config.ReadingsRetention, m.Config.RollupRetention); err != nil && ctx.Err() == nil {
				m.Logger.Warn("pruning the telemetry history failed; the next run tries again", "err", err)
			}
		}
		prune(ectx)
		every(ectx, time.Hour, prune)
	})
	// The per-device rollups one device's stepped read uses, refreshed as
	// buckets age (docs/history.md, "One device's history"); RunDeviceRollups
	// does nothing with --rollups off.
	m.events.Go(func() { m.DB.RunDeviceRollups(ectx) })
	// Each command expires once, as the update takes only open ones, so
	// every process may run the sweep.
	commands := sqldb.NewCommandService(m.DB)
	m.events.Go(func() {
		every(ectx, time.Second, func(ctx context.Context) {
			if _, err := commands.ExpireCommands(ctx); err != nil && ctx.Err() == nil {
				m.Logger.Warn("expiring commands failed", "err", err)
			}
		})
	})
	m.events.Go(func() {
		bus.Keep(ectx, "webhook consumer", func(ctx context.Context) error { return bus.Consume(ctx, webhook.Consumer(hooks, d)) })
	})
	return nil
}

// every runs fn every interval until ctx ends, the first time after one
// interval.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn(ctx)
	}
}

// instanceName names this process in the store's leases and claims (the
// relay's tenants, the dispatcher's deliveries). A process that holds the
// lock file of its data dir is the only one on this host with that dir,
// so it takes the name host:dir: restarted after a crash, it takes back
// its leases at once instead of waiting for them to run out. Without the
// lock (another live process has the dir) the name is unique.
func (m *Main) instanceName() (string, error) {
	host, _ := os.Hostname()
	dir, err := filepath.Abs(m.Config.DataDir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data dir (--data-dir or %s): %w", envName("data-dir"), err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "instance.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("data dir lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		m.Logger.Warn("another herd process uses this data dir; this one takes a name of its own, and its leases wait out the other's after a crash", "dir", dir)
		var b [4]byte
		rand.Read(b[:])
		return fmt.Sprintf("%s:%s:%d-%s", host, dir, os.Getpid(), hex.EncodeToString(b[:])), nil
	}
	m.lock = f // held until the process ends; the kernel lets go of it on a crash
	return host + ":" + dir, nil
}

// ensureAdminToken creates the super-admin token of a new store. A
// generated token is printed once, plainly, since nobody could recover it
// later: the store keeps only its hash.
func (m *Main) ensureAdminToken(ctx context.Context) error {
	want := m.Getenv(AdminTokenEnv)
	created, err := m.DB.EnsureAdminToken(ctx, want)
	if err != nil {
		return fmt.Errorf("admin token (%s): %w", AdminTokenEnv, err)
	}
	switch {
	case created != "" && want == "":
		fmt.Fprintf(m.Stderr, "\nadmin token (shown once): %s\n\n", created)
	case created != "":
		m.Logger.Info("admin token set from " + AdminTokenEnv)
	case want != "":
		// The store had its admin token already. Say so when the variable
		// holds another one, or the operator will chase 401s.
		if _, err := sqldb.NewUserService(m.DB).Authenticate(ctx, want); err != nil {
			m.warnTokenIgnored()
		}
	}
	return nil
}

// Close stops the components in the reverse order of Run: first the HTTP
// server (draining requests in flight), then the store they used.
func (m *Main) Close() error {
	var errs []error
	if m.stopTail != nil {
		m.stopTail()
		m.tail.Wait()
		m.stopTail = nil
	}
	if m.AppSocket != nil {
		// Before the HTTP server, which does not wait for hijacked
		// connections: apps get a 1001 and reconnect elsewhere.
		m.AppSocket.Close()
		m.AppSocket = nil
	}
	if m.Hub != nil {
		m.Hub.Close() // the same for the stream's clients
		m.Hub = nil
	}
	if m.HTTPServer != nil {
		errs = append(errs, m.HTTPServer.Close())
		m.HTTPServer = nil
	}
	if m.debug != nil {
		m.debug.Close()
		m.serving.Wait()
		m.debug = nil
	}
	if m.Gateway != nil {
		// After HTTP, whose /mqtt connections it closes too; it commits what
		// devices sent before the store closes.
		errs = append(errs, m.Gateway.Close())
		m.Gateway = nil
	}
	if m.stopEvents != nil {
		// After the gateway's last commit, so its events leave too when
		// the bus is up; what stays is published by the next start.
		m.stopEvents()
		m.events.Wait()
		m.stopEvents = nil
	}
	if m.Bus != nil {
		errs = append(errs, m.Bus.Close())
		m.Bus = nil
	}
	if m.stopWarm != nil {
		m.stopWarm()
		<-m.warmed
		m.stopWarm = nil
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
		m.DB = nil
	}
	m.ports.close() // what a failed start still holds
	m.ports = nil
	if m.lock != nil {
		m.lock.Close()
		m.lock = nil
	}
	return errors.Join(errs...)
}

// runServe runs the server until ctx ends (SIGINT or SIGTERM).
func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	m := NewMain()
	m.Stderr = stderr
	if err := m.ParseFlags(ctx, args); err != nil {
		return err
	}
	if err := m.Run(ctx); err != nil {
		return errors.Join(err, m.Close())
	}
	<-ctx.Done()
	m.Logger.Info("shutting down")
	if err := m.Close(); err != nil {
		return err
	}
	m.Logger.Info("stopped")
	return nil
}

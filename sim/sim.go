// Package sim is herd's device simulator: devices that connect with a real
// MQTT client library (Eclipse Paho), publish telemetry at a chosen rate with
// realistic values, answer commands, and reconnect with exponential backoff
// and full jitter, as well-behaved firmware does. Scenarios reproduce the
// loads that take fleets down: a steady fleet, a reboot storm, noisy devices.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Scenarios.
const (
	Steady      = "steady"
	RebootStorm = "reboot-storm"
	Noisy       = "noisy"
)

// Device is one simulated device's identity.
type Device struct {
	Key   string
	Token string
}

// Config is a simulation run.
type Config struct {
	// Broker is tcp://host:port or ws://host:port/mqtt.
	Broker  string
	Devices []Device
	// Rate is readings per second per device; 0 connects and stays idle;
	// below 0 each device sends its next reading as soon as the last one is
	// acknowledged (QoS 1), to find the server's maximum rate.
	Rate float64
	// QoS of telemetry: 0 or 1.
	QoS      byte
	Scenario string
	// StormShare of the devices drop their connection without a word at
	// StormAt and reconnect at once (reboot-storm).
	StormShare float64
	StormAt    time.Duration
	// NoisyShare of the devices publish NoisyFactor times the rate (noisy).
	NoisyShare  float64
	NoisyFactor float64
	// Duration of the run after every device has first connected; 0 runs
	// until ctx ends.
	Duration time.Duration
	// ConnectConcurrency bounds the first connects in flight.
	ConnectConcurrency int
	Keepalive          time.Duration
	Seed               uint64
	// ConfigReject of the devices reject every config; FirmwareFail fail
	// every firmware update; Bricked never come back from the reboot after
	// one; ErrorClimb report an error_count that climbs by one a reading
	// once they applied a config or firmware. Each share is chosen by key.
	ConfigReject, FirmwareFail, Bricked, ErrorClimb float64
	// Reboot is how long a device is gone after a firmware update, ±20%.
	Reboot time.Duration
	// Out receives a progress line every second.
	Out io.Writer
}

// Stats are the counts of a run and its PUBACK latencies.
type Stats struct {
	Sent, Acked, Failed       int64
	Connects, ConnectFailures int64
	Reconnects, CommandsAcked int64
	// CommandRepeats counts commands received again (after a reconnect)
	// and not carried out a second time.
	CommandRepeats          int64
	Connected               int64
	Elapsed                 time.Duration // the whole run, connecting included: the span of the counts
	LatencyP50, LatencyP99  time.Duration
	LatencyMax              time.Duration
	StormDropped, StormBack int64
	StormBackIn             time.Duration // time until every dropped device was back
	// Configs decided (once per version) and firmware updates.
	ConfigsApplied, ConfigsRejected                  int64
	FirmwareUpdated, FirmwareFailed, FirmwareBricked int64
}

type run struct {
	cfg        Config
	sent       atomic.Int64
	acked      atomic.Int64
	failed     atomic.Int64
	connects   atomic.Int64
	connFail   atomic.Int64
	reconn     atomic.Int64
	cmdAcked   atomic.Int64
	cmdRepeats atomic.Int64
	connected  atomic.Int64
	lat        histogram
	stormDrop  atomic.Int64
	stormBack  atomic.Int64
	stormStart atomic.Int64 // unix nanos when the storm began
	stormLast  atomic.Int64 // nanos from the storm to the last dropped device's return

	cfgApplied, cfgRejected        atomic.Int64
	fwUpdated, fwFailed, fwBricked atomic.Int64
}

// Run simulates the devices until the duration passes or ctx ends.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	if len(cfg.Devices) == 0 {
		return Stats{}, errors.New("sim: no devices")
	}
	if cfg.ConnectConcurrency <= 0 {
		cfg.ConnectConcurrency = 200
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 60 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.NoisyFactor <= 0 {
		cfg.NoisyFactor = 100
	}
	if cfg.Reboot <= 0 {
		cfg.Reboot = 5 * time.Second
	}
	r := &run{cfg: cfg}
	// The devices live on a context of the run's own, not one derived
	// from the caller's: when the caller's ends (Ctrl-C), the run first
	// reads the counts and only then tells the devices to leave, each of
	// which leaves the connected count as it goes.
	stop := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()

	rng := rand.New(rand.NewPCG(cfg.Seed, 7))
	storm := make([]bool, len(cfg.Devices))
	noisy := make([]bool, len(cfg.Devices))
	for i := range cfg.Devices {
		storm[i] = cfg.Scenario == RebootStorm && rng.Float64() < cfg.StormShare
		noisy[i] = cfg.Scenario == Noisy && rng.Float64() < cfg.NoisyShare
	}
	start := time.Now()
	up := make(chan struct{}, len(cfg.Devices))
	gate := make(chan struct{}, cfg.ConnectConcurrency)
	stormNow := make(chan struct{})
	var wg sync.WaitGroup
	for i, d := range cfg.Devices {
		rate := cfg.Rate
		if noisy[i] {
			rate *= cfg.NoisyFactor
		}
		dev := &device{r: r, d: d, rate: rate, storm: storm[i], rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i))), ota: make(chan *otaJob, 1)}
		wg.Go(func() { dev.live(ctx, gate, up, stormNow) })
	}
	// Wait for every device's first connect, reporting meanwhile.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	n := 0
	for n < len(cfg.Devices) {
		select {
		case <-up:
			n++
		case <-tick.C:
			r.report(start, "connecting")
		case <-stop.Done():
			connected := r.connected.Load()
			cancel()
			wg.Wait()
			s := r.stats(start)
			s.Connected = connected
			return s, stop.Err()
		}
	}
	firstIn := time.Since(start)
	fmt.Fprintf(cfg.Out, "all %d devices connected in %s\n", n, firstIn.Round(time.Millisecond))
	runStart := time.Now()
	var stormTimer <-chan time.Time
	if cfg.Scenario == RebootStorm {
		stormTimer = time.After(cfg.StormAt)
	}
	var end <-chan time.Time
	if cfg.Duration > 0 {
		end = time.After(cfg.Duration)
	}
loop:
	for {
		select {
		case <-tick.C:
			r.report(runStart, cfg.Scenario)
		case <-stormTimer:
			fmt.Fprintf(cfg.Out, "reboot storm: dropping %.0f%% of the devices\n", 100*cfg.StormShare)
			r.stormStart.Store(time.Now().UnixNano())
			close(stormNow)
			stormTimer = nil
		case <-end:
			break loop
		case <-stop.Done():
			break loop
		}
	}
	// Counted before the devices stop, each of which leaves the count.
	connected := r.connected.Load()
	cancel()
	wg.Wait()
	// The counts span the whole run, connecting included.
	s := r.stats(start)
	s.Connected = connected
	return s, nil
}

func (r *run) report(since time.Time, phase string) {
	p50, p99, _ := r.lat.quantiles()
	fmt.Fprintf(r.cfg.Out, "%6s %-12s connected=%d sent=%d acked=%d failed=%d connects=%d refused=%d reconnects=%d puback p50=%s p99=%s\n",
		time.Since(since).Round(time.Second), phase, r.connected.Load(), r.sent.Load(), r.acked.Load(), r.failed.Load(),
		r.connects.Load(), r.connFail.Load(), r.reconn.Load(), p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
}

func (r *run) stats(since time.Time) Stats {
	p50, p99, pmax := r.lat.quantiles()
	s := Stats{
		Sent: r.sent.Load(), Acked: r.acked.Load(), Failed: r.failed.Load(),
		Connects: r.connects.Load(), ConnectFailures: r.connFail.Load(), Reconnects: r.reconn.Load(),
		CommandsAcked: r.cmdAcked.Load(), CommandRepeats: r.cmdRepeats.Load(), Connected: r.connected.Load(), Elapsed: time.Since(since),
		LatencyP50: p50, LatencyP99: p99, LatencyMax: pmax,
		StormDropped: r.stormDrop.Load(), StormBack: r.stormBack.Load(),
		ConfigsApplied: r.cfgApplied.Load(), ConfigsRejected: r.cfgRejected.Load(),
		FirmwareUpdated: r.fwUpdated.Load(), FirmwareFailed: r.fwFailed.Load(), FirmwareBricked: r.fwBricked.Load(),
	}
	if last := r.stormLast.Load(); last > 0 && s.StormBack == s.StormDropped {
		s.StormBackIn = time.Duration(last)
	}
	return s
}

// device is one simulated device's life.
type device struct {
	r     *run
	d     Device
	rate  float64
	storm bool
	rng   *rand.Rand
	conn  atomic.Pointer[killConn]
	// rebooting is set between a storm drop and the next connect.
	rebooting bool
	// done holds the ids of the commands carried out, the last 64.
	doneMu sync.Mutex
	done   []string

	temp, battery float64
	// ota hands a firmware update from the MQTT handler to the publish
	// loop; reportNow makes that loop send a reading at once, as a device
	// back from a reboot does.
	ota       chan *otaJob
	reportNow bool
	// stateMu guards what the MQTT handlers and the readings share.
	stateMu                sync.Mutex
	cfgProfile             string
	cfgVersion, errorCount int64
	firmware               string
	otaJob                 string // the rollout and version of the last job taken
	climb                  bool
}

// killConn lets the simulator drop a connection the way a rebooting device
// does: the socket closes with no DISCONNECT.
type killConn struct{ net.Conn }

func (d *device) options(lost chan<- error) *paho.ClientOptions {
	cfg := d.r.cfg
	opts := paho.NewClientOptions().AddBroker(cfg.Broker).
		SetClientID(d.d.Key).SetUsername(d.d.Key).SetPassword(d.d.Token).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(cfg.Keepalive).SetConnectTimeout(30 * time.Second).SetWriteTimeout(30 * time.Second).
		SetOrderMatters(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	if strings.HasPrefix(cfg.Broker, "tcp://") {
		opts.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 30*time.Second)
			if err != nil {
				return nil, err
			}
			kc := &killConn{Conn: c}
			d.conn.Store(kc)
			return kc, nil
		})
	}
	return opts
}

// live connects, publishes and reconnects until ctx ends.
func (d *device) live(ctx context.Context, gate chan struct{}, up chan<- struct{}, stormNow <-chan struct{}) {
	r := d.r
	d.temp, d.battery = 22+6*d.rng.NormFloat64(), 100-30*d.rng.ExpFloat64()
	first := true
	attempt := 0
	for ctx.Err() == nil {
		lost := make(chan error, 1)
		c := paho.NewClient(d.options(lost))
		if first {
			select {
			case gate <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		tok := c.Connect()
		tok.Wait()
		if first {
			<-gate
		}
		if err := tok.Error(); err != nil {
			r.connFail.Add(1)
			attempt++
			// Full jitter: anywhere from 0 to the exponential ceiling, so
			// that a fleet refused at once does not come back at once.
			ceiling := min(100*time.Millisecond<<min(attempt, 10), 30*time.Second)
			select {
			case <-time.After(time.Duration(d.rng.Int64N(int64(ceiling)) + 1)):
			case <-ctx.Done():
				return
			}
			continue
		}
		attempt = 0
		r.connects.Add(1)
		r.connected.Add(1)
		if d.rebooting {
			d.rebooting = false
			r.stormBack.Add(1)
			back := time.Now().UnixNano() - r.stormStart.Load()
			for {
				old := r.stormLast.Load()
				if back <= old || r.stormLast.CompareAndSwap(old, back) {
					break
				}
			}
		}
		if first {
			first = false
			up <- struct{}{}
		} else {
			r.reconn.Add(1)
		}
		c.Subscribe("devices/"+d.d.Key+"/commands", 1, func(c paho.Client, m paho.Message) {
			// A command may come twice (again after a reconnect): a device
			// carries it out once, by id, and answers each time, since its
			// first answer may be what was lost.
			id := commandID(m.Payload())
			if id == "" {
				return
			}
			if d.seen(id) {
				r.cmdRepeats.Add(1)
			} else {
				r.cmdAcked.Add(1)
			}
			ack := fmt.Sprintf(`{"id":%q,"status":"ok","result":{"by":"herd-simulate"}}`, id)
			c.Publish("devices/"+d.d.Key+"/commands/ack", 1, false, ack)
		})
		c.Subscribe("devices/"+d.d.Key+"/config", 1, d.onConfig)
		c.Subscribe("devices/"+d.d.Key+"/ota", 1, d.onOTA)
		dropped, job := d.publish(ctx, c, lost, stormNow)
		r.connected.Add(-1)
		if job != nil {
			// Rebooting onto new firmware: the progress is out, the
			// device goes.
			c.Disconnect(250)
			if !d.reboot(ctx, job) {
				<-ctx.Done() // bricked: it never comes back
				return
			}
			continue
		}
		c.Disconnect(0)
		if dropped {
			stormNow = nil // once
			d.rebooting = true
			r.stormDrop.Add(1)
			// A rebooted device comes back after its boot time.
			select {
			case <-time.After(time.Duration(d.rng.Int64N(int64(500*time.Millisecond)) + 1)):
			case <-ctx.Done():
				return
			}
		}
	}
}

// publish sends readings until the connection is lost, ctx ends, the
// storm drops this device (then it returns true) or a firmware update has
// it reboot (then it returns the update).
func (d *device) publish(ctx context.Context, c paho.Client, lost <-chan error, stormNow <-chan struct{}) (bool, *otaJob) {
	r := d.r
	var tick <-chan time.Time
	if d.rate < 0 {
		// Closed loop: the next reading as soon as the last is acknowledged,
		// to find the most the server takes.
		ready := make(chan time.Time)
		close(ready)
		tick = ready
	} else if d.rate > 0 {
		period := time.Duration(float64(time.Second) / d.rate)
		// Start at a random point of the period, so devices do not publish
		// in lockstep.
		select {
		case <-time.After(time.Duration(d.rng.Int64N(int64(period)) + 1)):
		case <-ctx.Done():
			return false, nil
		}
		t := time.NewTicker(period)
		defer t.Stop()
		tick = t.C
	}
	if !d.storm {
		stormNow = nil
	}
	topic := "devices/" + d.d.Key + "/telemetry"
	if d.reportNow {
		d.reportNow = false
		r.sent.Add(1)
		if tok := c.Publish(topic, 1, false, d.reading()); tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
			r.acked.Add(1)
		} else {
			r.failed.Add(1)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-lost:
			return false, nil
		case <-stormNow:
			if kc := d.conn.Load(); kc != nil {
				kc.Close()
			}
			return true, nil
		case job := <-d.ota:
			if d.runOTA(ctx, c, job) {
				return false, job
			}
		case <-tick:
			payload := d.reading()
			r.sent.Add(1)
			start := time.Now()
			tok := c.Publish(topic, r.cfg.QoS, false, payload)
			if r.cfg.QoS == 0 {
				continue
			}
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				r.failed.Add(1)
				continue
			}
			r.acked.Add(1)
			r.lat.add(time.Since(start))
		}
	}
}

// commandID pulls the "id" member out of a command payload, crudely; the
// simulator does not need a JSON parser to answer.
// seen reports whether the device carried out the command before, and
// notes it.
func (d *device) seen(id string) bool {
	d.doneMu.Lock()
	defer d.doneMu.Unlock()
	if slices.Contains(d.done, id) {
		return true
	}
	if len(d.done) == 64 {
		d.done = d.done[1:]
	}
	d.done = append(d.done, id)
	return false
}

func commandID(p []byte) string {
	s := string(p)
	i := strings.Index(s, `"id":"`)
	if i < 0 {
		return ""
	}
	s = s[i+6:]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sim"
)

// runSimulate runs `herd simulate`: simulated devices against a running
// herd, provisioned through its API or read from a key file.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("herd simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := sim.Config{Out: stderr}
	broker := fs.String("broker", "", "MQTT broker: tcp://host:port or ws://host:port/mqtt (default: the host of --api, on the port of $"+envName("mqtt-addr")+" or 1883)")
	keys := fs.String("keys", "", `key file of devices to simulate, one "key token" per line (instead of provisioning)`)
	api, token := clientFlags(fs, os.Getenv) // to provision devices through
	node := fs.Int64("node", 0, "node to create the devices under, when provisioning")
	devices := fs.Int("devices", 100, "number of devices to provision")
	writeKeys := fs.String("write-keys", "", "write the provisioned devices' key file here, for other simulator processes")
	shard := fs.String("shard", "", "simulate only part i of n of the devices, as i/n (0-based), to share a fleet between processes")
	fs.Float64Var(&cfg.Rate, "rate", 1, "readings per second per device (0: connect and stay idle)")
	qos := fs.Uint("qos", 1, "QoS of telemetry: 0 or 1")
	fs.StringVar(&cfg.Scenario, "scenario", sim.Steady, "steady, reboot-storm or noisy")
	fs.Float64Var(&cfg.StormShare, "storm-share", 0.25, "reboot-storm: share of the devices that drop and reconnect at once")
	fs.DurationVar(&cfg.StormAt, "storm-at", 10*time.Second, "reboot-storm: when the storm hits, after every device connected")
	fs.Float64Var(&cfg.NoisyShare, "noisy-share", 0.01, "noisy: share of the devices that publish too often")
	fs.Float64Var(&cfg.NoisyFactor, "noisy-factor", 100, "noisy: how many times the rate the noisy devices publish")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to run after every device connected (0: until interrupted)")
	fs.DurationVar(&cfg.Keepalive, "keepalive", 60*time.Second, "MQTT keepalive of the devices")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", 200, "first connects in flight at once")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "random seed")
	fs.Float64Var(&cfg.ConfigReject, "config-reject", 0, "share of the devices that reject every config (chosen by key, the same on every run)")
	fs.Float64Var(&cfg.FirmwareFail, "firmware-fail", 0, "share of the devices whose firmware updates fail (they stay on their firmware)")
	fs.Float64Var(&cfg.Bricked, "bricked", 0, "share of the devices that never come back from the reboot after a firmware update")
	fs.Float64Var(&cfg.ErrorClimb, "error-climb", 0, "share of the devices whose error_count climbs by one a reading once they applied a config or firmware")
	fs.DurationVar(&cfg.Reboot, "reboot", 5*time.Second, "how long a device is gone rebooting after a firmware update (±20%)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: herd simulate [flags]\n\nSimulates devices against a running herd with the Eclipse Paho MQTT client:\nthey publish telemetry, answer commands, apply config and firmware, and\nreconnect with backoff and jitter. Devices come from --keys, or are created under --node through the\nAPI. Progress goes to stderr every second, the summary to stdout.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{msg: fmt.Sprintf("simulate takes no arguments, got %q", fs.Args())}
	}
	switch {
	case *qos > 1:
		return &usageError{msg: "--qos must be 0 or 1"}
	case cfg.Scenario != sim.Steady && cfg.Scenario != sim.RebootStorm && cfg.Scenario != sim.Noisy:
		return &usageError{msg: fmt.Sprintf("--scenario %q: want steady, reboot-storm or noisy", cfg.Scenario)}
	case cfg.Rate < 0:
		return &usageError{msg: "--rate must be 0 or more"}
	case cfg.StormShare < 0 || cfg.StormShare > 1 || cfg.NoisyShare < 0 || cfg.NoisyShare > 1:
		return &usageError{msg: "--storm-share and --noisy-share must be from 0 to 1"}
	case !share(cfg.ConfigReject) || !share(cfg.FirmwareFail) || !share(cfg.Bricked) || !share(cfg.ErrorClimb):
		return &usageError{msg: "--config-reject, --firmware-fail, --bricked and --error-climb must be from 0 to 1"}
	case cfg.Reboot <= 0:
		return &usageError{msg: "--reboot must be more than 0"}
	}
	cfg.QoS = byte(*qos)
	cfg.Broker = *broker
	if cfg.Broker == "" {
		cfg.Broker = defaultBroker(os.Getenv, *api)
	}

	var ds []sim.Device
	var err error
	if *keys != "" {
		if ds, err = sim.ReadDevices(*keys); err != nil {
			return err
		}
	} else {
		if *node == 0 || *token == "" {
			return &usageError{msg: "give --keys, or --node and --token (or " + TokenEnv + " or " + AdminTokenEnv + ") to provision devices"}
		}
		if *devices < 1 || *devices > 1_000_000 {
			return &usageError{msg: "--devices must be from 1 to 1,000,000"}
		}
		if ds, err = provision(ctx, httpapi.NewClient(*api, *token), *node, *devices, stderr); err != nil {
			return fmt.Errorf("provision: %w", err)
		}
		if *writeKeys != "" {
			if err := sim.WriteDevices(*writeKeys, ds); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "key file written: %s\n", *writeKeys)
		}
	}
	if *shard != "" {
		i, n, err := parseShard(*shard)
		if err != nil {
			return &usageError{msg: err.Error()}
		}
		ds = sim.Shard(ds, i, n)
	}
	cfg.Devices = ds
	fmt.Fprintf(stderr, "simulating %d devices against %s (%s, %.3g readings/s each, QoS %d)\n", len(ds), cfg.Broker, cfg.Scenario, cfg.Rate, cfg.QoS)
	stats, err := sim.Run(ctx, cfg)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	secs := stats.Elapsed.Seconds()
	fmt.Fprintf(stdout, "devices %d  connected %d  sent %d  acked %d  failed %d  (%.0f acked/s)\n", len(ds), stats.Connected, stats.Sent, stats.Acked, stats.Failed, float64(stats.Acked)/secs)
	fmt.Fprintf(stdout, "connects %d  refused %d  reconnects %d  commands carried out %d (repeats dropped %d)\n", stats.Connects, stats.ConnectFailures, stats.Reconnects, stats.CommandsAcked, stats.CommandRepeats)
	fmt.Fprintf(stdout, "puback p50 %s  p99 %s  max %s\n", stats.LatencyP50, stats.LatencyP99, stats.LatencyMax)
	fmt.Fprintf(stdout, "configs applied %d  rejected %d  firmware updated %d  failed %d  bricked %d\n",
		stats.ConfigsApplied, stats.ConfigsRejected, stats.FirmwareUpdated, stats.FirmwareFailed, stats.FirmwareBricked)
	if cfg.Scenario == sim.RebootStorm {
		fmt.Fprintf(stdout, "storm: %d dropped, %d back, all back in %s\n", stats.StormDropped, stats.StormBack, stats.StormBackIn)
	}
	return nil
}

func share(f float64) bool { return f >= 0 && f <= 1 }

func parseShard(s string) (i, n int, err error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--shard %q: want i/n with 0 <= i < n", s)
	}
	return i, n, nil
}

// provision creates n devices under the node and a credential for each.
func provision(ctx context.Context, c *httpapi.Client, node int64, n int, stderr io.Writer) ([]sim.Device, error) {
	prefix := "sim-" + strconv.FormatInt(time.Now().UnixMilli(), 36)
	var created []*herd.Device
	for start := 0; start < n; start += herd.MaxBatchDevices {
		var batch []*herd.Device
		for i := start; i < min(n, start+herd.MaxBatchDevices); i++ {
			batch = append(batch, &herd.Device{NodeID: node, Key: fmt.Sprintf("%s-%d", prefix, i), Model: "sim-1"})
		}
		if err := c.CreateDevices(ctx, batch); err != nil {
			return nil, err
		}
		created = append(created, batch...)
		fmt.Fprintf(stderr, "devices created: %d/%d\n", len(created), n)
	}
	out := make([]sim.Device, len(created))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				cred, err := c.CreateDeviceCredential(ctx, created[i].ID)
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					continue
				}
				out[i] = sim.Device{Key: created[i].Key, Token: cred.Token}
			}
		})
	}
	for i := range created {
		if i > 0 && i%5000 == 0 {
			fmt.Fprintf(stderr, "credentials: %d/%d\n", i, n)
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return out, firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

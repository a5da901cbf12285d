package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// StormConfig configures the reboot storm: Devices connected, Reboot of
// them drop without a word at once and reconnect, backing off with full
// jitter when refused, as firmware should.
type StormConfig struct {
	Herd            string
	Dir             string
	Devices, Reboot int
	Out             io.Writer
}

// StormResult is what the storm showed.
type StormResult struct {
	Devices, Reboot int
	// BackIn is the time until every rebooted device was connected again.
	BackIn         time.Duration
	Refusals       int64 // CONNACKs refusing a reconnect (rate or cap)
	Dropped        int   // devices that were not rebooted but lost their connection
	MaxOpenFDs     int64 // herd's open files, sampled every 50 ms
	Cap            int64 // herd's connection cap
	ConnectedAfter int64
}

// RunStorm runs the scenario against herd serve in a child process with
// its default connect rate and cap.
func RunStorm(ctx context.Context, cfg StormConfig) (StormResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	res := StormResult{Devices: cfg.Devices, Reboot: cfg.Reboot}
	store := filepath.Join(cfg.Dir, fmt.Sprintf("storm-%d.db", time.Now().UnixNano()))
	fmt.Fprintf(cfg.Out, "provisioning %d devices\n", cfg.Devices)
	db, devices, err := provisionIngest(ctx, store, cfg.Devices)
	if err != nil {
		return res, err
	}
	db.Close()
	// The first connects are spread out by the client; the storm is not.
	p, err := startServer(ctx, cfg.Herd, store, "--mqtt-connect-rate", "1000")
	if err != nil {
		return res, err
	}
	defer p.stop()
	conns := make([]*loadConn, len(devices))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	fmt.Fprintf(cfg.Out, "connecting %d devices\n", cfg.Devices)
	var refusals atomic.Int64
	connect := func(i int, rng *rand.Rand) error {
		for attempt := 0; ; attempt++ {
			c, err := dialLoad(p.mqtt, devices[i])
			if err == nil {
				conns[i] = c
				return nil
			}
			refusals.Add(1)
			if attempt > 40 || ctx.Err() != nil {
				return err
			}
			ceiling := min(100*time.Millisecond<<min(attempt, 8), 10*time.Second)
			time.Sleep(time.Duration(rng.Int64N(int64(ceiling))) + time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	gate := make(chan struct{}, 100)
	errs := make(chan error, len(devices))
	for i := range devices {
		wg.Go(func() {
			gate <- struct{}{}
			defer func() { <-gate }()
			if err := connect(i, rand.New(rand.NewPCG(uint64(i), 1))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return res, fmt.Errorf("first connects: %w", <-errs)
	}
	m, err := scrape(p.url + "/metrics")
	if err != nil {
		return res, err
	}
	res.Cap = int64(m["herd_mqtt_connection_cap"])
	refusals.Store(0)

	// Sample herd's open files while the storm runs.
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	var maxFDs atomic.Int64
	sampleFDs := func() {
		if m, err := scrape(p.url + "/metrics"); err == nil {
			if v := int64(m["process_open_fds"]); v > maxFDs.Load() {
				maxFDs.Store(v)
			}
		}
	}
	sampleFDs()
	sampler.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sampleFDs()
			}
		}
	})
	fmt.Fprintf(cfg.Out, "reboot storm: %d devices drop and reconnect at once\n", cfg.Reboot)
	start := time.Now()
	for i := range cfg.Reboot {
		conns[i].conn.Close() // no DISCONNECT: the device lost power
		conns[i] = nil
	}
	errs = make(chan error, cfg.Reboot)
	for i := range cfg.Reboot {
		wg.Go(func() {
			if err := connect(i, rand.New(rand.NewPCG(uint64(i), 2))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	res.BackIn = time.Since(start)
	close(stop)
	sampler.Wait()
	sampleFDs()
	res.MaxOpenFDs, res.Refusals = maxFDs.Load(), refusals.Load()
	if len(errs) > 0 {
		return res, fmt.Errorf("rebooted devices did not come back: %w", <-errs)
	}
	// The devices that were not rebooted must still hold their sockets: a
	// read that times out (rather than ending) says the server kept them.
	for _, c := range conns[cfg.Reboot:] {
		c.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		if _, err := c.conn.Read(b[:]); !isTimeout(err) {
			res.Dropped++
		}
	}
	if m, err := scrape(p.url + "/metrics"); err == nil {
		res.ConnectedAfter = int64(m["herd_mqtt_connected_devices"])
	}
	return res, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// StormMarkdown renders the result for bench/README.md.
func StormMarkdown(r StormResult) string {
	return fmt.Sprintf("| devices | rebooted | all back in | refused reconnects | others dropped | connected after | max open files | connection cap |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n| %d | %d | %s | %d | %d | %d | %d | %d |\n",
		r.Devices, r.Reboot, r.BackIn.Round(time.Millisecond), r.Refusals, r.Dropped, r.ConnectedAfter, r.MaxOpenFDs, r.Cap)
}

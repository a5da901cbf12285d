package bench

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// fleetMeter samples herd's connection metrics every 100 ms while a
// rollout runs: the fleet's offline count and the connect rate are what a
// firmware rollout is judged by, and herd's own counters are the truth of
// both (the simulators only see their side).
type fleetMeter struct {
	url  string
	mu   sync.Mutex
	all  []fleetSample
	quit chan struct{}
	wg   sync.WaitGroup
}

type fleetSample struct {
	// start and end bound when herd read its counters: a scrape of a
	// server busy with a storm can take a second.
	start, end       time.Time
	connected        int64
	ok, rate, capped int64 // herd_mqtt_connects_total by result
	scraped          bool
}

func newFleetMeter(url string) *fleetMeter {
	m := &fleetMeter{url: url, quit: make(chan struct{})}
	m.wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			m.sample()
			select {
			case <-m.quit:
				return
			case <-t.C:
			}
		}
	})
	return m
}

func (m *fleetMeter) sample() {
	start := time.Now()
	v, err := scrape(m.url)
	s := fleetSample{start: start, end: time.Now(), scraped: err == nil}
	if err == nil {
		s.connected = int64(v["herd_mqtt_connected_devices"])
		s.ok = int64(v[`herd_mqtt_connects_total{result="ok"}`])
		s.rate = int64(v[`herd_mqtt_connects_total{result="rate"}`])
		s.capped = int64(v[`herd_mqtt_connects_total{result="cap"}`])
	}
	m.mu.Lock()
	m.all = append(m.all, s)
	m.mu.Unlock()
}

func (m *fleetMeter) stop() {
	close(m.quit)
	m.wg.Wait()
}

// mark is the position of the next sample, where a window starts.
func (m *fleetMeter) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.all)
}

func (m *fleetMeter) last() fleetSample {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.all) == 0 {
		return fleetSample{}
	}
	return m.all[len(m.all)-1]
}

// waitConnected waits until herd holds n devices' connections.
func (m *fleetMeter) waitConnected(ctx context.Context, n int64, timeout time.Duration, sims *simulators) error {
	deadline := time.After(timeout)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if m.last().connected >= n {
			return nil
		}
		if err := sims.failed(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%d of %d devices connected after %s", m.last().connected, n, timeout)
		case <-t.C:
		}
	}
}

// meterWindow is what the samples since a mark show.
type meterWindow struct {
	peakOffline             int64
	peakConnectRate         float64
	refusedRate, refusedCap int64
}

// window reads the samples from a mark on, for a fleet of n devices. The
// peak connect rate is a lower bound of the most connects admitted in a
// second: over each span of a second or more between two scrapes, the
// connects between them over the whole seconds of the longest the span
// can have been. The peak offline is sampled: it may miss a lower point
// between two scrapes, never invent one.
func (m *fleetMeter) window(from int, n int64) meterWindow {
	m.mu.Lock()
	var ss []fleetSample
	for _, s := range m.all[min(from, len(m.all)):] {
		if s.scraped {
			ss = append(ss, s)
		}
	}
	m.mu.Unlock()
	var w meterWindow
	if len(ss) == 0 {
		return w
	}
	i := 0
	for j, s := range ss {
		w.peakOffline = max(w.peakOffline, n-s.connected)
		for i < j && s.end.Sub(ss[i+1].start) >= time.Second {
			i++
		}
		// Of the ⌈d⌉ seconds that cover a span of d, one admitted at
		// least its share of the span's connects.
		if d := s.end.Sub(ss[i].start); d >= time.Second {
			w.peakConnectRate = max(w.peakConnectRate, float64(s.ok-ss[i].ok)/math.Ceil(d.Seconds()))
		}
	}
	first, last := ss[0], ss[len(ss)-1]
	w.refusedRate, w.refusedCap = last.rate-first.rate, last.capped-first.capped
	return w
}

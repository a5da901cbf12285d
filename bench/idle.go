package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// IdleConfig configures the idle-connection memory scenario: how much heap
// and RSS herd spends per connected device that sends nothing.
type IdleConfig struct {
	Herd    string
	Dir     string
	Devices int
	Out     io.Writer
}

// IdleResult is the scenario's measure, after a forced GC on both sides.
type IdleResult struct {
	Devices                 int
	HeapBefore, HeapAfter   int64
	RSSBefore, RSSAfter     int64
	FDsAfter                int64
	HeapPerConn, RSSPerConn float64
	Connected               int64
}

// RunIdle connects every device and leaves it idle, and reads herd's live
// heap (after a GC forced through its profiler) and RSS before and after.
func RunIdle(ctx context.Context, cfg IdleConfig) (IdleResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	store := filepath.Join(cfg.Dir, fmt.Sprintf("idle-%d.db", time.Now().UnixNano()))
	fmt.Fprintf(cfg.Out, "provisioning %d devices\n", cfg.Devices)
	db, devices, err := provisionIngest(ctx, store, cfg.Devices)
	if err != nil {
		return IdleResult{}, err
	}
	db.Close()
	p, err := startServer(ctx, cfg.Herd, store, "--debug-addr", "127.0.0.1:0")
	if err != nil {
		return IdleResult{}, err
	}
	defer p.stop()
	debug := p.debug
	if debug == "" {
		return IdleResult{}, fmt.Errorf("herd serve did not log its profiler address")
	}
	res := IdleResult{Devices: cfg.Devices}
	sample := func() (heap, rss, fds, connected int64, err error) {
		// heap?gc=1 runs a collection first, so the heap is what is live.
		resp, err := http.Get("http://" + debug + "/debug/pprof/heap?gc=1")
		if err != nil {
			return 0, 0, 0, 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		m, err := scrape(p.url + "/metrics")
		if err != nil {
			return 0, 0, 0, 0, err
		}
		return int64(m["go_memstats_heap_alloc_bytes"]), int64(m["process_resident_memory_bytes"]), int64(m["process_open_fds"]), int64(m["herd_mqtt_connected_devices"]), nil
	}
	if res.HeapBefore, res.RSSBefore, _, _, err = sample(); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "connecting %d idle devices\n", cfg.Devices)
	conns := make([]*loadConn, len(devices))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	gate := make(chan struct{}, 200)
	for i, d := range devices {
		wg.Go(func() {
			gate <- struct{}{}
			defer func() { <-gate }()
			c, err := dialLoad(p.mqtt, d)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			conns[i] = c
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	if firstErr != nil {
		return res, firstErr
	}
	// A CONNACK comes before herd has finished with the connect: wait
	// until it counts every device's session.
	deadline := time.Now().Add(time.Minute)
	for {
		m, err := scrape(p.url + "/metrics")
		if err != nil {
			return res, err
		}
		if int(m["herd_mqtt_connected_devices"]) >= cfg.Devices {
			break
		} else if time.Now().After(deadline) {
			return res, fmt.Errorf("herd counts %v of %d devices connected after a minute", m["herd_mqtt_connected_devices"], cfg.Devices)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res.HeapAfter, res.RSSAfter, res.FDsAfter, res.Connected, err = sample(); err != nil {
		return res, err
	}
	res.HeapPerConn = float64(res.HeapAfter-res.HeapBefore) / float64(cfg.Devices)
	res.RSSPerConn = float64(res.RSSAfter-res.RSSBefore) / float64(cfg.Devices)
	return res, nil
}

// scrape reads the plain numeric samples of a Prometheus text page, by
// series name (with its labels, as the page writes them, when it has
// any), and histogram buckets as name_bucket/le.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if base, labels, found := strings.Cut(name, "{"); found {
			// Histogram buckets are kept as name_bucket/le; other labeled
			// series under their whole name, labels and all.
			if le, isBucket := strings.CutPrefix(labels, `le="`); isBucket && strings.HasSuffix(base, "_bucket") {
				name = base + "/" + strings.TrimSuffix(le, `"}`)
			}
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// IdleMarkdown renders the result for bench/README.md.
func IdleMarkdown(r IdleResult) string {
	return fmt.Sprintf("| idle devices | connected | heap before | heap after | heap per connection | RSS per connection | open files |\n|---:|---:|---:|---:|---:|---:|---:|\n| %d | %d | %.1f MiB | %.1f MiB | %.1f KiB | %.1f KiB | %d |\n",
		r.Devices, r.Connected, float64(r.HeapBefore)/(1<<20), float64(r.HeapAfter)/(1<<20), r.HeapPerConn/1024, r.RSSPerConn/1024, r.FDsAfter)
}

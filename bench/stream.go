package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/httpapi"
	"github.com/herd-iot/herd/sqldb"
)

// StreamConfig configures the stream scenarios against herd serve in a
// child process (SQLite, embedded NATS):
//   - latency: Sites sites with a device each, reporting events over MQTT
//     at Rate a second in all; a user per site with a viewer grant there,
//     and Clients stream connections spread over the users. A hint's
//     latency runs from the PUBACK of its event (herd acknowledges after
//     the commit) to its arrival at the client.
//   - saturation: the same clients, all seeing every event (the tenant's
//     root), at SaturationRate events a second: hints delivered a second.
//   - commands: Commands a second sent through the API to the devices,
//     connected as MQTT clients; latency from the POST to the device's
//     receipt.
type StreamConfig struct {
	Herd, Dir      string
	Sites, Clients int
	Rate           float64
	SaturationRate float64
	Commands       float64
	Duration       time.Duration
	Out            io.Writer
}

// StreamResult holds the figures.
type StreamResult struct {
	Clients                     int
	Rate                        float64 // events committed a second
	Hints                       int
	HintP50, HintP99, HintMax   time.Duration
	SatOffered, SatDelivered    float64 // hints a second
	SatResyncs                  float64
	CommandRate                 float64
	Commands                    int
	CommandP50, CommandP99, Max time.Duration
}

type benchSite struct {
	dev   loadDevice
	devID int64
	token string // the site's user
}

// RunStream runs the scenarios.
func RunStream(ctx context.Context, cfg StreamConfig) (StreamResult, error) {
	res := StreamResult{Clients: cfg.Clients}
	dsn, _, err := freshStore(ctx, "", cfg.Dir, "stream")
	if err != nil {
		return res, err
	}
	db, ten, sites, err := provisionSites(ctx, dsn, cfg.Sites)
	if err != nil {
		return res, err
	}
	db.Close()
	srv, err := startServer(ctx, cfg.Herd, dsn, "--api-rate-limit", "0")
	if err != nil {
		return res, err
	}
	defer srv.stop()
	ws := strings.Replace(srv.url, "http://", "ws://", 1) + "/v1/stream"

	// Latency: each site's clients see their site's device.
	fmt.Fprintf(cfg.Out, "stream: %d clients on %d sites; %d devices reporting %.0f events/s for %s\n", cfg.Clients, cfg.Sites, len(sites), cfg.Rate, cfg.Duration)
	acked := newAckTimes()
	lat := &latencies{}
	// Matched once the run is over: a hint can arrive before its event's
	// PUBACK (both leave after the commit, by different paths).
	type arrival struct {
		h  hintOf
		at time.Time
	}
	var amu sync.Mutex
	var arrivals []arrival
	var hints atomic.Int64
	clients, err := dialClients(ctx, ws, cfg.Clients, func(i int) (string, string) { return sites[i%len(sites)].token, "" }, func(h hintOf, at time.Time) {
		hints.Add(1)
		amu.Lock()
		arrivals = append(arrivals, arrival{h, at})
		amu.Unlock()
	})
	if err != nil {
		return res, err
	}
	rate, err := reportAll(ctx, srv.mqtt, sites, cfg.Rate, cfg.Duration, acked)
	if err != nil {
		closeClients(clients)
		return res, err
	}
	waitQuiet(&hints)
	closeClients(clients)
	res.Rate, res.Hints = rate, int(hints.Load())
	var unmatched, early int
	for _, a := range arrivals {
		t, ok := acked.get(a.h.subject, a.h.k)
		if !ok {
			unmatched++
			continue
		}
		if a.at.Before(t) {
			early++
		}
		lat.add([]time.Duration{max(a.at.Sub(t), 0)})
	}
	if unmatched > 0 || early > 0 {
		fmt.Fprintf(cfg.Out, "stream: %d hints arrived before their event's PUBACK (counted as 0), %d matched no acknowledged event\n", early, unmatched)
	}
	res.HintP50, res.HintP99, res.HintMax = lat.quantiles()
	fmt.Fprintf(cfg.Out, "stream: %.0f events/s committed, %d hints; commit → hint p50 %s p99 %s max %s\n", rate, res.Hints, fmtDur(res.HintP50), fmtDur(res.HintP99), fmtDur(res.HintMax))

	// Saturation: every client sees every event.
	if cfg.SaturationRate > 0 {
		fmt.Fprintf(cfg.Out, "stream: saturation, %d clients seeing every event, %.0f events/s offered\n", cfg.Clients, cfg.SaturationRate)
		var got atomic.Int64
		clients, err := dialClients(ctx, ws, cfg.Clients, func(int) (string, string) { return benchAdminToken, fmt.Sprint(ten.ID) }, func(hintOf, time.Time) { got.Add(1) })
		if err != nil {
			return res, err
		}
		m0, _ := scrape(srv.url + "/metrics")
		start := time.Now()
		rate, err := reportAll(ctx, srv.mqtt, sites, cfg.SaturationRate, cfg.Duration, newAckTimes())
		if err != nil {
			closeClients(clients)
			return res, err
		}
		elapsed := time.Since(start)
		n := got.Load()
		closeClients(clients)
		m1, _ := scrape(srv.url + "/metrics")
		res.SatOffered = rate * float64(cfg.Clients)
		res.SatDelivered = float64(n) / elapsed.Seconds()
		res.SatResyncs = m1["herd_stream_resyncs_total"] - m0["herd_stream_resyncs_total"]
		fmt.Fprintf(cfg.Out, "stream: saturation: %.0f hints/s offered, %.0f delivered, %.0f clients told to resync\n", res.SatOffered, res.SatDelivered, res.SatResyncs)
	}

	// Commands: POST to device receipt.
	if cfg.Commands > 0 {
		if err := benchCommands(ctx, cfg, srv, sites, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// provisionSites makes a tenant with n sites, a device with credentials
// on each, and a user with a viewer grant on each.
func provisionSites(ctx context.Context, dsn string, n int) (*sqldb.DB, *herd.Tenant, []benchSite, error) {
	db := sqldb.NewDB(dsn)
	db.StateCache.MinTenantDevices = 0
	if err := db.Open(); err != nil {
		return nil, nil, nil, err
	}
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	ten := &herd.Tenant{Name: "bench-stream"}
	if err := sqldb.NewTenantService(db).CreateTenant(super, ten); err != nil {
		return db, nil, nil, err
	}
	users, grants := sqldb.NewUserService(db), sqldb.NewGrantService(db)
	var out []benchSite
	for i := range n {
		node := &herd.Node{ParentID: ten.RootNodeID, Kind: "site", Name: fmt.Sprintf("site-%d", i)}
		if err := sqldb.NewNodeService(db).CreateNode(super, node); err != nil {
			return db, nil, nil, err
		}
		d := &herd.Device{NodeID: node.ID, Key: fmt.Sprintf("stream-%d", i)}
		if err := sqldb.NewDeviceService(db).CreateDevices(super, []*herd.Device{d}); err != nil {
			return db, nil, nil, err
		}
		cs, err := sqldb.NewCredentialService(db).CreateDeviceCredentials(super, []int64{d.ID})
		if err != nil {
			return db, nil, nil, err
		}
		u := &herd.User{TenantID: ten.ID, Name: fmt.Sprintf("viewer-%d", i)}
		if err := users.CreateUser(super, u); err != nil {
			return db, nil, nil, err
		}
		if err := grants.CreateGrant(super, &herd.Grant{UserID: u.ID, NodeID: node.ID, Role: herd.RoleViewer}); err != nil {
			return db, nil, nil, err
		}
		tok, err := users.CreateToken(super, u.ID)
		if err != nil {
			return db, nil, nil, err
		}
		out = append(out, benchSite{dev: loadDevice{key: cs[0].Key, token: cs[0].Token, topic: "devices/" + cs[0].Key + "/events"}, devID: d.ID, token: tok.Secret})
	}
	return db, ten, out, nil
}

// ackTimes keeps when each (device, n) event was acknowledged.
type ackTimes struct {
	mu sync.Mutex
	m  map[[2]int64]time.Time
}

func newAckTimes() *ackTimes { return &ackTimes{m: map[[2]int64]time.Time{}} }

func (a *ackTimes) set(dev, n int64, t time.Time) {
	a.mu.Lock()
	a.m[[2]int64{dev, n}] = t
	a.mu.Unlock()
}

func (a *ackTimes) get(dev, n int64) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.m[[2]int64{dev, n}]
	return t, ok
}

// reportAll has every site's device report events at rate/len(sites) a
// second and returns the events committed a second.
func reportAll(ctx context.Context, mqttAddr string, sites []benchSite, rate float64, d time.Duration, acked *ackTimes) (float64, error) {
	lctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	var n atomic.Int64
	errs := make(chan error, len(sites))
	start := time.Now()
	for i, s := range sites {
		wg.Go(func() {
			err := reportEvents(lctx, mqttAddr, s.dev, rate/float64(len(sites)), time.Duration(i)*time.Second/time.Duration(len(sites)), func(k int64, at time.Time) {
				n.Add(1)
				acked.set(s.devID, k, at)
			})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return float64(n.Load()) / time.Since(start).Seconds(), <-errs
}

// hintOf is a hint as a client counts it: the subject, and how many hints
// of that subject the client had before (its k, from 1).
type hintOf struct{ subject, k int64 }

type streamClient struct {
	ws   *websocket.Conn
	done chan struct{}
}

// dialClients opens n stream connections, the i-th with auth(i) (a token
// and, for a super-admin, a tenant id), and reports each hint with its
// arrival time.
func dialClients(ctx context.Context, url string, n int, auth func(i int) (string, string), onHint func(hintOf, time.Time)) ([]*streamClient, error) {
	var out []*streamClient
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := range n {
		token, tenant := auth(i)
		u := url
		if tenant != "" {
			u += "?tenant_id=" + tenant
		}
		ws, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
		if err != nil {
			closeClients(out)
			return nil, fmt.Errorf("stream client %d: %w", i, err)
		}
		ws.SetReadLimit(4 << 20)
		c := &streamClient{ws: ws, done: make(chan struct{})}
		if _, _, err := ws.Read(ctx); err != nil { // hello
			closeClients(out)
			return nil, err
		}
		go func() {
			defer close(c.done)
			counts := map[int64]int64{}
			var f struct {
				Hints []struct {
					Type      string `json:"type"`
					SubjectID int64  `json:"subject_id,string"`
				} `json:"hints"`
			}
			for {
				_, data, err := ws.Read(context.Background())
				if err != nil {
					return
				}
				at := time.Now()
				f.Hints = f.Hints[:0]
				if json.Unmarshal(data, &f) != nil {
					continue
				}
				for _, h := range f.Hints {
					if h.Type != herd.EventDeviceReported {
						continue // connects and disconnects are hinted too
					}
					counts[h.SubjectID]++
					onHint(hintOf{h.SubjectID, counts[h.SubjectID]}, at)
				}
			}
		}()
		out = append(out, c)
	}
	return out, nil
}

func closeClients(cs []*streamClient) {
	for _, c := range cs {
		c.ws.CloseNow()
		<-c.done
	}
}

// waitQuiet waits until a counter has not moved for half a second (at
// most 10 s): the last hints in flight.
func waitQuiet(n *atomic.Int64) {
	last := n.Load()
	for range 20 {
		time.Sleep(500 * time.Millisecond)
		if now := n.Load(); now == last {
			return
		} else {
			last = now
		}
	}
}

// benchCommands sends commands through the API at cfg.Commands a second,
// spread over the devices, which listen on their commands topic.
func benchCommands(ctx context.Context, cfg StreamConfig, srv *server, sites []benchSite, res *StreamResult) error {
	fmt.Fprintf(cfg.Out, "commands: %.0f a second to %d devices for %s\n", cfg.Commands, len(sites), cfg.Duration)
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat []time.Duration
	var subs []*subscriber
	for _, s := range sites {
		sub, err := subscribeAs(srv.mqtt, s.dev, "devices/"+s.dev.key+"/commands", func(payload []byte) {
			at := time.Now()
			var c struct {
				Args struct {
					Mark string `json:"mark"`
				} `json:"args"`
			}
			if json.Unmarshal(payload, &c) != nil {
				return
			}
			mu.Lock()
			if t, ok := sent[c.Args.Mark]; ok {
				lat = append(lat, at.Sub(t))
				delete(sent, c.Args.Mark)
			}
			mu.Unlock()
		})
		if err != nil {
			return err
		}
		subs = append(subs, sub)
	}
	defer func() {
		for _, s := range subs {
			s.close()
		}
	}()
	c := httpapi.NewClient(srv.url, benchAdminToken)
	c.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	interval := time.Duration(float64(time.Second) / cfg.Commands)
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 256)
	start := time.Now()
	n := 0
	for ; time.Since(start) < cfg.Duration; n++ {
		if wait := time.Until(start.Add(time.Duration(n) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		mark := fmt.Sprintf("m%d", n)
		s := sites[n%len(sites)]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			mu.Lock()
			sent[mark] = time.Now()
			mu.Unlock()
			cmd := &herd.Command{DeviceID: s.devID, Name: "bench", Args: json.RawMessage(`{"mark":"` + mark + `"}`), TTLSeconds: 60, IdempotencyKey: mark}
			if err := c.CreateCommand(ctx, cmd); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	res.CommandRate = float64(n) / time.Since(start).Seconds()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		left := len(sent)
		mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	res.Commands = len(lat)
	if len(lat) > 0 {
		res.CommandP50, res.CommandP99, res.Max = percentile(lat, 0.5), percentile(lat, 0.99), lat[len(lat)-1]
	}
	fmt.Fprintf(cfg.Out, "commands: %d sent (%.0f/s, %d failed), %d received; POST → device p50 %s p99 %s max %s\n",
		n, res.CommandRate, failed.Load(), res.Commands, fmtDur(res.CommandP50), fmtDur(res.CommandP99), fmtDur(res.Max))
	if len(sent) > 0 {
		return fmt.Errorf("commands: %d sent commands never reached their device", len(sent))
	}
	return nil
}

// StreamMarkdown formats the results.
func StreamMarkdown(r StreamResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | load | result | p50 | p99 | max |\n|---|---|---|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| commit → hint | %d clients, %.0f events/s | %d hints | %s | %s | %s |\n", r.Clients, r.Rate, r.Hints, fmtDur(r.HintP50), fmtDur(r.HintP99), fmtDur(r.HintMax))
	if r.SatOffered > 0 {
		fmt.Fprintf(&b, "| saturation | %d clients seeing every event, %.0f hints/s offered | %.0f hints/s delivered, %.0f resyncs | | | |\n", r.Clients, r.SatOffered, r.SatDelivered, r.SatResyncs)
	}
	if r.CommandRate > 0 {
		fmt.Fprintf(&b, "| POST command → device | %.0f commands/s | %d received | %s | %s | %s |\n", r.CommandRate, r.Commands, fmtDur(r.CommandP50), fmtDur(r.CommandP99), fmtDur(r.Max))
	}
	return b.String()
}

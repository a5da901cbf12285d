// Package seed fills a store with a synthetic fleet for demos and
// benchmarks: a tenant, a node tree of a given shape, and devices spread
// evenly over its leaves with realistic, reproducible readings.
package seed

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/herd-iot/herd"
)

// BulkLoader loads many devices of one tenant at once. sqldb.DB implements
// it.
type BulkLoader interface {
	BulkLoadDevices(ctx context.Context, tenantID, expected int64, next func() *herd.Device, progress func(phase string, done, total int64)) (int64, error)
}

// Config says what fleet to make.
type Config struct {
	Tenant  string
	Devices int64
	// Shape is the fan-out of each tree level below the tenant root, for
	// example [5 20 100]: 5 regions, 20 sites each, 100 zones each. Devices
	// are spread evenly over the leaves.
	Shape []int
	// Seed makes the fleet reproducible.
	Seed uint64
	// Now anchors generated times (last_seen, created_at).
	Now time.Time
}

// LevelKinds names the tree levels by depth; deeper levels are "level-N".
var LevelKinds = []string{"region", "site", "zone", "line", "cell"}

// ParseShape parses "5x20x100".
func ParseShape(s string) ([]int, error) {
	var shape []int
	total := 1
	for _, p := range strings.Split(s, "x") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("shape %q: each level must be a positive integer, as in 5x20x100", s)
		}
		total *= n
		if total > 1_000_000 {
			return nil, fmt.Errorf("shape %q: more than 1,000,000 leaf nodes", s)
		}
		shape = append(shape, n)
	}
	if len(shape) > 8 {
		return nil, fmt.Errorf("shape %q: at most 8 levels", s)
	}
	return shape, nil
}

// Fleet is what Run made.
type Fleet struct {
	Tenant *herd.Tenant
	// Levels holds the nodes of each level, level 0 being the first below
	// the root, in creation order.
	Levels  [][]*herd.Node
	Devices int64
}

// Leaves returns the deepest level.
func (f *Fleet) Leaves() []*herd.Node { return f.Levels[len(f.Levels)-1] }

// Progress reports the state of a long seed.
type Progress struct {
	Phase string // "nodes", "devices", then "indexes" for a large load
	Done  int64
	Total int64
}

// Run creates the tenant, the tree and the devices. ctx must carry a
// super-admin actor.
func Run(ctx context.Context, cfg Config, tenants herd.TenantService, nodes herd.NodeService, loader BulkLoader, progress func(Progress)) (*Fleet, error) {
	if cfg.Devices < 0 {
		return nil, fmt.Errorf("devices must not be negative")
	} else if len(cfg.Shape) == 0 {
		return nil, fmt.Errorf("shape is required")
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now().UTC()
	}
	if progress == nil {
		progress = func(Progress) {}
	}
	t := &herd.Tenant{Name: cfg.Tenant}
	if err := tenants.CreateTenant(ctx, t); err != nil {
		return nil, fmt.Errorf("create tenant: %w", err)
	}
	fleet := &Fleet{Tenant: t}
	totalNodes, width := int64(0), int64(1)
	for _, n := range cfg.Shape {
		width *= int64(n)
		totalNodes += width
	}
	parents := []*herd.Node{{ID: t.RootNodeID, TenantID: t.ID}}
	var made int64
	for depth, fan := range cfg.Shape {
		kind := "level-" + strconv.Itoa(depth+1)
		if depth < len(LevelKinds) {
			kind = LevelKinds[depth]
		}
		level := make([]*herd.Node, 0, len(parents)*fan)
		for pi, p := range parents {
			for i := 0; i < fan; i++ {
				n := &herd.Node{ParentID: p.ID, Kind: kind, Name: fmt.Sprintf("%s-%d", kind, pi*fan+i+1)}
				if err := nodes.CreateNode(ctx, n); err != nil {
					return nil, fmt.Errorf("create node: %w", err)
				}
				level = append(level, n)
				if made++; made%500 == 0 {
					progress(Progress{Phase: "nodes", Done: made, Total: totalNodes})
				}
			}
		}
		fleet.Levels = append(fleet.Levels, level)
		parents = level
	}
	progress(Progress{Phase: "nodes", Done: made, Total: totalNodes})

	gen := newGenerator(cfg, t.ID, fleet.Leaves())
	n, err := loader.BulkLoadDevices(ctx, t.ID, cfg.Devices, gen.next, func(phase string, done, total int64) {
		progress(Progress{Phase: phase, Done: done, Total: total})
	})
	if err != nil {
		return nil, fmt.Errorf("load devices: %w", err)
	}
	fleet.Devices = n
	return fleet, nil
}

// generator yields devices leaf by leaf: leaf i holds devices
// [i*total/leaves, (i+1)*total/leaves).
type generator struct {
	cfg    Config
	tenant int64
	leaves []*herd.Node
	rng    *rand.Rand
	// labels draws the labels from a stream of its own, so that every
	// other value of a fleet seeded before labels existed stays the same.
	labels *rand.Rand
	i      int64
	leaf   int
}

func newGenerator(cfg Config, tenant int64, leaves []*herd.Node) *generator {
	return &generator{cfg: cfg, tenant: tenant, leaves: leaves, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(tenant))),
		labels: rand.New(rand.NewPCG(cfg.Seed^0x6c6162656c73, uint64(tenant)))}
}

var (
	models    = []string{"TH-100", "TH-200", "PX-7", "PX-9", "VM-3", "GW-1", "EM-40", "EM-41"}
	firmwares = []string{"1.4.2", "1.5.0", "1.5.1", "2.0.0", "2.0.3", "2.1.0-rc1"}
	// firmwareWeights skews the fleet to recent releases, as rollouts do.
	firmwareWeights = []float64{0.04, 0.08, 0.18, 0.30, 0.35, 0.05}
	adjectives      = []string{"amber", "brisk", "cedar", "dusty", "eager", "frost", "gale", "harbor", "iron", "jade", "keen", "lunar", "maple", "north", "onyx", "pine", "quartz", "river", "slate", "tidal"}
	nouns           = []string{"pump", "meter", "sensor", "valve", "relay", "probe", "gauge", "node", "switch", "beacon"}
)

func (g *generator) next() *herd.Device {
	if g.i >= g.cfg.Devices {
		return nil
	}
	leaves := int64(len(g.leaves))
	for int64(g.leaf+1)*g.cfg.Devices/leaves <= g.i {
		g.leaf++
	}
	node := g.leaves[g.leaf]
	r := g.rng
	i := g.i
	g.i++
	d := &herd.Device{
		TenantID: g.tenant,
		NodeID:   node.ID,
		Path:     node.Path,
		Key:      fmt.Sprintf("t%d-%08d", g.tenant, i),
		// Names are unrelated to ids, so sorting by name is a real test.
		Name:          fmt.Sprintf("%s-%s-%05d", adjectives[r.IntN(len(adjectives))], nouns[r.IntN(len(nouns))], r.IntN(100000)),
		Model:         models[r.IntN(len(models))],
		Firmware:      pick(r, firmwares, firmwareWeights),
		ErrorCount:    int64(r.ExpFloat64() * 0.3),
		ConfigVersion: int64(1 + r.IntN(5)),
		CreatedAt:     g.cfg.Now.Add(-time.Duration(r.Int64N(int64(365 * 24 * time.Hour)))).Truncate(time.Millisecond),
	}
	d.Labels = g.deviceLabels()
	// 1% of devices were provisioned but never reported: every reading NULL.
	// Their status is empty: they have reported none.
	if r.Float64() < 0.01 {
		return d
	}
	// 3% are away (online false), their last report ok.
	u := r.Float64()
	switch {
	case u < 0.85:
		d.Status = herd.StatusOK
	case u < 0.93:
		d.Status = herd.StatusWarn
	case u < 0.97:
		d.Status = herd.StatusAlarm
	default:
		d.Status = herd.StatusOK
	}
	d.Online = u < 0.97
	var ago time.Duration
	if d.Online {
		ago = time.Duration(r.ExpFloat64() * float64(60*time.Second))
	} else {
		ago = time.Hour + time.Duration(r.Int64N(int64(30*24*time.Hour)))
	}
	seen := g.cfg.Now.Add(-ago).Truncate(time.Millisecond)
	d.LastSeen = &seen
	temp := 22 + r.NormFloat64()*6
	if d.Status == herd.StatusAlarm {
		temp = 45 + r.NormFloat64()*10
	}
	d.Temperature = round(temp, 2)
	d.Humidity = round(clamp(45+r.NormFloat64()*15, 0, 100), 1)
	d.Pressure = round(1013+r.NormFloat64()*10, 1)
	volt := 12 + r.NormFloat64()*0.8
	cur := math.Exp(r.NormFloat64()*0.5) * 0.8
	d.Voltage, d.Current, d.Power = round(volt, 2), round(cur, 3), round(volt*cur, 2)
	// Batteries drain over time: most are high, a tail is low.
	d.Battery = round(clamp(100-r.ExpFloat64()*30, 0, 100), 1)
	rssi := int64(-70 + r.NormFloat64()*10)
	uptime := int64(r.ExpFloat64() * 10 * 86400)
	d.RSSI, d.UptimeS = &rssi, &uptime
	return d
}

// Labels as operators set them: every device is on a rollout ring (5%
// canary, 15% beta), on one of 20 floors, and one in ten carries an asset
// tag of its own.
var (
	rings       = []string{"canary", "beta", "stable"}
	ringWeights = []float64{0.05, 0.15, 0.80}
)

func (g *generator) deviceLabels() map[string]string {
	r := g.labels
	l := map[string]string{"ring": pick(r, rings, ringWeights), "floor": strconv.Itoa(1 + r.IntN(20))}
	if r.IntN(10) == 0 {
		l["asset"] = fmt.Sprintf("AT-%06d", r.IntN(1000000))
	}
	return l
}

func pick(r *rand.Rand, values []string, weights []float64) string {
	u := r.Float64()
	for i, w := range weights {
		if u < w {
			return values[i]
		}
		u -= w
	}
	return values[len(values)-1]
}

func round(x float64, places int) *float64 {
	p := math.Pow(10, float64(places))
	v := math.Round(x*p) / p
	return &v
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
)

// HistoryFleetConfig configures the fleet-aggregate scenario: a tenant of
// Devices devices on Sites sites, each reporting PerHour readings an hour
// for Hours hours, committed through the ingest path (which keeps the
// rollups); then the aggregate of the whole tenant over those hours with
// step=1h, from the rollups, against the same answer from the readings
// (the baseline), in the same run.
type HistoryFleetConfig struct {
	// Herd is the herd binary: its export writes the fleet's readings to
	// Parquet, for the bytes a reading takes there. Empty skips it.
	Herd    string
	Stores  []string
	Dir     string
	Devices int
	Sites   int
	Hours   int
	PerHour int
	// Queries is how many times each rollup query runs (for its p99); the
	// baseline runs BaselineQueries times.
	Queries, BaselineQueries int
	Out                      io.Writer
}

// DefaultHistoryFleetConfig is the figure: 200,000 devices, 24 h.
func DefaultHistoryFleetConfig() HistoryFleetConfig {
	return HistoryFleetConfig{Devices: 200000, Sites: 200, Hours: 24, PerHour: 1, Queries: 200, BaselineQueries: 3}
}

// HistoryFleetResult is the scenario on one store.
type HistoryFleetResult struct {
	Store             string
	Devices, Sites    int
	Readings          int64
	LoadRate          float64 // readings committed a second while loading
	RollupRows        int64   // rows one aggregate reads (hourly, whole tenant)
	Avg, P95          Latency // step=1h over the range, from the rollups
	BaselineAvg       time.Duration
	BaselineP95       time.Duration
	MaxAvgError       float64 // largest relative difference of avg from the baseline's
	MaxP95Error       float64 // of p95 from the exact value at its rank
	ReadingBytes      int64   // readings with their indexes
	RollupBytes       int64
	ReadingsPerDevice float64
	// ParquetBytes is `herd export readings --format parquet` of the whole
	// range; ExportRate its readings a second, end to end.
	ParquetBytes int64
	ExportRate   float64
}

// Latency is a query's p50 and p99 over its runs.
type Latency struct{ P50, P99, Max time.Duration }

func latencyOf(ds []time.Duration) Latency {
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(math.Ceil(q*float64(len(ds))))-1)] }
	return Latency{P50: at(0.50), P99: at(0.99), Max: ds[len(ds)-1]}
}

// RunHistoryFleet runs the scenario on every store.
func RunHistoryFleet(ctx context.Context, cfg HistoryFleetConfig) ([]HistoryFleetResult, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	var out []HistoryFleetResult
	for _, store := range cfg.Stores {
		r, err := historyFleetCell(ctx, cfg, store)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func historyFleetCell(ctx context.Context, cfg HistoryFleetConfig, store string) (HistoryFleetResult, error) {
	dsn, kind, err := freshStore(ctx, store, cfg.Dir, "history")
	if err != nil {
		return HistoryFleetResult{}, err
	}
	res := HistoryFleetResult{Store: kind, Devices: cfg.Devices, Sites: cfg.Sites}
	db := sqldb.NewDB(dsn)
	db.StateCache.MinTenantDevices = 0
	if err := db.Open(); err != nil {
		return res, err
	}
	defer db.Close()
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	ten := &herd.Tenant{Name: fmt.Sprintf("bench-history-%d", time.Now().UnixNano())}
	if err := sqldb.NewTenantService(db).CreateTenant(super, ten); err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Out, "%s: provisioning %d devices on %d sites\n", kind, cfg.Devices, cfg.Sites)
	ids, siteOf, err := provisionHistoryFleet(super, db, ten, cfg.Devices, cfg.Sites)
	if err != nil {
		return res, err
	}
	// The range ends at the last whole hour before now, so that every
	// reading is in the past and the hourly rollups cover it all.
	end := time.Now().UTC().Truncate(time.Hour)
	from := end.Add(-time.Duration(cfg.Hours) * time.Hour)
	fmt.Fprintf(cfg.Out, "%s: committing %d readings (%d an hour for %d h from each device)\n", kind, cfg.Devices*cfg.Hours*cfg.PerHour, cfg.PerHour, cfg.Hours)
	start := time.Now()
	n, err := loadHistory(ctx, db, ten.ID, ids, siteOf, from, cfg.Hours, cfg.PerHour, cfg.Out)
	if err != nil {
		return res, err
	}
	res.Readings, res.ReadingsPerDevice = n, float64(n)/float64(cfg.Devices)
	res.LoadRate = float64(n) / time.Since(start).Seconds()
	if res.ReadingBytes, res.RollupBytes, err = db.HistoryBytes(ctx); err != nil {
		return res, err
	}
	if res.RollupRows, err = db.CountRollups(ctx, ten.ID, sqldb.RollupHour, from, end); err != nil {
		return res, err
	}

	hs := sqldb.NewHistoryService(db)
	q := herd.AggregateQuery{TenantID: ten.ID, Field: "temperature", From: from, To: end, Step: time.Hour}
	run := func(aggs []string, times int, raw bool) (*herd.AggregateResult, []time.Duration, error) {
		q := q
		q.Aggs = aggs
		var last *herd.AggregateResult
		var ds []time.Duration
		for range times {
			t0 := time.Now()
			var r *herd.AggregateResult
			var err error
			if raw {
				r, err = hs.AggregateFromReadings(super, q)
			} else {
				r, err = hs.AggregateReadings(super, q)
			}
			if err != nil {
				return nil, nil, err
			}
			ds = append(ds, time.Since(t0))
			last = r
		}
		return last, ds, nil
	}
	fmt.Fprintf(cfg.Out, "%s: %d aggregates of each kind from the rollups\n", kind, cfg.Queries)
	avg, ds, err := run([]string{herd.AggAvg}, cfg.Queries, false)
	if err != nil {
		return res, err
	}
	res.Avg = latencyOf(ds)
	p95, ds, err := run([]string{herd.AggP95}, cfg.Queries, false)
	if err != nil {
		return res, err
	}
	res.P95 = latencyOf(ds)
	fmt.Fprintf(cfg.Out, "%s: the baseline, from the readings\n", kind)
	hs.RawLimit = math.MaxInt64 - 1
	bavg, ds, err := run([]string{herd.AggAvg}, cfg.BaselineQueries, true)
	if err != nil {
		return res, err
	}
	res.BaselineAvg = latencyOf(ds).P50
	bp95, ds, err := run([]string{herd.AggP95}, cfg.BaselineQueries, true)
	if err != nil {
		return res, err
	}
	res.BaselineP95 = latencyOf(ds).P50
	if res.MaxAvgError, err = maxRelError(avg, bavg); err != nil {
		return res, err
	}
	if res.MaxP95Error, err = maxRelError(p95, bp95); err != nil {
		return res, err
	}
	if cfg.Herd != "" {
		fmt.Fprintf(cfg.Out, "%s: exporting the readings to Parquet\n", kind)
		if res.ParquetBytes, res.ExportRate, err = exportParquet(ctx, cfg, dsn, ten.ID, from, end, res.Readings); err != nil {
			return res, err
		}
	}
	return res, nil
}

// exportParquet runs herd export readings against a herd serve on the
// store and returns the file's size and the readings a second.
func exportParquet(ctx context.Context, cfg HistoryFleetConfig, store string, tenantID int64, from, to time.Time, readings int64) (int64, float64, error) {
	p, err := startServer(ctx, cfg.Herd, store)
	if err != nil {
		return 0, 0, err
	}
	defer p.stop()
	out := filepath.Join(cfg.Dir, fmt.Sprintf("history-%d.parquet", time.Now().UnixNano()))
	defer os.Remove(out)
	cmd := exec.CommandContext(ctx, cfg.Herd, "export", "readings", "--api", p.url, "--token", benchAdminToken, "--tenant", strconv.FormatInt(tenantID, 10),
		"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339), "--format", "parquet", "--out", out)
	t0 := time.Now()
	if msg, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("herd export readings: %w: %s", err, msg)
	}
	rate := float64(readings) / time.Since(t0).Seconds()
	st, err := os.Stat(out)
	if err != nil {
		return 0, 0, err
	}
	return st.Size(), rate, nil
}

// maxRelError compares two single-series answers point by point.
func maxRelError(got, want *herd.AggregateResult) (float64, error) {
	if len(got.Series) != 1 || len(want.Series) != 1 || len(got.Series[0].Points) != len(want.Series[0].Points) {
		return 0, fmt.Errorf("the rollups' answer has %d series, the readings' %d, or their points differ in number", len(got.Series), len(want.Series))
	}
	worst := 0.0
	for i, p := range got.Series[0].Points {
		w := want.Series[0].Points[i]
		if p.TS != w.TS {
			return 0, fmt.Errorf("point %d at %d from the rollups, %d from the readings", i, p.TS, w.TS)
		}
		worst = max(worst, math.Abs(p.Value-w.Value)/max(math.Abs(w.Value), 1e-12))
	}
	return worst, nil
}

// provisionHistoryFleet makes the tenant's sites and spreads the devices over them.
func provisionHistoryFleet(super context.Context, db *sqldb.DB, ten *herd.Tenant, devices, sites int) ([]int64, []int, error) {
	nodes := sqldb.NewNodeService(db)
	var siteIDs []int64
	for s := range sites {
		n := &herd.Node{TenantID: ten.ID, ParentID: ten.RootNodeID, Kind: "site", Name: fmt.Sprintf("site-%d", s)}
		if err := nodes.CreateNode(super, n); err != nil {
			return nil, nil, err
		}
		siteIDs = append(siteIDs, n.ID)
	}
	svc := sqldb.NewDeviceService(db)
	ids := make([]int64, 0, devices)
	siteOf := make([]int, 0, devices)
	for start := 0; start < devices; start += herd.MaxBatchDevices {
		var batch []*herd.Device
		for i := start; i < min(devices, start+herd.MaxBatchDevices); i++ {
			batch = append(batch, &herd.Device{NodeID: siteIDs[i%sites], Key: fmt.Sprintf("history-%d-%d", ten.ID, i), Model: benchModel})
		}
		if err := svc.CreateDevices(super, batch); err != nil {
			return nil, nil, err
		}
		for i, d := range batch {
			ids = append(ids, d.ID)
			siteOf = append(siteOf, (start+i)%sites)
		}
	}
	return ids, siteOf, nil
}

// loadHistory commits the readings through the ingest path in batches, in
// time order across the fleet, as gateways would commit them: each device's
// k-th reading of an hour at its own offset into the hour, its temperature
// around its site's. (Loading device by device instead would put hours of
// minutes into every batch, a rollup row per reading, which no live fleet
// sends.)
func loadHistory(ctx context.Context, db *sqldb.DB, tenantID int64, ids []int64, siteOf []int, from time.Time, hours, perHour int, out io.Writer) (int64, error) {
	ingest := sqldb.NewIngestService(db)
	rng := rand.New(rand.NewPCG(14, 14))
	const batchSize = 5000
	items := make([]herd.IngestItem, 0, batchSize)
	var n int64
	slot := time.Hour / time.Duration(perHour)
	// Each device's offset into a slot, and the devices in that order.
	offset := make([]time.Duration, len(ids))
	order := make([]int, len(ids))
	for i, id := range ids {
		offset[i] = time.Duration(uint64(id)*2654435761%uint64(slot/time.Millisecond)) * time.Millisecond
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(offset[a], offset[b]) })
	for h := range hours {
		for k := range perHour {
			for _, i := range order {
				ts := from.Add(time.Duration(h)*time.Hour + time.Duration(k)*slot + offset[i]).UnixMilli()
				temp := 15 + float64(siteOf[i]%20) + 3*rng.NormFloat64()
				items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: ids[i], TenantID: tenantID, At: ts,
					Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature | herd.ReadingBattery, Temperature: math.Round(temp*100) / 100, Battery: 80}})
				if len(items) == batchSize {
					if err := ingest.Ingest(ctx, items); err != nil {
						return n, err
					}
					n += int64(len(items))
					items = items[:0]
				}
			}
		}
		fmt.Fprintf(out, "  hour %d of %d: %d readings\n", h+1, hours, n)
	}
	if len(items) > 0 {
		if err := ingest.Ingest(ctx, items); err != nil {
			return n, err
		}
		n += int64(len(items))
	}
	return n, nil
}

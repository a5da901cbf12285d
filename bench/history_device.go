package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/sqldb"
)

// One device's history (issue 14): a device with 30 days of readings at
// one every 10 s (259,200), stored among other devices' readings of the
// same times as ingest commits them (so the device's rows are spread
// through the history as in a live store), and two reads of it timed as
// the history service answers them: step=1h&agg=avg over the 30 days, and
// a raw page of 10,000 from a random point. The stepped read is timed three
// ways: from the per-device rollups with from on the hour (the issue's
// target), from them with from at 07:13 past (each step's first minutes
// from the readings), and from the readings alone (the baseline, the
// rollups set aside).

// DeviceHistoryConfig sizes the device history bench.
type DeviceHistoryConfig struct {
	Readings int           // the device's readings (259,200)
	Interval time.Duration // between two readings of a device (10 s)
	Others   int           // other devices reporting at the same times
	Samples  int           // timed requests of each read
	PageSize int           // the raw page's limit
	// FieldSets are the fields of the stepped reads, one result each: nil
	// is every numeric field the device sent (the bench's readings carry
	// temperature, humidity and battery).
	FieldSets [][]string
	Out       io.Writer
}

// DefaultDeviceHistoryConfig is the scenario.
func DefaultDeviceHistoryConfig() DeviceHistoryConfig {
	return DeviceHistoryConfig{Readings: 259200, Interval: 10 * time.Second, Others: 4, Samples: 200, PageSize: 10000,
		FieldSets: [][]string{{"temperature"}, nil}, Out: io.Discard}
}

// DeviceHistoryResult is what one store measured.
type DeviceHistoryResult struct {
	Store         string
	Readings      int // the device's
	TotalReadings int // in the history, every device's
	Load          time.Duration
	Fields        string
	Points        int           // of the stepped answer
	Items         int           // of a raw page
	Refresh       time.Duration // the per-device rollups' refresh after the load
	StepP50       time.Duration // from the rollups, from on the hour
	StepP99       time.Duration
	OddP50        time.Duration // from the rollups, from at 07:13 past
	OddP99        time.Duration
	BaseP50       time.Duration // from the readings alone
	BaseP99       time.Duration
	MaxRelErr     float64 // of the rollups' answer against the readings'
	RawP50        time.Duration
	RawP99        time.Duration
}

// DeviceHistoryBench loads the readings into db (a fresh, opened store;
// store names it in the results) through the ingest path and times the
// reads as the super-admin: one result per field set of the stepped read,
// each with the same raw page timings.
func DeviceHistoryBench(ctx context.Context, db *sqldb.DB, store string, cfg DeviceHistoryConfig) ([]DeviceHistoryResult, error) {
	res := DeviceHistoryResult{Store: store, Readings: cfg.Readings}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	super := herd.NewContextWithActor(ctx, &herd.Actor{Super: true})
	tn := &herd.Tenant{Name: "history-bench"}
	if err := sqldb.NewTenantService(db).CreateTenant(super, tn); err != nil {
		return nil, fmt.Errorf("create tenant: %w", err)
	}
	site := &herd.Node{TenantID: tn.ID, Kind: "site", Name: "site"}
	if err := sqldb.NewNodeService(db).CreateNode(super, site); err != nil {
		return nil, fmt.Errorf("create node: %w", err)
	}
	devs := make([]*herd.Device, 1+cfg.Others)
	for i := range devs {
		devs[i] = &herd.Device{NodeID: site.ID, Key: fmt.Sprintf("hist-%d-%d", time.Now().UnixNano(), i)}
	}
	if err := sqldb.NewDeviceService(db).CreateDevices(super, devs); err != nil {
		return nil, fmt.Errorf("create devices: %w", err)
	}

	// Readings go in as the gateway commits them: a batch of a few
	// seconds of every device's readings, oldest first.
	end := time.Now().Truncate(time.Hour)
	start := end.Add(-time.Duration(cfg.Readings) * cfg.Interval)
	rng := rand.New(rand.NewPCG(14, 10))
	ingest := sqldb.NewIngestService(db)
	const batch = 2000
	items := make([]herd.IngestItem, 0, batch+len(devs))
	t0 := time.Now()
	for i := range cfg.Readings {
		ts := start.Add(time.Duration(i) * cfg.Interval).UnixMilli()
		for _, d := range devs {
			items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts + 50,
				Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingBattery,
					Temperature: 20 + rng.NormFloat64(), Humidity: 40 + 10*rng.Float64(), Battery: float64(100 - i*100/cfg.Readings)}})
		}
		if len(items) >= batch || i == cfg.Readings-1 {
			if err := ingest.Ingest(ctx, items); err != nil {
				return nil, fmt.Errorf("ingest: %w", err)
			}
			res.TotalReadings += len(items)
			items = items[:0]
		}
		if i%50000 == 0 {
			fmt.Fprintf(cfg.Out, "history %s: loaded %d of %d readings of the device\n", store, i, cfg.Readings)
		}
	}
	res.Load = time.Since(t0)
	// The planner's statistics, as autovacuum (PostgreSQL) would have them
	// after this many new rows: without, PostgreSQL takes the device's
	// range for one row and answers a raw page by sorting the whole range
	// (100 ms instead of 4).
	if err := db.Analyze(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "history %s: %d readings (%d of the device) in %s\n", store, res.TotalReadings, cfg.Readings, res.Load.Round(time.Millisecond))
	// The per-device rollups, as herd serve's refresh computes them: the
	// load's readings are all older than the refresh's start, so it goes
	// back over the 30 days a bucket at a time.
	t0 = time.Now()
	for {
		more, err := db.RefreshDeviceRollups(ctx)
		if err != nil {
			return nil, fmt.Errorf("refresh the per-device rollups: %w", err)
		}
		if !more {
			break
		}
	}
	res.Refresh = time.Since(t0)
	fmt.Fprintf(cfg.Out, "history %s: per-device rollups refreshed in %s\n", store, res.Refresh.Round(time.Millisecond))

	hist := sqldb.NewHistoryService(db)
	dev := devs[0]
	var rawLat []time.Duration
	span := end.Sub(start) - time.Duration(cfg.PageSize)*cfg.Interval
	for i := range cfg.Samples + 5 {
		from := start.Add(time.Duration(rng.Int64N(int64(span/time.Millisecond))) * time.Millisecond)
		q := herd.ReadingsQuery{DeviceID: dev.ID, From: from, To: end, Limit: cfg.PageSize}
		t := time.Now()
		p, err := hist.DeviceReadings(super, q)
		if err != nil {
			return nil, fmt.Errorf("raw page: %w", err)
		}
		if i >= 5 { // the first few warm the caches
			rawLat = append(rawLat, time.Since(t))
		}
		res.Items = len(p.Items)
	}
	slices.Sort(rawLat)
	res.RawP50, res.RawP99 = percentile(rawLat, 0.5), percentile(rawLat, 0.99)
	var out []DeviceHistoryResult
	for _, fields := range cfg.FieldSets {
		r := res
		if r.Fields = strings.Join(fields, ","); r.Fields == "" {
			r.Fields = "all"
		}
		step := herd.ReadingsQuery{DeviceID: dev.ID, From: start, To: end, Step: time.Hour, Agg: herd.AggAvg, Fields: fields}
		var last *herd.SeriesResult
		timed := func(q herd.ReadingsQuery) (p50, p99 time.Duration, points int, err error) {
			var lat []time.Duration
			for i := range cfg.Samples + 5 {
				t := time.Now()
				s, err := hist.DeviceSeries(super, q)
				if err != nil {
					return 0, 0, 0, fmt.Errorf("stepped read: %w", err)
				}
				if i >= 5 {
					lat = append(lat, time.Since(t))
				}
				last = s
				points = 0
				for _, sr := range s.Series {
					points += len(sr.Points)
				}
			}
			slices.Sort(lat)
			return percentile(lat, 0.5), percentile(lat, 0.99), points, nil
		}
		var err error
		if r.StepP50, r.StepP99, r.Points, err = timed(step); err != nil {
			return nil, err
		}
		fromRollups := last
		odd := step
		odd.From = start.Add(7*time.Minute + 13*time.Second)
		if r.OddP50, r.OddP99, _, err = timed(odd); err != nil {
			return nil, err
		}
		db.NoRollups = true // the baseline: the readings alone
		r.BaseP50, r.BaseP99, _, err = timed(step)
		db.NoRollups = false
		if err != nil {
			return nil, err
		}
		if r.MaxRelErr, err = seriesDiff(fromRollups, last); err != nil {
			return nil, err
		}
		fmt.Fprintf(cfg.Out, "history %s: step=1h&agg=avg fields=%s over %s (%d points): p50 %s p99 %s (from 07:13 past: %s, %s; readings alone: %s, %s); raw page of %d: p50 %s p99 %s\n",
			store, r.Fields, end.Sub(start), r.Points, fmtDur(r.StepP50), fmtDur(r.StepP99), fmtDur(r.OddP50), fmtDur(r.OddP99),
			fmtDur(r.BaseP50), fmtDur(r.BaseP99), r.Items, fmtDur(r.RawP50), fmtDur(r.RawP99))
		out = append(out, r)
	}
	return out, nil
}

// seriesDiff is the largest relative difference between two answers'
// values, which must have the same points.
func seriesDiff(a, b *herd.SeriesResult) (float64, error) {
	if len(a.Series) != len(b.Series) {
		return 0, fmt.Errorf("rollups gave %d series, the readings %d", len(a.Series), len(b.Series))
	}
	worst := 0.0
	for i, sa := range a.Series {
		sb := b.Series[i]
		if sa.Field != sb.Field || len(sa.Points) != len(sb.Points) {
			return 0, fmt.Errorf("rollups gave %s with %d points, the readings %s with %d", sa.Field, len(sa.Points), sb.Field, len(sb.Points))
		}
		for j, p := range sa.Points {
			q := sb.Points[j]
			if p.TS != q.TS {
				return 0, fmt.Errorf("%s point %d: rollups at %d, the readings at %d", sa.Field, j, p.TS, q.TS)
			}
			worst = max(worst, math.Abs(p.Value-q.Value)/math.Max(1, math.Abs(q.Value)))
		}
	}
	return worst, nil
}

// DeviceHistoryMarkdown renders results as a bench/README.md table.
func DeviceHistoryMarkdown(rs []DeviceHistoryResult) string {
	var b strings.Builder
	b.WriteString("| store | device's readings | in the history | fields | step=1h&agg=avg, rollups, from on the hour p50 | p99 | from 07:13 past p50 | p99 | readings alone (baseline) p50 | p99 | raw page of 10,000 p50 | p99 | rollups' refresh after the load |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Store, r.Readings, r.TotalReadings, r.Fields,
			fmtDur(r.StepP50), fmtDur(r.StepP99), fmtDur(r.OddP50), fmtDur(r.OddP99), fmtDur(r.BaseP50), fmtDur(r.BaseP99),
			fmtDur(r.RawP50), fmtDur(r.RawP99), r.Refresh.Round(time.Second))
	}
	return b.String()
}

// RunDeviceHistory runs DeviceHistoryBench on a fresh store of each kind.
func RunDeviceHistory(ctx context.Context, stores []string, dir string, cfg DeviceHistoryConfig) ([]DeviceHistoryResult, error) {
	var out []DeviceHistoryResult
	for _, store := range stores {
		dsn, kind, err := freshStore(ctx, store, dir, "history-device")
		if err != nil {
			return out, err
		}
		db := sqldb.NewDB(dsn)
		db.StateCache.MinTenantDevices = 0
		if err := db.Open(); err != nil {
			return out, err
		}
		rs, err := DeviceHistoryBench(ctx, db, kind, cfg)
		db.Close()
		if err != nil {
			return out, err
		}
		out = append(out, rs...)
	}
	return out, nil
}

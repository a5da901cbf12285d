package sqldb_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// TestRollups_CompactAfterManyBatches: rows that many batches wrote into
// (on PostgreSQL each batch appends its sections, and a row past a bound
// is re-encoded) stay bounded and still answer what the readings do: count, sum, min and max exact, quantiles within the
// sketch's accuracy, for fields of narrow and of wide ranges.
func TestRollups_CompactAfterManyBatches(t *testing.T) {
	testutil.RunWithDialects(t, func(t *testing.T, db *sqldb.DB) {
		const limit, batches = 1000, 80
		db.SetRollupCompactBytes(limit)
		f := newFixture(db)
		ten := f.mustTenant(t, "compact")
		site := f.mustNode(t, ten.RootNodeID, "site")
		ds := f.mustDevices(t, site.ID, 8)
		ingest := sqldb.NewIngestService(db)
		rng := rand.New(rand.NewPCG(17, 1))
		base := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
		fields := []string{"temperature", "humidity", "rssi", "uptime_s"}
		byField := map[string][]committed{}
		// Every row holds at most one section a field once compacted; a
		// row at most limit bytes before a batch appended its sections
		// (a section is at least 27 bytes) and not past it after, or
		// compacted; and at most sqldb.RollupCompactSections of a field.
		maxSections := limit/27 + 2*len(fields)
		multi := 0
		for b := range batches {
			var items []herd.IngestItem
			for i, d := range ds {
				if rng.IntN(3) == 0 {
					continue
				}
				// 80 batches a second apart: two minute rows, one hour row.
				ts := base.Add(time.Duration(b)*time.Second + time.Duration(i)*time.Millisecond).UnixMilli()
				r := herd.Reading{TS: ts, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingRSSI | herd.ReadingUptimeS,
					Temperature: math.Round((20+rng.NormFloat64()*8)*100) / 100, Humidity: rng.Float64() * 100,
					RSSI: -30 - rng.Int64N(70), UptimeS: rng.Int64N(1_000_000)}
				items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: ten.ID, At: ts, Reading: r})
				for _, fd := range fields {
					v := map[string]float64{"temperature": r.Temperature, "humidity": r.Humidity, "rssi": float64(r.RSSI), "uptime_s": float64(r.UptimeS)}[fd]
					byField[fd] = append(byField[fd], committed{deviceID: d.ID, ts: ts, value: v, nodeID: site.ID, path: site.Path})
				}
			}
			if len(items) == 0 {
				continue
			}
			mustOK(t, ingest.Ingest(context.Background(), items))
			for _, n := range rollupSections(t, db, ten.ID) {
				if n.all > maxSections {
					t.Fatalf("batch %d: a row of %d sections, want at most %d: not compacted", b, n.all, maxSections)
				}
				if n.oneField > sqldb.RollupCompactSections {
					t.Fatalf("batch %d: a row of %d sections of a field, want at most %d: not compacted", b, n.oneField, sqldb.RollupCompactSections)
				}
				if n.all > len(fields) {
					multi++
				}
			}
		}
		if db.Dialect() == sqldb.Postgres && multi == 0 {
			t.Fatal("no row ever held several sections of a field: the batches did not append")
		}
		hs := sqldb.NewHistoryService(db)
		scope := []string{"/" + strconv.FormatInt(ten.RootNodeID, 10) + "/"}
		for _, fd := range fields {
			for _, step := range []time.Duration{time.Minute, time.Hour} {
				q := herd.AggregateQuery{TenantID: ten.ID, Field: fd, From: base, To: base.Add(time.Hour), Step: step,
					Aggs: []string{herd.AggAvg, herd.AggMin, herd.AggMax, herd.AggCount, herd.AggSum, herd.AggP50, herd.AggP95, herd.AggP99}}
				res, err := hs.AggregateReadings(f.super, q)
				mustOK(t, err)
				if want := map[time.Duration]string{time.Minute: "rollup_1m", time.Hour: "rollup_1h"}[step]; res.Source != want {
					t.Fatalf("%s step %s: source %s, want %s", fd, step, res.Source, want)
				}
				fl := &aggFleet{readings: byField[fd]}
				compareAggregate(t, fmt.Sprintf("%s step %s", fd, step), res, fl.oracle(q, scope))
			}
		}
	})
}

type sections struct{ all, oneField int }

// rollupSections returns the sections of each of a tenant's rollup rows:
// all of them and the most of one field.
func rollupSections(t *testing.T, db *sqldb.DB, tenantID int64) []sections {
	t.Helper()
	rows, err := db.SQL().Query(db.Rebind(`SELECT stats FROM reading_rollups WHERE tenant_id = ?`), tenantID)
	mustOK(t, err)
	defer rows.Close()
	var out []sections
	for rows.Next() {
		var stats []byte
		mustOK(t, rows.Scan(&stats))
		all, one, err := sqldb.RollupSections(stats)
		mustOK(t, err)
		out = append(out, sections{all, one})
	}
	mustOK(t, rows.Err())
	return out
}

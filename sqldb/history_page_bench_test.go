package sqldb_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// BenchmarkDeviceReadingsPage reads a raw page of 10,000 of one device's
// readings (all fields), from a history where its readings are
// interleaved with four other devices' as a gateway commits them: the
// shape of herd bench history's raw page, small enough to load in a
// benchmark. Reported per page.
func BenchmarkDeviceReadingsPage(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			db := testutil.MustOpenDB(b, d)
			f := newFixture(db)
			ten := f.mustTenant(b, "bench")
			devs := make([]*herd.Device, 5)
			for i := range devs {
				devs[i] = &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("page-%d", i)}
			}
			mustOK(b, f.Devices.CreateDevices(f.super, devs))
			const readings = 40000
			end := time.Now().Truncate(time.Hour)
			start := end.Add(-readings * 10 * time.Second)
			rng := rand.New(rand.NewPCG(14, 10))
			ingest := sqldb.NewIngestService(db)
			var items []herd.IngestItem
			for i := range readings {
				ts := start.Add(time.Duration(i) * 10 * time.Second).UnixMilli()
				for _, d := range devs {
					items = append(items, herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts + 50,
						Reading: herd.Reading{TS: ts, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingBattery,
							Temperature: 20 + rng.NormFloat64(), Humidity: 40 + 10*rng.Float64(), Battery: float64(100 - i*100/readings)}})
				}
				if len(items) >= 2000 {
					mustOK(b, ingest.Ingest(b.Context(), items))
					items = items[:0]
				}
			}
			mustOK(b, ingest.Ingest(b.Context(), items))
			mustOK(b, db.Analyze(b.Context()))
			hist := sqldb.NewHistoryService(db)
			span := (readings - 10000) * 10 * time.Second
			b.ResetTimer()
			for range b.N {
				from := start.Add(time.Duration(rng.Int64N(int64(span/time.Millisecond))) * time.Millisecond)
				p, err := hist.DeviceReadings(f.super, herd.ReadingsQuery{DeviceID: devs[0].ID, From: from, To: end, Limit: 10000})
				mustOK(b, err)
				if len(p.Items) != 10000 {
					b.Fatalf("a page of %d readings, want 10000", len(p.Items))
				}
			}
		})
	}
}

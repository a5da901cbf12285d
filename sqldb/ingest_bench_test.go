package sqldb_test

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// BenchmarkIngest commits batches of readings, one per device, the shape
// of a group commit under a large fleet: 1,000 devices in batches of 1,000,
// and 10,000 devices in batches of 1,000 taken in turn, where every commit
// touches different rows. Reported per reading.
func BenchmarkIngest(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		for _, fleet := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("%s/devices=%d", d, fleet), func(b *testing.B) {
				db := testutil.MustOpenDB(b, d)
				f := newFixture(db)
				ten := f.mustTenant(b, "bench")
				var ds []*herd.Device
				for i := range fleet {
					ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("b-%d", i)})
				}
				for start := 0; start < fleet; start += herd.MaxBatchDevices {
					mustOK(b, f.Devices.CreateDevices(f.super, ds[start:min(fleet, start+herd.MaxBatchDevices)]))
				}
				ingest := sqldb.NewIngestService(db)
				ts := time.Now().Add(-time.Hour).UnixMilli()
				items := make([]herd.IngestItem, 1000)
				next := 0
				b.ResetTimer()
				for i := 0; i < b.N; i += len(items) {
					ts++
					for k := range items {
						d := ds[next]
						next = (next + 1) % fleet
						items[k] = herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts, Reading: herd.Reading{
							TS: ts, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingBattery | herd.ReadingRSSI | herd.ReadingStatus,
							Temperature: 20 + float64(k%10), Humidity: 40, Battery: 80, RSSI: -60, Status: herd.StatusOK}}
					}
					mustOK(b, ingest.Ingest(b.Context(), items))
				}
			})
		}
	}
}

// BenchmarkIngestRollups is BenchmarkIngest at 10,000 devices on 100
// sites with the rollups on and off: their cost per reading. A batch of
// 1,000 readings touches 100 sites' rollups (PostgreSQL's case is skipped
// without HERD_TEST_POSTGRES_URL).
const all = herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingBattery | herd.ReadingRSSI | herd.ReadingStatus

func BenchmarkIngestRollups(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		b.Run(string(d), func(b *testing.B) { benchmarkIngestRollups(b, d) })
	}
}

func benchmarkIngestRollups(b *testing.B, d sqldb.Dialect) {
	for _, c := range []struct {
		off    bool
		fields herd.ReadingFields
	}{{true, all}, {false, all}, {true, herd.ReadingTemperature}, {false, herd.ReadingTemperature}} {
		off, fields := c.off, c.fields
		b.Run(fmt.Sprintf("rollups=%v/fields=%d", !off, fields), func(b *testing.B) {
			db := testutil.MustOpenDB(b, d)
			db.NoRollups = off
			f := newFixture(db)
			ten := f.mustTenant(b, "bench")
			var ds []*herd.Device
			for s := range 100 {
				site := f.mustNode(b, ten.RootNodeID, fmt.Sprintf("site-%d", s))
				for i := range 100 {
					ds = append(ds, &herd.Device{NodeID: site.ID, Key: fmt.Sprintf("b-%d-%d", s, i)})
				}
			}
			mustOK(b, f.Devices.CreateDevices(f.super, ds))
			// Site by site in the id order, devices report round-robin
			// across sites, as a fleet's clocks spread them.
			slices.SortFunc(ds, func(a, b *herd.Device) int { return cmp.Compare(a.ID%100, b.ID%100) })
			ingest := sqldb.NewIngestService(db)
			ts := time.Now().Add(-time.Hour).UnixMilli()
			items := make([]herd.IngestItem, 1000)
			next := 0
			b.ResetTimer()
			for i := 0; i < b.N; i += len(items) {
				ts++
				for k := range items {
					d := ds[next]
					next = (next + 1) % len(ds)
					items[k] = herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts, Reading: herd.Reading{
						TS: ts, Has: fields,
						Temperature: 20 + float64(k%10), Humidity: 40, Battery: 80, RSSI: -60, Status: herd.StatusOK}}
				}
				mustOK(b, ingest.Ingest(b.Context(), items))
			}
		})
	}
}

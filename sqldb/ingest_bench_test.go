package sqldb_test

import (
	"fmt"
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

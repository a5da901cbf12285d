package sqldb_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// BenchmarkIngest commits batches of 1,000 readings, one per device, the
// shape of a group commit under a large fleet. Reported per reading.
func BenchmarkIngest(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			db := testutil.MustOpenDB(b, d)
			f := newFixture(db)
			ten := f.mustTenant(b, "bench")
			var ds []*herd.Device
			for i := range 1000 {
				ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("b-%d", i)})
			}
			mustOK(b, f.Devices.CreateDevices(f.super, ds))
			ingest := sqldb.NewIngestService(db)
			ts := time.Now().Add(-time.Hour).UnixMilli()
			items := make([]herd.IngestItem, len(ds))
			b.ResetTimer()
			for i := 0; i < b.N; i += len(items) {
				ts++
				for k, d := range ds {
					items[k] = herd.IngestItem{Kind: herd.IngestReading, DeviceID: d.ID, TenantID: d.TenantID, At: ts, Reading: herd.Reading{
						TS: ts, Has: herd.ReadingTemperature | herd.ReadingHumidity | herd.ReadingBattery | herd.ReadingRSSI | herd.ReadingStatus,
						Temperature: 20 + float64(k%10), Humidity: 40, Battery: 80, RSSI: -60, Status: herd.StatusOK}}
				}
				mustOK(b, ingest.Ingest(b.Context(), items))
			}
		})
	}
}

package sqldb_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// BenchmarkCreateDevices creates devices in batches of 1,000, without
// labels and with three (the ring, floor and asset tag the seed gives),
// which with the search index (migration 0023) is every row a device
// costs: devices, device_labels, device_search and, on SQLite, its FTS5
// index. Reported per device; the bar bench/README.md measures is each
// rate at least 0.9 of the same benchmark's at the commit before 0023
// (aae4a3a; the recipe is there).
func BenchmarkCreateDevices(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		for _, labels := range []int{0, 3} {
			b.Run(fmt.Sprintf("%s/labels=%d", d, labels), func(b *testing.B) {
				db := testutil.MustOpenDB(b, d)
				f := newFixture(db)
				ten := f.mustTenant(b, "bench")
				site := f.mustNode(b, ten.RootNodeID, "Oslo Straße")
				next := 0
				b.ResetTimer()
				for i := 0; i < b.N; i += 1000 {
					ds := make([]*herd.Device, 1000)
					for k := range ds {
						next++
						ds[k] = &herd.Device{NodeID: site.ID, Key: "c-" + strconv.Itoa(next), Name: fmt.Sprintf("Boiler-Pump %d", next), Model: "TH-200", Firmware: "2.0.3"}
						if labels > 0 {
							ds[k].Labels = map[string]string{"ring": "canary", "floor": strconv.Itoa(next % 20), "asset": fmt.Sprintf("AT-%06d", next)}
						}
					}
					mustOK(b, f.Devices.CreateDevices(f.super, ds))
				}
			})
		}
	}
}

// BenchmarkIngestFirmware is BenchmarkIngest at 1,000 devices whose every
// reading carries a firmware, the same each time: the search index's part
// in ingest is the one statement a batch that finds nothing to change.
func BenchmarkIngestFirmware(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			db := testutil.MustOpenDB(b, d)
			f := newFixture(db)
			ten := f.mustTenant(b, "bench")
			var ds []*herd.Device
			for i := range 1000 {
				ds = append(ds, &herd.Device{NodeID: ten.RootNodeID, Key: fmt.Sprintf("fw-%d", i), Firmware: "2.0.3"})
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
						TS: ts, Has: herd.ReadingTemperature | herd.ReadingFirmware, Temperature: 20, Firmware: "2.0.3"}}
				}
				mustOK(b, ingest.Ingest(b.Context(), items))
			}
		})
	}
}

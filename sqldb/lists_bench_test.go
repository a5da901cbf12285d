package sqldb_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/herd-iot/herd"
	"github.com/herd-iot/herd/internal/testutil"
	"github.com/herd-iot/herd/sqldb"
)

// BenchmarkFindChildren measures a page of a region's children, 10 sites
// holding 100,000 devices between them, counted through the GROUP BY and
// through the state cache:
//
//	go test ./sqldb -run '^$' -bench FindChildren -benchtime 20x
func BenchmarkFindChildren(b *testing.B) {
	const devices = 100000
	for _, d := range testutil.Dialects() {
		b.Run(string(d), func(b *testing.B) {
			db := testutil.MustOpenDB(b, d)
			f := newFixture(db)
			ten := f.mustTenant(b, "bench")
			region := f.mustNode(b, ten.RootNodeID, "region")
			var sites []*herd.Node
			for s := range 10 {
				sites = append(sites, f.mustNode(b, region.ID, "site "+strconv.Itoa(s)))
			}
			rng := rand.New(rand.NewPCG(1, 2))
			n := 0
			_, err := db.BulkLoadDevices(context.Background(), ten.ID, devices, func() *herd.Device {
				if n == devices {
					return nil
				}
				site := sites[n%len(sites)]
				dev := randomDevice(rng, site.ID)
				dev.TenantID, dev.Path = ten.ID, site.Path
				n++
				return dev
			}, nil)
			mustOK(b, err)
			ls := sqldb.NewListService(db)
			for _, src := range []string{"devices", "state_cache"} {
				b.Run(src, func(b *testing.B) {
					db.StateCache = sqldb.StateCacheConfig{}
					if src == "state_cache" {
						db.StateCache = sqldb.DefaultStateCache
						mustOK(b, db.WarmStateCache(f.super, ten.ID))
					}
					for b.Loop() {
						p, err := ls.FindChildren(f.super, region.ID, herd.ListParams{})
						mustOK(b, err)
						var total int64
						for _, c := range p.Items {
							total += c.DeviceCount
						}
						if p.Source != src || total != devices {
							b.Fatalf("source %q, %d devices", p.Source, total)
						}
					}
				})
			}
		})
	}
}

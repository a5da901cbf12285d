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

// BenchmarkSummarizeDevices measures the summary of a 200,000-device tenant
// (10 regions of 10 sites) through the GROUP BY and through the state cache:
//
//	go test ./sqldb -run '^$' -bench SummarizeDevices -benchtime 10x
func BenchmarkSummarizeDevices(b *testing.B) {
	const devices = 200000
	for _, d := range testutil.Dialects() {
		b.Run(string(d), func(b *testing.B) {
			db := testutil.MustOpenDB(b, d)
			f := newFixture(db)
			ten := f.mustTenant(b, "bench")
			var sites []*herd.Node
			for r := range 10 {
				region := f.mustNode(b, ten.RootNodeID, "region "+strconv.Itoa(r))
				for s := range 10 {
					sites = append(sites, f.mustNode(b, region.ID, "site "+strconv.Itoa(s)))
				}
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
			hs := sqldb.NewHistoryService(db)
			for _, q := range []struct {
				name string
				q    herd.SummaryQuery
			}{
				{"status", herd.SummaryQuery{TenantID: ten.ID, GroupBy: "status", Fields: []string{"temperature", "battery"}}},
				{"node", herd.SummaryQuery{TenantID: ten.ID, GroupBy: "node", Fields: []string{"temperature", "battery"}}},
				{"model+filter", herd.SummaryQuery{TenantID: ten.ID, GroupBy: "model", Fields: []string{"temperature"},
					Filters: []herd.DeviceFilter{{Field: "temperature", Op: herd.OpGt, Values: []any{20.0}}}}},
			} {
				for _, src := range []string{"devices", "state_cache"} {
					b.Run(q.name+"/"+src, func(b *testing.B) {
						db.StateCache = sqldb.StateCacheConfig{}
						if src == "state_cache" {
							db.StateCache = sqldb.StateCacheConfig{MinTenantDevices: 1, MinScope: 1}
							mustOK(b, db.WarmStateCache(f.super, ten.ID))
						}
						for b.Loop() {
							s, err := hs.SummarizeDevices(f.super, q.q)
							mustOK(b, err)
							if s.Source != src || s.Count == 0 {
								b.Fatalf("source %q count %d", s.Source, s.Count)
							}
						}
					})
				}
			}
		})
	}
}

package sqldb

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's own figures: how the scoped query chose its
// access path and what that cost, and statements the guard refused.
type metrics struct {
	deviceQuery  *prometheus.HistogramVec
	refused      prometheus.Counter
	cacheLoads   prometheus.Counter
	cacheCatchUp prometheus.Histogram
	cacheDevices prometheus.Gauge
	cacheBytes   prometheus.Gauge
	retention    retentionMetrics // retention.go
	// deviceRollupLag is how far behind the clock the per-device rollups'
	// refresh is (device_rollup_refresh.go).
	deviceRollupLag prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		deviceRollupLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_device_rollups_lag_seconds",
			Help: "How far the per-device rollups' refresh is behind the clock: now minus the end of the newest bucket computed for every device. It stays near the grace (10 min) plus a bucket (15 min); more means one device's stepped reads take more of their range from the readings.",
		}),
		deviceQuery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_store_device_query_duration_seconds",
			Help: "Time to answer one page of the scoped device query, by access path (scope: the scope read and sorted; walk: a sort index walked; cache: the state cache scanned) and page (first, which counts, or next).",
			// From 100 µs to about 1.6 s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
		}, []string{"plan", "page"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_store_statements_refused_total",
			Help: "Statements refused for carrying more than herd.MaxQueryParams parameters; anything above zero is a bug.",
		}),
		cacheLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_store_state_cache_loads_total",
			Help: "Tenants loaded into the in-memory state cache.",
		}),
		cacheCatchUp: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_store_state_cache_catchup_seconds",
			Help:    "Time to read the device changes committed since a state cache last read.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
		}),
		cacheDevices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_state_cache_devices",
			Help: "Devices held in the in-memory state cache, all tenants.",
		}),
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_store_state_cache_bytes",
			Help: "Estimated memory held by the in-memory state cache, all tenants.",
		}),
		retention: newRetentionMetrics(),
	}
}

// Collectors returns the store's Prometheus collectors, for the process to
// register with the registry it serves.
func (db *DB) Collectors() []prometheus.Collector {
	m := db.metrics
	return append([]prometheus.Collector{m.deviceQuery, m.refused, m.cacheLoads, m.cacheCatchUp, m.cacheDevices, m.cacheBytes, m.deviceRollupLag}, m.retention.collectors()...)
}

func (m *metrics) observeDeviceQuery(plan string, first bool, start time.Time) {
	page := "next"
	if first {
		page = "first"
	}
	m.deviceQuery.WithLabelValues(plan, page).Observe(time.Since(start).Seconds())
}

package sqldb

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's own figures: how the scoped query chose its
// access path and what that cost, and statements the guard refused.
type metrics struct {
	deviceQuery *prometheus.HistogramVec
	refused     prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		deviceQuery: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "herd_store_device_query_duration_seconds",
			Help: "Time to answer one page of the scoped device query, by access path (scope: the scope read and sorted; walk: a sort index walked) and page (first, which counts, or next).",
			// From 100 µs to about 1.6 s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
		}, []string{"plan", "page"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_store_statements_refused_total",
			Help: "Statements refused for carrying more than herd.MaxQueryParams parameters; anything above zero is a bug.",
		}),
	}
}

// Collectors returns the store's Prometheus collectors, for the process to
// register with the registry it serves.
func (db *DB) Collectors() []prometheus.Collector {
	return []prometheus.Collector{db.metrics.deviceQuery, db.metrics.refused}
}

func (m *metrics) observeDeviceQuery(small, first bool, start time.Time) {
	plan, page := "walk", "next"
	if small {
		plan = "scope"
	}
	if first {
		page = "first"
	}
	m.deviceQuery.WithLabelValues(plan, page).Observe(time.Since(start).Seconds())
}

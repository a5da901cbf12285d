package relay

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	published      prometheus.Counter
	duplicates     prometheus.Counter
	publishErrors  prometheus.Counter
	leaseLost      prometheus.Counter
	publishSeconds prometheus.Histogram
	commitToAck    prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_relay_published_total",
			Help: "Events the relay published and the stream acknowledged (repeats included).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_relay_stream_duplicates_total",
			Help: "Published events the stream already held and dropped by event id: what a relay published again after a crash or a lost acknowledgement.",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_relay_publish_errors_total",
			Help: "Batches the stream did not acknowledge; they are published again.",
		}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_relay_lease_lost_total",
			Help: "Tenants this relay lost to another relay because its lease ran out.",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_relay_publish_seconds",
			Help:    "Time from publishing a batch to the stream's last acknowledgement of it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		commitToAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_relay_commit_to_ack_seconds",
			Help:    "Time from an event's commit to the stream's acknowledgement of it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
}

var (
	pendingDesc = prometheus.NewDesc("herd_outbox_pending", "Committed events not yet marked published, all tenants.", nil, nil)
	oldestDesc  = prometheus.NewDesc("herd_outbox_oldest_age_seconds", "Age of the oldest committed event not yet marked published; 0 when none.", nil, nil)
)

// Collectors returns the relay's Prometheus collectors. The outbox figures
// are read from the store when scraped, so every process shows the same.
func (r *Relay) Collectors() []prometheus.Collector {
	m := r.metrics
	return []prometheus.Collector{m.published, m.duplicates, m.publishErrors, m.leaseLost, m.publishSeconds, m.commitToAck, outboxCollector{r}}
}

type outboxCollector struct{ r *Relay }

func (c outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- oldestDesc
}

func (c outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.r.Store.OutboxStats(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(pendingDesc, err)
		return
	}
	age := 0.0
	if !st.Oldest.IsZero() {
		age = max(time.Since(st.Oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
}

package webhook

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	attempts          *prometheus.CounterVec
	commitToDelivered prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_webhook_attempts_total",
			Help: "Webhook delivery attempts by outcome: delivered (2xx), retry (failed, tried again later), dead (out of retries), gone (410: subscription disabled), disable (failing too long: subscription disabled).",
		}, []string{"outcome"}),
		commitToDelivered: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_webhook_commit_to_delivered_seconds",
			Help:    "Time from an event's commit to its delivery's 2xx answer, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}),
	}
}

var deadDesc = prometheus.NewDesc("herd_webhook_dead_letters", "Webhook deliveries in the dead-letter list (out of retries, or their subscription disabled), all subscriptions.", nil, nil)

// Collectors returns the dispatcher's Prometheus collectors; the
// dead-letter count is read from the store when scraped.
func (d *Dispatcher) Collectors() []prometheus.Collector {
	return []prometheus.Collector{d.metrics.attempts, d.metrics.commitToDelivered, deadCollector{d}}
}

type deadCollector struct{ d *Dispatcher }

func (c deadCollector) Describe(ch chan<- *prometheus.Desc) { ch <- deadDesc }

func (c deadCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := c.d.Queue.DeadLetters(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(deadDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(n))
}

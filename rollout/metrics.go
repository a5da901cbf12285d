package rollout

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	steps       *prometheus.CounterVec
	decisions   prometheus.Counter
	stepSeconds prometheus.Histogram
	held        prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_rollout_steps_total",
			Help: "Rollout steps by outcome: ok (committed), lease_lost (another process holds the rollout now), error (rolled back, tried again).",
		}, []string{"outcome"}),
		decisions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_rollout_decisions_total",
			Help: "Member decisions committed by this process's rollout steps: members queued, told, answered, timed out, reverted.",
		}),
		stepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_rollout_step_seconds",
			Help:    "Time of one rollout step, its commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herd_rollouts_held",
			Help: "Active rollouts this process holds the lease of, as of its last claim.",
		}),
	}
}

// Collectors returns the controller's Prometheus collectors.
func (c *Controller) Collectors() []prometheus.Collector {
	m := c.metrics
	return []prometheus.Collector{m.steps, m.decisions, m.stepSeconds, m.held}
}

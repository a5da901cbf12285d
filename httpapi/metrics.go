package httpapi

import (
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the HTTP metrics of one Server. They live in the server's own
// registry rather than the global one, so that two servers in one process
// (tests do that) never collide and nothing registers behind our back.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	// idempotency counts requests with an Idempotency-Key by what the key
	// found: new, replay, running (409), mismatch (422).
	idempotency *prometheus.CounterVec
	// limited counts requests refused by the per-token rate limit.
	limited prometheus.Counter
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "herd",
			Subsystem: "http",
			Name:      "requests_total",
			Help:      "HTTP requests answered, by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "herd",
			Subsystem: "http",
			Name:      "request_duration_seconds",
			Help:      "Time to answer an HTTP request, by route pattern and method.",
			// From sub-millisecond reads to the 30 s request deadline; the
			// scoped query's 20 ms target falls between two buckets.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "herd",
			Subsystem: "http",
			Name:      "requests_in_flight",
			Help:      "HTTP requests being served now.",
		}),
	}
	m.idempotency = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "herd_http_idempotency_total",
		Help: "Requests with an Idempotency-Key, by what the key found: new, replay (the first answer again), running (409), mismatch (422).",
	}, []string{"result"})
	m.limited = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herd_http_rate_limited_total",
		Help: "Requests refused with 429 by the per-token rate limit.",
	})
	reg.MustRegister(m.requests, m.duration, m.inFlight, m.idempotency, m.limited,
		// The runtime/metrics series of the collector, besides the classic
		// memstats: the GC pause histogram (/sched/pauses), GC CPU time
		// (/cpu/classes/gc) and the heap (/gc/heap), which a stalling
		// gateway is judged by.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/(sched/pauses|cpu/classes/gc|gc/heap)/`)},
		)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	method = methodLabel(method)
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route, method).Observe(d.Seconds())
}

// methodLabel keeps the method label to a known set: a client may send any
// token as a method, and each would be a new series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// metricsHandler serves the server's registry in the Prometheus format.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry})
}

package mqttgw

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's figures.
type metrics struct {
	connects       *prometheus.CounterVec
	disconnects    prometheus.Counter
	publishes      *prometheus.CounterVec
	refusedACL     *prometheus.CounterVec
	acceptBackoffs prometheus.Counter
	readings       prometheus.Counter
	commitFailures prometheus.Counter
	batchSize      prometheus.Histogram
	commitLatency  prometheus.Histogram
	pubackLatency  prometheus.Histogram
	commandsSent   prometheus.Counter
	wills          *prometheus.CounterVec
	retainIgnored  prometheus.Counter
}

func newMetrics() *metrics {
	latency := prometheus.ExponentialBuckets(0.0005, 2, 14) // 0.5 ms to about 4 s
	return &metrics{
		wills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_mqtt_wills_total",
			Help: "Device wills by topic kind and result: queued (the connection ended uncleanly and the will went the way of a publish), discarded (a clean DISCONNECT, a takeover, herd shutting down, a revoked credential), malformed, too_large.",
		}, []string{"topic", "result"}),
		retainIgnored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_mqtt_retain_ignored_total",
			Help: "MQTT 3.1.1 publishes with the retain flag, taken as not retained (MQTT 5 ones are refused: publishes_total{result=\"retain_refused\"}).",
		}),
		commandsSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_mqtt_commands_sent_total",
			Help: "Command publishes sent to devices (a command may be sent again after a reconnect; devices drop repeats by id).",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_mqtt_connects_total",
			Help: "MQTT connection attempts by result: ok, or the refusal (bad_credentials, rate, cap, will_topic, will_retain, will_malformed, will_too_large, error).",
		}, []string{"result"}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_mqtt_disconnects_total",
			Help: "Device connections ended, cleanly or not, not counting takeovers.",
		}),
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_mqtt_publishes_total",
			Help: "Device publishes by topic kind (telemetry, events, commands/ack) and result (stored, queued, malformed, too_large, store_failed, ignored, retain_refused).",
		}, []string{"topic", "result"}),
		refusedACL: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herd_mqtt_acl_refused_total",
			Help: "Publishes, subscriptions and wills (kind) refused for a topic outside the device's own.",
		}, []string{"kind"}),
		acceptBackoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_mqtt_accept_backoffs_total",
			Help: "Accept errors (such as running out of file descriptors) that made the listener back off.",
		}),
		readings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_ingest_items_committed_total",
			Help: "Readings, connects and disconnects committed to the store.",
		}),
		commitFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herd_ingest_commit_failures_total",
			Help: "Group commits that failed; their QoS 1 publishes got no success PUBACK.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_ingest_batch_items",
			Help:    "Items per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // to 8,192: a full default batch is 4,000,
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_ingest_commit_seconds",
			Help:    "Time to commit one group commit.",
			Buckets: latency,
		}),
		pubackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "herd_mqtt_puback_seconds",
			Help:    "Time from a QoS 1 telemetry publish being read to its commit, after which the PUBACK is sent.",
			Buckets: latency,
		}),
	}
}

func (m *metrics) observeCommit(items int, took time.Duration, err error) {
	if err != nil {
		m.commitFailures.Inc()
		return
	}
	m.readings.Add(float64(items))
	m.batchSize.Observe(float64(items))
	m.commitLatency.Observe(took.Seconds())
}

func (m *metrics) collectors(g *Gateway) []prometheus.Collector {
	return []prometheus.Collector{
		m.connects, m.disconnects, m.publishes, m.refusedACL, m.acceptBackoffs, m.readings, m.commitFailures,
		m.batchSize, m.commitLatency, m.pubackLatency, m.commandsSent, m.wills, m.retainIgnored,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herd_mqtt_connected_devices",
			Help: "Devices connected now.",
		}, func() float64 { return float64(g.Connected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herd_mqtt_open_connections",
			Help: "Sockets open now, TCP and WebSocket, authenticated or not.",
		}, func() float64 { return float64(g.OpenConns()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herd_mqtt_connection_cap",
			Help: "The most connections admitted: the open-file limit minus a reserve, unless set.",
		}, func() float64 { return float64(g.Limit()) }),
	}
}

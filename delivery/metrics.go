package delivery

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 20) // 0.5ms … ~4.4min

// RuntimeMetrics are the consumer runtime's metrics. A nil *RuntimeMetrics
// records nothing.
type RuntimeMetrics struct {
	lag        *prometheus.GaugeVec
	joined     *prometheus.GaugeVec
	unresolved *prometheus.GaugeVec
	events     *prometheus.CounterVec
	handle     *prometheus.HistogramVec
	commits    prometheus.Counter
}

// NewRuntimeMetrics registers the runtime metrics on reg.
func NewRuntimeMetrics(reg prometheus.Registerer) *RuntimeMetrics {
	m := &RuntimeMetrics{
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_delivery_consumer_lag",
			Help: "Events of a partition not yet handled, those being handled included (high watermark minus the oldest offset not finished, about), per module and partition.",
		}, []string{"module", "partition"}),
		joined: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_delivery_group_joined",
			Help: "1 while this node is a member of a consumer group generation, per module; 0 while it waits for the next one (a rebalance, Kafka away), when none of its partitions are delivered and their lag is not reported.",
		}, []string{"module"}),
		unresolved: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_delivery_unresolved_partitions",
			Help: "Assigned partitions not fetched because their start offset cannot be listed yet (leader unavailable), per module; their lag is unknown meanwhile.",
		}, []string{"module"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_delivery_events_handled_total",
			Help: "Events a module finished (done or dead-lettered: ok), or gave back unfinished at a rebalance or shutdown (unfinished).",
		}, []string{"module", "result"}),
		handle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_delivery_handle_seconds",
			Help:    "Time a module took to finish one event, retries and pauses included.",
			Buckets: latencyBuckets,
		}, []string{"module"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_delivery_offset_commits_total",
			Help: "Offset commits to the consumer group.",
		}),
	}
	reg.MustRegister(m.lag, m.joined, m.unresolved, m.events, m.handle, m.commits)
	return m
}

// discardGauge takes Set calls when metrics are off.
var discardGauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "discard"})

func (m *RuntimeMetrics) unresolvedFor(module string) prometheus.Gauge {
	if m == nil {
		return discardGauge
	}
	return m.unresolved.WithLabelValues(module)
}

// forgetPartition drops a partition's series when its generation ends:
// its lag is not known until the next one fetches it, maybe elsewhere.
func (m *RuntimeMetrics) forgetPartition(module, partition string) {
	if m != nil {
		m.lag.DeleteLabelValues(module, partition)
	}
}

func (m *RuntimeMetrics) setJoined(module string, joined bool) {
	if m != nil {
		v := 0.0
		if joined {
			v = 1
		}
		m.joined.WithLabelValues(module).Set(v)
	}
}

func (m *RuntimeMetrics) lagFor(module, partition string) prometheus.Gauge {
	if m == nil {
		return discardGauge
	}
	return m.lag.WithLabelValues(module, partition)
}

func (m *RuntimeMetrics) handled(module string, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "unfinished"
	}
	m.events.WithLabelValues(module, result).Inc()
	m.handle.WithLabelValues(module).Observe(d.Seconds())
}

// SinkMetrics are the instance sink's metrics. A nil *SinkMetrics records
// nothing.
type SinkMetrics struct {
	deliveries *prometheus.CounterVec
	attempt    prometheus.Histogram
	endToEnd   prometheus.Histogram
	retries    prometheus.Counter
	dlq        *prometheus.CounterVec
	breaker    *prometheus.GaugeVec
	caFailing  *prometheus.GaugeVec
	paused     prometheus.Gauge
	suspended  prometheus.Gauge
	dlqFailing prometheus.Gauge
}

// NewSinkMetrics registers the instance sink's metrics on reg.
func NewSinkMetrics(reg prometheus.Registerer) *SinkMetrics {
	m := &SinkMetrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_delivery_attempts_total",
			Help: "Delivery attempts to instances, by result: delivered, retry, permanent (4xx), gone (410).",
		}, []string{"result"}),
		attempt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_delivery_attempt_duration_seconds",
			Help:    "Duration of one delivery attempt (POST to the instance and its answer).",
			Buckets: latencyBuckets,
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_delivery_end_to_end_seconds",
			Help:    "From relay-received-at (the ingress got the webhook) to the instance's 2xx.",
			Buckets: latencyBuckets,
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_delivery_retries_total",
			Help: "Retries scheduled after a retryable failure.",
		}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_delivery_dead_letters_total",
			Help: "Events written to the dead-letter topic, by reason kind: permanent, max_attempts, max_age, unknown_tenant.",
		}, []string{"reason"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_delivery_breaker_state",
			Help: "Circuit breaker state per tenant: 0 closed, 1 half-open, 2 open. One series per tenant this node delivers to (whose partition it handles).",
		}, []string{"tenant"}),
		paused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_delivery_paused_partitions",
			Help: "Partitions whose delivery is paused: breaker open, tenant suspended, or not a push tenant.",
		}),
		suspended: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_delivery_suspended_tenants",
			Help: "Tenants suspended after their instance answered 410 Gone, until their configuration changes.",
		}),
		dlqFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_delivery_dlq_write_failing",
			Help: "Dead letters Kafka has refused so far and that are being retried; each holds its tenant's partition (nothing is committed past it) until it is written.",
		}),
	}
	m.caFailing = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_delivery_ca_reload_failing",
		Help: "1 while a tenant's replaced ca_file does not load (the previous CA stays in use for new connections).",
	}, []string{"tenant"})
	reg.MustRegister(m.deliveries, m.attempt, m.endToEnd, m.retries, m.dlq, m.breaker, m.caFailing, m.paused, m.suspended, m.dlqFailing)
	for _, r := range []string{"delivered", "retry", "permanent", "gone"} {
		m.deliveries.WithLabelValues(r)
	}
	for _, r := range []string{"permanent", "max_attempts", "max_age", "unknown_tenant"} {
		m.dlq.WithLabelValues(r)
	}
	return m
}

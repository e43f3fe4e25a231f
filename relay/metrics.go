package relay

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets spans a fast in-memory answer to a slow broker: 100µs to 10s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 17)

// Metrics are the ingress's Prometheus metrics, registered on a registry the
// caller owns.
type Metrics struct {
	requests      *prometheus.CounterVec
	duration      prometheus.Histogram
	events        *prometheus.CounterVec
	duplicates    prometheus.Counter
	signatureFail *prometheus.CounterVec
	bodyBytes     prometheus.Histogram
	unanswered    prometheus.Counter

	// status children, resolved once: the hot path does no label lookups.
	byStatus map[int]prometheus.Counter
	written  prometheus.Counter
	unrouted prometheus.Counter
}

// NewMetrics registers the ingress metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_ingress_requests_total",
			Help: "Webhook requests answered, by HTTP status code.",
		}, []string{"code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_ingress_request_duration_seconds",
			Help:    "Time from a webhook request read to its answer, Kafka acknowledgement included.",
			Buckets: latencyBuckets,
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_ingress_events_total",
			Help: "Events (one per entry) acknowledged by Kafka, by topic kind: routed to a tenant, or unrouted.",
		}, []string{"kind"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingress_duplicates_total",
			Help: "Entries Meta sent again whose event was already written; answered 200, not written again.",
		}),
		signatureFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_ingress_signature_failures_total",
			Help: "Requests refused with 401, by reason: missing, malformed or mismatch.",
		}, []string{"reason"}),
		bodyBytes: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_ingress_body_bytes",
			Help:    "Sizes of webhook bodies received.",
			Buckets: prometheus.ExponentialBuckets(256, 4, 9),
		}),
		unanswered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_ingress_connections_unanswered_total",
			Help: "Connections past ingress.max_concurrency closed without a clean 503: 64 refusals already under way, no request head within 1s or a head over 64KiB, the client did not close within 5s of the answer, or a shutdown cut it off or had begun.",
		}),
		byStatus: map[int]prometheus.Counter{},
	}
	reg.MustRegister(m.requests, m.duration, m.events, m.duplicates, m.signatureFail, m.bodyBytes, m.unanswered)
	for _, code := range []int{200, 400, 401, 403, 404, 405, 413, 500, 503} {
		m.byStatus[code] = m.requests.WithLabelValues(statusLabel(code))
	}
	for _, reason := range []string{"missing", "malformed", "mismatch"} {
		m.signatureFail.WithLabelValues(reason)
	}
	m.written = m.events.WithLabelValues("routed")
	m.unrouted = m.events.WithLabelValues("unrouted")
	return m
}

func (m *Metrics) observeRequest(code int, d time.Duration) {
	m.count(code)
	m.duration.Observe(d.Seconds())
}

// count counts an answer given before the handler ran, which has no
// duration to observe: a refused connection's 503, the early 413 of an
// Expect: 100-continue request, HandleError's answers (0 s samples would
// pull the latency quantiles down).
func (m *Metrics) count(code int) {
	c, ok := m.byStatus[code]
	if !ok {
		c = m.requests.WithLabelValues(statusLabel(code))
	}
	c.Inc()
}

func (m *Metrics) signatureFailure(err error) {
	reason := "mismatch"
	switch {
	case errors.Is(err, ErrSignatureMissing):
		reason = "missing"
	case errors.Is(err, ErrSignatureMalformed):
		reason = "malformed"
	}
	m.signatureFail.WithLabelValues(reason).Inc()
}

func statusLabel(code int) string {
	const digits = "0123456789"
	if code < 100 || code > 999 {
		return "other"
	}
	return string([]byte{digits[code/100], digits[code/10%10], digits[code%10]})
}

// ProducerMetrics are the Kafka producer's metrics.
type ProducerMetrics struct {
	latency prometheus.Histogram
	records prometheus.Histogram
	errors  prometheus.Counter
}

// NewProducerMetrics registers the producer metrics on reg.
func NewProducerMetrics(reg prometheus.Registerer) *ProducerMetrics {
	m := &ProducerMetrics{
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_kafka_produce_duration_seconds",
			Help:    "Time from sending a produce request (acks=all) to its acknowledgement.",
			Buckets: latencyBuckets,
		}),
		records: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_kafka_produce_records",
			Help:    "Records per produce request: how much group commit is batching.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_kafka_produce_errors_total",
			Help: "Produce requests that failed in whole or in part.",
		}),
	}
	reg.MustRegister(m.latency, m.records, m.errors)
	return m
}

func (m *ProducerMetrics) observe(d time.Duration, records int, err error) {
	m.latency.Observe(d.Seconds())
	m.records.Observe(float64(records))
	if err != nil {
		m.errors.Inc()
	}
}

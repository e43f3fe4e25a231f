package delivery

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// These come from a review of delivery at its seams: reloads, revocations,
// odd answers and a dead-letter topic that refuses.

// An instance answering 503 with a Retry-After of more seconds than
// time.Duration holds asked for "much later". The delay wrapped around to
// a fraction of a second: the instance was hammered and the event
// dead-lettered for max_attempts long before max_age.
func TestRegressionHugeRetryAfterIsHonoured(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(retryAfter("18446744074")) // ~584 years
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 1)...)
	e.start("relay.test.huge-retry-after", func(c *SinkConfig) {
		c.MaxAge = time.Hour
		c.MaxAttempts = 5
		c.Breaker = BreakerConfig{Failures: 100, OpenFor: time.Minute}
	}, nil)
	require.Eventually(t, func() bool { return inst.count() >= 1 }, waitFor, tick)
	require.Never(t, func() bool { return inst.count() > 1 }, 2*time.Second, 50*time.Millisecond,
		"the instance asked for centuries: no second attempt")
	require.Empty(t, e.deadLetters("acme"), "no dead letter before max_age")
}

// relay_delivery_paused_partitions counts partitions: with a tenant's
// max_in_flight above 1, each handler of its window waiting on the open
// breaker counted the one partition again.
func TestRegressionPausedPartitionsCountsPartitions(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := newInstance(t, e.ca, e.caFile, answer(http.StatusServiceUnavailable))
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t), MaxInFlight: 4})
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 8)...)
	r := e.start("relay.test.paused-once", func(c *SinkConfig) {
		c.Breaker = BreakerConfig{Failures: 2, OpenFor: 20 * time.Second}
	}, nil)
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_breaker_state", "tenant", "acme") == 2 }, waitFor, tick)
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_paused_partitions") == 1 }, waitFor, tick)
	require.Never(t, func() bool { return r.gauge("relay_delivery_paused_partitions") > 1 }, time.Second, 20*time.Millisecond,
		"one partition is paused, however many of its handlers wait")
}

// The tenants file points the tenant at a new, healthy instance while an
// event waits out the old one's Retry-After (up to max_age, 72 h): the new
// settings are used at once, not when the wait ends.
func TestRegressionSettingsChangeEndsARetryWait(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	old := newInstance(t, e.ca, e.caFile, retryAfter("3600"))
	healthy := newInstance(t, e.ca, e.caFile, answer(200))
	secret := newSecret(t)
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: old.URL, CAFile: e.caFile, Secret: secret})
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 2)...)
	e.start("relay.test.new-url-in-wait", nil, nil)
	require.Eventually(t, func() bool { return old.count() >= 1 }, waitFor, tick)

	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: healthy.URL, CAFile: e.caFile, Secret: secret})
	require.Eventually(t, func() bool { return len(healthy.delivered()) == 2 }, 8*time.Second, tick,
		"the new instance got nothing: the old one's Retry-After still held the event")
}

// A tenant removed while its event waits out its instance's Retry-After:
// the event goes to the DLQ after UnknownTenantWait, not when the wait ends.
func TestRegressionRemovalEndsARetryWait(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	old := newInstance(t, e.ca, e.caFile, retryAfter("3600"))
	other := newInstance(t, e.ca, e.caFile, answer(200))
	b := tenantConf{ID: "globex", Account: "2", URL: other.URL, CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: old.URL, CAFile: e.caFile, Secret: newSecret(t)}, b)
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 1)...)
	e.start("relay.test.removed-in-wait", nil, nil) // UnknownTenantWait 300ms
	require.Eventually(t, func() bool { return old.count() >= 1 }, waitFor, tick)
	e.setTenants(b)
	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 1 }, 8*time.Second, tick)
}

// A removed tenant's backlog went to the DLQ at one event per
// UnknownTenantWait (30 s by default: 10,000 events took three and a half
// days), each event waiting the whole wait on its own. The wait runs from
// the first of its events found unknown.
func TestRegressionRemovedTenantsBacklogWaitsOnce(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	p := e.partition("acme")
	e.setTenants(tenantConf{ID: "other", Account: "2", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	e.produce(p, simpleEvents("acme", "1", "acme", 6)...)
	start := time.Now()
	e.start("relay.test.removed-backlog", func(c *SinkConfig) { c.UnknownTenantWait = time.Second }, nil)
	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 6 }, 15*time.Second, tick)
	require.Less(t, time.Since(start), 4*time.Second, "each event waited UnknownTenantWait on its own")
}

// A tenant removed with its ca_file: on an idle relay (no event to make
// the sink look tenants up) its CA went on being reloaded, logged as
// failing and reported, and its breaker series stayed.
func TestRegressionRemovedTenantsCAIsNotWatched(t *testing.T) {
	sc := newCAScene(t)
	sc.e.setTenants(tenantConf{ID: "other", Account: "2", URL: "https://127.0.0.1:1/", CAFile: sc.e.caFile, Secret: newSecret(t)})
	require.NoError(t, os.Remove(sc.caFile))
	require.Never(t, func() bool { return sc.failing() != 0 }, 500*time.Millisecond, 10*time.Millisecond,
		"a removed tenant's ca_file reported failing")
	require.Empty(t, breakerTenants(t, sc.reg), "a removed tenant's breaker still reported")
}

// The DLQ topic refuses a dead letter for good (its max.message.bytes
// below the record). Nothing may be committed past the event, so the
// tenant's partition waits, which used to show nowhere but the log: it
// now counts as paused and in relay_delivery_dlq_write_failing, and goes
// on by itself once the topic takes the record.
func TestRegressionRefusedDeadLetterHoldsThePartitionVisibly(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	e.setTopicConfig(testDLQTopic, "max.message.bytes", "4000")
	var n atomic.Int32
	inst := newInstance(t, e.ca, e.caFile, func(http.ResponseWriter, *http.Request, *hit) int {
		if n.Add(1) == 1 {
			return http.StatusBadRequest // the first event: dead-letter it
		}
		return http.StatusOK
	})
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	p := e.partition("acme")
	evs := simpleEvents("acme", "1", "acme", 2)
	evs[0].Value = []byte(`{"object":"page","entry":[{"id":"1","pad":"` + strings.Repeat("x", 3990) + `"}]}`)
	e.produce(p, evs...)
	const group = "relay.test.dlq-refuses"
	r := e.start(group, nil, nil)
	require.Eventually(t, func() bool {
		return r.gauge("relay_delivery_dlq_write_failing") == 1 && r.gauge("relay_delivery_paused_partitions") == 1
	}, waitFor, tick)
	require.Empty(t, inst.delivered())
	require.EqualValues(t, -1, e.committed(group, p), "nothing committed past an event neither delivered nor dead-lettered")

	e.setTopicConfig(testDLQTopic, "max.message.bytes", "1048576")
	require.Eventually(t, func() bool { return len(inst.delivered()) == 1 && len(e.deadLetters("acme")) == 1 }, 30*time.Second, tick)
	require.Eventually(t, func() bool {
		return r.gauge("relay_delivery_dlq_write_failing") == 0 && r.gauge("relay_delivery_paused_partitions") == 0
	}, waitFor, tick)
}

// A dead letter's reason is bounded, so that DeadLetterOverhead holds
// whatever error text it carries.
func TestDeadLetterReasonIsBounded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	dlq := &DLQ{Client: e.client, Topic: testDLQTopic, Events: testEventsTopic}
	ev := simpleEvents("acme", "1", "acme", 1)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	event := &Event{Topic: testEventsTopic, Key: []byte("acme"), Value: ev.Value, Headers: ev.headers(), Time: time.Now(), Tenant: "acme", ID: ev.ID}
	require.NoError(t, dlq.DeadLetter(ctx, event, strings.Repeat("é", MaxReasonBytes), 1, time.Now()))
	dls := e.deadLetters("acme")
	require.Len(t, dls, 1)
	require.LessOrEqual(t, len(dls[0].Reason), MaxReasonBytes)
	require.True(t, strings.HasSuffix(dls[0].Reason, "…"))
	var added int
	for _, h := range dls[0].Headers {
		switch h.Key {
		case HeaderDLQReason, HeaderDLQAttempts, HeaderDLQFirstAttemptAt:
			added += len(h.Key) + len(h.Value) + 10 // and their length varints
		}
	}
	require.Less(t, added, DeadLetterOverhead)
}

// retryAfter answers 503 with the given Retry-After.
func retryAfter(v string) responder {
	return func(w http.ResponseWriter, _ *http.Request, _ *hit) int {
		w.Header().Set("Retry-After", v)
		return http.StatusServiceUnavailable
	}
}

func (e *testEnv) setTopicConfig(topic, name, value string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: name, Value: value, ConfigOperation: kafka.ConfigOperationSet}},
	}}})
	require.NoError(e.t, err)
	for _, r := range res.Resources {
		require.NoError(e.t, r.Error)
	}
}

// An instance's Retry-After past the event's max_age: the event goes to
// the DLQ when it is max_age old, and that is no retry, though
// relay_delivery_retries_total counted one.
func TestRegressionNoRetryCountedPastMaxAge(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(http.StatusOK))
	// A first event delivered shows the consumer running, so the event
	// under test is attempted well within its max_age even on a loaded
	// machine (produced before the group had joined, it could reach its
	// max_age unattempted and go to the DLQ with no attempt at all).
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "warm", 1)...)
	r := e.start("relay.test.no-retry-past-max-age", func(c *SinkConfig) { c.MaxAge = 3 * time.Second }, nil)
	inst.waitDelivered(1)
	inst.setRespond(retryAfter("10"))
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 1)...)
	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 1 }, 10*time.Second, tick)
	require.Len(t, inst.attemptsOf("acme-0000"), 1)
	require.Zero(t, r.gauge("relay_delivery_retries_total"), "no retry followed")
	// Counted once the dead letter's write returned: a moment after the
	// record can be read.
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_dead_letters_total", "reason", "max_age") == 1 }, waitFor, tick)
}

// recDLQ records dead letters' ids, for a Sink driven directly.
type recDLQ struct {
	mu  sync.Mutex
	ids []string
}

func (d *recDLQ) DeadLetter(_ context.Context, ev *Event, _ string, _ int, _ time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ids = append(d.ids, ev.ID)
	return nil
}

func (d *recDLQ) n() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.ids) }

func eventOf(tenantID, id string) *Event {
	ev := simpleEvents(tenantID, "1", id, 1)[0]
	e := &Event{Topic: testEventsTopic, Key: []byte(tenantID), Value: ev.Value, Headers: ev.headers(), Time: time.Now()}
	e.fill()
	return e
}

// A tenant removed, re-added within UnknownTenantWait, then removed
// again: the second removal waits anew. The first removal's time was kept
// while no other tenant's event was unknown, and the second removal's
// events went to the DLQ at once (found in review).
func TestRegressionTenantRemovedAgainWaitsAnew(t *testing.T) {
	e := newTestEnv(t, 2)
	inst := newInstance(t, e.ca, e.caFile, answer(200))
	acme := tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)}
	other := tenantConf{ID: "other", Account: "2", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(acme, other)
	dlq := &recDLQ{}
	sc := e.testSinkConfig(prometheus.NewRegistry())
	sc.DeadLetters = dlq
	sc.UnknownTenantWait = 2 * time.Second
	s, err := NewSink(sc)
	require.NoError(t, err)
	ctx := context.Background()

	// Removed: the event waits; re-added within the wait: delivered.
	e.setTenants(other)
	done := make(chan error, 1)
	go func() { done <- s.Handle(ctx, eventOf("acme", "a")) }()
	require.Eventually(t, func() bool { return s.unknowns.Load() == 1 }, waitFor, tick)
	e.setTenants(acme, other)
	require.NoError(t, <-done)
	require.Zero(t, dlq.n())

	// Known: its next event forgets the removal.
	require.NoError(t, s.Handle(ctx, eventOf("acme", "b")))
	require.Zero(t, s.unknowns.Load(), "known again: a later removal waits anew")

	// Removed again: the wait starts over.
	e.setTenants(other)
	start := time.Now()
	require.NoError(t, s.Handle(ctx, eventOf("acme", "c")))
	require.GreaterOrEqual(t, time.Since(start), 1900*time.Millisecond)
	require.Equal(t, 1, dlq.n())
	require.Len(t, inst.delivered(), 2)
}

// Every tenant removed with a backlog stayed in the unknown-tenant map for
// the life of the process, and each unknown event scanned it whole. Those
// unknown for long are forgotten.
func TestRegressionUnknownTenantsAreForgotten(t *testing.T) {
	e := newTestEnv(t, 1)
	inst := newInstance(t, e.ca, e.caFile, answer(200))
	e.setTenants(tenantConf{ID: "other", Account: "2", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	sc := e.testSinkConfig(prometheus.NewRegistry())
	sc.DeadLetters = &recDLQ{}
	sc.UnknownTenantWait = time.Millisecond
	sc.ConfigPoll = 2 * time.Millisecond
	s, err := NewSink(sc)
	require.NoError(t, err)
	for i := range 200 {
		require.NoError(t, s.Handle(context.Background(), eventOf(fmt.Sprintf("gone-%d", i), "x")))
	}
	require.Less(t, int(s.unknowns.Load()), 200, "never pruned")
	s.pruneUnknown(s.cfg.Tenants.Snapshot())
	require.LessOrEqual(t, int(s.unknowns.Load()), unknownForgetAfter+1, "only the last few, unknown for less than 20 waits")
}

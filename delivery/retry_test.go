package delivery

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRetryAfter_Honoured: the instance answers 429 with Retry-After: 1
// once. The retry comes at least 1s after the first attempt, although
// RetryMax (200ms) is far shorter: the delay is the instance's.
func TestRetryAfter_Honoured(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	var n atomic.Int32
	inst := newInstance(t, e.ca, e.caFile, func(w http.ResponseWriter, _ *http.Request, _ *hit) int {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	})
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	evs := simpleEvents("acme", "1", "acme", 2)
	e.produce(e.partition("acme"), evs...)
	r := e.start("relay.test.retry-after", func(c *SinkConfig) {
		require.Less(t, c.RetryMax, time.Second)
	}, nil)
	inst.waitDelivered(2)

	hits := inst.attemptsOf(evs[0].ID)
	require.Len(t, hits, 2)
	require.Equal(t, http.StatusTooManyRequests, hits[0].Status)
	require.Equal(t, http.StatusOK, hits[1].Status)
	gap := hits[1].At.Sub(hits[0].At)
	t.Logf("retry %v after the 429", gap)
	require.GreaterOrEqual(t, gap, time.Second, "Retry-After: 1 must be honoured")
	require.Less(t, gap, 5*time.Second)
	require.Len(t, inst.attemptsOf(evs[1].ID), 1)
	require.Equal(t, float64(1), r.gauge("relay_delivery_retries_total"))
}

// Regression: Retry-After was honoured without bound, so an instance
// answering "Retry-After: 3600" held its partition for an hour however
// old the event was. The wait now ends at max_age, and the event goes to
// the dead-letter topic then.
func TestRetryAfterNeverPastMaxAge(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(http.StatusOK))
	// max_age counts from the event's arrival: a first event delivered
	// shows the consumer running, so the event under test is attempted
	// well within its max_age on a slow machine too.
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "warm", 1)...)
	e.start("relay.test.retry-after-max-age", func(c *SinkConfig) { c.MaxAge = 4 * time.Second }, nil)
	inst.waitDelivered(1)
	inst.setRespond(func(w http.ResponseWriter, _ *http.Request, _ *hit) int {
		w.Header().Set("Retry-After", "3600")
		return http.StatusServiceUnavailable
	})
	evs := simpleEvents("acme", "1", "acme", 1)
	e.produce(e.partition("acme"), evs...)
	var dls []DeadLetter
	require.Eventually(t, func() bool { dls = e.deadLetters("acme"); return len(dls) == 1 }, waitFor, 50*time.Millisecond,
		"dead-lettered once max_age passed")
	require.Contains(t, dls[0].Reason, "max_age")
	require.Len(t, inst.attemptsOf(evs[0].ID), 1, "no second attempt within the hour asked for")
}

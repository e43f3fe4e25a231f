package delivery

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Regression test for a bug found in review and since fixed; the
// comment describes the bug it guards against.
//
// TestRegressionRedriveAfterMaxAgeDeadLettersAgain: Redrive keeps the original
// relay-received-at, and Sink.Handle checks max_age against it before any
// attempt. An event dead-lettered while it was young (here: a 400) and
// redriven once the instance is fixed, later than max_age after Meta sent
// it, goes straight back to relay.dlq with reason max_age and is never
// attempted: "relay dlq redrive ... puts the events back" does nothing
// for them. With the defaults (72h), a tenant whose instance broke on a
// Friday and is redriven on Monday loses its weekend's events to the DLQ
// again.
func TestRegressionRedriveAfterMaxAgeDeadLettersAgain(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	var healed atomic.Bool
	healed.Store(true)
	inst := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, _ *http.Request, _ *hit) int {
		if healed.Load() {
			return http.StatusOK
		}
		return http.StatusBadRequest
	})
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	p := e.partition("acme")

	// A first event delivered shows the consumer running, so the event
	// under test is attempted within its max_age on a loaded machine too.
	e.produce(p, simpleEvents("acme", "1", "warm", 1)...)
	const maxAge = 2 * time.Second
	e.start("relay.test.review-redrive", func(c *SinkConfig) { c.MaxAge = maxAge }, nil)
	inst.waitDelivered(1)
	healed.Store(false)
	evs := simpleEvents("acme", "1", "acme", 1)
	e.produce(p, evs...)
	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 1 }, waitFor, tick)
	require.Len(t, inst.attemptsOf(evs[0].ID), 1)

	// The operator fixes the instance, after max_age, and redrives.
	time.Sleep(maxAge + 500*time.Millisecond)
	healed.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := e.dlq.Redrive(ctx, "acme", int32(p))
	require.NoError(t, err)
	require.Equal(t, 1, n)

	delivered := func() bool { return slices.Contains(inst.delivered(), evs[0].ID) }
	deadline := time.Now().Add(5 * time.Second)
	for !delivered() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	dls := e.deadLetters("acme")
	if len(dls) > 0 {
		t.Logf("back in the DLQ: reason %q", dls[0].Reason)
	}
	require.True(t, delivered(), "the redriven event reaches the fixed instance")
}

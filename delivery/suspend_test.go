package delivery

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGone_SuspendsTenantUntilConfigChanges: the instance answers 410 Gone.
// The tenant is suspended: no more attempts, the suspended-tenants gauge
// is 1, its partition counted paused, nothing dead-lettered; another
// tenant keeps flowing. Pointing the tenant at a healthy instance in the
// tenants file and reloading resumes delivery, and the event arrives.
func TestGone_SuspendsTenantUntilConfigChanges(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	gone := newInstance(t, e.ca, e.caFile, answer(http.StatusGone))
	healthy := newInstance(t, e.ca, e.caFile, answer(200))
	other := newInstance(t, e.ca, e.caFile, answer(200))
	secretA, secretB := newSecret(t), newSecret(t)
	tenantB := tenantConf{ID: "globex", Account: "2", URL: other.URL, CAFile: e.caFile, Secret: secretB}
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: gone.URL, CAFile: e.caFile, Secret: secretA}, tenantB)
	pA, pB := e.partition("acme"), e.partition("globex")

	evsA := simpleEvents("acme", "1", "acme", 2)
	evsB := simpleEvents("globex", "2", "globex", 20)
	e.produce(pA, evsA...)
	e.produce(pB, evsB[:10]...)
	r := e.start("relay.test.gone", nil, nil)

	require.Eventually(t, func() bool {
		return r.gauge("relay_delivery_suspended_tenants") == 1 && r.gauge("relay_delivery_paused_partitions") >= 1
	}, waitFor, tick)
	other.waitDelivered(10)
	require.Len(t, gone.allHits(), 1, "one attempt, the 410")

	// While suspended: no attempt at all, other tenants unaffected.
	e.produce(pB, evsB[10:]...)
	other.waitDelivered(20)
	require.Never(t, func() bool { return gone.count() > 1 }, 500*time.Millisecond, 10*time.Millisecond,
		"no attempts while the tenant is suspended")
	require.Equal(t, float64(1), r.gauge("relay_delivery_suspended_tenants"))
	require.Equal(t, float64(1), r.gauge("relay_delivery_attempts_total", "result", "gone"))
	require.Empty(t, e.deadLetters("acme"), "a 410 suspends, it does not dead-letter")

	// A reload that changes nothing of the tenant keeps it suspended.
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: gone.URL, CAFile: e.caFile, Secret: secretA}, tenantB)
	require.Never(t, func() bool { return gone.count() > 1 }, 300*time.Millisecond, 10*time.Millisecond)

	// New settings: delivery resumes with them.
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: healthy.URL, CAFile: e.caFile, Secret: secretA}, tenantB)
	healthy.waitDelivered(2)
	require.Equal(t, []string{evsA[0].ID, evsA[1].ID}, healthy.delivered())
	require.Len(t, gone.allHits(), 1)
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_suspended_tenants") == 0 }, waitFor, tick)
	require.Empty(t, e.deadLetters("acme"))
}

// TestMaxAge_OldEventDeadLettered: an event whose relay-received-at is
// older than MaxAge goes to relay.dlq with a max_age reason, without an
// attempt; the next event is delivered.
func TestMaxAge_OldEventDeadLettered(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	evs := simpleEvents("acme", "1", "acme", 2)
	evs[0].ReceivedAt = time.Now().Add(-2 * time.Hour)
	e.produce(e.partition("acme"), evs...)
	r := e.start("relay.test.max-age", func(c *SinkConfig) { c.MaxAge = time.Hour }, nil)
	inst.waitDelivered(1)
	require.Equal(t, []string{evs[1].ID}, inst.delivered())
	require.Empty(t, inst.attemptsOf(evs[0].ID), "an event past max_age is not attempted")

	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 1 }, waitFor, 20*time.Millisecond)
	dl := e.deadLetters("acme")[0]
	require.Equal(t, evs[0].ID, dl.EventID)
	require.True(t, strings.Contains(dl.Reason, "max_age"), "reason %q", dl.Reason)
	require.Equal(t, string(evs[0].Value), string(dl.Value))
	require.Equal(t, evs[0].ReceivedAt.UTC().Truncate(time.Microsecond), dl.ReceivedAt.UTC())
	require.Equal(t, float64(1), r.gauge("relay_delivery_dead_letters_total", "reason", "max_age"))
}

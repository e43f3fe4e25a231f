package delivery

import (
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOrdering_FlakyInstanceGetsEveryEventInPartitionOrder: 200 events of
// one tenant, the instance answering 503 at random about 30% of the time.
// Every event arrives, none missing, and the order of first successful
// receipts is the partition's order.
func TestOrdering_FlakyInstanceGetsEveryEventInPartitionOrder(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var mu sync.Mutex
	rnd := rand.New(rand.NewPCG(seed, 42))
	inst := newInstance(t, e.ca, e.caFile, func(http.ResponseWriter, *http.Request, *hit) int {
		mu.Lock()
		defer mu.Unlock()
		if rnd.Float64() < 0.3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	e.setTenants(tenantConf{ID: "acme", Account: "104857392810345", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t), MaxInFlight: 1})
	evs := simpleEvents("acme", "104857392810345", "acme", 200)
	e.produce(e.partition("acme"), evs...)

	r := e.start("relay.test.ordering", func(c *SinkConfig) {
		c.MaxAttempts = 1000 // a run of 503s must not dead-letter anything
	}, nil)
	inst.waitDelivered(len(evs))

	want := make([]string, len(evs))
	for i, ev := range evs {
		want[i] = ev.ID
	}
	require.Equal(t, want, inst.delivered(), "first successful receipts in offset order")

	// Never a later event before an earlier one was delivered: every
	// request, failed or not, is for the oldest event not yet delivered.
	next := 0
	failures := 0
	for _, h := range inst.allHits() {
		require.Equal(t, want[next], h.ID, "request for %s while %s is not delivered", h.ID, want[next])
		if h.Status == http.StatusOK {
			next++
		} else {
			failures++
		}
	}
	require.Equal(t, len(evs), next)
	require.Greater(t, failures, 20, "the instance failed about 30% of the requests")
	require.Empty(t, e.deadLetters("acme"))
	require.NoError(t, r.stop())
	require.Equal(t, int64(len(evs)), e.committed("relay.test.ordering", e.partition("acme")))
}

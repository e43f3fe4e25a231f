package delivery

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRuntime_InFlightWindowCommitsFinishedPrefix: a tenant with
// max_in_flight 4 whose instance answers after a random delay, so events
// finish out of order. All arrive; at most 4 are in flight at once; the
// commit point is the longest finished prefix: with one event failing
// for good, nothing at or after it is committed, and the next runtime
// delivers it.
func TestRuntime_InFlightWindowCommitsFinishedPrefix(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	evs := simpleEvents("acme", "1", "acme", 40)
	stuck := evs[25].ID
	var (
		mu          sync.Mutex
		inFlight    int
		maxInFlight int
		failStuck   = true
	)
	inst := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, _ *http.Request, h *hit) int {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		fail := failStuck && h.ID == stuck
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(15)) * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		if fail {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t), MaxInFlight: 4})
	p := e.partition("acme")
	e.produce(p, evs...)

	const group = "relay.test.inflight"
	r1 := e.start(group, func(c *SinkConfig) { c.MaxAttempts = 1 << 20 }, nil)
	inst.waitDelivered(len(evs) - 1)
	require.Eventually(t, func() bool { return len(inst.attemptsOf(stuck)) >= 2 }, waitFor, tick)
	require.NoError(t, r1.stop())
	mu.Lock()
	require.LessOrEqual(t, maxInFlight, 4, "max_in_flight bounds the requests in flight")
	require.Greater(t, maxInFlight, 1, "events of the tenant went out concurrently")
	mu.Unlock()
	got := inst.delivered()
	require.NotContains(t, got, stuck)
	want := make([]string, 0, len(evs))
	for _, ev := range evs {
		want = append(want, ev.ID)
	}
	require.ElementsMatch(t, slices.DeleteFunc(slices.Clone(want), func(id string) bool { return id == stuck }), got)
	require.Equal(t, int64(25), e.committed(group, p), "commit point: the offset of the unfinished event")

	// The instance accepts it now: the next runtime delivers it (and the
	// events after it again: at least once).
	mu.Lock()
	failStuck = false
	mu.Unlock()
	inst.reset()
	r2 := e.start(group, nil, nil)
	inst.waitDelivered(len(evs) - 25)
	require.ElementsMatch(t, want[25:], inst.delivered())
	require.NoError(t, r2.stop())
	require.Equal(t, int64(len(evs)), e.committed(group, p))
}

// TestRuntime_RebalanceLosesNothing: a second runtime joins the group while
// events flow, so partitions move between members; every event is
// delivered (at least once), each tenant's first receipts in partition
// order, and the offsets end committed past everything.
func TestRuntime_RebalanceLosesNothing(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	instA := newInstance(t, e.ca, e.caFile, answer(200))
	instB := newInstance(t, e.ca, e.caFile, answer(200))
	e.setTenants(
		tenantConf{ID: "acme", Account: "1", URL: instA.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "globex", Account: "2", URL: instB.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	pA, pB := e.partition("acme"), e.partition("globex")
	evsA := simpleEvents("acme", "1", "acme", 300)
	evsB := simpleEvents("globex", "2", "globex", 300)

	const group = "relay.test.rebalance"
	r1 := e.start(group, nil, nil)
	e.produce(pA, evsA[:100]...)
	e.produce(pB, evsB[:100]...)
	instA.waitDelivered(20)
	r2 := e.start(group, nil, nil)
	e.produce(pA, evsA[100:200]...)
	e.produce(pB, evsB[100:200]...)
	instA.waitDelivered(150)
	require.NoError(t, r1.stop()) // r2 takes everything
	e.produce(pA, evsA[200:]...)
	e.produce(pB, evsB[200:]...)
	instA.waitDelivered(len(evsA))
	instB.waitDelivered(len(evsB))
	require.NoError(t, r2.stop())

	for _, c := range []struct {
		inst *testInstance
		evs  []testEvent
		p    int
	}{{instA, evsA, pA}, {instB, evsB, pB}} {
		want := make([]string, len(c.evs))
		for i, ev := range c.evs {
			want[i] = ev.ID
		}
		require.Equal(t, want, c.inst.delivered(), "first receipts in partition order, none missing")
		require.Equal(t, int64(len(c.evs)), e.committed(group, c.p))
	}
}

package delivery

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Regression: an attempt ignored the end of its generation, and kafka-go
// rejoins only once every function of the generation returned. At every
// rebalance, a tenant whose instance hangs stopped every other tenant on the
// node for up to delivery.timeout (and past the group's 10 s rebalance
// timeout the node was expelled, which rebalanced again).
func TestRegressionRebalanceCutsAttemptUnderWay(t *testing.T) {
	const attemptTimeout = 20 * time.Second // far above the gap allowed below
	e := newTestEnv(t, 2)
	started := make(chan struct{}, 100)
	cut := make(chan time.Duration, 100)
	release := make(chan struct{}) // closed when the test ends, before the nodes stop
	hanging := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, r *http.Request, _ *hit) int {
		began := time.Now()
		started <- struct{}{}
		select { // hangs until the relay gives up on the request
		case <-r.Context().Done():
			cut <- time.Since(began)
		case <-release:
		}
		return http.StatusOK
	})
	var (
		mu    sync.Mutex
		times []time.Time // of B's requests
	)
	healthy := newInstance(t, e.ca, e.caFile, func(http.ResponseWriter, *http.Request, *hit) int {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return http.StatusOK
	})
	e.setTenants(
		tenantConf{ID: "A", Account: "1", URL: hanging.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "B", Account: "2", URL: healthy.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	pA, pB := e.partition("A"), e.partition("B")
	const group = "relay.regression.rebalance"
	slow := func(c *SinkConfig) { c.Timeout = attemptTimeout }
	e.start(group, slow, nil)

	// B gets an event every 20 ms for as long as the test runs.
	stopB := make(chan struct{})
	var producing sync.WaitGroup
	producing.Go(func() {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopB:
				return
			case <-tk.C:
			}
			e.produce(pB, simpleEvents("B", "2", fmt.Sprintf("B%05d", i), 1)...)
		}
	})
	t.Cleanup(func() { close(stopB); producing.Wait() })
	healthy.waitDelivered(10)

	e.produce(pA, simpleEvents("A", "1", "A", 1)...)
	select {
	case <-started: // A's attempt is under way, and will hang
	case <-time.After(waitFor):
		t.Fatal("A's event was never attempted")
	}
	mu.Lock()
	joined := time.Now()
	before := len(times)
	mu.Unlock()
	e.start(group, slow, nil) // a second node joins the group: a rebalance
	t.Cleanup(func() { close(release) })

	select {
	case d := <-cut:
		require.Less(t, d, attemptTimeout/2, "the rebalance cuts the hanging attempt short")
		require.GreaterOrEqual(t, d, rebalanceGrace, "after a grace for instances that answer")
	case <-time.After(attemptTimeout / 2):
		t.Fatal("the rebalance did not cut A's attempt short")
	}
	// B keeps flowing through the rebalance: wait for 50 more deliveries
	// and find the longest pause among B's requests since the join.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(times) >= before+50
	}, waitFor, tick, "B's deliveries stopped")
	mu.Lock()
	defer mu.Unlock()
	prev, gap := joined, time.Duration(0)
	for _, at := range times[before:] {
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	t.Logf("longest pause of B's deliveries since the join: %v", gap)
	require.Less(t, gap, 5*time.Second, "B waited for A's hanging attempt")
}

// At a shutdown, unlike a rebalance, an attempt under way finishes: an
// instance that answers in time is not sent the event again.
func TestShutdownLetsAttemptUnderWayFinish(t *testing.T) {
	e := newTestEnv(t, 1)
	started := make(chan struct{}, 10)
	interrupted := make(chan bool, 10)
	inst := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, r *http.Request, _ *hit) int {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			interrupted <- true
		case <-time.After(500 * time.Millisecond): // a slow instance
			interrupted <- false
		}
		return http.StatusOK
	})
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	p := e.partition("acme")
	const group = "relay.regression.shutdown"
	r := e.start(group, nil, nil)
	e.produce(p, simpleEvents("acme", "1", "acme", 1)...)
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("the event was never attempted")
	}
	require.NoError(t, r.stop())
	require.False(t, <-interrupted, "the shutdown cut the attempt short")
	require.Equal(t, int64(1), e.committed(group, p), "the finished attempt is committed")
}

// Regression: at a rebalance the committer committed at once and returned,
// so an attempt that succeeded within the grace was never committed, and
// the next owner delivered the event again. The committer now waits for
// the workers first.
func TestRebalanceCommitsWhatFinishedInTheGrace(t *testing.T) {
	e := newTestEnv(t, 1)
	started := make(chan struct{}, 10)
	inst := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, r *http.Request, _ *hit) int {
		started <- struct{}{}
		select {
		case <-time.After(rebalanceGrace - 100*time.Millisecond): // slow, but within the grace, and most likely after the rebalance began
		case <-r.Context().Done():
		}
		return http.StatusOK
	})
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	p := e.partition("acme")
	const group = "relay.regression.grace"
	e.start(group, nil, nil)
	e.produce(p, simpleEvents("acme", "1", "acme", 1)...)
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("the event was never attempted")
	}
	e.start(group, nil, nil) // a second node joins: a rebalance during the attempt
	require.Eventually(t, func() bool { return e.committed(group, p) == 1 }, waitFor, 50*time.Millisecond)
	require.Equal(t, 1, inst.count(), "the event was delivered again after the rebalance")
}

// A rebalance during a shutdown's drain (a rolling deploy: one node
// stopping, another joining) used not to cut the stopping node's attempt
// on a hanging instance, since its context had already ended with
// ErrShuttingDown: the group waited for it for the whole rebalance timeout
// (10 s), every tenant with it. The attempt now gets the same grace.
func TestRebalanceDuringShutdownStillCutsAHangingAttempt(t *testing.T) {
	const attemptTimeout = 20 * time.Second
	e := newTestEnv(t, 2)
	started := make(chan struct{}, 100)
	release := make(chan struct{})
	hanging := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, r *http.Request, _ *hit) int {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return http.StatusOK
	})
	var (
		mu    sync.Mutex
		times []time.Time
	)
	healthy := newInstance(t, e.ca, e.caFile, func(http.ResponseWriter, *http.Request, *hit) int {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return http.StatusOK
	})
	e.setTenants(
		tenantConf{ID: "A", Account: "1", URL: hanging.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "B", Account: "2", URL: healthy.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	pA, pB := e.partition("A"), e.partition("B")
	const group = "relay.regression.rolling"
	slow := func(c *SinkConfig) { c.Timeout = attemptTimeout }
	long := func(c *RuntimeConfig) { c.Drain = 15 * time.Second }
	first := e.start(group, slow, long)

	stopB := make(chan struct{})
	var producing sync.WaitGroup
	producing.Go(func() {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopB:
				return
			case <-tk.C:
			}
			e.produce(pB, simpleEvents("B", "2", fmt.Sprintf("B%05d", i), 1)...)
		}
	})
	t.Cleanup(func() { close(stopB); producing.Wait() })
	healthy.waitDelivered(10)
	e.produce(pA, simpleEvents("A", "1", "A", 1)...)
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("A's event was never attempted")
	}

	stopped := make(chan struct{})
	go func() { _ = first.stop(); close(stopped) }() // the first node drains…
	mu.Lock()
	joined, before := time.Now(), len(times)
	mu.Unlock()
	e.start(group, slow, nil) // …while a second one joins
	t.Cleanup(func() { close(release) })

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(times) >= before+50
	}, waitFor, tick, "B's deliveries stopped")
	mu.Lock()
	prev, gap := joined, time.Duration(0)
	for _, at := range times[before:] {
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	mu.Unlock()
	t.Logf("longest pause of B's deliveries since the join: %v", gap)
	require.Less(t, gap, 7*time.Second, "the group waited for the stopping node's hanging attempt")
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("the first node did not stop")
	}
}

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
	sc := newHangingScene(t, e)
	const group = "relay.regression.rebalance"
	slow := func(c *SinkConfig) { c.Timeout = attemptTimeout }
	e.start(group, slow, nil)

	sc.hangA(t, e) // A's attempt is under way, and will hang
	sc.b.markNow()
	e.start(group, slow, nil) // a second node joins the group: a rebalance
	t.Cleanup(func() { close(sc.release) })

	select {
	case d := <-sc.cut:
		require.Less(t, d, attemptTimeout/2, "the rebalance cuts the hanging attempt short")
		require.GreaterOrEqual(t, d, rebalanceGrace, "after a grace for instances that answer")
	case <-time.After(attemptTimeout / 2):
		t.Fatal("the rebalance did not cut A's attempt short")
	}
	// B keeps flowing through the rebalance.
	gap := sc.b.gapAfter(t, 50)
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
	sc := newHangingScene(t, e)
	const group = "relay.regression.rolling"
	slow := func(c *SinkConfig) { c.Timeout = attemptTimeout }
	long := func(c *RuntimeConfig) { c.Drain = 15 * time.Second }
	first := e.start(group, slow, long)

	sc.hangA(t, e)

	stopped := make(chan struct{})
	go func() { _ = first.stop(); close(stopped) }() // the first node drains…
	sc.b.markNow()
	e.start(group, slow, nil) // …while a second one joins
	t.Cleanup(func() { close(sc.release) })

	gap := sc.b.gapAfter(t, 50)
	t.Logf("longest pause of B's deliveries since the join: %v", gap)
	require.Less(t, gap, 7*time.Second, "the group waited for the stopping node's hanging attempt")
	select {
	case <-stopped:
	case <-time.After(waitFor):
		t.Fatal("the first node did not stop")
	}
}

// steadyTenant is a tenant whose healthy instance gets an event every 20 ms
// for as long as the test runs, and which measures the pauses between
// deliveries: what one tenant sees of another's trouble.
type steadyTenant struct {
	mu    sync.Mutex
	times []time.Time // of the instance's requests
	mark  time.Time   // since when gap measures
	from  int         // requests before mark
}

func (st *steadyTenant) respond(http.ResponseWriter, *http.Request, *hit) int {
	st.mu.Lock()
	st.times = append(st.times, time.Now())
	st.mu.Unlock()
	return http.StatusOK
}

// stream produces an event for the tenant's partition every 20 ms until
// the test ends.
func (st *steadyTenant) stream(t *testing.T, e *testEnv, partition int, id, account string) {
	stop := make(chan struct{})
	var producing sync.WaitGroup
	producing.Go(func() {
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			e.produce(partition, simpleEvents(id, account, fmt.Sprintf("%s%05d", id, i), 1)...)
		}
	})
	t.Cleanup(func() { close(stop); producing.Wait() })
}

// markNow starts the measurement.
func (st *steadyTenant) markNow() {
	st.mu.Lock()
	st.mark, st.from = time.Now(), len(st.times)
	st.mu.Unlock()
}

// gapAfter waits for n more deliveries since the mark and returns the
// longest pause among them (from the mark to the first, then between).
func (st *steadyTenant) gapAfter(t *testing.T, n int) time.Duration {
	t.Helper()
	require.Eventually(t, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.times) >= st.from+n
	}, waitFor, tick, "the steady tenant's deliveries stopped")
	st.mu.Lock()
	defer st.mu.Unlock()
	prev, gap := st.mark, time.Duration(0)
	for _, at := range st.times[st.from:] {
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return gap
}

// hangingScene is two tenants: A, whose instance hangs on every request
// until the relay gives up on it (its time reported on cut) or release is
// closed, and B, a steadyTenant.
type hangingScene struct {
	started chan struct{}
	cut     chan time.Duration
	release chan struct{} // close it in a cleanup registered after the nodes started
	b       steadyTenant
	healthy *testInstance
	pA, pB  int
}

func newHangingScene(t *testing.T, e *testEnv) *hangingScene {
	sc := &hangingScene{started: make(chan struct{}, 100), cut: make(chan time.Duration, 100), release: make(chan struct{})}
	hanging := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, r *http.Request, _ *hit) int {
		began := time.Now()
		sc.started <- struct{}{}
		select {
		case <-r.Context().Done():
			sc.cut <- time.Since(began)
		case <-sc.release:
		}
		return http.StatusOK
	})
	sc.healthy = newInstance(t, e.ca, e.caFile, sc.b.respond)
	e.setTenants(
		tenantConf{ID: "A", Account: "1", URL: hanging.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "B", Account: "2", URL: sc.healthy.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	sc.pA, sc.pB = e.partition("A"), e.partition("B")
	return sc
}

// hangA starts B's stream, waits for it to flow, then sends A an event and
// waits until its attempt is under way (hanging). Call it once a node runs.
func (sc *hangingScene) hangA(t *testing.T, e *testEnv) {
	t.Helper()
	sc.b.stream(t, e, sc.pB, "B", "2")
	sc.healthy.waitDelivered(10)
	e.produce(sc.pA, simpleEvents("A", "1", "A", 1)...)
	select {
	case <-sc.started:
	case <-time.After(waitFor):
		t.Fatal("A's event was never attempted")
	}
}

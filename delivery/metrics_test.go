package delivery

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Regression: a partition left out of the fetches (its tenant paused by
// its breaker, its queue full) had its lag frozen at the last fetch, so a
// lag alert understated an instance's outage as the backlog grew. Its
// lag is now refreshed from the high watermark meanwhile.
func TestLagKeepsGrowingWhileATenantIsPaused(t *testing.T) {
	e := newTestEnv(t, 1)
	e.acmeInstance(answer(http.StatusServiceUnavailable))
	p := e.partition("acme")
	evs := simpleEvents("acme", "1", "acme", 150)
	e.produce(p, evs[:100]...)
	r := e.start("relay.test.lagpaused", nil, nil)
	lag := func() float64 { return r.gauge("relay_delivery_consumer_lag", "partition", strconv.Itoa(p)) }
	require.Eventually(t, func() bool { return lag() >= 90 }, waitFor, tick)

	// The head events go to the DLQ one by one (15 attempts each), so the
	// backlog is a little under 150 by then.
	e.produce(p, evs[100:]...)
	require.Eventually(t, func() bool { return lag() >= 130 }, lagRefresh+waitFor, tick,
		"the lag follows the backlog of a paused tenant")
}

// Regression: after a rebalance a node kept reporting the lag of the
// partitions that moved to another member, and the breaker state of their
// tenants, frozen at their last values: two nodes reported one partition,
// one of them wrongly. A node now reports only what it handles.
func TestRebalanceDropsTheSeriesOfWhatMoved(t *testing.T) {
	e := newTestEnv(t, 2)
	inst := newInstance(t, e.ca, e.caFile, answer(http.StatusOK))
	e.setTenants(
		tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "globex", Account: "2", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	owner := map[string]string{strconv.Itoa(e.partition("acme")): "acme", strconv.Itoa(e.partition("globex")): "globex"}
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 1)...)
	e.produce(e.partition("globex"), simpleEvents("globex", "2", "globex", 1)...)

	const group = "relay.test.series"
	r1 := e.start(group, nil, nil)
	inst.waitDelivered(2)
	require.ElementsMatch(t, []string{"acme", "globex"}, breakerTenants(t, r1.metrics))

	r2 := e.start(group, nil, nil)
	var mine []string
	require.Eventually(t, func() bool {
		mine = labelValues(t, r1.metrics, "relay_delivery_consumer_lag", "partition")
		theirs := labelValues(t, r2.metrics, "relay_delivery_consumer_lag", "partition")
		return len(mine) == 1 && len(theirs) == 1 && mine[0] != theirs[0]
	}, 30*time.Second, 50*time.Millisecond, "each node reports its own partition only")
	// The lag series go just before the sink is told: wait for both.
	require.Eventually(t, func() bool {
		tenants := breakerTenants(t, r1.metrics)
		return len(tenants) == 1 && slices.Contains(mine, partitionOf(owner, tenants[0]))
	}, waitFor, tick, "only the breaker series of the tenant whose partition stayed")
}

// A tenant whose partition moves away and back keeps its state meanwhile:
// here the previous CA of a ca_file replaced by one that does not load
// (README: it stays in use, and relay_delivery_ca_reload_failing says so).
// A first version forgot the tenant when its partition moved away, so on
// its return it could not be delivered at all, and the alert was gone.
func TestPartitionAwayAndBackKeepsTheTenantsState(t *testing.T) {
	sc := newCAScene(t)
	sc.breakCA()
	require.Eventually(t, func() bool { return sc.failing() == 1 }, waitFor, tick)

	p := sc.e.partition("acme")
	sc.s.Assigned(nil) // another member took acme's partition
	require.Empty(t, breakerTenants(t, sc.reg), "not reported while away")
	sc.s.Assigned([]int{p}) // and it came back
	require.Equal(t, []string{"acme"}, breakerTenants(t, sc.reg), "reported again")
	_, err := sc.s.instanceFor(sc.acme())
	require.NoError(t, err, "still delivered with the previous CA")
	require.Equal(t, float64(1), sc.failing(), "and still said so")
}

// partitionOf is the partition owner maps to tenant id.
func partitionOf(owner map[string]string, id string) string {
	for p, tn := range owner {
		if tn == id {
			return p
		}
	}
	return ""
}

// relay_delivery_group_joined is 1 while the node is in a generation and
// 0 once it ends; the generation's lag series go with it, since nothing
// fetches them until the next one. A broker away, or a rebalance that
// takes long, used to leave the last lag values standing (0 for a tenant
// that was keeping up) while nothing was delivered.
func TestGenerationEndReportsNotJoinedAndNoLag(t *testing.T) {
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(http.StatusOK))
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 1)...)
	r := e.start("relay.test.joined", nil, nil)
	inst.waitDelivered(1)
	require.Equal(t, float64(1), r.gauge("relay_delivery_group_joined", "module", "instance"))
	require.Len(t, labelValues(t, r.metrics, "relay_delivery_consumer_lag", "partition"), 1)

	require.NoError(t, r.stop())
	require.Equal(t, float64(0), r.gauge("relay_delivery_group_joined", "module", "instance"))
	require.Empty(t, labelValues(t, r.metrics, "relay_delivery_consumer_lag", "partition"))
}

// A tenant gone from the tenants file is forgotten at a rebalance, not
// kept as handled elsewhere (a first version of Assigned kept it, and its
// ca_file went on being watched and reported for a tenant that no longer
// exists). One removed by mistake and restored is reported again as soon
// as it is delivered here.
func TestAssignedForgetsRemovedTenantsAndRestoredOnesReportAgain(t *testing.T) {
	e := newTestEnv(t, 1)
	acme := tenantConf{ID: "acme", Account: "1", URL: "https://127.0.0.1:1/", CAFile: e.caFile, Secret: newSecret(t)}
	globex := tenantConf{ID: "globex", Account: "2", URL: "https://127.0.0.1:1/", CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(acme, globex)
	reg := prometheus.NewRegistry()
	s, err := NewSink(e.testSinkConfig(reg))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	p := e.partition("acme")
	_, err = s.instanceFor(e.reg.Snapshot().Tenant("acme"))
	require.NoError(t, err)

	e.setTenants(globex) // acme removed
	s.Assigned([]int{p}) // a rebalance meanwhile: this node keeps the partition
	s.mu.Lock()
	_, kept := s.tenants["acme"]
	s.mu.Unlock()
	require.False(t, kept, "a tenant gone from the tenants file is forgotten")
	require.NotContains(t, breakerTenants(t, reg), "acme")

	e.setTenants(acme, globex) // restored
	_, err = s.instanceFor(e.reg.Snapshot().Tenant("acme"))
	require.NoError(t, err)
	require.Contains(t, breakerTenants(t, reg), "acme", "reported again once delivered here")

	// And one marked away by a generation, then delivered here all the
	// same, is reported again at once.
	s.Assigned(nil)
	require.NotContains(t, breakerTenants(t, reg), "acme")
	_, err = s.instanceFor(e.reg.Snapshot().Tenant("acme"))
	require.NoError(t, err)
	require.Contains(t, breakerTenants(t, reg), "acme")
}

// Regression: the lag counted only events not yet handed to the module,
// so a tenant stuck on one event (its instance down, its breaker open)
// showed a lag of 0, and four events waiting showed 3. What a worker took
// and has not finished counts now.
func TestLagCountsTheEventBeingHandled(t *testing.T) {
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(http.StatusServiceUnavailable))
	p := e.partition("acme")
	evs := simpleEvents("acme", "1", "acme", 4)
	e.produce(p, evs[0])
	// Slow retries, so that the first event is still being handled when
	// the others arrive, however slow the machine.
	r := e.start("relay.test.laghead", func(c *SinkConfig) { c.RetryInitial, c.RetryMax = time.Minute, time.Minute }, nil)
	lag := func() float64 { return r.gauge("relay_delivery_consumer_lag", "partition", strconv.Itoa(p)) }
	require.Eventually(t, func() bool { return inst.count() >= 1 }, waitFor, tick) // tried and refused: being handled
	require.Eventually(t, func() bool { return lag() == 1 }, lagRefresh+waitFor, tick, "the one event being retried is lag")
	e.produce(p, evs[1:]...)
	require.Eventually(t, func() bool { return lag() == 4 }, lagRefresh+waitFor, tick, "four events not handled")
}

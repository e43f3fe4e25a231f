package delivery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tenant"
)

// TestTenants_UnknownTenantDeadLettered: an event naming a tenant that is
// not in the tenants file goes to relay.dlq (reason names the tenant);
// the events after it are delivered.
func TestTenants_UnknownTenantDeadLettered(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	stray := simpleEvents("nobody", "9", "nobody", 1)
	evs := simpleEvents("acme", "1", "acme", 1)
	e.produce(e.partition("acme"), stray[0], evs[0])
	r := e.start("relay.test.unknown", nil, nil)
	inst.waitDelivered(1)
	require.Eventually(t, func() bool { return len(e.deadLetters("nobody")) == 1 }, waitFor, 20*time.Millisecond)
	dl := e.deadLetters("nobody")[0]
	require.Equal(t, stray[0].ID, dl.EventID)
	require.True(t, strings.Contains(dl.Reason, `"nobody"`), dl.Reason)
	require.Equal(t, float64(1), r.gauge("relay_delivery_dead_letters_total", "reason", "unknown_tenant"))
}

// TestTenants_NotLoadedYetWaits: before the registry's first load its
// Snapshot is nil. The sink must not take every event for one of an
// unknown tenant and dead-letter it: it waits, and delivers once the
// tenants are loaded.
func TestTenants_NotLoadedYetWaits(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	evs := simpleEvents("acme", "1", "acme", 3)
	e.produce(e.partition("acme"), evs...)

	// A second registry over the same file, as a relay that has not loaded
	// it yet.
	admin := &tenant.Admin{Client: e.newClient(), Brokers: []string{e.addr}, ReplicationFactor: 1}
	fresh, err := tenant.NewRegistry(tenant.RegistryConfig{
		File:       e.tenantsFile,
		Assigner:   &tenant.Assigner{Admin: admin, Topic: testTenantsTopic, Events: testEventsTopic},
		Registerer: prometheus.NewRegistry(),
	})
	require.NoError(t, err)
	require.Nil(t, fresh.Snapshot())

	r := e.start("relay.test.not-loaded", func(c *SinkConfig) { c.Tenants = fresh }, nil)
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_paused_partitions") >= 1 }, waitFor, tick,
		"the partition waits for the tenants")
	require.Never(t, func() bool { return len(e.deadLetters("acme")) > 0 || inst.count() > 0 }, 300*time.Millisecond, 20*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, fresh.Reload(ctx))
	inst.waitDelivered(3)
	require.Equal(t, []string{evs[0].ID, evs[1].ID, evs[2].ID}, inst.delivered())
	require.Empty(t, e.deadLetters("acme"))
}

// TestTenants_UnknownTenantWaitsForANewerFile: a delivery node whose
// tenants file is older than the ingress node's sees a new tenant's events
// first. They wait (UnknownTenantWait) for the tenant to appear rather than
// go straight to the DLQ, and are delivered once it does.
func TestTenants_UnknownTenantWaitsForANewerFile(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	inst := newInstance(t, e.ca, e.caFile, answer(200))
	acme := tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)}
	globex := tenantConf{ID: "globex", Account: "2", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(acme, globex)
	part := e.partition("globex")
	e.setTenants(acme) // this node's file does not know globex yet
	evs := simpleEvents("globex", "2", "globex", 2)
	e.produce(part, evs...)

	r := e.start("relay.test.unknown-wait", func(c *SinkConfig) { c.UnknownTenantWait = time.Minute }, nil)
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_paused_partitions") >= 1 }, waitFor, tick)
	require.Never(t, func() bool { return len(e.deadLetters("globex")) > 0 || inst.count() > 0 }, 300*time.Millisecond, 20*time.Millisecond)

	e.setTenants(acme, globex)
	inst.waitDelivered(2)
	require.Equal(t, []string{evs[0].ID, evs[1].ID}, inst.delivered())
	require.Empty(t, e.deadLetters("globex"))
}

// A tenant removed from the tenants file leaves nothing behind in the
// sink: its connections, breaker and breaker series go once the sink
// next looks a tenant up. (They stayed for good, and dashboards showed
// the removed tenant's breaker forever.)
func TestTenants_RemovedTenantForgotten(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	instA := newInstance(t, e.ca, e.caFile, answer(200))
	instB := newInstance(t, e.ca, e.caFile, answer(200))
	a := tenantConf{ID: "acme", Account: "1", URL: instA.URL, CAFile: e.caFile, Secret: newSecret(t)}
	b := tenantConf{ID: "globex", Account: "2", URL: instB.URL, CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(a, b)
	pA, pB := e.partition("acme"), e.partition("globex")
	e.produce(pA, simpleEvents("acme", "1", "acme-1", 1)...)
	e.produce(pB, simpleEvents("globex", "2", "globex-1", 1)...)
	r := e.start("relay.test.removed", nil, nil)
	instA.waitDelivered(1)
	instB.waitDelivered(1)
	require.ElementsMatch(t, []string{"acme", "globex"}, breakerTenants(t, r.metrics))

	e.setTenants(a)
	e.produce(pA, simpleEvents("acme", "1", "acme-2", 1)...)
	instA.waitDelivered(2)
	require.Equal(t, []string{"acme"}, breakerTenants(t, r.metrics))
	r.sink.mu.Lock()
	defer r.sink.mu.Unlock()
	require.Len(t, r.sink.tenants, 1)
	require.NotNil(t, r.sink.tenants["acme"])
}

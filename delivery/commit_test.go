package delivery

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommit_CleanStopCommitsDelivered: events delivered, then the runtime
// stopped cleanly: the group's offset is past them, and a new runtime in
// the same group delivers none of them again, only what came after.
func TestCommit_CleanStopCommitsDelivered(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	p := e.partition("acme")
	evs := simpleEvents("acme", "1", "acme", 11)
	e.produce(p, evs[:10]...)

	const group = "relay.test.commit"
	r1 := e.start(group, nil, nil)
	inst.waitDelivered(10)
	require.NoError(t, r1.stop())
	require.Equal(t, int64(10), e.committed(group, p), "offsets committed at the clean stop")
	require.Equal(t, float64(10), r1.gauge("relay_delivery_events_handled_total", "result", "ok"))

	r2 := e.start(group, nil, nil)
	e.produce(p, evs[10])
	inst.waitDelivered(11)
	// Partition order: had anything before evs[10] been delivered again,
	// it would have been before evs[10].
	require.Len(t, inst.allHits(), 11, "nothing delivered twice")
	require.Len(t, inst.attemptsOf(evs[10].ID), 1)
	require.NoError(t, r2.stop())
	require.Equal(t, int64(11), e.committed(group, p))
}

// TestCommit_UnfinishedEventsHandedBackAtStop: the runtime is stopped while
// the instance is down; the events it could not deliver are not committed
// and the next runtime in the group delivers every one of them, in order.
func TestCommit_UnfinishedEventsHandedBackAtStop(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	p := e.partition("acme")
	evs := simpleEvents("acme", "1", "acme", 8)
	e.produce(p, evs[:3]...)

	const group = "relay.test.handback"
	r1 := e.start(group, nil, nil)
	inst.waitDelivered(3)

	// The instance goes down; more events come.
	inst.setRespond(answer(http.StatusServiceUnavailable))
	e.produce(p, evs[3:]...)
	require.Eventually(t, func() bool { return len(inst.attemptsOf(evs[3].ID)) >= 2 }, waitFor, tick)
	require.NoError(t, r1.stop())
	require.Equal(t, int64(3), e.committed(group, p), "nothing past the last delivered event")
	require.GreaterOrEqual(t, r1.gauge("relay_delivery_events_handled_total", "result", "unfinished"), float64(1))
	require.Empty(t, e.deadLetters("acme"))
	require.Len(t, inst.delivered(), 3)

	// Back up: the next runtime delivers them all.
	inst.setRespond(answer(200))
	r2 := e.start(group, nil, nil)
	inst.waitDelivered(8)
	want := make([]string, len(evs))
	for i, ev := range evs {
		want[i] = ev.ID
	}
	require.Equal(t, want, inst.delivered(), "at least once, in order, nothing lost")
	require.NoError(t, r2.stop())
	require.Equal(t, int64(8), e.committed(group, p))
}

package delivery

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// TestDLQ_PermanentFailureThenRedrive: the instance answers 400 for some
// events: each goes to relay.dlq after one attempt, keeping its value, key
// and headers, with relay-dlq-reason "status 400", relay-attempts "1" and
// relay-first-attempt-at; the tenant's next events are still delivered.
// Then Redrive writes the dead letters back into the tenant's partition in
// their original order, delivery delivers them, and a second Redrive
// redrives nothing.
func TestDLQ_PermanentFailureThenRedrive(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	evs := simpleEvents("acme", "1", "acme", 6)
	bad := map[string]bool{evs[1].ID: true, evs[2].ID: true, evs[4].ID: true}
	var healed atomic.Bool
	inst := newInstance(t, e.ca, e.caFile, func(_ http.ResponseWriter, _ *http.Request, h *hit) int {
		if bad[h.ID] && !healed.Load() {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	other := newInstance(t, e.ca, e.caFile, answer(200))
	e.setTenants(
		tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "globex", Account: "2", URL: other.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	p := e.partition("acme")
	require.Empty(t, e.deadLetters("acme"), "List before anything was dead-lettered")

	e.produce(p, evs...)
	e.produce(e.partition("globex"), simpleEvents("globex", "2", "globex", 2)...)
	before := time.Now()
	r := e.start("relay.test.dlq", nil, nil)
	inst.waitDelivered(3)
	other.waitDelivered(2)
	require.Equal(t, []string{evs[0].ID, evs[3].ID, evs[5].ID}, inst.delivered(), "the events after a dead letter are still delivered")
	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 3 }, waitFor, 20*time.Millisecond)

	dls := e.deadLetters("acme")
	for i, want := range []testEvent{evs[1], evs[2], evs[4]} {
		dl := dls[i]
		require.Len(t, inst.attemptsOf(want.ID), 1, "a 400 is not retried")
		require.Equal(t, want.ID, dl.EventID)
		require.Equal(t, "acme", dl.Tenant)
		require.Equal(t, "acme", string(dl.Key), "original key")
		require.Equal(t, string(want.Value), string(dl.Value), "original value")
		require.Equal(t, "status 400", dl.Reason)
		require.Equal(t, 1, dl.Attempts)
		rr := rawRecord{Headers: dl.Headers}
		for _, h := range want.headers() {
			if h.Key == HeaderReceivedAt {
				require.NotEmpty(t, rr.header(h.Key))
				continue
			}
			require.Equal(t, string(h.Value), rr.header(h.Key), "original header %s", h.Key)
		}
		require.Equal(t, "status 400", rr.header(HeaderDLQReason))
		require.Equal(t, "1", rr.header(HeaderDLQAttempts))
		first, err := time.Parse(time.RFC3339, rr.header(HeaderDLQFirstAttemptAt))
		require.NoError(t, err, "relay-first-attempt-at is RFC 3339")
		require.WithinDuration(t, inst.attemptsOf(want.ID)[0].At, first, 2*time.Second)
		require.False(t, first.Before(before.Add(-time.Second)))
	}
	require.Empty(t, e.deadLetters("globex"), "List is per tenant")
	require.Equal(t, float64(3), r.gauge("relay_delivery_dead_letters_total", "reason", "permanent"))

	// Redrive, the instance now accepting them.
	healed.Store(true)
	eventsBefore := len(e.records(testEventsTopic, p))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := e.dlq.Redrive(ctx, "acme", int32(p))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	inst.waitDelivered(6)
	require.Equal(t, []string{evs[0].ID, evs[3].ID, evs[5].ID, evs[1].ID, evs[2].ID, evs[4].ID}, inst.delivered(),
		"redriven in their original order")
	for _, id := range []string{evs[1].ID, evs[2].ID, evs[4].ID} {
		hits := inst.attemptsOf(id)
		require.Len(t, hits, 2)
		require.Equal(t, string(hits[0].Body), string(hits[1].Body))
	}

	// The redriven records: original key, value and headers, no DLQ
	// headers, relay-redriven-at added.
	recs := e.records(testEventsTopic, p)
	require.Len(t, recs, eventsBefore+3)
	for i, want := range []testEvent{evs[1], evs[2], evs[4]} {
		rec := recs[eventsBefore+i]
		require.Equal(t, "acme", string(rec.Key))
		require.Equal(t, string(want.Value), string(rec.Value))
		require.Equal(t, want.ID, rec.header(HeaderEventID))
		require.Equal(t, "acme", rec.header(HeaderTenant))
		require.Empty(t, rec.header(HeaderDLQReason))
		require.Empty(t, rec.header(HeaderDLQAttempts))
		require.Empty(t, rec.header(HeaderDLQFirstAttemptAt))
		_, err := time.Parse(time.RFC3339, rec.header(HeaderRedrivenAt))
		require.NoError(t, err)
	}

	require.Empty(t, e.deadLetters("acme"), "List after the redrive")
	n, err = e.dlq.Redrive(ctx, "acme", int32(p))
	require.NoError(t, err)
	require.Zero(t, n, "a second redrive redrives nothing")
	require.Len(t, e.records(testEventsTopic, p), eventsBefore+3)
	require.Len(t, inst.delivered(), 6)
}

// TestDLQ_MarkerCoversOnlyWhatWasRedriven: a dead letter written while a
// redrive was under way (after Redrive listed the dead letters, before it
// wrote its marker) lands before the marker, but was not redriven: List
// must still return it, and the next Redrive must redrive it.
func TestDLQ_MarkerCoversOnlyWhatWasRedriven(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs := simpleEvents("acme", "1", "acme", 3)
	toEv := func(te testEvent) *Event {
		ev := &Event{Key: []byte(te.Tenant), Value: te.Value, Headers: te.headers(), Time: time.Now()}
		ev.fill()
		return ev
	}
	now := time.Now()
	require.NoError(t, e.dlq.DeadLetter(ctx, toEv(evs[0]), "status 400", 1, now))
	// Redrive lists [evs[0]] (DLQ offset 0) and writes it back; meanwhile
	// evs[1] is dead-lettered (offset 1); then the marker is written with
	// redriven_through 0. Do the same steps by hand, in that order.
	listed, err := e.dlq.List(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, listed, 1)
	require.NoError(t, e.dlq.DeadLetter(ctx, toEv(evs[1]), "status 400", 1, now))
	marker := []byte(`{"tenant":"acme","redriven_through":0,"count":1}`)
	require.NoError(t, e.dlq.produce(ctx, testDLQTopic, 0, []kafka.Record{{
		Key: kafka.NewBytes([]byte("acme")), Value: kafka.NewBytes(marker), Time: time.Now(),
		Headers: []kafka.Header{{Key: HeaderTenant, Value: []byte("acme")}, {Key: headerDLQMarker, Value: []byte("redriven")}},
	}}))
	require.NoError(t, e.dlq.DeadLetter(ctx, toEv(evs[2]), "status 400", 1, now))

	dls, err := e.dlq.List(ctx, "acme")
	require.NoError(t, err)
	var ids []string
	for _, dl := range dls {
		ids = append(ids, dl.EventID)
	}
	require.Equal(t, []string{evs[1].ID, evs[2].ID}, ids, "only what the marker's redrive wrote back is redriven")

	n, err := e.dlq.Redrive(ctx, "acme", 0)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	recs := e.records(testEventsTopic, 0)
	require.Len(t, recs, 2)
	require.Equal(t, evs[1].ID, recs[0].header(HeaderEventID))
	require.Equal(t, evs[2].ID, recs[1].header(HeaderEventID))
	require.Empty(t, e.deadLetters("acme"))
}

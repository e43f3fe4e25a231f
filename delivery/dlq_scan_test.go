package delivery

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/stretchr/testify/require"
)

// beforeNthFetch runs hook once, just before the n-th fetch request goes out.
type beforeNthFetch struct {
	kafka.RoundTripper
	n     int32
	seen  *atomic.Int32
	hook  func()
	fired *atomic.Bool
}

func (b beforeNthFetch) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	if _, ok := req.(*fetch.Request); ok && b.seen.Add(1) == b.n && b.fired.CompareAndSwap(false, true) {
		b.hook()
	}
	return b.RoundTripper.RoundTrip(ctx, addr, req)
}

func deadLetterOf(t *testing.T, ctx context.Context, d *DLQ, te testEvent) {
	t.Helper()
	ev := &Event{Key: []byte(te.Tenant), Value: te.Value, Headers: te.headers(), Time: time.Now()}
	ev.fill()
	require.NoError(t, d.DeadLetter(ctx, ev, "status 400", 1, time.Now()))
}

func eachIDs(ctx context.Context, d *DLQ, tenantID string) ([]string, error) {
	var ids []string
	err := d.Each(ctx, tenantID, func(dl DeadLetter) error {
		ids = append(ids, dl.EventID)
		return nil
	})
	return ids, err
}

// Regression: when the oldest dead letters left the DLQ (retention, or an
// operator's DeleteRecords) between Each's two passes, the second pass
// fetched the first remembered offset, now below the log start, and list
// and redrive failed (OffsetOutOfRange) instead of going on with what is
// still there.
func TestEachGoesOnWhenTheFirstPendingIsDeletedBetweenPasses(t *testing.T) {
	b := newBareCluster(t, testDLQTopic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := &DLQ{Client: b.client, Topic: testDLQTopic, Events: testEventsTopic}
	evs := simpleEvents("acme", "1", "acme", 4)
	for _, te := range evs {
		deadLetterOf(t, ctx, d, te)
	}
	var seen atomic.Int32
	var fired atomic.Bool
	hooked := *d
	hooked.Client = &kafka.Client{Addr: b.client.Addr, Timeout: b.client.Timeout, Transport: beforeNthFetch{
		RoundTripper: b.client.Transport, n: 2, seen: &seen, fired: &fired,
		hook: func() { require.NoError(t, b.c.DeleteRecords(testDLQTopic, 0, 2)) }, // offsets 0, 1 expire
	}}
	ids, err := eachIDs(ctx, &hooked, "acme")
	require.True(t, fired.Load(), "the deletion happened between the passes")
	require.NoError(t, err, "the dead letters still in the DLQ are listed")
	require.Equal(t, []string{evs[2].ID, evs[3].ID}, ids)
}

// Regression: a fetch returns whole batches, so with the log start in the
// middle of a batch (DeleteRecords; another writer's multi-record batch)
// the scan also read the deleted records before it: List counted them,
// and Each's second pass then fetched a deleted offset and failed on
// every run.
func TestEachSkipsRecordsBelowTheLogStart(t *testing.T) {
	ctx, b, d, evs := dlqWithOneBatch(t, 3)
	require.NoError(t, b.c.DeleteRecords(testDLQTopic, 0, 1)) // log start 1, mid-batch
	for range 2 {
		ids, err := eachIDs(ctx, d, "acme")
		require.NoError(t, err)
		require.Equal(t, []string{evs[1].ID, evs[2].ID}, ids)
	}
}

// Each's second pass, starting in the middle of a batch, skips the records
// before it; markers of other tenants, malformed ones included, are not
// the tenant's.
func TestEachSecondPassStartsInsideABatch(t *testing.T) {
	ctx, _, d, evs := dlqWithOneBatch(t, 4)
	require.NoError(t, d.mark(ctx, "acme", 1, 2, time.Now())) // 0, 1 redriven
	require.NoError(t, d.mark(ctx, "globex", 3, 1, time.Now()))
	require.NoError(t, d.produce(ctx, testDLQTopic, 0, []kafka.Record{{ // malformed marker of another tenant
		Key: kafka.NewBytes([]byte("globex")), Value: kafka.NewBytes([]byte("{")), Time: time.Now(),
		Headers: []kafka.Header{{Key: HeaderTenant, Value: []byte("globex")}, {Key: headerDLQMarker, Value: []byte("redriven")}},
	}}))
	ids, err := eachIDs(ctx, d, "acme")
	require.NoError(t, err)
	require.Equal(t, []string{evs[2].ID, evs[3].ID}, ids)
}

// dlqWithOneBatch returns a DLQ holding n dead letters of acme written in
// one record batch (offsets 0 to n-1), as another writer than the relay
// may write them, and its cluster.
func dlqWithOneBatch(t *testing.T, n int) (context.Context, *bareCluster, *DLQ, []testEvent) {
	t.Helper()
	b := newBareCluster(t, testDLQTopic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	d := &DLQ{Client: b.client, Topic: testDLQTopic, Events: testEventsTopic}
	evs := simpleEvents("acme", "1", "acme", n)
	recs := make([]kafka.Record, len(evs))
	for i, te := range evs {
		recs[i] = kafka.Record{Key: kafka.NewBytes([]byte("acme")), Value: kafka.NewBytes(te.Value), Headers: te.headers(), Time: time.Now()}
	}
	require.NoError(t, d.produce(ctx, testDLQTopic, 0, recs))
	return ctx, b, d, evs
}

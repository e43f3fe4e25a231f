package delivery

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/produce"
	"github.com/stretchr/testify/require"
)

// Regression: a redrive sent its dead letters in chunks of 500 records
// whatever their size, so 500 dead letters of 20 KB (10 MB) went in one
// request over the topic's max.message.bytes (9 MiB, as serve sets it)
// and were refused, on every try: that tenant's DLQ could not be
// redriven. Chunks are now bounded in bytes too.
func TestRedriveChunksBySize(t *testing.T) {
	e := newTestEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	limit := []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(8<<20 + 1<<20)}}
	res, err := e.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: "big.events", NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: limit},
		{Topic: "big.dlq", NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: limit},
	}})
	require.NoError(t, err)
	for _, err := range res.Errors {
		require.NoError(t, err)
	}
	d := &DLQ{Client: e.client, Topic: "big.dlq", Events: "big.events"}
	pad := bytes.Repeat([]byte("x"), 20<<10)
	for _, te := range simpleEvents("acme", "1", "acme", 500) {
		ev := &Event{Key: []byte("acme"), Value: append(append([]byte{}, te.Value...), pad...), Headers: te.headers(), Time: time.Now()}
		ev.fill()
		require.NoError(t, d.DeadLetter(ctx, ev, "status 400", 1, time.Now()))
	}
	n, err := d.Redrive(ctx, "acme", 0)
	require.NoError(t, err)
	require.Equal(t, 500, n)
	recs := e.records("big.events", 0)
	require.Len(t, recs, 500, "every dead letter back, once")
	left, err := d.List(ctx, "acme")
	require.NoError(t, err)
	require.Empty(t, left, "marked redriven")
}

// A redrive that fails part way (here the broker refuses the last chunk:
// one dead letter over the topic's limit) marks what it wrote, so that a
// later redrive goes on from there instead of writing it again.
func TestRedriveMarksWhatItWroteWhenAChunkFails(t *testing.T) {
	e := newTestEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := e.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: "part.events", NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(1 << 20)}}},
		{Topic: "part.dlq", NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(4 << 20)}}},
	}})
	require.NoError(t, err)
	for _, err := range res.Errors {
		require.NoError(t, err)
	}
	d := &DLQ{Client: e.client, Topic: "part.dlq", Events: "part.events"}
	evs := simpleEvents("acme", "1", "acme", 4)
	for i, te := range evs {
		value := te.Value
		if i == 3 {
			value = append(append([]byte{}, te.Value...), bytes.Repeat([]byte("x"), 2<<20)...) // over the events topic's limit
		}
		ev := &Event{Key: []byte("acme"), Value: value, Headers: te.headers(), Time: time.Now()}
		ev.fill()
		require.NoError(t, d.DeadLetter(ctx, ev, "status 400", 1, time.Now()))
	}
	n, err := d.Redrive(ctx, "acme", 0)
	require.Error(t, err)
	require.Equal(t, 3, n)
	require.Len(t, e.records("part.events", 0), 3)
	left, err := d.List(ctx, "acme")
	require.NoError(t, err)
	require.Len(t, left, 1, "only the one not written is still listed")
	require.Equal(t, evs[3].ID, left[0].EventID)
}

// Regression: List and Redrive held every dead letter of the tenant in
// memory at once, so redriving a tenant whose instance was down for days
// (millions of dead letters) ran the command out of memory. They now hold
// one fetch or chunk at a time: here the live heap grows by far less than
// the 100 MB of dead letters redriven.
func TestRedriveHoldsOneChunkAtATime(t *testing.T) {
	e := newTestEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n, size = 400, 250 << 10
	pad := bytes.Repeat([]byte("x"), size)
	for _, te := range simpleEvents("acme", "1", "acme", n) {
		ev := &Event{Key: []byte("acme"), Value: append(append([]byte{}, te.Value...), pad...), Headers: te.headers(), Time: time.Now()}
		ev.fill()
		require.NoError(t, e.dlq.DeadLetter(ctx, ev, "status 400", 1, time.Now()))
	}

	defer debug.SetGCPercent(debug.SetGCPercent(5))
	runtime.GC()
	base := liveHeap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), liveHeap()))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	got, err := e.dlq.Redrive(ctx, "acme", 0)
	close(stop)
	<-sampled
	require.NoError(t, err)
	require.Equal(t, n, got)
	require.Equal(t, n, len(e.records(testEventsTopic, 0)), "every dead letter back, once")
	grown := int64(peak.Load()) - int64(base)
	t.Logf("live heap grew by %d MB redriving %d MB", grown>>20, n*size>>20)
	require.Less(t, grown, int64(n*size/2), "the dead letters were all in memory at once")
}

// liveHeap is the heap the last GC found live.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// A redrive whose context ends part way (the command's --timeout, Ctrl-C)
// marks what it wrote, like one stopped by a refused chunk: a later
// redrive goes on from there, writing nothing twice.
func TestRedriveCutShortMarksWhatItWrote(t *testing.T) {
	e := newTestEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 3 * redriveChunkRecords
	for _, te := range simpleEvents("acme", "1", "acme", n) {
		ev := &Event{Key: []byte("acme"), Value: te.Value, Headers: te.headers(), Time: time.Now()}
		ev.fill()
		require.NoError(t, e.dlq.DeadLetter(ctx, ev, "status 400", 1, time.Now()))
	}
	// The redrive's context ends as soon as its first chunk is written.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	d := *e.dlq
	d.Client = &kafka.Client{Addr: e.client.Addr, Timeout: e.client.Timeout, Transport: cancelAfterWrite{
		RoundTripper: e.client.Transport, topic: testEventsTopic, cancel: rcancel,
	}}
	got, err := d.Redrive(rctx, "acme", 0)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, redriveChunkRecords, got)
	require.Equal(t, redriveChunkRecords, len(e.records(testEventsTopic, 0)))
	left, err := e.dlq.List(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, n-redriveChunkRecords, len(left), "what was written is marked")

	got, err = e.dlq.Redrive(ctx, "acme", 0)
	require.NoError(t, err)
	require.Equal(t, n-redriveChunkRecords, got)
	recs := e.records(testEventsTopic, 0)
	require.Equal(t, n, len(recs), "every dead letter back, once")
	for i, r := range recs {
		require.Equal(t, fmt.Sprintf("acme-%04d", i), r.header(HeaderEventID), "in order")
	}
}

// cancelAfterWrite calls cancel once a produce request to topic is
// answered.
type cancelAfterWrite struct {
	kafka.RoundTripper
	topic  string
	cancel context.CancelFunc
}

func (c cancelAfterWrite) RoundTrip(ctx context.Context, addr net.Addr, req kafka.Request) (kafka.Response, error) {
	res, err := c.RoundTripper.RoundTrip(ctx, addr, req)
	if p, ok := req.(*produce.Request); ok && len(p.Topics) > 0 && p.Topics[0].Topic == c.topic {
		c.cancel()
	}
	return res, err
}

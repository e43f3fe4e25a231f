package relay

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Regression test for a bug found in review and since fixed; the
// comment describes the bug it guards against.
//
// TestRegressionFlusherReusesRecordsKafkaGoStillEncodes: Producer.send gives all
// rounds of a flush one context (AckTimeout+1s). When a broker does not
// answer round 0 in time, that context has expired before round 1 starts,
// yet round 1 still goes to kafka-go: Transport.RoundTrip may pass its
// "ready" select (ready and ctx.Done both ready: a coin flip), hand the
// request to an idle connection's goroutine (unbuffered c.reqs, no context
// check) and return ctx.Err() from await at once. That goroutine then
// encodes the request, calling part.ReadRecord on f.parts/f.recs, while
// the flusher acknowledges the batches, clear()s f.parts[i].recs (nil
// pointers that ReadRecord dereferences) and reuses them for the next
// flush. Under -race it is reported as a data race; without -race it is,
// now and then, a nil-pointer panic in kafka-go's connection goroutine,
// which kills the relay (seen: producer.go:311 r.key.reset on a nil r).
// The producer now encodes record batches itself into f.buf before the
// request goes out; the connection goroutine copies them from there
// through f.parts[i].batch, which the flusher must likewise not reuse.
// The scenario (a broker silent for longer than produce_timeout+1s while
// a tenant's queued records exceed max_batch_bytes, which is what a
// stalled broker makes happen) is run a few times because of the coin
// flips.
func TestRegressionFlusherReusesRecordsKafkaGoStillEncodes(t *testing.T) {
	if !raceEnabled {
		t.Skip("deterministic only under -race (without it, it panics in about one run in ten)")
	}
	for i := range 4 {
		t.Run(fmt.Sprint(i), reviewCtxRaceScenario)
	}
}

func reviewCtxRaceScenario(t *testing.T) {
	b := startBroker(t)
	p := brokerProducer(t, b, ProducerConfig{
		MaxInFlight:   2,
		MaxBatchBytes: 150, // one round per record
		AckTimeout:    200 * time.Millisecond,
	})

	// Produce requests: the first waits for the second (so kafka-go opens
	// two connections to the broker, both idle afterwards); the third (round
	// 0 of the big batch) gets no answer for 2s; the rest are normal.
	var n atomic.Int32
	second := make(chan struct{})
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		switch n.Add(1) {
		case 1:
			b.c.SleepControl(func() { <-second })
		case 2:
			close(second)
		case 3:
			b.c.SleepControl(func() { time.Sleep(2 * time.Second) })
		}
		return nil, nil, false
	})
	rec := func(i int) Record {
		return Record{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: fmt.Appendf(nil, `{"e":%d,"pad":"%0100d"}`, i, 0), Time: time.Now()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { require.NoError(t, p.Produce(ctx, &Batch{Records: []Record{rec(i)}})) })
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()

	big := &Batch{}
	for i := range 20 {
		big.Records = append(big.Records, rec(100+i))
	}
	require.Error(t, p.Produce(ctx, big), "round 0 timed out")
	// The next flushes reuse the flusher's scratch space.
	for i := range 5 {
		_ = p.Produce(ctx, &Batch{Records: []Record{rec(200 + i), rec(300 + i)}})
	}
}

package relay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// holdFirstProduce makes b hold the first produce request until release
// is closed, so that the batches queued meanwhile go out in one flush; it
// returns once that request is at the broker.
func holdFirstProduce(t *testing.T, b *broker, p *Producer) (release chan struct{}, first chan error) {
	t.Helper()
	release, first = make(chan struct{}), make(chan error, 1)
	held := make(chan struct{}, 1)
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		select {
		case held <- struct{}{}:
		default:
		}
		b.c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	go func() { first <- produceOne(p, "first") }()
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("the first produce request did not reach the broker")
	}
	return release, first
}

// produceInOrder starts Produce for each batch, in order, each once the
// previous one is queued, and returns their answers.
func produceInOrder(t *testing.T, p *Producer, batches ...*Batch) []chan error {
	t.Helper()
	errs := make([]chan error, len(batches))
	for i, bt := range batches {
		errs[i] = make(chan error, 1)
		go func() { errs[i] <- p.Produce(context.Background(), bt) }()
		require.Eventually(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.queue) == i+1 }, 5*time.Second, time.Millisecond)
	}
	return errs
}

// A record the broker refuses as too large (its topic's max.message.bytes
// lowered after start, or unreadable at start, so the ingress's own check
// is off) shared a flush and a partition with another caller's small
// record, which was answered ErrRecordTooLarge too (the ingress: 413,
// "retrying cannot help"): in the same record batch, refused whole, or in
// a later round, which inherited the error. Only the large record is too
// large now; the small one is written.
func TestRegressionTooLargeRecordDoesNotFailItsNeighbours(t *testing.T) {
	for name, maxBatch := range map[string]int{"same batch": 0, "later round": 4096} {
		t.Run(name, func(t *testing.T) {
			b := startBroker(t)
			b.setMaxMessageBytes(testEvents, 4096)
			p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, MaxBatchBytes: maxBatch, AckTimeout: 5 * time.Second})
			release, first := holdFirstProduce(t, b, p)

			big := &Batch{Records: []Record{{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(strings.Repeat("B", 8000)), Time: time.Now()}}}
			small := &Batch{Records: []Record{{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(`{"innocent":1}`), Time: time.Now()}}}
			errs := produceInOrder(t, p, big, small)
			close(release)
			require.NoError(t, <-first)

			require.ErrorIs(t, <-errs[0], ErrRecordTooLarge, "the big record is refused: 413 is right for it")
			require.NoError(t, <-errs[1], "the small record shared a flush with it, and is written")
			require.Equal(t, []string{`{"innocent":1}`}, partitionValues(t, b, 0)[1:], "after the first, only the small record is in the log")
		})
	}
}

// Records that each fit the topic's max.message.bytes, batched past it
// (kafka.max_batch_bytes above a limit serve could not read), were all
// answered ErrRecordTooLarge. Each is now sent on its own and written,
// and later batches stay below the size the broker refused.
func TestRegressionRecordsThatEachFitAreWrittenWhenTheirBatchIsRefused(t *testing.T) {
	const limit = 4096
	b := startBroker(t)
	b.setMaxMessageBytes(testEvents, limit)
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, MaxBatchBytes: 3 * limit, AckTimeout: 5 * time.Second})
	release, first := holdFirstProduce(t, b, p)

	rec := func(c byte) *Batch {
		return &Batch{Records: []Record{{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(strings.Repeat(string(c), 2500)), Time: time.Now()}}}
	}
	x, y := rec('x'), rec('y')
	require.Less(t, batchHeaderLen+recordSize(&x.Records[0]), limit, "each record fits the topic alone")
	errs := produceInOrder(t, p, x, y)
	close(release)
	require.NoError(t, <-first)
	require.NoError(t, <-errs[0])
	require.NoError(t, <-errs[1])
	values := partitionValues(t, b, 0)
	require.Len(t, values, 3)
	require.Equal(t, strings.Repeat("x", 2500), values[1], "in order")
	require.Equal(t, strings.Repeat("y", 2500), values[2])
	require.Less(t, p.maxBatch.Load(), int64(3*limit), "later batches are bounded below the refused one")
}

// A body answered 413 for one entry too large had its other entries of the
// partition written, again at every retry (a review of the fix above): a
// caller's records are now written all or none.
func TestRegressionBodyAnswered413WritesNoneOfItsEntries(t *testing.T) {
	b := startBroker(t)
	b.setMaxMessageBytes(testEvents, 4096)
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, AckTimeout: 5 * time.Second})
	body := func() *Batch {
		return &Batch{Records: []Record{
			{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(`{"e":1}`), Time: time.Now()},
			{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(strings.Repeat("B", 8000)), Time: time.Now()},
			{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(`{"e":3}`), Time: time.Now()},
		}}
	}
	for retry := range 3 {
		require.ErrorIs(t, p.Produce(context.Background(), body()), ErrRecordTooLarge, "try %d", retry)
	}
	require.Empty(t, partitionValues(t, b, 0), "nothing of a body answered 413")
}

// A refused batch of many callers is sent again in a few batches, not one
// round trip per caller: the other callers of the flush wait for it (a
// caller with a 1 s timeout got 503 behind forty 20 ms round trips).
func TestRegressionRefusedBatchIsResolvedInFewRoundTrips(t *testing.T) {
	b := startBroker(t)
	b.setMaxMessageBytes(testEvents, 4096)
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, AckTimeout: 5 * time.Second})
	release, first := holdFirstProduce(t, b, p)
	var produces atomic.Int32
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		produces.Add(1)
		time.Sleep(20 * time.Millisecond) // a real cluster's acks=all latency
		return nil, nil, false
	})
	batches := fortyCallers()
	other := &Batch{Timeout: time.Second, Records: []Record{{Topic: testEvents, Partition: 1, Key: []byte("b"), Value: []byte(`{"b":1}`), Time: time.Now()}}}
	errs := produceInOrder(t, p, append(batches, other)...)
	close(release)
	require.NoError(t, <-first)
	for i := range errs {
		require.NoError(t, <-errs[i], "caller %d", i)
	}
	t.Logf("%d produce requests after the first", produces.Load())
	// The flush; batches of 12.8 and 6.4 KB refused; then ten of 3.2 KB.
	require.LessOrEqual(t, produces.Load(), int32(16), "one round trip per caller would be 41")
	values := partitionValues(t, b, 0)
	require.Len(t, values, 41)
	for i, v := range values[1:] {
		require.True(t, strings.HasPrefix(v, fmt.Sprintf("%04d", i)), "in order: %d", i)
	}
}

// A bound lowered after a refusal holds for a while, then the configured
// one is back: a refusal must not keep batches small for good.
func TestLoweredBatchBoundIsRestored(t *testing.T) {
	b := startBroker(t)
	p := brokerProducer(t, b, ProducerConfig{MaxBatchBytes: 1 << 20})
	p.LimitBatchBytes(512 << 10)
	p.lowerBatchBound(100)
	require.Equal(t, 100, p.batchBound(time.Now()))
	require.Equal(t, 100, p.batchBound(time.Now().Add(batchBoundHold/2)))
	require.Equal(t, 512<<10, p.batchBound(time.Now().Add(2*batchBoundHold)), "back to the topics' limit, not the configured bound")
}

// partitionValues returns the values in partition of the events topic.
func partitionValues(t *testing.T, b *broker, partition int) []string {
	t.Helper()
	var out []string
	for _, r := range records(t, b.addr(), testEvents, partition+1) {
		if r.partition == partition {
			out = append(out, string(r.value))
		}
	}
	return out
}

// A body's records of one partition spilling into a later round: refused
// as too large in the first, the body is answered 413, and its records of
// the later round must not be written either (Meta's retry would write
// them again).
func TestRegressionRefusedCallersLaterRoundIsNotWritten(t *testing.T) {
	b := startBroker(t)
	b.setMaxMessageBytes(testEvents, 4096)
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, MaxBatchBytes: 4096, AckTimeout: 5 * time.Second})
	body := &Batch{Records: []Record{
		{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(strings.Repeat("B", 8000)), Time: time.Now()},
		{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(`{"later":1}`), Time: time.Now()},
	}}
	require.ErrorIs(t, p.Produce(context.Background(), body), ErrRecordTooLarge)
	require.Empty(t, partitionValues(t, b, 0))
	require.NoError(t, produceOne(p, "next"), "the partition goes on")
}

// After a refusal the bound dropped only one byte below the refused
// batch, so the same load was refused flush after flush (a review): it
// now drops to the largest batch the resend got written, under the
// topic's limit.
func TestRegressionLoweredBoundUsesWhatTheResendLearned(t *testing.T) {
	const limit = 4096
	b := startBroker(t)
	b.setMaxMessageBytes(testEvents, limit)
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, AckTimeout: 5 * time.Second})
	release, first := holdFirstProduce(t, b, p)
	batches := fortyCallers()
	errs := produceInOrder(t, p, batches...)
	close(release)
	require.NoError(t, <-first)
	for i := range errs {
		require.NoError(t, <-errs[i])
	}
	bound := p.maxBatch.Load()
	t.Logf("bound after the refusal: %d", bound)
	require.LessOrEqual(t, bound, int64(limit), "the same load again would be refused again")
	require.Greater(t, bound, int64(limit/2), "not lower than what was written")
}

// lowerBatchBound racing a restore of the bound: the lowering must hold.
func TestBatchBoundRestoreDoesNotUndoALowering(t *testing.T) {
	now := time.Now()
	for range 200000 { // the bad interleaving is rare: about 1 in 10,000
		p := &Producer{}
		p.baseBatch.Store(1 << 20)
		p.maxBatch.Store(1 << 19)
		p.restoreAt.Store(1)
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() { <-start; p.batchBound(now) })
		wg.Go(func() { <-start; p.lowerBatchBound(4096) })
		close(start)
		wg.Wait()
		if p.restoreAt.Load() != 0 {
			require.LessOrEqual(t, p.maxBatch.Load(), int64(4096), "a hold of 4096 pending, yet the bound above it")
		}
	}
}

// A caller refused in one partition had its record of another partition
// written by that partition's resend in the same round, though it was
// answered 413 (a review): a refused caller's records are left out of
// every later resend.
func TestRegressionRefusedCallerIsLeftOutOfOtherResends(t *testing.T) {
	b := startBroker(t)
	b.setMaxMessageBytes(testEvents, 4096)
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 1, AckTimeout: 5 * time.Second})
	release, first := holdFirstProduce(t, b, p)
	rec := func(part int32, v string) Record {
		return Record{Topic: testEvents, Partition: part, Key: []byte("k"), Value: []byte(v), Time: time.Now()}
	}
	x := &Batch{Records: []Record{rec(0, "x0")}}
	a := &Batch{Records: []Record{rec(0, strings.Repeat("B", 8000)), rec(1, "a1"+strings.Repeat("a", 2500))}}
	y := &Batch{Records: []Record{rec(1, "y1"+strings.Repeat("y", 2500))}}
	errs := produceInOrder(t, p, x, a, y)
	close(release)
	require.NoError(t, <-first)
	require.NoError(t, <-errs[0])
	require.ErrorIs(t, <-errs[1], ErrRecordTooLarge)
	require.NoError(t, <-errs[2])
	var heads []string
	for _, v := range partitionValues(t, b, 1) {
		heads = append(heads, v[:2])
	}
	require.Equal(t, []string{"y1"}, heads, "the caller answered 413 has nothing written")
}

// fortyCallers returns 40 callers' batches of one 604-byte record each for
// partition 0, numbered in their first four bytes.
func fortyCallers() []*Batch {
	var batches []*Batch
	for i := range 40 {
		batches = append(batches, &Batch{Records: []Record{{Topic: testEvents, Partition: 0, Key: []byte("a"), Value: fmt.Appendf(nil, "%04d%s", i, strings.Repeat("a", 600)), Time: time.Now()}}})
	}
	return batches
}

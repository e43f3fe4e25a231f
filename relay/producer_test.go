package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Produce's answer races its own timeout, a cancelled context and the
// flusher, and batches are reused after every answer that allows it (the
// ingress's pattern). With timeouts around the broker's answer time, each
// way of finishing wins sometimes; whatever wins, a batch answered nil is
// in Kafka, nothing is answered twice or to the wrong call (every Produce
// returns), and a reused batch's stale timer never answers its next call.
func TestProduceAnswerRacesTimeoutAndCancel(t *testing.T) {
	b, p := slowBrokerProducer(t, ProducerConfig{}, 1*time.Millisecond)

	const workers, calls = 8, 150
	ans := newAnswers()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			batch := &Batch{}
			for i := range calls {
				value := fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				batch.Records = append(batch.Records[:0], Record{
					Topic: testEvents, Key: []byte("acme"), Value: []byte(value), Time: time.Now(),
				})
				batch.Timeout = time.Duration(rand.IntN(3000)) * time.Microsecond
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if i%3 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rand.IntN(3000))*time.Microsecond)
				}
				err := p.Produce(ctx, batch)
				cancel()
				ans.record(value, err)
				if errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
					batch = &Batch{} // the producer may still read it
				}
			}
		})
	}
	wg.Wait()
	counts := ans.counts
	t.Logf("answers: %v", counts)
	assert.Equal(t, workers*calls, counts["ok"]+counts["timeout"]+counts["cancelled"], "only these answers: %v", counts)
	assert.Positive(t, counts["ok"])
	assert.Positive(t, counts["timeout"])
	assert.Positive(t, counts["cancelled"])

	requireInKafka(t, b, ans.acked)
}

// Reuse after every answer the contract allows (nil, Kafka errors,
// ErrOverloaded), with Timeout switching between 0, tiny and large, and a
// small MaxPendingBytes so that ErrOverloaded happens.
func TestProduceReuseMixedTimeoutsAndOverload(t *testing.T) {
	b, p := slowBrokerProducer(t, ProducerConfig{MaxPendingBytes: 300, MaxInFlight: 1}, 1500*time.Microsecond)
	ans := newAnswers()
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			batch := &Batch{}
			for i := range 200 {
				value := fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)
				batch.Records = append(batch.Records[:0], Record{Topic: testEvents, Key: []byte("acme"), Value: []byte(value), Time: time.Now()})
				switch rand.IntN(3) {
				case 0:
					batch.Timeout = 0
				case 1:
					batch.Timeout = time.Duration(rand.IntN(2000)) * time.Microsecond
				default:
					batch.Timeout = time.Second
				}
				var err error
				done := make(chan error, 1)
				go func() { done <- p.Produce(context.Background(), batch) }()
				select {
				case err = <-done:
				case <-time.After(10 * time.Second):
					t.Errorf("Produce never returned")
					return
				}
				ans.record(value, err)
				if errors.Is(err, ErrTimeout) {
					batch = &Batch{}
				}
			}
		})
	}
	wg.Wait()
	t.Logf("answers: %v", ans.counts)
	requireInKafka(t, b, ans.acked)
}

// slowBrokerProducer returns a broker that answers each produce request
// after a random delay up to maxDelay, and a producer (cfg plus transport
// and address) writing to it.
//
// The delay is slept in the control function, which holds the broker's
// loop: kfake's SleepControl has a data race (two of its waitQueue
// goroutines on one connection) when a connection's queue of sleeping
// requests empties and fills again at once, which hundreds of delayed
// requests do; the race detector failed this package's tests on it. The
// producer's requests go out one connection each, in order, so they are
// answered in order either way.
func slowBrokerProducer(t *testing.T, cfg ProducerConfig, maxDelay time.Duration) (*broker, *Producer) {
	t.Helper()
	b := startBroker(t)
	p := brokerProducer(t, b, cfg)
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		time.Sleep(rand.N(maxDelay))
		return nil, nil, false
	})
	return b, p
}

// requireInKafka checks that every value answered nil is in the events
// topic.
func requireInKafka(t *testing.T, b *broker, acked map[string]bool) {
	t.Helper()
	inKafka := map[string]bool{}
	for _, r := range records(t, b.addr(), testEvents, 2) {
		inKafka[string(r.value)] = true
	}
	for v := range acked {
		assert.True(t, inKafka[v], "answered nil but not in Kafka: %s", v)
	}
}

// answers tallies Produce's answers by kind, and the values answered nil.
type answers struct {
	mu     sync.Mutex
	acked  map[string]bool
	counts map[string]int
}

func newAnswers() *answers {
	return &answers{acked: map[string]bool{}, counts: map[string]int{}}
}

func (a *answers) record(value string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil:
		a.acked[value] = true
		a.counts["ok"]++
	case errors.Is(err, ErrTimeout):
		a.counts["timeout"]++
	case errors.Is(err, context.DeadlineExceeded):
		a.counts["cancelled"]++
	case errors.Is(err, ErrOverloaded):
		a.counts["overloaded"]++
	default:
		a.counts[err.Error()]++
	}
}

// flushIntervalProducer returns a producer with one flusher and cfg's
// FlushInterval, FlushBytes and MaxRequestBytes, its broker, and a count of
// the produce requests the broker received.
func flushIntervalProducer(t *testing.T, cfg ProducerConfig) (*broker, *Producer, func() int) {
	t.Helper()
	b := startBroker(t)
	var mu sync.Mutex
	requests := 0
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		mu.Lock()
		requests++
		mu.Unlock()
		return nil, nil, false
	})
	cfg.MaxInFlight = 1
	p := brokerProducer(t, b, cfg)
	return b, p, func() int { mu.Lock(); defer mu.Unlock(); return requests }
}

// produceOne writes one record with value v and returns Produce's answer.
func produceOne(p *Producer, v string) error {
	return p.Produce(context.Background(), &Batch{Records: []Record{
		{Topic: testEvents, Key: []byte("acme"), Value: []byte(v), Time: time.Now()},
	}})
}

// produceQueued starts Produce for each value and waits until all of them
// are queued; the returned channel gets their answers.
func produceQueued(t *testing.T, p *Producer, values []string) <-chan error {
	t.Helper()
	start := time.Now()
	answers := make(chan error, len(values))
	for _, v := range values {
		go func() { answers <- produceOne(p, v) }()
	}
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == len(values)
	}, 10*time.Second, time.Millisecond,
		"the batches never queued up together (if this took longer than the flush interval, %v, the machine was too slow for the test)", time.Since(start))
	return answers
}

// awaitAnswers returns the next n answers, failing past a deadline.
func awaitAnswers(t *testing.T, answers <-chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-answers:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("Produce never returned")
		}
	}
}

// After a request, the flusher waits FlushInterval before the next one, so
// records arriving meanwhile share it; the first record after idleness is
// sent at once. Fewer than FlushBytes queued do not end the pause.
func TestFlushIntervalGathersRecordsIntoOneRequest(t *testing.T) {
	const interval = 1500 * time.Millisecond
	b, p, requests := flushIntervalProducer(t, ProducerConfig{FlushInterval: interval, FlushBytes: 6 * oneRecordBytes})

	start := time.Now()
	require.NoError(t, produceOne(p, "first"))
	require.Equal(t, 1, requests())

	values := []string{"a", "b", "c", "d", "e"}
	answers := produceQueued(t, p, values)
	require.Equal(t, 1, requests(), "a request went out within the interval")
	awaitAnswers(t, answers, len(values))
	require.Equal(t, 2, requests(), "the five records went out in one request")
	require.GreaterOrEqual(t, time.Since(start), interval)
	requireInKafka(t, b, map[string]bool{"first": true, "a": true, "b": true, "c": true, "d": true, "e": true})
}

// A request that could not take everything queued (MaxRequestBytes) is
// followed by the next one at once: the interval paces a flusher, it never
// holds back a backlog.
func TestFlushIntervalDoesNotHoldBackABacklog(t *testing.T) {
	const interval = 1500 * time.Millisecond
	b, p, requests := flushIntervalProducer(t, ProducerConfig{FlushInterval: interval, MaxRequestBytes: 1}) // one batch per request

	start := time.Now()
	require.NoError(t, produceOne(p, "first"))
	values := []string{"a", "b", "c"}
	answers := produceQueued(t, p, values)
	awaitAnswers(t, answers, len(values))
	require.Equal(t, 4, requests())
	// Paced one by one, "c" would wait three intervals.
	require.Less(t, time.Since(start), 2*interval, "the backlog was paced, not drained")
	requireInKafka(t, b, map[string]bool{"first": true, "a": true, "b": true, "c": true})
}

// A flusher pausing between requests neither delays the first record
// after idleness nor Close.
func TestFlushIntervalNeverDelaysAnIdleFlusherOrClose(t *testing.T) {
	_, p, _ := flushIntervalProducer(t, ProducerConfig{FlushInterval: time.Hour})
	answered := make(chan error, 1)
	go func() { answered <- produceOne(p, "first") }()
	select {
	case err := <-answered:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the first record waited for the interval")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Close(ctx), "Close waited for the paused flusher")
}

// A flush that sent nothing (every batch it took had been given up on) is
// no reason to pause: the next record goes at once.
func TestFlushIntervalNoPauseAfterAnEmptyFlush(t *testing.T) {
	const interval = 1500 * time.Millisecond
	_, p, requests := flushIntervalProducer(t, ProducerConfig{FlushInterval: interval})
	require.NoError(t, produceOne(p, "first")) // then the flusher pauses

	// Queue a batch during the pause and give up on it.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		gaveUp <- p.Produce(ctx, &Batch{Records: []Record{
			{Topic: testEvents, Key: []byte("acme"), Value: []byte("abandoned"), Time: time.Now()},
		}})
	}()
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-gaveUp, context.Canceled)

	// The pause ends, the flusher takes the abandoned batch and sends
	// nothing.
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == 0
	}, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, requests())

	sent := time.Now()
	require.NoError(t, produceOne(p, "second"))
	require.Less(t, time.Since(sent), interval/2, "the empty flush was followed by a pause")
	require.Equal(t, 2, requests())
}

// A negative interval means none (it must not overflow into an endless
// pause).
func TestFlushIntervalNegativeMeansNone(t *testing.T) {
	_, p, requests := flushIntervalProducer(t, ProducerConfig{FlushInterval: -time.Millisecond})
	for _, v := range []string{"a", "b", "c"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := p.Produce(ctx, &Batch{Records: []Record{{Topic: testEvents, Key: []byte("acme"), Value: []byte(v), Time: time.Now()}}})
		cancel()
		require.NoError(t, err)
	}
	require.Equal(t, 3, requests())
}

// oneRecordBytes is what one record of produceOne counts against
// FlushBytes.
var oneRecordBytes = recordSize(&Record{Key: []byte("acme"), Value: []byte("x")})

// Once FlushBytes are queued, a pausing flusher sends them at once instead
// of waiting out the interval.
func TestFlushBytesEndsAPause(t *testing.T) {
	b, p, requests := flushIntervalProducer(t, ProducerConfig{FlushInterval: time.Hour, FlushBytes: 3 * oneRecordBytes})
	require.NoError(t, produceOne(p, "first")) // then the flusher pauses for an hour

	answers := make(chan error, 3)
	for _, v := range []string{"a", "b", "c"} {
		go func() { answers <- produceOne(p, v) }()
	}
	awaitAnswers(t, answers, 3)
	require.Equal(t, 2, requests(), "the three records did not go out together once they filled FlushBytes")
	requireInKafka(t, b, map[string]bool{"first": true, "a": true, "b": true, "c": true})
}

// The queue may fill while no flusher pauses (here: while the only one
// waits for the broker); the flusher takes it all, and its signal is then
// stale. It must not end a later pause with less than FlushBytes queued.
func TestFlushBytesStaleSignalDoesNotEndAPause(t *testing.T) {
	const interval = 1500 * time.Millisecond
	b, p, requests := flushIntervalProducer(t, ProducerConfig{FlushInterval: interval, FlushBytes: 2 * oneRecordBytes})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.DropControl() // hold the first request only
		b.c.SleepControl(func() { <-release })
		return nil, nil, false
	})

	first := make(chan error, 1)
	go func() { first <- produceOne(p, "first") }()
	require.Eventually(t, func() bool { return requests() == 1 }, 10*time.Second, time.Millisecond)
	queued := produceQueued(t, p, []string{"a", "b"}) // FlushBytes reached, nobody pausing
	held := time.Now()
	once.Do(func() { close(release) })
	require.NoError(t, <-first)
	awaitAnswers(t, queued, 2) // a backlog: sent at once, then the flusher pauses
	require.Equal(t, 2, requests())

	c := produceQueued(t, p, []string{"c"}) // a flusher not pausing would take it at once
	require.Equal(t, 2, requests(), "a stale signal ended the pause")
	awaitAnswers(t, c, 1)
	require.GreaterOrEqual(t, time.Since(held), interval, "a stale signal ended the pause")
	require.Equal(t, 3, requests())
	requireInKafka(t, b, map[string]bool{"first": true, "a": true, "b": true, "c": true})
}

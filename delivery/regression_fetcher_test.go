package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// recordingModule remembers which partitions it was handed events of.
type recordingModule struct {
	mu   sync.Mutex
	seen map[int]int
}

func (m *recordingModule) Name() string { return "review" }

func (m *recordingModule) Handle(_ context.Context, ev *Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen[ev.Partition]++
	return nil
}

func (m *recordingModule) count(p int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen[p]
}

// Regression test for a bug found in review and since fixed; the
// comment describes the bug it guards against.
//
// TestRegressionFetcherStallsWhenItsPartitionsLeadersSplit: the runtime groups
// a generation's partitions by leader once, and a fetcher "returns on
// purpose" when a partition's leadership moved, but only when the broker
// answers NOT_LEADER. kafka-go's Transport routes a Fetch by its own
// metadata (fetch.Request.Broker): once that metadata shows the fetcher's
// partitions led by different brokers, RoundTrip fails locally with
// "mismatching leaders" before any broker is asked; the fetcher logs
// "fetch failed", backs off and retries the same request forever, and
// the generation never ends. Here broker 0 (leading both partitions)
// stops answering fetches while partition 1 moves to broker 1, as when a
// broker fails and its partitions are spread over the survivors; after
// it answers again, no event of either partition is ever delivered.
func TestRegressionFetcherStallsWhenItsPartitionsLeadersSplit(t *testing.T) {
	const topic = "review.events"
	c, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(2, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.NoError(t, c.MoveTopicPartition(topic, 0, 0))
	require.NoError(t, c.MoveTopicPartition(topic, 1, 0))

	tr := &kafka.Transport{MetadataTTL: 200 * time.Millisecond}
	t.Cleanup(tr.CloseIdleConnections)
	producer := &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Timeout: 10 * time.Second, Transport: &kafka.Transport{MetadataTTL: 200 * time.Millisecond}}
	produce := func(p int, v string) {
		t.Helper()
		require.Eventually(t, func() bool {
			res, err := producer.Produce(context.Background(), &kafka.ProduceRequest{
				Topic: topic, Partition: p, RequiredAcks: kafka.RequireAll,
				Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte(v))}),
			})
			return err == nil && res.Error == nil
		}, 10*time.Second, 100*time.Millisecond)
	}

	mod := &recordingModule{seen: map[int]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RuntimeConfig{
			Brokers: c.ListenAddrs(), Group: "review.group", Topic: topic, Module: mod,
			Transport: tr, CommitInterval: 100 * time.Millisecond, Drain: time.Second,
			Metrics: NewRuntimeMetrics(prometheus.NewRegistry()), Logger: testLogger(),
		})
	}()
	t.Cleanup(func() { cancel(); <-done })

	produce(0, "a0")
	produce(1, "a1")
	require.Eventually(t, func() bool { return mod.count(0) == 1 && mod.count(1) == 1 }, 15*time.Second, 50*time.Millisecond,
		"both partitions flow while one broker leads them")

	// Broker 0 stops answering fetches (connections are closed) while
	// partition 1 moves to broker 1; the transports learn the new leader.
	var down atomic.Bool
	down.Store(true)
	c.ControlKey(int16(kmsg.Fetch), func(kmsg.Request) (kmsg.Response, error, bool) {
		if down.Load() {
			c.KeepControl()
			return nil, errors.New("broker unreachable"), true
		}
		c.DropControl()
		return nil, nil, false
	})
	require.NoError(t, c.MoveTopicPartition(topic, 1, 1))
	time.Sleep(time.Second) // several MetadataTTLs
	down.Store(false)

	produce(0, "b0")
	produce(1, "b1")
	ok := func() bool { return mod.count(0) == 2 && mod.count(1) == 2 }
	deadline := time.Now().Add(15 * time.Second)
	for !ok() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	require.True(t, ok(), fmt.Sprintf("events delivered after the leader change: partition 0 %d/2, partition 1 %d/2", mod.count(0), mod.count(1)))
}

// TestRegressionUnlistableOffsetStallsItsFetcher: a partition with no
// committed offset needs ListOffsets before its first fetch. When that
// failed for one partition (here LEADER_NOT_AVAILABLE for partition 1, a
// tenant with no events yet), the fetcher backed off and retried forever
// without fetching any of its partitions: the healthy partition 0 stopped
// too, and the generation never ended. Now partition 0 flows meanwhile,
// and partition 1 starts once its offsets can be listed.
func TestRegressionUnlistableOffsetStallsItsFetcher(t *testing.T) {
	const topic, group = "review.events", "review.offsets"
	b := newBareCluster(t, topic, 2)
	c := b.c

	// Partition 0 gets a committed offset; partition 1 stays without one.
	stop := b.run(group, &recordingModule{seen: map[int]int{}})
	b.produce(0, "a0")
	require.Eventually(t, func() bool { return b.committed(group, 0) == 1 }, waitFor, 50*time.Millisecond)
	stop()

	var offline atomic.Bool
	offline.Store(true)
	c.ControlKey(int16(kmsg.ListOffsets), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.ListOffsetsRequest)
		if !offline.Load() {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		hit := false
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				if rt.Topic == topic && rp.Partition == 1 {
					sp.ErrorCode = int16(kafka.LeaderNotAvailable)
					hit = true
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if !hit {
			return nil, nil, false
		}
		return resp, nil, true
	})

	second := &recordingModule{seen: map[int]int{}}
	b.run(group, second)
	b.produce(0, "b0")
	b.produce(1, "b1")
	require.Eventually(t, func() bool { return second.count(0) == 1 }, waitFor, 50*time.Millisecond,
		"partition 0 flows while partition 1's offsets cannot be listed")
	require.Zero(t, second.count(1))
	unresolved := func() float64 {
		return metricValue(t, b.metrics, "relay_delivery_unresolved_partitions", "module", "review")
	}
	require.Equal(t, 1.0, unresolved(), "the waiting partition shows in the metrics")
	// Its lag is unknown: no series, rather than one saying 0 (a first
	// version created every partition's series at 0 before any fetch).
	lagSeries := func() []string { return labelValues(t, b.metrics, "relay_delivery_consumer_lag", "partition") }
	require.Equal(t, []string{"0"}, lagSeries())

	offline.Store(false)
	require.Eventually(t, func() bool { return second.count(1) == 1 }, waitFor, 50*time.Millisecond,
		"partition 1 starts once its offsets can be listed")
	require.Equal(t, 0.0, unresolved())
	require.ElementsMatch(t, []string{"0", "1"}, lagSeries())
}

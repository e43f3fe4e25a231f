package relay

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Regression: an answer naming a partition twice, first with an error and
// then with success, cleared the error: the batch was answered nil and
// its caller got a 200 for records the broker had refused. No Kafka broker
// answers so, but a proxy in front of one might; any error now stands.
// ("success first" passed before too: it guards against a fix that lets
// the last answer win.)
func TestRegressionRepeatedPartitionAnswerKeepsTheError(t *testing.T) {
	for name, codes := range map[string][2]int16{
		"error first":   {kerr.NotLeaderForPartition.Code, 0},
		"success first": {0, kerr.NotLeaderForPartition.Code},
	} {
		t.Run(name, func(t *testing.T) {
			b := startBroker(t)
			p := brokerProducer(t, b, ProducerConfig{AckTimeout: 2 * time.Second})
			b.c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
				b.c.KeepControl()
				return produceAnswer(req, codes[:]...), nil, true
			})
			err := p.Produce(context.Background(), &Batch{Records: []Record{
				{Topic: testEvents, Partition: 0, Key: []byte("acme"), Value: []byte(`{"a":0}`), Time: time.Now()},
				{Topic: testEvents, Partition: 1, Key: []byte("globex"), Value: []byte(`{"b":1}`), Time: time.Now()},
			}})
			require.ErrorIs(t, err, kafka.NotLeaderForPartition)
		})
	}
}

// Regression: after a partition's leader moved, kafka-go's metadata and
// the producer's leader cache could disagree for a moment, and kafka-go
// refused (without sending it) the whole request to the old leader,
// "mismatching leaders": partitions whose leader never changed failed
// with the one that moved, and their tenants got 503s. Such a request's
// parts are now sent again, grouped by the refreshed leaders. The test
// stages the moment: kafka-go already knows the new leader, the cache
// still has the old one.
func TestRegressionLeaderMoveFailsOnlyTheMovedPartition(t *testing.T) {
	const topic, partitions = "multi", 6
	b := startCluster(t, 3, partitions, topic)
	c := b.c
	p := brokerProducer(t, b, ProducerConfig{AckTimeout: 2 * time.Second})
	record := func(part int32) Record {
		return Record{Topic: topic, Partition: part, Key: []byte("k"), Value: []byte("v"), Time: time.Now()}
	}
	for part := range int32(partitions) {
		require.NoError(t, p.Produce(context.Background(), &Batch{Records: []Record{record(part)}}))
	}

	// Six partitions over three brokers: some broker leads two of them.
	moved, unchanged := int32(-1), int32(-1)
	byLeader := map[int32]int32{}
	for part := range int32(partitions) {
		if first, ok := byLeader[c.LeaderFor(topic, part)]; ok {
			moved, unchanged = part, first
			break
		}
		byLeader[c.LeaderFor(topic, part)] = part
	}
	require.GreaterOrEqual(t, moved, int32(0))
	from := c.LeaderFor(topic, moved)
	p.leaders.mu.Lock()
	before := maps.Clone(p.leaders.leaders)
	p.leaders.mu.Unlock()
	require.Equal(t, from, before[topic][moved])

	require.NoError(t, c.MoveTopicPartition(topic, moved, (from+1)%3))
	kafkaGo := &kafka.Client{Addr: p.cfg.Addr, Transport: p.cfg.Transport}
	require.Eventually(t, func() bool {
		md, err := kafkaGo.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil || len(md.Topics) != 1 {
			return false
		}
		for _, pm := range md.Topics[0].Partitions {
			if pm.ID == int(moved) {
				return int32(pm.Leader.ID) != from
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "kafka-go learns the new leader")
	p.leaders.mu.Lock()
	p.leaders.leaders, p.leaders.fetched = before, time.Now() // the cache lags behind
	p.leaders.mu.Unlock()

	err := p.Produce(context.Background(), &Batch{Records: []Record{record(moved), record(unchanged)}})
	require.NoError(t, err, "both partitions written, each to its own leader")
}

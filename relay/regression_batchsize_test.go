package relay

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Regression: flush.group bounded a partition's batch by its records'
// sizes alone, leaving out the batch's own 61-byte header. With the
// default max_batch_bytes (1 MiB) against a topic at Kafka's default
// max.message.bytes (1 MiB + 12), two records filling the 1 MiB made a
// batch a few bytes too large: refused, both events 503, on every retry
// that batched them together again.
func TestRegressionBatchHeaderCountsTowardsMaxBatchBytes(t *testing.T) {
	b := startBroker(t)
	const topic = testEvents
	b.setMaxMessageBytes(topic, 1<<20+12)                                  // Kafka's default
	p := brokerProducer(t, b, ProducerConfig{AckTimeout: 5 * time.Second}) // MaxBatchBytes: the default

	// Two records whose sizes, as group counts them, fill the batch exactly.
	var bt Batch
	for i := range 2 {
		r := Record{Topic: topic, Partition: 0, Key: []byte("acme"), Time: time.Now()}
		r.Value = []byte(strings.Repeat(strconv.Itoa(i), 1<<19-recordSize(&r)))
		bt.Records = append(bt.Records, r)
	}
	require.Equal(t, 1<<20, recordSize(&bt.Records[0])+recordSize(&bt.Records[1]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Produce(ctx, &bt), "a batch over the topic's max.message.bytes was sent")
	require.Len(t, records(t, b.addr(), topic, 2), 2)
}

package relay

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// A real cluster spreads partition leaders over its brokers: one flush
// then sends one produce request per leader, concurrently, all reading
// the flush's encoded batches. Every acknowledged record must be on its
// partition exactly once, in each caller's order, including records that
// spill into later rounds.
func TestProducerSendsToSeveralLeaders(t *testing.T) {
	const topic, partitions = "multi", 6
	b := startCluster(t, 3, partitions, topic)

	leaders := map[int]bool{}
	admin, done := b.client()
	defer done()
	md, err := admin.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	require.NoError(t, err)
	require.Len(t, md.Topics, 1)
	for _, p := range md.Topics[0].Partitions {
		leaders[p.Leader.ID] = true
	}
	require.GreaterOrEqual(t, len(leaders), 2, "the cluster must spread leaders for this test to mean anything")

	// 1,500 bytes per batch and partition: the two records a caller sends
	// to each partition go out in two rounds.
	p := brokerProducer(t, b, ProducerConfig{MaxInFlight: 2, MaxBatchBytes: 1500, AckTimeout: 5 * time.Second})
	const callers, batches = 6, 30
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			var batch Batch
			for i := range batches {
				batch.Records = batch.Records[:0]
				for part := range partitions {
					for k := range 2 {
						v := fmt.Sprintf("%d/%03d/%d/%s", g, i, k, strings.Repeat("x", 1000))
						batch.Records = append(batch.Records, Record{Topic: topic, Partition: int32(part), Key: []byte("k"), Value: []byte(v), Time: time.Now()})
					}
				}
				if err := p.Produce(context.Background(), &batch); err != nil {
					t.Errorf("caller %d batch %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.False(t, t.Failed())

	got := records(t, b.addr(), topic, partitions)
	seen := map[string]bool{}
	last := map[[2]int]string{} // (partition, caller) → its latest "batch/k"
	for _, r := range got {
		fields := strings.SplitN(string(r.value), "/", 4)
		require.Len(t, fields, 4)
		key := fmt.Sprintf("%d/%s", r.partition, strings.Join(fields[:3], "/"))
		require.False(t, seen[key], "record %s twice", key)
		seen[key] = true
		g, err := strconv.Atoi(fields[0])
		require.NoError(t, err)
		pos := fields[1] + "/" + fields[2]
		require.Greater(t, pos, last[[2]int{r.partition, g}], "partition %d: caller %d's records out of order", r.partition, g)
		last[[2]int{r.partition, g}] = pos
	}
	require.Len(t, seen, callers*batches*partitions*2)
}

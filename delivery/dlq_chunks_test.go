package delivery

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
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

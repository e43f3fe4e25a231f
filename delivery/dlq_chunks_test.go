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

package serve

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/cmd/relay/internal/config"
)

// Every kafka.* setting that shapes produce requests reaches the producer.
func TestProducerConfigTakesTheKafkaSection(t *testing.T) {
	var cfg config.Config
	cfg.Kafka.Brokers = []string{"k1:9092", "k2:9092"}
	cfg.Kafka.MaxInFlight = 3
	cfg.Kafka.FlushInterval = 7 * time.Millisecond
	cfg.Kafka.FlushBytes = 12345
	cfg.Kafka.MaxBatchBytes = 54321
	cfg.Kafka.MaxPendingBytes = 99999
	cfg.Kafka.ProduceTimeout = 11 * time.Second

	pc := producerConfig(&cfg)
	require.Equal(t, "k1:9092,k2:9092", pc.Addr.String())
	require.Equal(t, 3, pc.MaxInFlight)
	require.Equal(t, 7*time.Millisecond, pc.FlushInterval)
	require.Equal(t, 12345, pc.FlushBytes)
	require.Equal(t, 54321, pc.MaxBatchBytes)
	require.Equal(t, 99999, pc.MaxPendingBytes)
	require.Equal(t, 11*time.Second, pc.AckTimeout)
}

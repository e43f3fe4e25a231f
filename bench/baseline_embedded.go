package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// ServeBaselineEmbedded serves the baseline on ln, writing to BaselineTopic
// (with the given number of partitions: compare gives it one per tenant,
// the relay's data layout) of its own single-node Kafka-protocol broker
// persisting to dataDir, set up like the relay's embedded broker, so that
// compare's baseline and relay pay for the same kind of broker and layout. The broker listens on
// a free loopback port. It returns when ctx ends, after shutting both down;
// it closes ln.
func ServeBaselineEmbedded(ctx context.Context, ln net.Listener, dataDir, secret string, partitions int) error {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		ln.Close()
		return fmt.Errorf("bench: baseline broker: %w", err)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DataDir(dataDir),
		kfake.SeedTopics(int32(max(partitions, 1)), BaselineTopic),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, "127.0.0.1:0") }),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(MaxBodySize + 1<<20)}),
	)
	if err != nil {
		ln.Close()
		return fmt.Errorf("bench: baseline broker: %w", err)
	}
	defer c.Close()
	return ServeBaselineListener(ctx, ln, c.ListenAddrs(), BaselineTopic, secret)
}

package serve

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/relaymw/relay/cmd/relay/internal/config"
)

// startEmbedded runs the single-node Kafka-protocol broker on the
// configured address, persisting to the data folder so that events survive
// a restart of the process.
func startEmbedded(cfg *config.Config, logger *slog.Logger) (*embeddedBroker, *memListener, error) {
	e := cfg.Kafka.Embedded
	if err := os.MkdirAll(e.DataDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("embedded broker: data dir: %w", err)
	}
	lock, err := lockDataDir(e.DataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded broker: %w", err)
	}
	// Records as large as the largest body the ingress accepts, and then some.
	maxMessage := strconv.Itoa(cfg.Ingress.MaxBodyBytes + 1<<20)
	var ml *memListener
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DataDir(e.DataDir),
		kfake.ClusterID("relay-embedded"),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, e.Listen)
			if err != nil {
				return nil, err
			}
			ml = newMemListener(ln)
			return ml, nil
		}),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": maxMessage}),
		kfake.WithLogger(kfakeLogger{logger.With("component", "embedded-broker")}),
	}
	if e.SyncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, nil, fmt.Errorf("embedded broker on %s: %w", e.Listen, err)
	}
	logger.Info("embedded Kafka-protocol broker started: single node, for development and small installs; set kafka.brokers for a real cluster",
		"listen", c.ListenAddrs()[0], "data_dir", e.DataDir, "sync_writes", e.SyncWrites)
	return &embeddedBroker{Cluster: c, lock: lock}, ml, nil
}

// embeddedBroker is the broker and the lock on its data folder.
type embeddedBroker struct {
	*kfake.Cluster
	lock *os.File // nil where data folders are not locked
}

// Close stops the broker, then lets go of its data folder.
func (b *embeddedBroker) Close() {
	b.Cluster.Close()
	if b.lock != nil {
		b.lock.Close()
	}
}

// kfakeLogger passes the broker's warnings and errors to slog.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		k.l.Error(fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn:
		k.l.Warn(fmt.Sprintf(msg, args...))
	}
}

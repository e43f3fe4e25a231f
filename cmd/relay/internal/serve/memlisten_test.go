package serve

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestMemListenerServesBothWays: one broker, reached in memory by this
// process's kafka-go clients and over TCP by everyone else, sees the same
// records.
func TestMemListenerServesBothWays(t *testing.T) {
	var ml *memListener
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DataDir(t.TempDir()),
		kfake.SeedTopics(1, "t"),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			ml = newMemListener(ln)
			return ml, nil
		}),
	)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]

	tcpDials := 0
	dial := ml.dial(func(ctx context.Context, network, a string) (net.Conn, error) {
		tcpDials++
		return (&net.Dialer{}).DialContext(ctx, network, a)
	})
	mem := &kafka.Transport{Dial: dial}
	t.Cleanup(mem.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	memClient := &kafka.Client{Addr: kafka.TCP(addr), Transport: mem}
	res, err := memClient.Produce(ctx, &kafka.ProduceRequest{
		Topic: "t", RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte("in memory"))}),
	})
	require.NoError(t, err)
	require.NoError(t, res.Error)
	require.Zero(t, tcpDials, "the broker's own address is served in memory")

	tcp := &kafka.Transport{}
	t.Cleanup(tcp.CloseIdleConnections)
	fetched, err := (&kafka.Client{Addr: kafka.TCP(addr), Transport: tcp}).Fetch(ctx, &kafka.FetchRequest{
		Topic: "t", Offset: 0, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	r, err := fetched.Records.ReadRecord()
	require.NoError(t, err)
	v, err := io.ReadAll(r.Value)
	require.NoError(t, err)
	require.Equal(t, "in memory", string(v), "a TCP client reads what came in memory")

	// Another address goes to the next dialer.
	_, _ = dial(ctx, "tcp", "127.0.0.1:1")
	require.Equal(t, 1, tcpDials)
}

func TestMemListenerClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ml := newMemListener(ln)
	require.NoError(t, ml.Close())
	_, err = ml.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = ml.dial(nil)(context.Background(), "tcp", ln.Addr().String())
	require.ErrorIs(t, err, net.ErrClosed)
	require.ErrorIs(t, ml.Close(), net.ErrClosed)
}

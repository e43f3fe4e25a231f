package serve

import (
	"context"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// flakyListener fails its first Accept as the kernel does when the process
// is out of file descriptors (EMFILE), then behaves.
type flakyListener struct {
	net.Listener
	failed atomic.Bool
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.failed.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: f.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return f.Listener.Accept()
}

// Regression test for a bug found in review and since fixed; the
// comment describes the bug it guards against.
//
// TestRegressionMemListenerTransientAcceptErrorKillsBroker: memListener hands
// a TCP accept error that is not a timeout (EMFILE, ENFILE, ENOBUFS) to
// kfake's accept loop and stops its own TCP accept goroutine. kfake's
// broker.listen returns on any Accept error and closes the listener, which
// closes l.done: from then on the embedded broker accepts nothing, not even
// the in-memory connections of this process's own producer and consumer
// (which need no file descriptor), until the relay is restarted. net/http
// and fasthttp retry such errors; the wrapper should too (retry with
// backoff, and never forward them).
func TestRegressionMemListenerTransientAcceptErrorKillsBroker(t *testing.T) {
	var ml *memListener
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(1, "t"),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			ml = newMemListener(&flakyListener{Listener: ln})
			return ml, nil
		}),
	)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	addr := c.ListenAddrs()[0]
	time.Sleep(200 * time.Millisecond) // the transient error is in the past; the process has free descriptors again

	conn, err := ml.dial((&net.Dialer{}).DialContext)(context.Background(), "tcp", addr)
	require.NoError(t, err, "an in-memory connection to the embedded broker")
	conn.Close()

	mem := &kafka.Transport{Dial: ml.dial((&net.Dialer{}).DialContext)}
	t.Cleanup(mem.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := (&kafka.Client{Addr: kafka.TCP(addr), Transport: mem}).Produce(ctx, &kafka.ProduceRequest{
		Topic: "t", RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte("after a transient accept error"))}),
	})
	require.NoError(t, err, "the broker still serves this process in memory after one transient TCP accept error")
	require.NoError(t, res.Error)
}

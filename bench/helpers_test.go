package bench

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// serveFast serves h on 127.0.0.1:0 until the test ends and returns its URL.
// The server is shut down and waited for in cleanup.
func serveFast(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &fasthttp.Server{Handler: h, CloseOnShutdown: true, ReadTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, srv.ShutdownWithContext(ctx))
		require.NoError(t, <-errc)
	})
	return "http://" + ln.Addr().String() + "/webhooks/meta"
}

// runServer runs serve (a Serve*Listener function) on 127.0.0.1:0 and
// returns the listener's address and a stop function, also registered as
// cleanup, that cancels it and returns its error.
func runServer(t *testing.T, serve func(context.Context, net.Listener) error) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln) }()
	var stopped bool
	var result error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-errc:
			case <-time.After(10 * time.Second):
				result = errors.New("server did not stop within 10s")
			}
		}
		return result
	}
	t.Cleanup(func() { require.NoError(t, stop()) })
	return ln.Addr().String(), stop
}

package bench

import (
	"context"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// shutdownGrace bounds how long the reference servers wait for requests in
// flight when their context ends.
const shutdownGrace = 5 * time.Second

// CeilingHandler answers 200 with an empty body to every request, after
// fasthttp has read the request body: the least any ingress can do, so a
// run against it measures the generator and the network, the throughput
// ceiling of the machine.
func CeilingHandler(ctx *fasthttp.RequestCtx) {
	_ = ctx.PostBody()
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// ServeCeiling serves CeilingHandler on listenAddr until ctx ends, then
// shuts down gracefully and returns nil.
func ServeCeiling(ctx context.Context, listenAddr string) error {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return err
	}
	return ServeCeilingListener(ctx, ln)
}

// ServeCeilingListener is ServeCeiling on a listener the caller opened (for
// port 0); it closes ln.
func ServeCeilingListener(ctx context.Context, ln net.Listener) error {
	srv := &fasthttp.Server{
		Handler:               CeilingHandler,
		Name:                  "relay-bench-ceiling",
		NoDefaultDate:         true,
		NoDefaultContentType:  true,
		ReadTimeout:           time.Minute,
		IdleTimeout:           time.Minute,
		MaxRequestBodySize:    MaxBodySize,
		CloseOnShutdown:       true,
		NoDefaultServerHeader: true,
	}
	return serveUntilDone(ctx, ln.Close, func() error { return srv.Serve(ln) }, func(sctx context.Context) error {
		return srv.ShutdownWithContext(sctx)
	})
}

// serveUntilDone runs serve until it fails or ctx ends; then it shuts the
// server down within shutdownGrace and waits for serve to return.
func serveUntilDone(ctx context.Context, closeLn func() error, serve func() error, shutdown func(context.Context) error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		closeLn()
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	err := shutdown(sctx)
	closeLn()
	<-errc // serve has returned: the goroutine is done
	return err
}

package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// ServerConfig holds the ingress listener's limits.
type ServerConfig struct {
	MaxBodyBytes   int
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	IdleTimeout    time.Duration
	MaxConcurrency int
	Logger         *slog.Logger
}

// NewServer returns the fasthttp server that serves in. Requests fasthttp
// refuses before the handler runs (too large, malformed, too slow) are
// answered and counted by in.HandleError.
func (in *Ingress) NewServer(cfg ServerConfig) *fasthttp.Server {
	logger := cfg.Logger
	if logger == nil {
		logger = in.cfg.Logger
	}
	return &fasthttp.Server{
		Handler:                      in.Handle,
		ErrorHandler:                 in.HandleError,
		Name:                         "relay",
		MaxRequestBodySize:           cfg.MaxBodyBytes,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		Concurrency:                  cfg.MaxConcurrency,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{logger},
	}
}

// HandleError answers a request fasthttp could not read: 413 for a body
// over the limit (fasthttp's default would be 400), 431 for oversized
// headers, 408 for a client too slow, 400 otherwise.
func (in *Ingress) HandleError(ctx *fasthttp.RequestCtx, err error) {
	code, msg := fasthttp.StatusBadRequest, "malformed request\n"
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		code, msg = fasthttp.StatusRequestEntityTooLarge, "body too large\n"
	case errors.As(err, &small):
		code, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "headers too large\n"
	case errors.As(err, &netErr) && netErr.Timeout():
		code, msg = fasthttp.StatusRequestTimeout, "request timeout\n"
	}
	ctx.Error(msg, code)
	in.cfg.Metrics.observeRequest(code, 0)
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to slog
// at debug level: they are about clients, not about the relay.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}

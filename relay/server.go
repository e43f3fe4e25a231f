package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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

// Server is the ingress's fasthttp server with two additions. It answers
// connections past MaxConcurrency itself (admit). Its shutdown also closes
// connections that never sent a request: fasthttp counts a new connection
// as idle only after 5 seconds, so a client or load balancer that
// pre-connects would otherwise hold a graceful shutdown that long.
//
// Only Serve applies the limit: the embedded fasthttp.Server's ServeConn,
// ListenAndServe and ServeTLS bypass admit, and ServeConn would also skew
// the count of open connections. The relay calls none of them.
type Server struct {
	*fasthttp.Server
	log *slog.Logger

	// Connections past limit are answered here, not by fasthttp, whose own
	// 503 carries no Retry-After, is logged at debug level only and is not
	// counted.
	limit      int64        // connections served at once; 0: fasthttp's default
	maxBody    int          // the largest body read, and drained from a refused connection
	open       atomic.Int64 // connections fasthttp holds, from StateNew to StateClosed
	busy       string       // the answer to a connection past limit
	refused    func()       // counts that answer
	unanswered func()       // counts a connection past limit closed unanswered
	loggedBusy atomic.Int64 // when a refusal was last logged, Unix nanoseconds

	mu       sync.Mutex
	fresh    map[net.Conn]struct{}
	refusals map[net.Conn]struct{} // connections admit is answering, at most maxRefusing
	refuseWG sync.WaitGroup        // their goroutines
	closing  bool                  // shutting down: admit answers no more
}

// maxRefusing bounds the goroutines answering connections past the limit;
// beyond it a connection is closed unanswered (the client sees a reset,
// which Meta retries too).
const maxRefusing = 64

// Serve serves ln until the server shuts down. Running out of file
// descriptors or memory for a moment does not end it: fasthttp stops at
// any accept error but a timeout, which let a flood of connections stop
// the whole relay; such errors are retried after a pause.
func (s *Server) Serve(ln net.Listener) error {
	return s.Server.Serve(&retryListener{Listener: ln, log: s.log, admit: s.admit})
}

// admit reports whether fasthttp may serve c, the connection Accept just
// returned; past the limit it answers c itself. fasthttp moves c to
// StateNew, counted in open, before it accepts the next one.
func (s *Server) admit(c net.Conn) bool {
	if s.limit <= 0 || s.open.Load() < s.limit {
		return true
	}
	if now := time.Now().UnixNano(); now-s.loggedBusy.Load() >= int64(time.Minute) {
		s.loggedBusy.Store(now)
		s.log.Warn("ingress: ingress.max_concurrency connections are open; answering new ones 503 with Retry-After until some close",
			"max_concurrency", s.limit)
	}
	s.mu.Lock()
	take := !s.closing && len(s.refusals) < maxRefusing
	if take {
		s.refusals[c] = struct{}{}
		s.refuseWG.Add(1)
	}
	s.mu.Unlock()
	if !take {
		_ = c.Close()
		s.unanswered()
		return false
	}
	go func() {
		defer s.refuseWG.Done()
		if !s.refuse(c) {
			s.unanswered()
		}
		s.mu.Lock()
		delete(s.refusals, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	return false
}

// refusalsUnderWay is how many connections admit is answering.
func (s *Server) refusalsUnderWay() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.refusals)
}

// refuse answers c 503 and reports whether the answer went out. The
// answer follows the client's request head: an HTTP client drops an
// answer that comes before its request (Go's, as "unsolicited response")
// and fails the request instead of retrying it later. Then it reads
// whatever the client still sends until the client closes, as a lingering
// close does: closing with bytes unread would reset the connection, and
// the client could lose the answer before reading it.
func (s *Server) refuse(c net.Conn) bool {
	const headLimit = 64 << 10
	_ = c.SetDeadline(time.Now().Add(time.Second))
	limited := &io.LimitedReader{R: c, N: headLimit}
	br := bufio.NewReaderSize(limited, 4096)
	for tail, started := false, false; ; {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return false // gone, too slow or a head too long: closed unanswered
		}
		blank := len(bytes.TrimRight(line, "\r\n")) == 0
		switch {
		case err != nil: // a line longer than the buffer: its end comes next
			tail, started = true, true
		case tail:
			tail = false
		case blank && started: // the blank line that ends the head
			return s.answerBusy(c, br, limited)
		case !blank:
			started = true
		} // a blank line before the request line is ignored (RFC 9112, 2.2)
	}
}

// answerBusy writes the 503 on c, whose request head br has read, and
// reads what follows (body, pipelined requests) until the client closes,
// up to max_body_bytes more and for refuseDrainFor. It reports whether the
// client closed first: Go's client closes once it has the answer.
func (s *Server) answerBusy(c net.Conn, br *bufio.Reader, limited *io.LimitedReader) bool {
	_ = c.SetDeadline(time.Now().Add(refuseDrainFor))
	if _, err := io.WriteString(c, s.busy); err != nil {
		return false
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	limited.N += int64(s.maxBody) + 1 // a request that fills the cap exactly does not exhaust it
	if _, err := io.Copy(io.Discard, br); errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) || limited.N == 0 {
		return false // still sending, or cut off by the shutdown: the close may reset the answer away
	}
	s.refused()
	return true
}

// refuseDrainFor bounds writing a refusal and reading what the client
// still sends: an 8 MiB body at 2 MB/s.
const refuseDrainFor = 5 * time.Second

// retryListener retries Accept errors that pass (out of descriptors,
// buffers or memory, an aborted handshake), pausing 5 ms doubling to 1 s.
// A connection admit refuses is not returned; Accept waits for the next.
type retryListener struct {
	net.Listener
	log    *slog.Logger
	logged time.Time
	admit  func(net.Conn) bool
}

func (l *retryListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.admit != nil && !l.admit(c) {
				continue
			}
			return c, nil
		}
		if !acceptRetryable(err) {
			return c, err
		}
		pause = min(max(2*pause, 5*time.Millisecond), time.Second)
		if now := time.Now(); now.Sub(l.logged) >= 10*time.Second {
			l.logged = now
			l.log.Warn("ingress: accepting a connection failed; retrying (raise the open-file limit or lower ingress.max_concurrency)", "err", err)
		}
		time.Sleep(pause)
	}
}

func acceptRetryable(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// NewServer returns the server for in. Requests fasthttp refuses before the
// handler runs (too large, malformed, too slow) are answered and counted
// by in.HandleError.
func (in *Ingress) NewServer(cfg ServerConfig) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = in.cfg.Logger
	}
	maxBody := cfg.MaxBodyBytes
	if maxBody <= 0 {
		maxBody = fasthttp.DefaultMaxRequestBodySize
	}
	const busyBody = "too many connections; retry later\n"
	s := &Server{
		fresh:    map[net.Conn]struct{}{},
		refusals: map[net.Conn]struct{}{},
		log:      logger,
		limit:    int64(cfg.MaxConcurrency),
		maxBody:  maxBody,
		busy: "HTTP/1.1 503 Service Unavailable\r\nServer: relay\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Retry-After: " + in.retryAfter + "\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(busyBody)) + "\r\n\r\n" + busyBody,
		refused: func() {
			if in.cfg.Metrics != nil {
				in.cfg.Metrics.count(fasthttp.StatusServiceUnavailable)
			}
		},
		unanswered: func() {
			if in.cfg.Metrics != nil {
				in.cfg.Metrics.unanswered.Inc()
			}
		},
	}
	concurrency := 0 // fasthttp's default
	if cfg.MaxConcurrency > 0 {
		// The limit is admit's; fasthttp's, above it, only covers the
		// moment a closed connection's worker takes to be free again.
		concurrency = cfg.MaxConcurrency + min(cfg.MaxConcurrency, math.MaxInt32)
	}
	s.Server = &fasthttp.Server{
		ConnState: s.connState,
		// A body announced over the limit is refused before "100 Continue"
		// asks the client to send it.
		ExpectHandler: func(ctx *fasthttp.RequestCtx) int {
			if ctx.Request.Header.ContentLength() > maxBody {
				if in.cfg.Metrics != nil {
					in.cfg.Metrics.count(fasthttp.StatusRequestEntityTooLarge)
				}
				return fasthttp.StatusRequestEntityTooLarge
			}
			return fasthttp.StatusContinue
		},
		Handler:                      in.Handle,
		ErrorHandler:                 in.HandleError,
		Name:                         "relay",
		MaxRequestBodySize:           cfg.MaxBodyBytes,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		Concurrency:                  concurrency,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{logger},
	}
	return s
}

func (s *Server) connState(c net.Conn, st fasthttp.ConnState) {
	switch st {
	case fasthttp.StateNew:
		s.open.Add(1)
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		s.open.Add(-1)
	}
	if st == fasthttp.StateIdle {
		return // after every request: an idle connection was active before
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == fasthttp.StateNew {
		s.fresh[c] = struct{}{}
	} else {
		delete(s.fresh, c)
	}
}

// ShutdownWithContext stops accepting, closes connections that never sent
// a request, and waits for requests in flight until ctx is done.
// Refusals under way (admit) get until ctx is done to finish, then their
// connections are closed.
func (s *Server) ShutdownWithContext(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.Server.ShutdownWithContext(ctx) }()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		s.closeFresh()
		select {
		case err := <-done:
			s.endRefusals(ctx)
			return err
		case <-t.C:
		}
	}
}

// Shutdown is ShutdownWithContext with no deadline.
func (s *Server) Shutdown() error { return s.ShutdownWithContext(context.Background()) }

// endRefusals stops admit from taking more refusals (fasthttp's shutdown
// returns at its deadline without waiting for its accept loop), waits for
// the refusals under way until ctx is done, then closes their connections
// and waits for their goroutines.
func (s *Server) endRefusals(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		s.refuseWG.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.refusals {
		_ = c.Close()
	}
	s.mu.Unlock()
	<-finished
}

func (s *Server) closeFresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.fresh {
		_ = c.Close()
		delete(s.fresh, c)
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
	in.cfg.Metrics.count(code) // no duration: the handler never ran
}

// fasthttpLogger sends fasthttp's own messages (connection errors) to slog
// at debug level: they are about clients, not about the relay.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}

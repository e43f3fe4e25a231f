package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Generator defaults and bounds.
const (
	DefaultConnections = 256
	DefaultTimeout     = 10 * time.Second
	MaxTimeout         = 30 * time.Second // twice it fits the histogram (60 s)
	MaxConnections     = 10_000           // bounds Connections and Concurrency
	MaxRate            = 1_000_000        // requests per second
	MinRate            = 0.001            // one request in 1000 s; far lower overflows the schedule
	maxBacklog         = 1 << 20          // scheduled requests waiting for a connection
	defaultTenants     = 10               // tenants of the default payloads
	idleConnDuration   = 5 * time.Second
	maxResponseBody    = 1 << 20
	failPause          = 10 * time.Millisecond // closed loop: least time between a failed request's send and the next
)

// Config describes one load run.
type Config struct {
	URL string      // http:// or https:// URL to POST to
	TLS *tls.Config // client TLS settings for https URLs; nil: system roots

	// Exactly one of Rate and Concurrency is set.
	//
	// Rate runs an open loop: request i is scheduled at start+i/Rate and
	// its latency is measured from that scheduled time, not from when a
	// connection became free to send it, so a stalled server shows in the
	// latency of every request that was due during the stall (no
	// coordinated omission).
	Rate float64
	// Concurrency runs a closed loop: Concurrency workers each send their
	// next request as soon as the previous one was answered; latency is
	// measured from the actual send.
	Concurrency int

	// Connections bounds the requests outstanding on the wire in open-loop
	// mode (0: DefaultConnections). A closed loop uses Concurrency connections.
	Connections int
	// Backlog bounds the open-loop requests that are due but wait for a
	// free connection (0: Rate × Timeout, at most 2^20). Requests beyond it
	// are counted in Result.Dropped.
	Backlog int

	Duration time.Duration // measured window, required
	Warmup   time.Duration // load sent before the window and not recorded
	Timeout  time.Duration // per request (0: DefaultTimeout)

	// Payloads renders the bodies (nil: all templates over 10 tenants).
	Payloads *Payloads
	// AppSecret, when set, signs every body in X-Hub-Signature-256.
	AppSecret string

	// Progress receives a line per second (requests/s, errors, p50/p99 so
	// far); nil for none.
	Progress io.Writer
	// Label names the run in reports.
	Label string
	// TargetPID, when set, is the target's process: the CPU it uses in the
	// measured window is reported next to the generator's (Result.CPU;
	// Linux only).
	TargetPID int

	// OnResponse, when set, is called for every request that was sent,
	// warmup ones included, by the goroutine that sent it, once it was
	// answered or failed (also when the run is being cancelled). It runs
	// between that connection's requests, so it should be quick.
	OnResponse func(Response)
}

// Response is the outcome of one sent request, as passed to
// Config.OnResponse.
type Response struct {
	Seq uint64 // the body's sequence number (Payloads.AppendBody)
	// Body is the body as sent; it is reused after the call returns.
	Body []byte
	// Start is the request's latency origin: its scheduled send time (open
	// loop) or its actual send time (closed loop).
	Start    time.Time
	Measured bool  // Start lies inside the measured window
	Status   int   // HTTP status; 0 when Err is set
	Err      error // transport error
}

func (c *Config) check() error {
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		return fmt.Errorf("bench: url: %w", err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("bench: url %q: want http(s)://host[:port]/path", c.URL)
	case (c.Rate > 0) == (c.Concurrency > 0):
		return errors.New("bench: set exactly one of Rate and Concurrency")
	case c.Rate < 0 || c.Rate > MaxRate || c.Rate > 0 && c.Rate < MinRate:
		return fmt.Errorf("bench: rate %g out of range [%g, %d]", c.Rate, MinRate, MaxRate)
	case c.Concurrency < 0 || c.Concurrency > MaxConnections:
		return fmt.Errorf("bench: concurrency %d out of range (0, %d]", c.Concurrency, MaxConnections)
	case c.Connections < 0 || c.Connections > MaxConnections:
		return fmt.Errorf("bench: connections %d out of range [0, %d]", c.Connections, MaxConnections)
	case c.Backlog < 0:
		return fmt.Errorf("bench: negative backlog %d", c.Backlog)
	case c.Duration <= 0:
		return errors.New("bench: duration must be positive")
	case c.Warmup < 0 || c.Timeout < 0:
		return errors.New("bench: negative warmup or timeout")
	case c.Timeout > MaxTimeout:
		return fmt.Errorf("bench: timeout %s over %s", c.Timeout, MaxTimeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Concurrency > 0 {
		c.Connections = c.Concurrency
	} else if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.Rate > 0 && c.Backlog == 0 {
		c.Backlog = int(min(c.Rate*c.Timeout.Seconds(), maxBacklog))
	}
	c.Backlog = max(min(c.Backlog, maxBacklog), 1)
	if c.Payloads == nil {
		p, err := NewPayloads(PayloadOptions{Tenants: Tenants(defaultTenants)})
		if err != nil {
			return err
		}
		c.Payloads = p
	}
	return nil
}

// generator is the state of one Run.
type generator struct {
	cfg       Config
	client    *fasthttp.HostClient
	conns     *connTracker
	rec       *Recorder
	t0        time.Time // schedule origin
	ws, we    time.Time // measured window
	seqBase   uint64    // random, so repeated runs send fresh ids
	completed atomic.Int64
	dropped   atomic.Int64
	lagMu     sync.Mutex
	lag       *Histogram // open loop: scheduled time to send, measured requests
}

// Run sends load as cfg describes and returns what it measured. It returns
// when the window and the requests in flight are over, or promptly when ctx
// is cancelled: then it closes its connections, and returns the partial
// result measured so far with ctx's error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // checked
	isTLS := u.Scheme == "https"
	conns := &connTracker{
		dialer: net.Dialer{Timeout: cfg.Timeout},
		conns:  make(map[*trackedConn]struct{}),
	}
	g := &generator{
		cfg:   cfg,
		conns: conns,
		client: &fasthttp.HostClient{
			Addr:                      fasthttp.AddMissingPort(u.Host, isTLS),
			IsTLS:                     isTLS,
			TLSConfig:                 cfg.TLS,
			Dial:                      conns.dial,
			MaxConns:                  cfg.Connections,
			MaxConnWaitTimeout:        cfg.Timeout,
			MaxIdleConnDuration:       idleConnDuration,
			MaxIdemponentCallAttempts: 1,
			RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			MaxResponseBodySize:       maxResponseBody,
			Name:                      "relay-bench",
		},
	}
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails
	g.seqBase = binary.LittleEndian.Uint64(b[:]) % 1_000_000_000_000

	cpu := startCPUWindow(cfg.TargetPID, cfg.Warmup, cfg.Duration)
	g.t0 = time.Now()
	g.ws = g.t0.Add(cfg.Warmup)
	g.we = g.ws.Add(cfg.Duration)
	g.rec = NewRecorder(g.ws, cfg.Duration)
	g.lag = NewHistogram()

	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() { // cancellation interrupts requests in flight
		select {
		case <-ctx.Done():
			conns.closeAll()
		case <-done:
		}
	})
	if cfg.Progress != nil {
		wg.Go(func() { g.progress(ctx, done) })
	}

	if cfg.Rate > 0 {
		g.runOpen(ctx)
	} else {
		g.runClosed(ctx)
	}
	end := g.we
	if ctx.Err() != nil {
		end = time.Now()
	}
	close(done)
	wg.Wait()
	g.client.CloseIdleConnections()
	conns.closeAll()

	res := g.rec.Result(end)
	if ctx.Err() == nil {
		res.CPU = cpu.share()
	} else {
		cpu.stop()
	}
	res.Label = cfg.Label
	res.URL = cfg.URL
	res.Connections = cfg.Connections
	res.WarmupS = cfg.Warmup.Seconds()
	res.Dropped = g.dropped.Load()
	res.Connects = conns.dials.Load()
	if cfg.Rate > 0 {
		res.Mode, res.Rate = ModeRate, cfg.Rate
		lag := g.lag.Percentiles()
		res.SendLag = &lag
	} else {
		res.Mode, res.Concurrency = ModeConcurrency, cfg.Concurrency
	}
	return res, ctx.Err()
}

// at returns the scheduled send time of open-loop request i.
func (g *generator) at(i uint64) time.Time {
	return g.t0.Add(time.Duration(float64(i) * float64(time.Second) / g.cfg.Rate))
}

// runOpen schedules requests at the fixed rate and has Connections workers
// send them.
func (g *generator) runOpen(ctx context.Context) {
	due := make(chan uint64, g.cfg.Backlog)
	var wg sync.WaitGroup
	for range g.cfg.Connections {
		wg.Go(func() { g.openWorker(ctx, due) })
	}
	g.schedule(ctx, due)
	wg.Wait()
}

// schedule hands request i to the workers at its scheduled time until the
// window ends. Long waits use a runtime timer, the last couple of
// milliseconds preciseSleep, so requests go out evenly spaced rather than
// in millisecond bursts. When the generator falls behind (CPU starvation)
// it hands over the overdue requests at once; their latency still counts
// from their scheduled time.
func (g *generator) schedule(ctx context.Context, due chan<- uint64) {
	defer close(due)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for i := uint64(0); ; i++ {
		t := g.at(i)
		if !t.Before(g.we) {
			return
		}
		if d := time.Until(t); d > preciseSleepMax {
			timer.Reset(d - preciseSleepMax)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		if d := time.Until(t); d > 0 {
			// At high rates, wake at most every pacingQuantum and hand over
			// everything due by then: a wake-up per request would cost the
			// generator more CPU than the system it measures. The lag this
			// adds counts in the latencies (they start at scheduled times).
			preciseSleep(max(d, pacingQuantum))
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case due <- i:
		default: // every connection busy and the backlog full
			if !t.Before(g.ws) {
				g.drop(g.cfg.Timeout)
			}
		}
	}
}

func (g *generator) openWorker(ctx context.Context, due <-chan uint64) {
	s := g.newSender()
	defer s.release()
	for i := range due {
		if ctx.Err() != nil {
			continue // drain without sending
		}
		t := g.at(i)
		measured := !t.Before(g.ws)
		lag := time.Since(t)
		if lag > g.cfg.Timeout {
			// Waited for a connection longer than the client would wait
			// for an answer: not sent.
			if measured {
				g.drop(lag)
			}
			continue
		}
		if measured {
			g.lagMu.Lock()
			g.lag.Record(lag)
			g.lagMu.Unlock()
		}
		status, err := s.send(g.seqBase + i)
		g.finish(ctx, measured, t, status, err)
		s.respond(g.seqBase+i, t, measured, status, err)
	}
}

// drop counts a measured open-loop request given up unsent after waiting
// latency since its scheduled time.
func (g *generator) drop(latency time.Duration) {
	g.dropped.Add(1)
	g.rec.RecordDropped(time.Now(), latency)
}

// runClosed runs Concurrency workers, each sending back to back; a worker
// whose request failed without an answer waits out failPause from its
// send first, so a target refusing connections is not hammered in a
// busy loop (and the generator's CPU is not measured spinning).
func (g *generator) runClosed(ctx context.Context) {
	var seq atomic.Uint64
	var wg sync.WaitGroup
	for range g.cfg.Concurrency {
		wg.Go(func() {
			s := g.newSender()
			defer s.release()
			for ctx.Err() == nil {
				start := time.Now()
				if !start.Before(g.we) {
					return
				}
				n := g.seqBase + seq.Add(1)
				status, err := s.send(n)
				g.finish(ctx, !start.Before(g.ws), start, status, err)
				s.respond(n, start, !start.Before(g.ws), status, err)
				if err != nil {
					sleepCtx(ctx, time.Until(start.Add(failPause)))
				}
			}
		})
	}
	wg.Wait()
}

// finish records a request that was sent at (or scheduled for) start.
func (g *generator) finish(ctx context.Context, measured bool, start time.Time, status int, err error) {
	done := time.Now()
	if ctx.Err() != nil {
		return // cut short: the outcome is the cancellation's doing
	}
	if err == nil {
		g.completed.Add(1) // the progress lines' rate, as the summary's: answers
	}
	if !measured {
		// Sent during the warmup: no latency or status, but a completion
		// inside the window is throughput like any other.
		g.rec.Completed(done, status)
		return
	}
	if err != nil {
		// A request that waited before it failed (timed out, or the
		// server closed the connection after a stall) shows that wait in
		// the latencies; one refused at once says nothing of the target's
		// speed.
		latency := time.Duration(-1)
		if d := done.Sub(start); isTimeout(err) || d >= failPause {
			latency = d
		}
		g.rec.RecordError(done, latency, err)
		return
	}
	g.rec.Record(done, done.Sub(start), status)
}

// isTimeout reports whether err means the request waited out its timeout
// (for an answer, a connection or a dial) rather than failing at once.
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.Is(err, fasthttp.ErrNoFreeConns) || errors.Is(err, fasthttp.ErrDialTimeout) ||
		errors.As(err, &ne) && ne.Timeout()
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// progress prints a line per second until done is closed.
func (g *generator) progress(ctx context.Context, done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	lastAt := g.t0
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case now := <-tick.C:
			n := g.completed.Load()
			rps := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			// A tick within half a second of the window's start reports a
			// second of warmup.
			if now.Before(g.ws.Add(time.Second / 2)) {
				fmt.Fprintf(g.cfg.Progress, "%4.0fs warmup  %8.0f req/s\n", now.Sub(g.t0).Seconds(), rps)
				continue
			}
			reqs, errs, p50, p99 := g.rec.Progress()
			fmt.Fprintf(g.cfg.Progress, "%4.0fs %8.0f req/s  requests %d  errors %d  dropped %d  p50 %.2fms  p99 %.2fms\n",
				now.Sub(g.ws).Seconds(), rps, reqs, errs, g.dropped.Load(), p50, p99)
		}
	}
}

// sender is one worker's request state: a reused request, response, body
// buffer and signer, so sending allocates nothing.
type sender struct {
	g      *generator
	req    *fasthttp.Request
	resp   *fasthttp.Response
	body   []byte
	sig    []byte
	signer *Signer
}

func (g *generator) newSender() *sender {
	s := &sender{g: g, req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse()}
	s.req.SetRequestURI(g.cfg.URL)
	s.req.Header.SetMethod(fasthttp.MethodPost)
	s.req.Header.SetContentType("application/json")
	if g.cfg.AppSecret != "" {
		s.signer = NewSigner(g.cfg.AppSecret)
	}
	return s
}

func (s *sender) send(seq uint64) (status int, err error) {
	s.body = s.g.cfg.Payloads.AppendBody(s.body[:0], seq)
	s.req.SetBodyRaw(s.body)
	if s.signer != nil {
		s.sig = s.signer.AppendSignature(s.sig[:0], s.body)
		s.req.Header.SetBytesV(SignatureHeader, s.sig)
	}
	if err := s.g.client.DoTimeout(s.req, s.resp, s.g.cfg.Timeout); err != nil {
		return 0, err
	}
	return s.resp.StatusCode(), nil
}

// respond passes the outcome of the request just sent to Config.OnResponse.
func (s *sender) respond(seq uint64, start time.Time, measured bool, status int, err error) {
	if s.g.cfg.OnResponse != nil {
		s.g.cfg.OnResponse(Response{Seq: seq, Body: s.body, Start: start, Measured: measured, Status: status, Err: err})
	}
}

func (s *sender) release() {
	fasthttp.ReleaseRequest(s.req)
	fasthttp.ReleaseResponse(s.resp)
}

// errGeneratorClosed fails dials after the run was cancelled.
var errGeneratorClosed = errors.New("bench: generator stopped")

// connTracker dials the generator's connections and can close them all,
// which is how cancellation interrupts requests in flight.
type connTracker struct {
	dialer net.Dialer
	dials  atomic.Int64
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return err
}

func (t *connTracker) dial(addr string) (net.Conn, error) {
	c, err := t.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return nil, errGeneratorClosed
	}
	t.conns[tc] = struct{}{}
	t.dials.Add(1)
	return tc, nil
}

// closeAll closes every connection and fails later dials.
func (t *connTracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	conns := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

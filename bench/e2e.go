package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaymw/relay/tlsconf"
)

// E2E defaults.
const (
	DefaultE2ETenants      = 100
	DefaultDrainIdle       = 5 * time.Second
	DefaultDrainTimeout    = 2 * time.Minute
	defaultProbeTimeout    = time.Minute
	EndToEndMetric         = "relay_delivery_end_to_end_seconds"
	probeSeq               = 1 << 62 // the probe's body sequence number, far from the generator's
	drainPoll              = 100 * time.Millisecond
	sinkShutdownGrace      = 5 * time.Second
	e2eDeliveryTimeoutNote = "events answered 200 but not received when the wait ended"
)

// E2EConfig configures E2E.
type E2EConfig struct {
	// Exe is the relay binary, run as `Exe serve`.
	Exe string
	// Tenants is how many tenants, each with its own instance (0: 100).
	Tenants int
	// Rate (open loop) or Concurrency (closed loop): at most one; neither
	// means a closed loop of DefaultConnections.
	Rate        float64
	Concurrency int
	Connections int // open loop: connections (0: DefaultConnections)

	Duration  time.Duration // measured window (0: 10 s)
	Warmup    time.Duration // unrecorded load before it (the CLI's default is 3 s)
	Timeout   time.Duration // per request (0: DefaultTimeout)
	Size      int           // body size (0: DefaultBodySize)
	Templates []string      // empty: all

	// After the load, E2E waits until every event answered 200 was
	// received, or no delivery came for DrainIdle (0: 5 s), or DrainTimeout
	// (0: 2 min) passed.
	DrainIdle, DrainTimeout time.Duration
	// ForgetEvery, when above 0, makes the instances forget (answer 2xx
	// without recording) the events whose id's first four bytes are a
	// multiple of it, about one in ForgetEvery: a self-test of the
	// accounting, which must report exactly those as lost.
	ForgetEvery int
	// RelayExtra is appended to the relay's delivery section (tests).
	RelayExtra string

	ReadyTimeout time.Duration // each start (0: DefaultReadyTimeout)
	Progress     io.Writer     // progress lines; nil for none
	Dir          string        // for temporary files ("": the system's)
}

// E2EResult is the outcome of E2E. Its JSON form is the contract of
// `relay bench e2e --json`: the keys ingested_per_sec, delivered_per_sec,
// lost, duplicates and latency_ms {p50,p90,p99,p999,max} are stable.
type E2EResult struct {
	Tenants int    `json:"tenants"`
	Mode    string `json:"mode"`
	// IngestedPerSec: events (entries) of requests sent in the measured
	// window and answered 200, per second of the window.
	IngestedPerSec float64 `json:"ingested_per_sec"`
	// RequestsPerSec: the generator's requests per second (any status).
	RequestsPerSec float64 `json:"requests_per_sec"`
	// DeliveredPerSec: distinct events first received from the start of the
	// measured window to the last delivery, divided by that time (the
	// delivery window), so a backlog drained after the load counts at the
	// rate it was drained.
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	DeliveryWindowS float64 `json:"delivery_window_s"`
	// DeliveredInWindowPerSec: distinct events first received inside the
	// measured window, per second of it.
	DeliveredInWindowPerSec float64 `json:"delivered_in_window_per_sec"`
	// Lost: events answered 200 never received (must be 0).
	Lost    int64    `json:"lost"`
	LostIDs []string `json:"lost_ids,omitempty"`
	// Duplicates: receipts of an event already received.
	Duplicates int64 `json:"duplicates"`
	// Latency: from the send of the request (open loop: its scheduled send)
	// to the first receipt at the instance, over the accepted events sent in
	// the measured window.
	Latency Percentiles `json:"latency_ms"`
	// LatencyClamped counts the measured events delivered more than an
	// hour after their send, counted in Latency at an hour.
	LatencyClamped int64 `json:"latency_clamped,omitempty"`

	AcceptedEvents   int64   `json:"accepted_events"`    // distinct events answered 200, warmup included
	DeliveredEvents  int64   `json:"delivered_events"`   // of those, received
	MeasuredEvents   int64   `json:"measured_events"`    // accepted events sent in the measured window
	EventsPerRequest float64 `json:"events_per_request"` // average entries per accepted body
	// UnacknowledgedDelivered: events received whose request was not
	// answered 200 (its write landed anyway; at-least-once, not an error).
	UnacknowledgedDelivered int64 `json:"unacknowledged_delivered"`
	Unexpected              int64 `json:"unexpected"` // received, never sent (must be 0)
	BadWebhookIDs           int64 `json:"bad_webhook_ids"`
	Forgotten               int64 `json:"forgotten,omitempty"` // ForgetEvery: events the instances forgot on purpose
	// DrainS is the time from the end of the load to the last delivery;
	// DrainEnd says why the wait ended: "all received", "idle" or "timeout".
	DrainS   float64 `json:"drain_s"`
	DrainEnd string  `json:"drain_end"`
	// RelayEndToEnd: the relay's own view, from its ingress receiving a
	// webhook (relay-received-at) to the instance's 2xx, from /metrics at
	// the end of the drain, from the end of the warmup on (scraped twice).
	RelayEndToEnd *HistogramQuantiles `json:"relay_end_to_end,omitempty"`
	CPU           *CPUShare           `json:"cpu,omitempty"` // generator = bench process (generator and instances)
	Ingest        *Result             `json:"ingest"`
	Delivery      *Result             `json:"delivery"`
	Children      []ChildInfo         `json:"children"`
}

// WriteJSONFile writes r as indented JSON to the file name.
func (r *E2EResult) WriteJSONFile(name string) error { return writeJSONFile(name, r) }

// E2E measures the relay end to end: a temporary development CA, Tenants
// local mTLS instances (Sinks checking both signatures) in this process,
// `relay serve` as a child with the embedded broker and delivery on, load
// on its ingress, and every delivery matched to its request by webhook-id.
// It returns a result with Lost > 0 without an error: the caller decides.
func E2E(ctx context.Context, cfg E2EConfig) (*E2EResult, error) {
	if cfg.Exe == "" {
		return nil, errors.New("bench: e2e needs the relay binary")
	}
	if cfg.Rate > 0 && cfg.Concurrency > 0 {
		return nil, errors.New("bench: set at most one of rate and concurrency")
	}
	if cfg.Rate == 0 && cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConnections
	}
	if cfg.Tenants == 0 {
		cfg.Tenants = DefaultE2ETenants
	}
	if cfg.Tenants < 1 || cfg.Tenants > MaxTenants {
		return nil, fmt.Errorf("bench: tenants %d out of range [1, %d]", cfg.Tenants, MaxTenants)
	}
	if cfg.Duration == 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.DrainIdle < 0 || cfg.DrainTimeout < 0 {
		return nil, errors.New("bench: negative drain idle or timeout")
	}
	if cfg.DrainIdle == 0 {
		cfg.DrainIdle = DefaultDrainIdle
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	payloads, err := NewPayloads(PayloadOptions{Tenants: Tenants(cfg.Tenants), Templates: cfg.Templates, Size: cfg.Size})
	if err != nil {
		return nil, err
	}
	// The load's settings are checked now, not after the instances and
	// the relay started.
	load := Config{
		URL: "http://127.0.0.1/", Rate: cfg.Rate, Concurrency: cfg.Concurrency, Connections: cfg.Connections,
		Duration: cfg.Duration, Warmup: cfg.Warmup, Timeout: cfg.Timeout, Payloads: payloads,
	}
	if err := load.check(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "relay-bench-e2e-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// Certificates: the dev CA signs the instances' server certificate
	// and the relay's client certificate.
	certs, err := writeE2ECerts(dir)
	if err != nil {
		return nil, err
	}

	// The instances.
	ledger := NewLedger()
	var forget *forgetter
	if cfg.ForgetEvery > 0 {
		forget = &forgetter{every: uint32(cfg.ForgetEvery), ids: map[string]struct{}{}}
	}
	onReceive := func(rc Receipt) {
		if forget != nil && forget.forget(rc.ID) {
			return
		}
		ledger.Received(rc.ID, rc.At)
	}
	tenants := payloads.Tenants()
	secrets := make(map[string]string, len(tenants))
	sinks := make(map[string]*Sink, len(tenants))
	defer closeSinks(sinks)
	for _, t := range tenants {
		secrets[t.ID] = NewSigningSecret()
		s, err := StartSink("127.0.0.1:0", SinkConfig{
			CertFile: certs.serverCert, KeyFile: certs.serverKey, ClientCAFile: certs.ca,
			Secret: secrets[t.ID], OnReceive: onReceive,
		})
		if err != nil {
			return nil, err
		}
		sinks[t.ID] = s
	}
	fmt.Fprintf(progress, "bench: %d instances (mTLS) listening\n", len(sinks))

	// The relay.
	procs := &Procs{Log: progress}
	defer procs.StopAll(DefaultStopGrace)
	tg := &targets{exe: cfg.Exe, procs: procs, dir: dir, readyTimeout: cfg.ReadyTimeout}
	secret := randomSecret()
	relayT, err := tg.startRelay(ctx, RelayOptions{
		Tenants: tenants, Secret: secret, Delivery: true,
		ClientCert: certs.clientCert, ClientKey: certs.clientKey, Extra: cfg.RelayExtra,
		Instance: func(t Tenant) Instance {
			return Instance{URL: sinks[t.ID].URL(), CAFile: certs.ca, SigningSecret: secrets[t.ID]}
		},
	})
	if err != nil {
		return nil, err
	}
	res := &E2EResult{Tenants: cfg.Tenants}
	defer func() {
		for _, c := range procs.Children() {
			res.Children = append(res.Children, ChildInfo{Name: c.Name, PID: c.PID()})
		}
	}()

	// Delivery runs once the relay's consumer joined its group: one probe
	// event, delivered, says so; the load starts after it.
	if err := probe(ctx, relayT, payloads, secret, ledger, defaultProbeTimeout); err != nil {
		return res, err
	}
	fmt.Fprintln(progress, "bench: delivery works (probe event received); starting the load")
	if forget != nil {
		forget.armed.Store(true)
	}

	// The load.
	var events, acceptedReqs atomic.Int64
	gen := Config{
		URL: relayT.URL, Rate: cfg.Rate, Concurrency: cfg.Concurrency, Connections: cfg.Connections,
		Duration: cfg.Duration, Warmup: cfg.Warmup, Timeout: cfg.Timeout, Payloads: payloads,
		AppSecret: secret, Progress: progress, Label: "ingest",
		OnResponse: func(r Response) {
			accepted := r.Err == nil && r.Status == http.StatusOK
			n, _ := ledger.Sent(r.Body, r.Start, accepted, r.Measured)
			if accepted && r.Measured {
				events.Add(int64(n))
				acceptedReqs.Add(1)
			}
		},
	}
	stopTicker := deliveryProgress(progress, ledger)
	gen.TargetPID = relayT.PID()
	// The relay's own end-to-end histogram, from the end of the warmup on.
	metricsURL := "http://" + relayT.Admin + "/metrics"
	atWindow := make(chan []Bucket, 1)
	windowTimer := time.AfterFunc(cfg.Warmup, func() {
		b, _ := FetchBuckets(ctx, metricsURL, EndToEndMetric)
		atWindow <- b
	})
	defer windowTimer.Stop()
	ingest, err := Run(ctx, gen)
	if ingest != nil {
		res.CPU = ingest.CPU
	}
	if err != nil {
		stopTicker()
		return res, err
	}
	res.Ingest = ingest
	res.Mode = ingest.Mode
	loadEnd := time.Now()

	// The drain.
	res.DrainEnd = drain(ctx, ledger, loadEnd, cfg.DrainIdle, cfg.DrainTimeout)
	stopTicker()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if relayT.Exited() {
		return res, relayT.exitError()
	}
	if after, err := FetchBuckets(ctx, metricsURL, EndToEndMetric); err == nil {
		var before []Bucket
		select {
		case before = <-atWindow:
		default: // the warmup outlasted the run
		}
		q := DeltaQuantiles(EndToEndMetric, before, after)
		q.Note = "the relay's own histogram, received-at → instance 2xx, from the end of the warmup to the end of the drain; approximated from its buckets (0.5 ms doubling)"
		res.RelayEndToEnd = q
	} else {
		fmt.Fprintln(progress, "bench: relay metrics:", err)
	}
	procs.Stop(relayT.Child, DefaultStopGrace)

	// The account.
	sum := ledger.Summary()
	ws := ingest.Start
	we := ws.Add(time.Duration(ingest.DurationS * float64(time.Second)))
	res.fill(sum, ws, we, loadEnd, cfg.Duration)
	res.IngestedPerSec = float64(events.Load()) / cfg.Duration.Seconds()
	if n := acceptedReqs.Load(); n > 0 {
		res.EventsPerRequest = float64(events.Load()) / float64(n)
	}
	if forget != nil {
		res.Forgotten = forget.count()
	}
	return res, nil
}

// fill sets the accounting fields from the ledger's summary.
func (res *E2EResult) fill(sum *LedgerSummary, ws, we, loadEnd time.Time, window time.Duration) {
	res.RequestsPerSec = res.Ingest.RequestsPerSec
	res.Lost, res.LostIDs = sum.Lost, sum.LostIDs
	res.Duplicates = sum.Duplicates
	res.Latency = sum.Latency.Percentiles()
	res.LatencyClamped = sum.Latency.Clamped()
	res.AcceptedEvents, res.DeliveredEvents, res.MeasuredEvents = sum.Accepted, sum.Delivered, sum.MeasuredAccepted
	res.UnacknowledgedDelivered, res.Unexpected, res.BadWebhookIDs = sum.Unacknowledged, sum.Unexpected, sum.BadIDs

	var inWindow, fromStart int64
	var last time.Time
	for _, fr := range sum.FirstReceipts {
		if fr.At.Before(ws) {
			continue
		}
		fromStart++
		last = fr.At
		if fr.At.Before(we) {
			inWindow++
		}
	}
	res.DeliveredInWindowPerSec = float64(inWindow) / window.Seconds()
	if fromStart > 0 {
		res.DeliveryWindowS = last.Sub(ws).Seconds()
		if res.DeliveryWindowS > 0 {
			res.DeliveredPerSec = float64(fromStart) / res.DeliveryWindowS
		}
		res.DrainS = max(last.Sub(loadEnd).Seconds(), 0)
	}

	// The delivery series for the report: first receipts from the window's
	// start to the last one, by second of receipt, with their latency.
	span := max(time.Duration(math.Ceil(last.Sub(ws).Seconds()))*time.Second, window)
	rec := newRecorder(ws, span, NewLongHistogram)
	for _, fr := range sum.FirstReceipts {
		if !fr.At.Before(ws) {
			rec.Record(fr.At, fr.Latency, http.StatusOK)
		}
	}
	d := rec.Result(ws.Add(span))
	d.Label = "delivery (send → receipt)"
	d.Mode, d.Rate, d.Concurrency, d.Connections = res.Ingest.Mode, res.Ingest.Rate, res.Ingest.Concurrency, res.Ingest.Connections
	d.URL = "instances"
	// The totals are those of the measured events (the series also shows
	// the warmup's events delivered in the window).
	d.Latency, d.Spectrum, d.Histogram = sum.Latency.Percentiles(), sum.Latency.Spectrum(), sum.Latency
	d.Requests = sum.Latency.Count()
	d.RequestsPerSec, d.OKPerSec = res.DeliveredPerSec, res.DeliveredPerSec
	d.Status = map[string]int64{"200": sum.Latency.Count()}
	d.Errors = 0
	res.Delivery = d
}

// probe posts one body and waits until its events were delivered.
func probe(ctx context.Context, t *Target, p *Payloads, secret string, l *Ledger, timeout time.Duration) error {
	body := p.AppendBody(nil, probeSeq)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, Sign(secret, body))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: probe request: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: the relay answered the probe request %s", resp.Status)
	}
	if _, err := l.Sent(body, start, true, false); err != nil {
		return err
	}
	err = waitUntil(ctx, t.Child, timeout, func() bool { return l.Outstanding() == 0 })
	if err != nil {
		return fmt.Errorf("bench: the probe event was not delivered: %w", err)
	}
	return nil
}

// drain waits for deliveries after the load and says why it stopped.
func drain(ctx context.Context, l *Ledger, loadEnd time.Time, idle, timeout time.Duration) string {
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		if l.Outstanding() <= 0 {
			return "all received"
		}
		since := loadEnd
		if last := l.LastReceipt(); last.After(since) {
			since = last
		}
		if time.Since(since) >= idle {
			return "idle"
		}
		if time.Since(loadEnd) >= timeout {
			return "timeout"
		}
		select {
		case <-ctx.Done():
			return "cancelled"
		case <-tick.C:
		}
	}
}

// deliveryProgress prints a line per second about deliveries until the
// returned stop function is called.
func deliveryProgress(w io.Writer, l *Ledger) (stop func()) {
	if w == io.Discard {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last, lastAt := l.Receipts(), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				n := l.Receipts()
				fmt.Fprintf(w, "      delivery %8.0f events/s  received %d  outstanding %d\n",
					float64(n-last)/now.Sub(lastAt).Seconds(), n, l.Outstanding())
				last, lastAt = n, now
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// e2eCerts are the files of the run's development PKI.
type e2eCerts struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func writeE2ECerts(dir string) (*e2eCerts, error) {
	d := filepath.Join(dir, "certs")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	ca, err := tlsconf.NewCA("relay bench development CA")
	if err != nil {
		return nil, err
	}
	server, err := ca.IssueServer("127.0.0.1", "localhost", "::1")
	if err != nil {
		return nil, err
	}
	client, err := ca.IssueClient("relay")
	if err != nil {
		return nil, err
	}
	c := &e2eCerts{
		ca:         filepath.Join(d, "ca.pem"),
		serverCert: filepath.Join(d, "instance.pem"), serverKey: filepath.Join(d, "instance-key.pem"),
		clientCert: filepath.Join(d, "relay-client.pem"), clientKey: filepath.Join(d, "relay-client-key.pem"),
	}
	if err := os.WriteFile(c.ca, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	if err := server.WriteFiles(c.serverCert, c.serverKey); err != nil {
		return nil, err
	}
	if err := client.WriteFiles(c.clientCert, c.clientKey); err != nil {
		return nil, err
	}
	return c, nil
}

func closeSinks(sinks map[string]*Sink) {
	ctx, cancel := context.WithTimeout(context.Background(), sinkShutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range sinks {
		wg.Go(func() { _ = s.Close(ctx) })
	}
	wg.Wait()
}

// forgetter decides which deliveries the instances forget (ForgetEvery):
// by event id, so that a redelivery of a forgotten event is forgotten too.
type forgetter struct {
	every uint32
	armed atomic.Bool
	mu    sync.Mutex
	ids   map[string]struct{}
}

func (f *forgetter) forget(id string) bool {
	if !f.armed.Load() {
		return false
	}
	var b [4]byte
	if len(id) < 8 {
		return false
	}
	if _, err := hex.Decode(b[:], []byte(id[:8])); err != nil {
		return false
	}
	if binary.BigEndian.Uint32(b[:])%f.every != 0 {
		return false
	}
	f.mu.Lock()
	f.ids[id] = struct{}{}
	f.mu.Unlock()
	return true
}

func (f *forgetter) count() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.ids))
}

// WriteSummary prints the e2e outcome.
func (r *E2EResult) WriteSummary(w io.Writer) error {
	var b bytes.Buffer
	if r.Ingest != nil {
		fmt.Fprintf(&b, "ingest:    %.0f requests/s, %.0f events/s accepted (%.2f events per request); status %s\n",
			r.RequestsPerSec, r.IngestedPerSec, r.EventsPerRequest, statusLine(r.Ingest.Status))
		fmt.Fprintf(&b, "           ingress latency ms: %s\n", percentilesLine(r.Ingest.Latency))
	}
	fmt.Fprintf(&b, "delivery:  %.0f events/s over the delivery window of %.1f s (%.0f events/s inside the measured window)\n",
		r.DeliveredPerSec, r.DeliveryWindowS, r.DeliveredInWindowPerSec)
	fmt.Fprintf(&b, "           send → receipt latency ms (%d events of the measured window): %s\n", r.MeasuredEvents, percentilesLine(r.Latency))
	if r.LatencyClamped > 0 {
		fmt.Fprintf(&b, "           %d of them took over an hour and count at an hour: those percentiles are lower bounds\n", r.LatencyClamped)
	}
	if q := r.RelayEndToEnd; q != nil {
		fmt.Fprintf(&b, "           relay's %s (received-at → delivered, approximated from buckets): p50 %.2f ms, p99 %.2f ms over %.0f events\n",
			q.Metric, q.P50, q.P99, q.Count)
	}
	fmt.Fprintf(&b, "accounting: accepted %d, delivered %d, lost %d, duplicates %d, delivered though not acknowledged %d, unexpected %d\n",
		r.AcceptedEvents, r.DeliveredEvents, r.Lost, r.Duplicates, r.UnacknowledgedDelivered, r.Unexpected)
	if r.Forgotten > 0 {
		fmt.Fprintf(&b, "           forgotten on purpose by the instances (--forget-every): %d\n", r.Forgotten)
	}
	fmt.Fprintf(&b, "drain:     %.1f s after the load (%s)\n", r.DrainS, r.DrainEnd)
	switch {
	case r.Lost == 0:
	case r.DrainEnd == "timeout":
		fmt.Fprintf(&b, "           deliveries were still arriving when the wait ended: some of the lost may only be late (%s)\n", e2eDeliveryTimeoutNote)
	case r.DrainEnd == "idle":
		fmt.Fprintf(&b, "           no delivery came for --drain-idle: an event in a retry backoff of the relay (see relay_delivery_retries_total) would only be late; a longer --drain-idle tells\n")
	}
	if r.CPU != nil {
		fmt.Fprintf(&b, "cpu:       bench process (generator + instances) %.2f cores, relay %.2f cores, rest of the machine (other processes, softirq) %.2f cores (of %d, measured window)\n",
			r.CPU.Generator, r.CPU.Target, r.CPU.Other, runtime.NumCPU())
	}
	if len(r.LostIDs) > 0 {
		fmt.Fprintf(&b, "lost ids (some): %v\n", r.LostIDs)
	}
	_, err := w.Write(b.Bytes())
	return err
}

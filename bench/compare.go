package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Compare defaults.
const (
	DefaultCompareTenants = 10
	DefaultDuration       = 10 * time.Second
	DefaultWarmup         = 3 * time.Second
	// TenantCountTarget is the least acceptable ratio of the relay's
	// throughput with the most tenants to that with the fewest.
	TenantCountTarget = 0.9
)

// CompareConfig configures Compare.
type CompareConfig struct {
	// Exe is the relay binary: it runs the targets as `Exe bench
	// serve-ceiling`, `Exe bench serve-baseline` and `Exe serve`.
	Exe string
	// Concurrency of the closed-loop runs (0: DefaultConnections); the
	// half-rate open-loop run uses as many connections.
	Concurrency int
	Duration    time.Duration // of every run's measured window (0: 10 s)
	Warmup      time.Duration // unrecorded load before each window (the CLI's default is 3 s)
	Timeout     time.Duration // per request (0: DefaultTimeout)
	Size        int           // body size (0: DefaultBodySize)
	Templates   []string      // empty: all
	// Tenants the bodies are spread over and the relay knows (0: 10); the
	// baseline writes to as many partitions.
	Tenants int
	// TenantCounts, when set, measures the relay once more per count
	// (closed loop), each with a fresh relay knowing that many tenants.
	TenantCounts []int
	// ReadyTimeout bounds each target's start (0: DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Progress gets step headers, child starts and stops, and the
	// generator's progress lines; nil for none.
	Progress io.Writer
	// Dir is where the targets' temporary folders are made ("": the
	// system's); they are removed at the end.
	Dir string
}

// TenantCountRuns are the relay's runs by tenant count.
type TenantCountRuns struct {
	Runs map[string]*Result `json:"runs"` // by tenant count
	// Ratio is the requests/s with the most tenants over that with the
	// fewest (target: at least TenantCountTarget).
	Ratio   float64 `json:"ratio"`
	RatioOf string  `json:"ratio_of"` // "1000/10"
}

// ChildInfo names a child process the bench started.
type ChildInfo struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

// CompareResult is the outcome of Compare. Its JSON form is the contract of
// `relay bench compare --json`.
type CompareResult struct {
	Ceiling           *Result          `json:"ceiling"`
	Relay             *Result          `json:"relay"`
	Baseline          *Result          `json:"baseline"`
	RelayOverCeiling  float64          `json:"relay_over_ceiling"`
	RelayOverBaseline float64          `json:"relay_over_baseline"`
	RelayHalfRate     *Result          `json:"relay_half_rate"`
	TenantCounts      *TenantCountRuns `json:"tenant_counts,omitempty"`
	// CPU is each run's CPU use during its measured window, by label.
	CPU         map[string]*CPUShare `json:"cpu,omitempty"`
	Tenants     int                  `json:"tenants"`
	Concurrency int                  `json:"concurrency"`
	BodySize    int                  `json:"body_size"`
	Templates   []string             `json:"templates"`
	Children    []ChildInfo          `json:"children"`
}

// Runs returns every run made, in order, for a report.
func (r *CompareResult) Runs() []*Result {
	var runs []*Result
	for _, x := range []*Result{r.Ceiling, r.Relay, r.RelayHalfRate, r.Baseline} {
		if x != nil {
			runs = append(runs, x)
		}
	}
	if r.TenantCounts != nil {
		keys := make([]string, 0, len(r.TenantCounts.Runs))
		for k := range r.TenantCounts.Runs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
		for _, k := range keys {
			runs = append(runs, r.TenantCounts.Runs[k])
		}
	}
	return runs
}

// WriteJSONFile writes r as indented JSON to the file name.
func (r *CompareResult) WriteJSONFile(name string) error { return writeJSONFile(name, r) }

func writeJSONFile(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}

// Compare measures, in one run, with the same generator and payloads: the
// ceiling (a bare fasthttp handler), the relay (`relay serve`, embedded
// broker, delivery off), the relay again in open loop at half its maximum,
// the baseline (net/http + kafka-go, acks=all, on its own embedded
// broker), and the relay once per TenantCounts. One target runs at a time,
// each as a child process; all are stopped and their folders removed
// before Compare returns, also when ctx is cancelled. On an error it
// returns what it measured so far with the error.
func Compare(ctx context.Context, cfg CompareConfig) (*CompareResult, error) {
	if cfg.Exe == "" {
		return nil, errors.New("bench: compare needs the relay binary")
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConnections
	}
	if cfg.Duration == 0 {
		cfg.Duration = DefaultDuration
	}
	if cfg.Tenants == 0 {
		cfg.Tenants = DefaultCompareTenants
	}
	if cfg.Size == 0 {
		cfg.Size = DefaultBodySize
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	for _, n := range cfg.TenantCounts {
		if n < 1 || n > maxTenants {
			return nil, fmt.Errorf("bench: tenant count %d out of range [1, %d]", n, maxTenants)
		}
	}
	payloads, err := NewPayloads(PayloadOptions{Tenants: Tenants(cfg.Tenants), Templates: cfg.Templates, Size: cfg.Size})
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(cfg.Dir, "relay-bench-compare-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	procs := &Procs{Log: progress}
	defer procs.StopAll(DefaultStopGrace)
	tg := &targets{exe: cfg.Exe, procs: procs, dir: dir, readyTimeout: cfg.ReadyTimeout}
	secret := randomSecret()

	res := &CompareResult{
		CPU: map[string]*CPUShare{}, Tenants: cfg.Tenants, Concurrency: cfg.Concurrency,
		BodySize: cfg.Size, Templates: templateNames(payloads),
	}
	defer func() {
		for _, c := range procs.Children() {
			res.Children = append(res.Children, ChildInfo{Name: c.Name, PID: c.PID()})
		}
	}()
	closed := func(label, url string, p *Payloads) Config {
		return Config{
			URL: url, Concurrency: cfg.Concurrency, Duration: cfg.Duration, Warmup: cfg.Warmup,
			Timeout: cfg.Timeout, Payloads: p, AppSecret: secret, Progress: cfg.Progress, Label: label,
		}
	}
	run := func(c Config, target *Target) (*Result, error) {
		load := fmt.Sprintf("closed loop, %d connections", c.Concurrency)
		if c.Rate > 0 {
			load = fmt.Sprintf("open loop at %.0f/s, %d connections", c.Rate, c.Connections)
		}
		fmt.Fprintf(progress, "== %s: %s, %s after %s warmup\n", c.Label, load, c.Duration, c.Warmup)
		w := startCPUWindow(target.PID(), c.Warmup, c.Duration)
		r, err := Run(ctx, c)
		if s := w.share(); s != nil && err == nil {
			res.CPU[c.Label] = s
		}
		if err != nil {
			return nil, err
		}
		if target.Exited() {
			return r, target.exitError()
		}
		return r, nil
	}

	// 1. The ceiling.
	t, err := tg.startCeiling(ctx)
	if err != nil {
		return res, err
	}
	res.Ceiling, err = run(closed("ceiling", t.URL, payloads), t)
	procs.Stop(t.Child, DefaultStopGrace)
	if err != nil {
		return res, err
	}

	// 2. The relay, closed loop, then open loop at half its maximum.
	t, err = tg.startRelay(ctx, RelayOptions{Tenants: payloads.Tenants(), Secret: secret})
	if err != nil {
		return res, err
	}
	res.Relay, err = run(closed("relay", t.URL, payloads), t)
	if err == nil {
		res.RelayOverCeiling = ratio(res.Relay, res.Ceiling)
		if res.Relay.RequestsPerSec <= 0 {
			err = errors.New("bench: the relay answered nothing: no half-rate run")
		} else {
			half := closed("relay@50%", t.URL, payloads)
			half.Concurrency = 0
			half.Rate = max(res.Relay.RequestsPerSec/2, 1)
			half.Connections = cfg.Concurrency
			res.RelayHalfRate, err = run(half, t)
		}
	}
	procs.Stop(t.Child, DefaultStopGrace)
	if err != nil {
		return res, err
	}

	// 3. The baseline.
	t, err = tg.startBaseline(ctx, secret, cfg.Tenants)
	if err != nil {
		return res, err
	}
	res.Baseline, err = run(closed("baseline", t.URL, payloads), t)
	procs.Stop(t.Child, DefaultStopGrace)
	if err != nil {
		return res, err
	}
	res.RelayOverBaseline = ratio(res.Relay, res.Baseline)

	// 4. The relay by tenant count.
	if len(cfg.TenantCounts) > 0 {
		tc := &TenantCountRuns{Runs: map[string]*Result{}}
		res.TenantCounts = tc
		for _, n := range cfg.TenantCounts {
			p, err := NewPayloads(PayloadOptions{Tenants: Tenants(n), Templates: cfg.Templates, Size: cfg.Size})
			if err != nil {
				return res, err
			}
			name := fmt.Sprintf("relay-%d-tenants", n)
			t, err := tg.startRelay(ctx, RelayOptions{Name: name, Tenants: p.Tenants(), Secret: secret})
			if err != nil {
				return res, err
			}
			r, err := run(closed(fmt.Sprintf("relay %d tenants", n), t.URL, p), t)
			procs.Stop(t.Child, DefaultStopGrace)
			if err != nil {
				return res, err
			}
			tc.Runs[strconv.Itoa(n)] = r
		}
		lo, hi := slices.Min(cfg.TenantCounts), slices.Max(cfg.TenantCounts)
		tc.RatioOf = fmt.Sprintf("%d/%d", hi, lo)
		tc.Ratio = ratio(tc.Runs[strconv.Itoa(hi)], tc.Runs[strconv.Itoa(lo)])
	}
	return res, nil
}

func ratio(a, b *Result) float64 {
	if a == nil || b == nil || b.RequestsPerSec <= 0 {
		return 0
	}
	return a.RequestsPerSec / b.RequestsPerSec
}

func randomSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "bench_" + hex.EncodeToString(b[:])
}

func templateNames(p *Payloads) []string {
	names := make([]string, len(p.templates))
	for i, t := range p.templates {
		names[i] = t.name
	}
	return names
}

// WriteTable prints the comparison: each run's throughput and latency,
// then the ratios.
func (r *CompareResult) WriteTable(w io.Writer) error {
	runs := r.Runs()
	width := len("target")
	for _, run := range runs {
		width = max(width, len(run.Label))
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%-*s %9s %9s %8s %8s %9s %8s %7s %8s %10s %9s\n", width, "target", "load", "req/s",
		"p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "gen CPU", "target CPU", "other CPU")
	for _, run := range runs {
		load := fmt.Sprintf("c=%d", run.Concurrency)
		if run.Mode == ModeRate {
			load = fmt.Sprintf("%.0f/s", run.Rate)
		}
		gen, tgt, other := "–", "–", "–"
		if s := r.CPU[run.Label]; s != nil {
			gen, tgt, other = fmt.Sprintf("%.2f", s.Generator), fmt.Sprintf("%.2f", s.Target), fmt.Sprintf("%.2f", s.Other)
		}
		fmt.Fprintf(&t, "%-*s %9s %9.0f %8.2f %8.2f %9.2f %8.2f %7d %8s %10s %9s\n", width, run.Label, load, run.RequestsPerSec,
			run.Latency.P50, run.Latency.P99, run.Latency.P999, run.Latency.Max, run.Errors, gen, tgt, other)
	}
	if _, err := io.WriteString(w, t.String()); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nrelay/ceiling   %.3f\n", r.RelayOverCeiling)
	fmt.Fprintf(&b, "relay/baseline  %.3f\n", r.RelayOverBaseline)
	if h := r.RelayHalfRate; h != nil {
		fmt.Fprintf(&b, "relay@50%% (%.0f/s open loop): p99 %.2f ms, p99.9 %.2f ms\n", h.Rate, h.Latency.P99, h.Latency.P999)
	}
	if tc := r.TenantCounts; tc != nil && tc.RatioOf != "" {
		verdict := "within 10%"
		switch {
		case tc.Ratio < TenantCountTarget:
			verdict = "NOT within 10%: more tenants is slower"
		case tc.Ratio > 1/TenantCountTarget:
			verdict = "more tenants was faster: the difference is run-to-run noise, larger than 10%"
		}
		fmt.Fprintf(&b, "relay tenants %s: throughput ratio %.3f (target ≥ %.2f: %s)\n", tc.RatioOf, tc.Ratio, TenantCountTarget, verdict)
	}
	for _, run := range runs {
		if run.Errors > 0 {
			fmt.Fprintf(&b, "warning: %s: %d of %d requests failed or were not 2xx (status %s); its req/s counts them\n",
				run.Label, run.Errors, run.Requests, statusLine(run.Status))
		}
		if run.Dropped > 0 {
			fmt.Fprintf(&b, "warning: %s: the generator dropped %d requests: the rate was not offered\n", run.Label, run.Dropped)
		}
	}
	fmt.Fprintf(&b, "(CPU in cores of %d during each measured window: gen = the bench process, target = the target's process, other = the rest of the machine: other processes, and softirq time of the loopback traffic)\n", runtime.NumCPU())
	_, err := io.WriteString(w, b.String())
	return err
}

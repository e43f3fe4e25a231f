package bench

import (
	"cmp"
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
	// Rounds repeats everything (ceiling, relay, the relay at half that
	// maximum, baseline and the tenant counts, in that order, fresh
	// processes each time) so that the figures are medians of runs
	// measured back to back (0: 1).
	Rounds int
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

// CompareRound is one round of the closed-loop runs and its ratios.
type CompareRound struct {
	Ceiling           *Result            `json:"ceiling"`
	Relay             *Result            `json:"relay"`
	RelayHalfRate     *Result            `json:"relay_half_rate"`
	Baseline          *Result            `json:"baseline"`
	RelayOverCeiling  float64            `json:"relay_over_ceiling"`
	RelayOverBaseline float64            `json:"relay_over_baseline"`
	TenantCounts      map[string]*Result `json:"tenant_counts,omitempty"`
	TenantCountRatio  float64            `json:"tenant_count_ratio,omitempty"`
	// CPUPerRequest compares the servers' own CPU time per 2xx answer,
	// without the generator's (cpuRatio); zero when not sampled.
	CPUPerRequest CPURatios `json:"cpu_per_request"`
}

// CPURatios are the relay's CPU time per 2xx answer over the ceiling's and
// over the baseline's. The throughput ratios on one machine include the
// generator's share of the cores, which dilutes every difference; these
// measure the servers alone.
type CPURatios struct {
	RelayOverCeiling  float64 `json:"relay_over_ceiling,omitempty"`
	RelayOverBaseline float64 `json:"relay_over_baseline,omitempty"`
}

// ChildInfo names a child process the bench started.
type ChildInfo struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

// CompareResult is the outcome of Compare. Its JSON form is the contract of
// `relay bench compare --json`. With several rounds, Ceiling, Relay,
// Baseline and each tenant count's run are the round with the median
// requests/s, RelayHalfRate the round with the median p99, and each ratio
// is the median of the rounds' ratios (each
// round's runs were measured back to back, so a round's ratio is the
// least disturbed by the machine's drift); Rounds holds every round.
type CompareResult struct {
	Ceiling           *Result `json:"ceiling"`
	Relay             *Result `json:"relay"`
	Baseline          *Result `json:"baseline"`
	RelayOverCeiling  float64 `json:"relay_over_ceiling"`
	RelayOverBaseline float64 `json:"relay_over_baseline"`
	RelayHalfRate     *Result `json:"relay_half_rate"`
	// CPUPerRequest: the medians of the rounds' CPU ratios.
	CPUPerRequest CPURatios        `json:"cpu_per_request"`
	TenantCounts  *TenantCountRuns `json:"tenant_counts,omitempty"`
	// CPU is each run's CPU use during its measured window, by label.
	CPU         map[string]*CPUShare `json:"cpu,omitempty"`
	Tenants     int                  `json:"tenants"`
	Concurrency int                  `json:"concurrency"`
	BodySize    int                  `json:"body_size"`
	Templates   []string             `json:"templates"`
	Children    []ChildInfo          `json:"children"`
	Rounds      []*CompareRound      `json:"rounds"`

	all []*Result // every run, in the order made
}

// Runs returns every run made, in order, for a report.
func (r *CompareResult) Runs() []*Result {
	if len(r.all) > 0 {
		return r.all
	}
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
// broker), and the relay once per TenantCounts, all of it Rounds times.
// One target runs at a time,
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
		if n < 1 || n > MaxTenants {
			return nil, fmt.Errorf("bench: tenant count %d out of range [1, %d]", n, MaxTenants)
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
	// measure runs the generator against target and keeps the result.
	measure := func(c Config, target *Target) (*Result, error) {
		load := fmt.Sprintf("closed loop, %d connections", c.Concurrency)
		if c.Rate > 0 {
			load = fmt.Sprintf("open loop at %.0f/s, %d connections", c.Rate, c.Connections)
		}
		fmt.Fprintf(progress, "== %s: %s, %s after %s warmup\n", c.Label, load, c.Duration, c.Warmup)
		c.TargetPID = target.PID()
		r, err := Run(ctx, c)
		if err == nil && r.CPU != nil {
			res.CPU[c.Label] = r.CPU
		}
		if err != nil {
			return nil, err
		}
		res.all = append(res.all, r)
		if target.Exited() {
			return r, target.exitError()
		}
		return r, nil
	}

	defer res.summarize(cfg.TenantCounts) // also for what was measured before an error
	rounds := max(cfg.Rounds, 1)
	label := func(name string, round int) string {
		if rounds == 1 {
			return name
		}
		return fmt.Sprintf("%s #%d", name, round)
	}
	var tenantPayloads []*Payloads
	for _, n := range cfg.TenantCounts {
		p, err := NewPayloads(PayloadOptions{Tenants: Tenants(n), Templates: cfg.Templates, Size: cfg.Size})
		if err != nil {
			return res, err
		}
		tenantPayloads = append(tenantPayloads, p)
	}

	// stop stops t and removes what it wrote.
	stop := func(t *Target) {
		procs.Stop(t.Child, DefaultStopGrace)
		if err := tg.clear(); err != nil {
			fmt.Fprintf(progress, "bench: clearing %s's folder: %v\n", t.Name, err)
		}
	}
	// closedRun starts a target, measures it in closed loop and stops it.
	closedRun := func(name string, p *Payloads, start func() (*Target, error)) (*Result, error) {
		t, err := start()
		if err != nil {
			return nil, err
		}
		defer stop(t)
		return measure(closed(name, t.URL, p), t)
	}

	for round := 1; round <= rounds; round++ {
		rd := &CompareRound{}
		res.Rounds = append(res.Rounds, rd)
		var err error

		// 1. The ceiling.
		rd.Ceiling, err = closedRun(label("ceiling", round), payloads, func() (*Target, error) { return tg.startCeiling(ctx) })
		if err != nil {
			return res, err
		}

		// 2. The relay, closed loop, then the same relay in open loop at
		// half that maximum.
		t, err := tg.startRelay(ctx, RelayOptions{Tenants: payloads.Tenants(), Secret: secret})
		if err != nil {
			return res, err
		}
		rd.Relay, err = measure(closed(label("relay", round), t.URL, payloads), t)
		if err == nil {
			rd.RelayOverCeiling = ratio(rd.Relay, rd.Ceiling)
			if rd.Relay.OKPerSec <= 0 {
				err = errors.New("bench: the relay answered nothing 2xx: no half-rate run")
			} else {
				half := closed(label("relay@50%", round), t.URL, payloads)
				half.Concurrency = 0
				half.Rate = max(rd.Relay.OKPerSec/2, 1)
				half.Connections = cfg.Concurrency
				rd.RelayHalfRate, err = measure(half, t)
			}
		}
		stop(t)
		if err != nil {
			return res, err
		}

		// 3. The baseline.
		rd.Baseline, err = closedRun(label("baseline", round), payloads, func() (*Target, error) {
			return tg.startBaseline(ctx, secret, cfg.Tenants)
		})
		if err != nil {
			return res, err
		}
		rd.RelayOverBaseline = ratio(rd.Relay, rd.Baseline)
		rd.CPUPerRequest = CPURatios{RelayOverCeiling: cpuRatio(rd.Relay, rd.Ceiling), RelayOverBaseline: cpuRatio(rd.Relay, rd.Baseline)}

		// 4. The relay by tenant count.
		for i, n := range cfg.TenantCounts {
			if rd.TenantCounts == nil {
				rd.TenantCounts = map[string]*Result{}
			}
			p := tenantPayloads[i]
			r, err := closedRun(label(fmt.Sprintf("relay %d tenants", n), round), p, func() (*Target, error) {
				return tg.startRelay(ctx, RelayOptions{Name: fmt.Sprintf("relay-%d-tenants", n), Tenants: p.Tenants(), Secret: secret})
			})
			if err != nil {
				return res, err
			}
			rd.TenantCounts[strconv.Itoa(n)] = r
		}
		if len(cfg.TenantCounts) > 0 {
			lo, hi := slices.Min(cfg.TenantCounts), slices.Max(cfg.TenantCounts)
			rd.TenantCountRatio = ratio(rd.TenantCounts[strconv.Itoa(hi)], rd.TenantCounts[strconv.Itoa(lo)])
		}
	}
	return res, nil
}

// summarize sets the top-level figures from the rounds so far: each
// target's median run and the median of each ratio.
func (r *CompareResult) summarize(counts []int) {
	collect := func(get func(*CompareRound) *Result) []*Result {
		var runs []*Result
		for _, rd := range r.Rounds {
			if x := get(rd); x != nil {
				runs = append(runs, x)
			}
		}
		return runs
	}
	pick := func(get func(*CompareRound) *Result) *Result {
		return medianBy(collect(get), func(x *Result) float64 { return x.OKPerSec })
	}
	// ratios is the median of the rounds' ratios, over the rounds that
	// measured both of its runs (a ratio of 0 from a relay that answered
	// nothing counts; a run never made does not).
	ratios := func(get func(*CompareRound) (float64, bool)) (float64, bool) {
		var xs []float64
		for _, rd := range r.Rounds {
			if x, ok := get(rd); ok {
				xs = append(xs, x)
			}
		}
		return median(xs), len(xs) > 0
	}
	r.Ceiling = pick(func(rd *CompareRound) *Result { return rd.Ceiling })
	r.Relay = pick(func(rd *CompareRound) *Result { return rd.Relay })
	r.Baseline = pick(func(rd *CompareRound) *Result { return rd.Baseline })
	// By -p99: with an even count of rounds medianBy's lower middle is
	// then the worse p99 of the two, as the lower throughput is above.
	r.RelayHalfRate = medianBy(collect(func(rd *CompareRound) *Result { return rd.RelayHalfRate }),
		func(x *Result) float64 { return -x.Latency.P99 })
	r.RelayOverCeiling, _ = ratios(func(rd *CompareRound) (float64, bool) {
		return rd.RelayOverCeiling, rd.Relay != nil && rd.Ceiling != nil
	})
	r.RelayOverBaseline, _ = ratios(func(rd *CompareRound) (float64, bool) {
		return rd.RelayOverBaseline, rd.Relay != nil && rd.Baseline != nil
	})
	r.CPUPerRequest.RelayOverCeiling, _ = ratios(func(rd *CompareRound) (float64, bool) {
		return rd.CPUPerRequest.RelayOverCeiling, rd.CPUPerRequest.RelayOverCeiling > 0
	})
	r.CPUPerRequest.RelayOverBaseline, _ = ratios(func(rd *CompareRound) (float64, bool) {
		return rd.CPUPerRequest.RelayOverBaseline, rd.CPUPerRequest.RelayOverBaseline > 0
	})
	if len(counts) == 0 {
		return
	}
	tc := &TenantCountRuns{Runs: map[string]*Result{}}
	for _, n := range counts {
		k := strconv.Itoa(n)
		if run := pick(func(rd *CompareRound) *Result { return rd.TenantCounts[k] }); run != nil {
			tc.Runs[k] = run
		}
	}
	if len(tc.Runs) == 0 {
		return
	}
	lo, hi := strconv.Itoa(slices.Min(counts)), strconv.Itoa(slices.Max(counts))
	var ok bool
	tc.Ratio, ok = ratios(func(rd *CompareRound) (float64, bool) {
		return rd.TenantCountRatio, rd.TenantCounts[lo] != nil && rd.TenantCounts[hi] != nil
	})
	if ok && lo != hi {
		tc.RatioOf = hi + "/" + lo
	}
	r.TenantCounts = tc
}

// median returns the middle of xs (the mean of the two middle ones for an
// even count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// medianBy returns the run with the median key (the lower middle one for
// an even count), nil for none.
func medianBy(runs []*Result, key func(*Result) float64) *Result {
	if len(runs) == 0 {
		return nil
	}
	s := slices.Clone(runs)
	slices.SortStableFunc(s, func(a, b *Result) int { return cmp.Compare(key(a), key(b)) })
	return s[(len(s)-1)/2]
}

// cpuRatio is a's target CPU time per 2xx answer over b's; 0 when either
// was not sampled (no target process, or nothing answered).
func cpuRatio(a, b *Result) float64 {
	per := func(r *Result) float64 {
		if r == nil || r.CPU == nil || r.CPU.Target <= 0 || r.OKPerSec <= 0 {
			return 0
		}
		return r.CPU.Target / r.OKPerSec
	}
	pa, pb := per(a), per(b)
	if pa == 0 || pb == 0 {
		return 0
	}
	return pa / pb
}

// ratio is a's throughput over b's, counting only 2xx answers: a target
// shedding load with quick 503s must not look faster for it.
func ratio(a, b *Result) float64 {
	if a == nil || b == nil || b.OKPerSec <= 0 {
		return 0
	}
	return a.OKPerSec / b.OKPerSec
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
	fmt.Fprintf(&t, "%-*s %9s %9s %8s %8s %9s %8s %7s %8s %10s %9s %11s %10s\n", width, "target", "load", "req/s",
		"p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "gen CPU", "target CPU", "other CPU", "target µs/req", "target/gen")
	for _, run := range runs {
		load := fmt.Sprintf("c=%d", run.Concurrency)
		if run.Mode == ModeRate {
			load = fmt.Sprintf("%.0f/s", run.Rate)
		}
		gen, tgt, other, perReq, perGen := "–", "–", "–", "–", "–"
		if s := r.CPU[run.Label]; s != nil {
			gen, tgt, other = fmt.Sprintf("%.2f", s.Generator), fmt.Sprintf("%.2f", s.Target), fmt.Sprintf("%.2f", s.Other)
			if _, t := s.PerRequest(run.RequestsPerSec); t > 0 {
				perReq = fmt.Sprintf("%.1f", t)
			}
			if q, ok := s.TargetOverGenerator(); ok {
				perGen = fmt.Sprintf("%.2f", q)
			}
		}
		fmt.Fprintf(&t, "%-*s %9s %9.0f %8.2f %8.2f %9.2f %8.2f %7d %8s %10s %9s %11s %10s\n", width, run.Label, load, run.RequestsPerSec,
			run.Latency.P50, run.Latency.P99, run.Latency.P999, run.Latency.Max, run.Errors, gen, tgt, other, perReq, perGen)
	}
	if _, err := io.WriteString(w, t.String()); err != nil {
		return err
	}
	var b strings.Builder
	perRound := func(get func(*CompareRound) float64) string {
		if len(r.Rounds) < 2 {
			return ""
		}
		xs := make([]string, len(r.Rounds))
		for i, rd := range r.Rounds {
			xs[i] = fmt.Sprintf("%.3f", get(rd))
		}
		return fmt.Sprintf("   (the median of rounds: %s)", strings.Join(xs, " "))
	}
	fmt.Fprintf(&b, "\nrelay/ceiling   %.3f%s\n", r.RelayOverCeiling, perRound(func(rd *CompareRound) float64 { return rd.RelayOverCeiling }))
	fmt.Fprintf(&b, "relay/baseline  %.3f%s\n", r.RelayOverBaseline, perRound(func(rd *CompareRound) float64 { return rd.RelayOverBaseline }))
	if c := r.CPUPerRequest; c.RelayOverCeiling > 0 || c.RelayOverBaseline > 0 {
		fmt.Fprintf(&b, "CPU per request, the servers alone: relay/ceiling %.3f%s, relay/baseline %.3f%s\n",
			c.RelayOverCeiling, perRound(func(rd *CompareRound) float64 { return rd.CPUPerRequest.RelayOverCeiling }),
			c.RelayOverBaseline, perRound(func(rd *CompareRound) float64 { return rd.CPUPerRequest.RelayOverBaseline }))
	}
	if h := r.RelayHalfRate; h != nil {
		fmt.Fprintf(&b, "relay@50%% (%.0f/s open loop): p99 %.2f ms, p99.9 %.2f ms%s\n", h.Rate, h.Latency.P99, h.Latency.P999,
			perRound(func(rd *CompareRound) float64 {
				if rd.RelayHalfRate == nil {
					return 0
				}
				return rd.RelayHalfRate.Latency.P99
			}))
	}
	if tc := r.TenantCounts; tc != nil && tc.RatioOf != "" {
		verdict := "within 10%"
		switch {
		case tc.Ratio < TenantCountTarget:
			verdict = "NOT within 10%: more tenants is slower"
		case tc.Ratio > 1/TenantCountTarget:
			verdict = "more tenants was faster: the difference is run-to-run noise, larger than 10%"
		}
		fmt.Fprintf(&b, "relay tenants %s: throughput ratio %.3f (target ≥ %.2f: %s)%s\n", tc.RatioOf, tc.Ratio, TenantCountTarget, verdict,
			perRound(func(rd *CompareRound) float64 { return rd.TenantCountRatio }))
	}
	if len(r.Rounds) == 1 {
		fmt.Fprintln(&b, "(one round: on a shared machine the same target can measure 15-30 % apart from one minute to the next; --rounds 3 repeats every run and reports medians)")
	}
	for _, run := range runs {
		if run.Errors > 0 {
			fmt.Fprintf(&b, "warning: %s: %d of %d requests failed or were not 2xx (status %s); its req/s counts the answers that were not 2xx, the ratios do not\n",
				run.Label, run.Errors, run.Requests, statusLine(run.Status))
		}
		if run.Dropped > 0 {
			fmt.Fprintf(&b, "warning: %s: the generator dropped %d requests: the rate was not offered\n", run.Label, run.Dropped)
		}
	}
	fmt.Fprintf(&b, "(CPU in cores of %d during each measured window: gen = the bench process, target = the target's process, other = the rest of the machine: other processes, and softirq time of the loopback traffic; target µs/req = the target's CPU time per request answered; target/gen = target CPU over the bench process's, the figure that drifts least with a shared machine's speed)\n", runtime.NumCPU())
	_, err := io.WriteString(w, b.String())
	return err
}

package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"
)

// OnResponse sees every request sent, warmup included, with the body the
// server got, its status and whether it was measured, in both loops.
func TestBenchGeneratorOnResponse(t *testing.T) {
	for _, mode := range []string{ModeConcurrency, ModeRate} {
		t.Run(mode, func(t *testing.T) {
			var mu sync.Mutex
			served := map[[32]byte]int{} // body hash → status
			url := serveFast(t, func(ctx *fasthttp.RequestCtx) {
				status := fasthttp.StatusOK
				if bytes.Contains(ctx.PostBody(), []byte(`"object":"instagram"`)) {
					status = fasthttp.StatusServiceUnavailable
				}
				mu.Lock()
				served[sha256.Sum256(ctx.PostBody())] = status
				mu.Unlock()
				ctx.SetStatusCode(status)
			})
			p, err := NewPayloads(PayloadOptions{Tenants: Tenants(3), Templates: []string{"messenger_message", "instagram_dm"}})
			require.NoError(t, err)
			var (
				calls, measured atomic.Int64
				rmu             sync.Mutex
				seen            = map[[32]byte]int{}
				seqs            = map[uint64]bool{}
			)
			cfg := Config{
				URL: url, Duration: 400 * time.Millisecond, Warmup: 200 * time.Millisecond, Payloads: p,
				OnResponse: func(r Response) {
					calls.Add(1)
					if r.Measured {
						measured.Add(1)
					}
					rmu.Lock()
					seen[sha256.Sum256(r.Body)] = r.Status
					seqs[r.Seq] = true
					rmu.Unlock()
					if r.Err != nil || r.Start.IsZero() {
						t.Errorf("response %+v", r)
					}
				},
			}
			if mode == ModeRate {
				cfg.Rate, cfg.Connections = 300, 8
			} else {
				cfg.Concurrency = 4
			}
			res, err := Run(context.Background(), cfg)
			require.NoError(t, err)
			require.Equal(t, int64(len(served)), calls.Load(), "one call per request served")
			require.Equal(t, served, seen, "bodies and statuses as the server saw them")
			require.Len(t, seqs, len(seen))
			require.Equal(t, res.Requests, measured.Load())
			require.Greater(t, calls.Load(), measured.Load(), "warmup requests are reported too")
		})
	}
}

// The baseline with its own embedded broker answers 200 once written, and
// keeps its data in the folder.
func TestBenchServeBaselineEmbedded(t *testing.T) {
	dir := t.TempDir()
	addr, _ := runServer(t, func(ctx context.Context, ln net.Listener) error {
		return ServeBaselineEmbedded(ctx, ln, dir, testSecret, 1)
	})
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	p, err := NewPayloads(PayloadOptions{Tenants: Tenants(2)})
	require.NoError(t, err)
	for seq := range uint64(7) {
		require.Equal(t, http.StatusOK, postSigned(t, client, "http://"+addr+IngressPath, testSecret, p.AppendBody(nil, seq)))
	}
	require.Equal(t, http.StatusForbidden, postSigned(t, client, "http://"+addr+IngressPath, "wrong", p.AppendBody(nil, 9)))
}

// The end-to-end histogram quantiles are estimated from a real Prometheus
// exposition, summed over label sets.
func TestBenchHistogramQuantiles(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "x_seconds", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 20),
	}, []string{"k"})
	reg.MustRegister(h)
	// 100 observations: 50 at 0.7 ms (bucket 0.5–1 ms), 49 at 3 ms (2–4
	// ms), 1 at 100 ms, over two label sets.
	for i := range 50 {
		h.WithLabelValues([]string{"a", "b"}[i%2]).Observe(0.0007)
	}
	for range 49 {
		h.WithLabelValues("a").Observe(0.003)
	}
	h.WithLabelValues("b").Observe(0.1)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)

	q, err := FetchHistogramQuantiles(context.Background(), srv.URL, "x_seconds")
	require.NoError(t, err)
	require.Equal(t, 100.0, q.Count)
	require.InDelta(t, 1.0, q.P50, 1e-9, "rank 50 is the top of the 0.5–1 ms bucket")
	require.Greater(t, q.P99, 2.0)
	require.LessOrEqual(t, q.P99, 4.0)

	_, err = FetchHistogramQuantiles(context.Background(), srv.URL, "missing_seconds")
	require.Error(t, err)
	require.Zero(t, BucketQuantile(0.5, nil))
	b, err := ParseHistogram(strings.NewReader("y_bucket{le=\"1\"} 0\ny_bucket{le=\"2\"} 1\ny_bucket{le=\"+Inf\"} 2\n"), "y")
	require.NoError(t, err)
	require.True(t, math.IsInf(b[2].Le, 1))
	require.Equal(t, 2.0, BucketQuantile(0.99, b), "a rank in the +Inf bucket gives the highest finite bound")
}

// The comparison table has a row per run and the ratios.
func TestBenchCompareTable(t *testing.T) {
	mk := func(label string, rps float64) *Result {
		return &Result{Label: label, Mode: ModeConcurrency, Concurrency: 4, RequestsPerSec: rps, OKPerSec: rps,
			Latency: Percentiles{P50: 1, P90: 2, P99: 3, P999: 4, Max: 5}}
	}
	half := mk("relay@50%", 500)
	half.Mode, half.Rate = ModeRate, 500
	r := &CompareResult{
		Ceiling: mk("ceiling", 4000), Relay: mk("relay", 1000), Baseline: mk("baseline", 250), RelayHalfRate: half,
		RelayOverCeiling: 0.25, RelayOverBaseline: 4,
		TenantCounts: &TenantCountRuns{Runs: map[string]*Result{"1000": mk("relay 1000 tenants", 950), "10": mk("relay 10 tenants", 1000)}, Ratio: 0.95, RatioOf: "1000/10"},
		CPU:          map[string]*CPUShare{"relay": {Generator: 0.5, Target: 1.2, TargetPID: 7}},
	}
	r.Rounds = []*CompareRound{{Ceiling: r.Ceiling, Relay: r.Relay, Baseline: r.Baseline}}
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{"ceiling", "baseline", "relay@50%", "500/s", "relay 10 tenants", "relay/ceiling   0.250", "relay/baseline  4.000", "ratio 0.950", "within 10%", "1.20", "1200.0", "2.40", "target/gen", "--rounds 3 repeats"} {
		require.Contains(t, out, want)
	}
	require.Less(t, strings.Index(out, "relay 10 tenants"), strings.Index(out, "relay 1000 tenants"), "counts in numeric order")
	require.Len(t, r.Runs(), 6)
}

// With rounds, the top-level runs are each target's median round and the
// ratios the medians of the rounds' ratios (not the ratio of medians: a
// round's runs were measured back to back).
func TestBenchCompareRoundsMedians(t *testing.T) {
	mk := func(label string, rps float64) *Result {
		return &Result{Label: label, Mode: ModeConcurrency, Concurrency: 4, RequestsPerSec: rps, OKPerSec: rps}
	}
	r := &CompareResult{Rounds: []*CompareRound{
		{Ceiling: mk("ceiling #1", 100), Relay: mk("relay #1", 60), Baseline: mk("baseline #1", 30), RelayOverCeiling: 0.6, RelayOverBaseline: 2,
			TenantCounts: map[string]*Result{"10": mk("relay 10 tenants #1", 60), "1000": mk("relay 1000 tenants #1", 30)}, TenantCountRatio: 0.5},
		{Ceiling: mk("ceiling #2", 80), Relay: mk("relay #2", 40), Baseline: mk("baseline #2", 40), RelayOverCeiling: 0.5, RelayOverBaseline: 1,
			TenantCounts: map[string]*Result{"10": mk("relay 10 tenants #2", 40), "1000": mk("relay 1000 tenants #2", 36)}, TenantCountRatio: 0.9},
		{Ceiling: mk("ceiling #3", 90), Relay: mk("relay #3", 63), Baseline: mk("baseline #3", 35), RelayOverCeiling: 0.7, RelayOverBaseline: 1.8,
			TenantCounts: map[string]*Result{"10": mk("relay 10 tenants #3", 63)}}, // interrupted: no 1000
	}}
	for i, p99 := range []float64{9, 4, 30} {
		h := mk(fmt.Sprintf("relay@50%% #%d", i+1), 30)
		h.Mode, h.Rate, h.Latency.P99 = ModeRate, 30, p99
		r.Rounds[i].RelayHalfRate = h
	}
	r.summarize([]int{10, 1000})
	require.Equal(t, "relay@50% #1", r.RelayHalfRate.Label, "the median p99")
	require.Equal(t, "ceiling #3", r.Ceiling.Label)
	require.Equal(t, "relay #1", r.Relay.Label)
	require.Equal(t, "baseline #3", r.Baseline.Label)
	require.InDelta(t, 0.6, r.RelayOverCeiling, 1e-9)
	require.InDelta(t, 1.8, r.RelayOverBaseline, 1e-9)
	require.Equal(t, "relay 10 tenants #1", r.TenantCounts.Runs["10"].Label)
	require.Equal(t, "relay 1000 tenants #1", r.TenantCounts.Runs["1000"].Label, "lower middle of two")
	require.InDelta(t, 0.7, r.TenantCounts.Ratio, 1e-9, "median of the measured rounds' ratios")
	require.Equal(t, "1000/10", r.TenantCounts.RatioOf)

	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	require.Contains(t, b.String(), "relay/ceiling   0.600   (the median of rounds: 0.600 0.500 0.700)")

	require.Zero(t, median(nil))
	require.Nil(t, medianBy(nil, func(x *Result) float64 { return x.RequestsPerSec }))
	require.InDelta(t, 2.5, median([]float64{4, 1, 3, 2}), 1e-9)
}

// Compare with --tenant-counts 10,1000 stopped after the 10-tenant run (the
// 1000-tenant relay failed to start, or Ctrl-C): no ratio was measured, so
// none is reported and the table gives no verdict.
func TestBenchComparePartialTenantCountsNoVerdict(t *testing.T) {
	mk := func(label string, rps float64) *Result {
		return &Result{Label: label, Mode: ModeConcurrency, Concurrency: 4, RequestsPerSec: rps, OKPerSec: rps}
	}
	r := &CompareResult{Rounds: []*CompareRound{{
		Ceiling: mk("ceiling", 100), Relay: mk("relay", 60), Baseline: mk("baseline", 30),
		RelayOverCeiling: 0.6, RelayOverBaseline: 2,
		TenantCounts: map[string]*Result{"10": mk("relay 10 tenants", 60)}, // 1000 never measured
	}}}
	r.summarize([]int{10, 1000})
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	require.NotContains(t, b.String(), "NOT within 10%", "a verdict on a ratio that was never measured")
	require.Empty(t, r.TenantCounts.RatioOf, "ratio_of set with ratio 0")
}

// clear removes every target's folder, data included, and keeps the
// compare's own folder for the next target.
func TestBenchTargetsClear(t *testing.T) {
	tg := &targets{dir: t.TempDir()}
	for _, name := range []string{"relay", "baseline-kafka"} {
		d, err := tg.folder(name)
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(d, "kafka", "relay.events-0"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(d, "kafka", "relay.events-0", "0.log"), []byte("records"), 0o600))
	}
	require.NoError(t, tg.clear())
	left, err := os.ReadDir(tg.dir)
	require.NoError(t, err)
	require.Empty(t, left)

	d, err := tg.folder("ceiling")
	require.NoError(t, err)
	require.DirExists(t, d)
}

// Regression: with an even count of rounds the half-rate run "with the
// median p99" was the lower middle, the better p99: --rounds 2 always
// reported the best round against the ≤ 10 ms target.
func TestBenchCompareHalfRateEvenRoundsTakesTheWorse(t *testing.T) {
	r := &CompareResult{}
	for i, p99 := range []float64{30, 4} {
		h := &Result{Label: fmt.Sprintf("relay@50%% #%d", i+1), Mode: ModeRate, Rate: 30, RequestsPerSec: 30, Latency: Percentiles{P99: p99}}
		r.Rounds = append(r.Rounds, &CompareRound{RelayHalfRate: h})
	}
	r.summarize(nil)
	require.Equal(t, 30.0, r.RelayHalfRate.Latency.P99)
}

// Regression: the ratios counted every answer as throughput, so a target
// shedding load with quick 503s looked faster. They count 2xx answers.
func TestBenchRatiosCountOnly2xx(t *testing.T) {
	clean := &Result{RequestsPerSec: 100, OKPerSec: 100}
	shedding := &Result{RequestsPerSec: 100, OKPerSec: 50}
	require.InDelta(t, 1.0, ratio(clean, clean), 1e-9)
	require.InDelta(t, 0.5, ratio(shedding, clean), 1e-9)
	require.InDelta(t, 2.0, ratio(clean, shedding), 1e-9)
	require.Zero(t, ratio(clean, &Result{RequestsPerSec: 100}))

	// The rate counts answers by status as they come in the window.
	start := time.Now()
	rec := NewRecorder(start, time.Second)
	for i := range 10 {
		rec.Record(start, time.Millisecond, []int{200, 503}[i%2])
	}
	rec.RecordError(start, -1, errors.New("refused"))
	res := rec.Result(start.Add(time.Second))
	require.InDelta(t, 10, res.RequestsPerSec, 1e-9)
	require.InDelta(t, 5, res.OKPerSec, 1e-9)
}

// The servers' own CPU per 2xx answer, relay over ceiling and over
// baseline, per round and as the medians of rounds: the throughput ratios
// on one machine include the generator's share of the cores.
func TestBenchCompareCPUPerRequestRatios(t *testing.T) {
	mk := func(label string, rps, cores float64) *Result {
		return &Result{Label: label, Mode: ModeConcurrency, Concurrency: 4, RequestsPerSec: rps, OKPerSec: rps,
			CPU: &CPUShare{Generator: 0.7, Target: cores}}
	}
	r := &CompareResult{}
	for i, relayCores := range []float64{1.2, 1.0, 1.4} {
		rd := &CompareRound{
			Ceiling:  mk(fmt.Sprintf("ceiling #%d", i+1), 80000, 0.8), // 10 µs per request
			Relay:    mk(fmt.Sprintf("relay #%d", i+1), 50000, relayCores),
			Baseline: mk(fmt.Sprintf("baseline #%d", i+1), 25000, 1.25), // 50 µs per request
		}
		rd.CPUPerRequest = CPURatios{RelayOverCeiling: cpuRatio(rd.Relay, rd.Ceiling), RelayOverBaseline: cpuRatio(rd.Relay, rd.Baseline)}
		r.Rounds = append(r.Rounds, rd)
	}
	r.summarize(nil)
	require.InDelta(t, 2.4, r.CPUPerRequest.RelayOverCeiling, 1e-9, "24 µs over 10")
	require.InDelta(t, 0.48, r.CPUPerRequest.RelayOverBaseline, 1e-9, "24 µs over 50")
	var b bytes.Buffer
	require.NoError(t, r.WriteTable(&b))
	require.Contains(t, b.String(), "CPU per request, the servers alone: relay/ceiling 2.400   (the median of rounds: 2.400 2.000 2.800), relay/baseline 0.480")

	// Not sampled (no target process, or nothing answered): no ratio.
	require.Zero(t, cpuRatio(mk("a", 100, 1), &Result{OKPerSec: 100}))
	require.Zero(t, cpuRatio(mk("a", 100, 1), mk("b", 0, 1)))
	r = &CompareResult{Rounds: []*CompareRound{{Relay: &Result{OKPerSec: 1}, Ceiling: &Result{OKPerSec: 1}}}}
	r.summarize(nil)
	b.Reset()
	require.NoError(t, r.WriteTable(&b))
	require.NotContains(t, b.String(), "CPU per request")
}

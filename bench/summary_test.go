package bench

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The summary's cpu line gives cores, CPU time per request and the
// target/gen ratio, and only what was measured.
func TestSummaryCPULine(t *testing.T) {
	summary := func(cpu *CPUShare) string {
		r := &Result{Mode: ModeConcurrency, Concurrency: 256, RequestsPerSec: 50000, CPU: cpu}
		var b strings.Builder
		require.NoError(t, r.WriteSummary(&b))
		return b.String()
	}
	s := summary(&CPUShare{Generator: 0.8, Target: 1.2, TargetPID: 42, Machine: 1.9})
	require.Contains(t, s, "cpu          gen 0.80 cores (16.0 µs/req), target 1.20 cores (24.0 µs/req), target/gen 1.50, machine 1.90 of")

	// An idle target is still shown; a bench process that used no whole
	// tick gives no ratio (not +Inf).
	s = summary(&CPUShare{Generator: 0, Target: 0, TargetPID: 42, Machine: 0.1})
	require.Contains(t, s, "cpu          gen 0.00 cores (0.0 µs/req), target 0.00 cores (0.0 µs/req), machine 0.10 of")
	require.NotContains(t, s, "target/gen")

	s = summary(&CPUShare{Generator: 0.8, Machine: 1.9})
	require.Contains(t, s, "cpu          gen 0.80 cores (16.0 µs/req), machine 1.90 of")
	require.NotContains(t, s, "target")

	require.NotContains(t, summary(nil), "cpu")
}

func TestCPUSharePerRequest(t *testing.T) {
	g, tg := (&CPUShare{Generator: 0.5, Target: 1}).PerRequest(25000)
	require.InDelta(t, 20.0, g, 1e-9)
	require.InDelta(t, 40.0, tg, 1e-9)
	g, tg = (&CPUShare{Generator: 0.5, Target: 1}).PerRequest(0)
	require.Zero(t, g)
	require.Zero(t, tg)
}

// Requests that timed out, or were never sent, count in the latencies at
// the time they were given up, which is a lower bound; the summary says so.
// A run where nothing was answered has no latency to print.
func TestSummaryNotesWhatTheLatenciesCount(t *testing.T) {
	var b strings.Builder
	require.NoError(t, (&Result{Mode: ModeRate, Rate: 200, Status: map[string]int64{"200": 240, "error": 16}, Dropped: 144}).WriteSummary(&b))
	require.Contains(t, b.String(), "16 requests got no answer and 144 were never sent")
	require.Contains(t, b.String(), "lower bounds")
	b.Reset()
	require.NoError(t, (&Result{Mode: ModeRate, Rate: 200, Status: map[string]int64{"200": 400}}).WriteSummary(&b))
	require.NotContains(t, b.String(), "lower bounds")
	b.Reset()
	require.NoError(t, (&Result{Mode: ModeConcurrency, Status: map[string]int64{"error": 400}, Histogram: NewHistogram()}).WriteSummary(&b))
	require.Contains(t, b.String(), "latency ms   n/a")
}

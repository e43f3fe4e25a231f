package bench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
)

// WriteSummary prints a run's outcome: load, throughput, status counts and
// latency percentiles.
func (r *Result) WriteSummary(w io.Writer) error {
	var b strings.Builder
	label := r.Label
	if label == "" {
		label = "run"
	}
	load := fmt.Sprintf("closed loop, %d connections", r.Concurrency)
	if r.Mode == ModeRate {
		load = fmt.Sprintf("open loop at %g/s, %d connections", r.Rate, r.Connections)
	}
	fmt.Fprintf(&b, "%s: %s, %.1f s measured after %.1f s warmup\n", label, load, r.DurationS, r.WarmupS)
	fmt.Fprintf(&b, "  requests     %d (answered %.0f/s, 2xx %.0f/s), errors %d, dropped %d, connections opened %d\n",
		r.Requests, r.RequestsPerSec, r.OKPerSec, r.Errors, r.Dropped, r.Connects)
	fmt.Fprintf(&b, "  status       %s\n", statusLine(r.Status))
	if r.Histogram != nil && r.Histogram.Count() == 0 {
		fmt.Fprintf(&b, "  latency ms   n/a: no request was answered or timed out\n")
	} else {
		fmt.Fprintf(&b, "  latency ms   %s\n", percentilesLine(r.Latency))
	}
	if noAnswer := r.Status["error"]; noAnswer > 0 || r.Dropped > 0 {
		fmt.Fprintf(&b, "  note         %d requests got no answer and %d were never sent: the latencies count those\n"+
			"               that timed out and those never sent at the time they were given up (at least\n"+
			"               the timeout), so the percentiles they reach are lower bounds\n", noAnswer, r.Dropped)
	}
	if r.SendLag != nil {
		fmt.Fprintf(&b, "  send lag ms  %s\n", percentilesLine(*r.SendLag))
	}
	if s := r.CPU; s != nil {
		gen, tgt := s.PerRequest(r.RequestsPerSec)
		fmt.Fprintf(&b, "  cpu          gen %.2f cores (%.1f µs/req)", s.Generator, gen)
		if s.TargetPID != 0 {
			fmt.Fprintf(&b, ", target %.2f cores (%.1f µs/req)", s.Target, tgt)
		}
		if q, ok := s.TargetOverGenerator(); ok {
			fmt.Fprintf(&b, ", target/gen %.2f", q)
		}
		fmt.Fprintf(&b, ", machine %.2f of %d cores busy\n", s.Machine, runtime.NumCPU())
	}
	for _, k := range sortedStrings(r.ErrorKinds) {
		fmt.Fprintf(&b, "  error        %d × %s\n", r.ErrorKinds[k], k)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func percentilesLine(p Percentiles) string {
	return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f", p.P50, p.P90, p.P99, p.P999, p.Max)
}

func statusLine(status map[string]int64) string {
	if len(status) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(status))
	for _, k := range sortedStrings(status) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, status[k]))
	}
	return strings.Join(parts, ", ")
}

func sortedStrings[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// Result is the outcome of one run. Its JSON form is the contract of
// `relay bench --json FILE`: the keys "requests_per_sec", "latency_ms"
// {"p50","p90","p99","p999","max"} and "status" {"200": n, …, "error": n}
// are stable; the others are informative.
type Result struct {
	Label       string  `json:"label,omitempty"` // series name in reports: "relay", "ceiling", …
	Mode        string  `json:"mode"`            // ModeRate or ModeConcurrency
	URL         string  `json:"url"`
	Rate        float64 `json:"rate,omitempty"`        // open loop: scheduled requests per second
	Concurrency int     `json:"concurrency,omitempty"` // closed loop: workers
	Connections int     `json:"connections"`

	Start     time.Time `json:"start"`      // start of the measured window
	WarmupS   float64   `json:"warmup_s"`   // unrecorded warmup before Start
	DurationS float64   `json:"duration_s"` // length of the measured window

	// Requests counts recorded requests: those sent (open loop: scheduled)
	// in the measured window, answered with any status or failed. Warmup
	// requests are not recorded.
	Requests int64 `json:"requests"`
	// RequestsPerSec is the number of requests answered (any HTTP status)
	// inside the measured window, whenever they were sent (a request sent
	// during the warmup that is answered in the window counts), divided by
	// its length. Requests that failed without an answer do not count.
	RequestsPerSec float64 `json:"requests_per_sec"`
	// OKPerSec is the same for answers 2xx only: the rate the target did
	// what was asked of it.
	OKPerSec float64 `json:"ok_per_sec"`
	// Errors counts transport errors and responses other than 2xx.
	Errors int64 `json:"errors"`
	// Dropped counts open-loop requests the generator could not send: all
	// connections stayed busy until the request's timeout had passed since
	// its scheduled time (the target stalled, or too few connections), or
	// the backlog of waiting requests was full. When it is not 0, the
	// target rate was not offered. The latencies count each at the time
	// it was given up: at least the timeout.
	Dropped int64 `json:"dropped"`
	// Connects counts the connections the generator opened (more than
	// Connections means the server closed some).
	Connects int64 `json:"connects"`

	Status     map[string]int64 `json:"status"`                // by status code, "error" for transport errors
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"` // transport error messages (at most 16 distinct, then "other")
	// Latency is over the requests answered (any status), those that timed
	// out and those dropped, the last two at the time they were given up
	// (at least the timeout: lower bounds).
	Latency Percentiles `json:"latency_ms"`
	// SendLag (open loop) is how late requests went out: from the scheduled
	// time to the start of the send. It is the generator's pacing resolution
	// (about 0.1 ms on Linux) plus any wait for a free connection. Latency
	// includes it, as it must to show stalls; when SendLag is a large part
	// of the latency while Dropped is 0 and few connections are busy, the
	// generator is the limit.
	SendLag *Percentiles `json:"send_lag_ms,omitempty"`
	// CPU is what the bench process (the generator), the target's process
	// (Config.TargetPID) and the whole machine used in the measured window;
	// nil where it could not be measured.
	CPU      *CPUShare       `json:"cpu,omitempty"`
	Series   []Point         `json:"series"`
	Spectrum []SpectrumPoint `json:"spectrum"`

	// Histogram holds every recorded latency (nil in a Result read from JSON).
	Histogram *Histogram `json:"-"`
}

// Modes of a run.
const (
	ModeRate        = "rate"        // open loop
	ModeConcurrency = "concurrency" // closed loop
)

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteJSONFile writes r as JSON to the file name.
func (r *Result) WriteJSONFile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write %s: %w", name, err)
	}
	return f.Close()
}

// ReadResult reads a Result written by WriteJSON, so runs can be reported
// and compared later.
func ReadResult(r io.Reader) (*Result, error) {
	var res Result
	if err := json.NewDecoder(r).Decode(&res); err != nil {
		return nil, fmt.Errorf("bench: read result: %w", err)
	}
	return &res, nil
}

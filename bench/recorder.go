package bench

import (
	"math"
	"strconv"
	"sync"
	"time"
)

// maxErrorKinds bounds the distinct transport error messages a Recorder keeps.
const maxErrorKinds = 16

// Point is one second of a run's time series. Requests are attributed to the
// second in which they completed; open-loop requests dropped unsent add
// only their latency, to the second they were given up in.
type Point struct {
	T        int     `json:"t"`        // seconds since the measured window began
	Seconds  float64 `json:"seconds"`  // length of the interval: 1, less for a run cut short
	Requests int64   `json:"requests"` // completed: answered or failed
	Answered int64   `json:"answered"` // those that got an HTTP answer, of any status
	Errors   int64   `json:"errors"`   // those that failed or were not answered 2xx
	RPS      float64 `json:"rps"`      // answered per second
	// Latencies counts the latencies behind P50 and P99 (those of the
	// answered, the timed out and the dropped); with none, the second has
	// no latency (every completion failed at once) and P50 and P99 are 0.
	Latencies int64   `json:"latencies"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
}

// Recorder collects the outcome of requests of one measured window: a total
// latency histogram, status counts, and a per-second series computed from a
// per-interval histogram. It is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex
	start    time.Time
	window   time.Duration
	total    *Histogram
	interval *Histogram // requests completed in second cur
	cur      int
	series   []Point // finished seconds, then the one being filled
	status   map[int]int64
	kinds    map[string]int64
	requests int64 // every recorded request
	answered int64 // requests answered inside the window, whenever sent
	ok       int64 // those answered 2xx
	errors   int64
}

// NewRecorder returns a Recorder for the window [start, start+window).
// Requests that complete after the window still count in the totals and the
// histogram, but not in the series or the throughput.
func NewRecorder(start time.Time, window time.Duration) *Recorder {
	return newRecorder(start, window, NewHistogram)
}

func newRecorder(start time.Time, window time.Duration, newHist func() *Histogram) *Recorder {
	n := max(int(math.Ceil(window.Seconds())), 1)
	r := &Recorder{
		start: start, window: window,
		total: newHist(), interval: newHist(),
		series: make([]Point, 1, n),
		status: make(map[int]int64),
		kinds:  make(map[string]int64),
	}
	r.series[0] = Point{T: 0, Seconds: 1}
	return r
}

// Record adds a request that got an HTTP response with the given status.
func (r *Recorder) Record(done time.Time, latency time.Duration, status int) {
	r.mu.Lock()
	r.requests++
	r.status[status]++
	r.total.Record(latency)
	bad := status < 200 || status > 299
	if bad {
		r.errors++
	}
	if p := r.completedLocked(done, status); p != nil {
		r.interval.Record(latency)
	}
	r.mu.Unlock()
}

// RecordError adds a request that failed without a response. It counts
// under status "error". A request that waited before it failed (timed
// out, or cut off after a stall) gives its latency: a stall longer than
// the timeout must show in the percentiles too, or they would leave out
// exactly the requests it held up (coordinated omission). A request
// refused at once gives none (latency < 0): its time says nothing about
// the target's speed.
func (r *Recorder) RecordError(done time.Time, latency time.Duration, err error) {
	msg := "unknown"
	if err != nil {
		msg = err.Error()
	}
	r.mu.Lock()
	r.requests++
	r.errors++
	r.status[0]++
	if _, ok := r.kinds[msg]; ok || len(r.kinds) < maxErrorKinds {
		r.kinds[msg]++
	} else {
		r.kinds["other"]++
	}
	if latency >= 0 {
		r.total.Record(latency)
	}
	if p := r.completedLocked(done, 0); p != nil && latency >= 0 {
		r.interval.Record(latency)
	}
	r.mu.Unlock()
}

// RecordDropped adds the latency of an open-loop request of the window that
// was never sent, given up at done after waiting latency since its
// scheduled time (at least the timeout): it was not answered in time, and
// the percentiles must show it. It is counted in Result.Dropped by the
// generator, not in the requests.
func (r *Recorder) RecordDropped(done time.Time, latency time.Duration) {
	r.mu.Lock()
	r.total.Record(latency)
	if r.pointLocked(done) != nil {
		r.interval.Record(latency)
	}
	r.mu.Unlock()
}

// Completed counts, in the throughput and the series' request counts only,
// a request sent before the window (warmup) that completed at done with
// status (0: no answer). Its latency and status are not recorded: those
// are the window's requests'.
func (r *Recorder) Completed(done time.Time, status int) {
	r.mu.Lock()
	r.completedLocked(done, status)
	r.mu.Unlock()
}

// completedLocked counts a completion at done with status (0: no answer)
// in the throughput and the series, and returns its point, or nil when
// done lies outside the window.
func (r *Recorder) completedLocked(done time.Time, status int) *Point {
	p := r.pointLocked(done)
	if p == nil {
		return nil
	}
	p.Requests++
	if status > 0 {
		p.Answered++
		r.answered++
	}
	if status >= 200 && status <= 299 {
		r.ok++
	} else {
		p.Errors++
	}
	return p
}

// pointLocked returns the series point for an event at done, closing the
// seconds before it, or nil when done lies outside the window.
func (r *Recorder) pointLocked(done time.Time) *Point {
	d := done.Sub(r.start)
	if d < 0 || d >= r.window {
		return nil
	}
	sec := int(d / time.Second)
	for r.cur < sec {
		r.closeLocked()
		r.cur++
		r.series = append(r.series, Point{T: r.cur, Seconds: 1})
	}
	// A request finishing a hair before another goroutine's may arrive after
	// the second closed: its count goes to its second, its latency to the
	// open interval.
	return &r.series[sec]
}

// closeLocked computes the statistics of the interval being filled.
func (r *Recorder) closeLocked() {
	p := &r.series[r.cur]
	p.Latencies = r.interval.Count()
	p.P50 = r.interval.Quantile(0.50)
	p.P99 = r.interval.Quantile(0.99)
	r.interval.Reset()
}

// Progress returns the totals so far, for live progress lines.
func (r *Recorder) Progress() (requests, errors int64, p50, p99 float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.errors, r.total.Quantile(0.50), r.total.Quantile(0.99)
}

// Result closes the recording at end (the window's end, or earlier when the
// run was cut short) and returns its statistics. Mode, target and load
// fields are left for the caller. Recording after Result is not allowed.
func (r *Recorder) Result(end time.Time) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	measured := min(max(end.Sub(r.start), 0), r.window)
	r.closeLocked()
	// Seconds without completions at the end of the window (a stall) still
	// get their (empty) points; a window cut short ends with a partial one.
	n := int(math.Ceil(measured.Seconds()))
	for len(r.series) < n {
		r.cur++
		r.series = append(r.series, Point{T: r.cur, Seconds: 1})
	}
	r.series = r.series[:n] // a cut-short run has no later points
	if n > 0 {
		last := &r.series[n-1]
		last.Seconds = measured.Seconds() - float64(n-1)
	}
	for i := range r.series {
		if p := &r.series[i]; p.Seconds > 0 {
			p.RPS = float64(p.Answered) / p.Seconds
		}
	}

	res := &Result{
		Start:     r.start,
		DurationS: measured.Seconds(),
		Requests:  r.requests,
		Errors:    r.errors,
		Status:    make(map[string]int64, len(r.status)),
		Latency:   r.total.Percentiles(),
		Series:    r.series,
		Spectrum:  r.total.Spectrum(),
		Histogram: r.total,
	}
	if measured > 0 {
		res.RequestsPerSec = float64(r.answered) / measured.Seconds()
		res.OKPerSec = float64(r.ok) / measured.Seconds()
	}
	for code, n := range r.status {
		key := "error"
		if code > 0 {
			key = strconv.Itoa(code)
		}
		res.Status[key] += n
	}
	if len(r.kinds) > 0 {
		res.ErrorKinds = r.kinds
	}
	return res
}

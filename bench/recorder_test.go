package bench

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRecorderSeries(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	r := NewRecorder(start, 4*time.Second)

	// Second 0: 3 requests at 10 ms, one 503 at 1 ms.
	for range 3 {
		r.Record(at(100*time.Millisecond), 10*time.Millisecond, 200)
	}
	r.Record(at(900*time.Millisecond), time.Millisecond, 503)
	// Second 1: nothing (a stall). Second 2: 2 at 100 ms, one transport error.
	r.Record(at(2100*time.Millisecond), 100*time.Millisecond, 200)
	r.Record(at(2200*time.Millisecond), 100*time.Millisecond, 200)
	r.RecordError(at(2300*time.Millisecond), -1, errors.New("connection refused"))
	// Late arrival for second 0, after second 2 opened: counted in second 0.
	r.Record(at(999*time.Millisecond), 10*time.Millisecond, 200)
	// After the window: in the totals, not in the series nor the rate.
	r.Record(at(4100*time.Millisecond), 3*time.Second, 200)

	res := r.Result(at(4 * time.Second))
	require.EqualValues(t, 9, res.Requests)
	require.EqualValues(t, 2, res.Errors)
	require.Equal(t, map[string]int64{"200": 7, "503": 1, "error": 1}, res.Status)
	require.Equal(t, map[string]int64{"connection refused": 1}, res.ErrorKinds)
	require.InDelta(t, 7.0/4, res.RequestsPerSec, 1e-9, "answered in the window, of any status")
	require.InDelta(t, 6.0/4, res.OKPerSec, 1e-9, "answered 2xx in the window")
	require.InDelta(t, 4.0, res.DurationS, 1e-9)
	within(t, 3000, res.Latency.Max)
	require.EqualValues(t, 8, res.Histogram.Count(), "transport errors have no latency")

	require.Len(t, res.Series, 4)
	want := []struct {
		reqs, answered, errs, latencies int64
		p50                             float64
	}{{5, 5, 1, 4, 10}, {0, 0, 0, 0, 0}, {3, 2, 1, 3, 100}, {0, 0, 0, 0, 0}} // the late arrival's latency is in second 2
	for i, w := range want {
		p := res.Series[i]
		require.Equal(t, i, p.T)
		require.InDelta(t, 1, p.Seconds, 1e-9)
		require.Equal(t, w.reqs, p.Requests, "second %d", i)
		require.Equal(t, w.errs, p.Errors, "second %d", i)
		require.Equal(t, w.answered, p.Answered, "second %d", i)
		require.Equal(t, w.latencies, p.Latencies, "second %d", i)
		require.InDelta(t, float64(w.answered), p.RPS, 1e-9)
		if w.p50 > 0 {
			within(t, w.p50, p.P50)
		}
	}
}

// A stall longer than the timeout must show in the percentiles: the
// requests it held up time out or are dropped unsent, and leaving them out
// would report the latency of the few answered around it (coordinated
// omission).
func TestRecorderCountsRequestsGivenUpInTheLatencies(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return start.Add(d) }
	r := NewRecorder(start, 3*time.Second)
	for range 10 {
		r.Record(at(100*time.Millisecond), time.Millisecond, 200)
	}
	// Second 1: the target stalls; 5 requests time out after 1 s and 85
	// are dropped unsent after waiting 1.2 s. None is answered.
	for range 5 {
		r.RecordError(at(1500*time.Millisecond), time.Second, errors.New("timeout"))
	}
	for range 85 {
		r.RecordDropped(at(1600*time.Millisecond), 1200*time.Millisecond)
	}
	// Second 2: only connections refused at once: no latency at all.
	r.RecordError(at(2500*time.Millisecond), -1, errors.New("connection refused"))

	res := r.Result(at(3 * time.Second))
	require.EqualValues(t, 100, res.Histogram.Count(), "10 answered, 5 timed out, 85 dropped")
	within(t, 1200, res.Latency.P50)
	within(t, 1200, res.Latency.P99)
	require.EqualValues(t, 16, res.Requests, "dropped requests are counted by the generator, not here")
	require.InDelta(t, 10.0/3, res.RequestsPerSec, 1e-9, "timeouts and refusals are no throughput")

	s1, s2 := res.Series[1], res.Series[2]
	require.EqualValues(t, 5, s1.Requests)
	require.EqualValues(t, 0, s1.Answered)
	require.EqualValues(t, 90, s1.Latencies)
	within(t, 1200, s1.P50)
	require.EqualValues(t, 1, s2.Requests)
	require.Zero(t, s2.Latencies, "a second of instant failures has no latency to chart")
}

func TestRecorderCutShort(t *testing.T) {
	start := time.Now()
	r := NewRecorder(start, 10*time.Second)
	for i := range 25 {
		r.Record(start.Add(time.Duration(i)*100*time.Millisecond), time.Millisecond, 200)
	}
	res := r.Result(start.Add(2500 * time.Millisecond))
	require.InDelta(t, 2.5, res.DurationS, 1e-9)
	require.Len(t, res.Series, 3)
	require.InDelta(t, 0.5, res.Series[2].Seconds, 1e-9)
	require.EqualValues(t, 5, res.Series[2].Requests)
	require.InDelta(t, 10, res.Series[2].RPS, 1e-9)
	require.InDelta(t, 10, res.RequestsPerSec, 1e-9)

	empty := NewRecorder(start, time.Second).Result(start)
	require.Empty(t, empty.Series)
	require.Zero(t, empty.RequestsPerSec)
	require.Empty(t, empty.Status)
}

func TestRecorderBoundsErrorKinds(t *testing.T) {
	start := time.Now()
	r := NewRecorder(start, time.Second)
	for i := range 40 {
		r.RecordError(start, -1, fmt.Errorf("error %d", i))
	}
	res := r.Result(start.Add(time.Second))
	require.Len(t, res.ErrorKinds, maxErrorKinds+1)
	require.EqualValues(t, 40-maxErrorKinds, res.ErrorKinds["other"])
	require.EqualValues(t, 40, res.Status["error"])
}

func TestRecorderConcurrent(t *testing.T) {
	start := time.Now()
	r := NewRecorder(start, time.Minute)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				r.Record(time.Now(), time.Millisecond, 200)
				_, _, _, _ = r.Progress()
			}
		})
	}
	wg.Wait()
	n, errs, p50, _ := r.Progress()
	require.EqualValues(t, 8000, n)
	require.Zero(t, errs)
	within(t, 1, p50)
}

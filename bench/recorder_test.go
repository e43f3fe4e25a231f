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
	r.RecordError(at(2300*time.Millisecond), errors.New("connection refused"))
	// Late arrival for second 0, after second 2 opened: counted in second 0.
	r.Record(at(999*time.Millisecond), 10*time.Millisecond, 200)
	// After the window: in the totals, not in the series nor the rate.
	r.Record(at(4100*time.Millisecond), 3*time.Second, 200)

	res := r.Result(at(4 * time.Second))
	require.EqualValues(t, 9, res.Requests)
	require.EqualValues(t, 2, res.Errors)
	require.Equal(t, map[string]int64{"200": 7, "503": 1, "error": 1}, res.Status)
	require.Equal(t, map[string]int64{"connection refused": 1}, res.ErrorKinds)
	require.InDelta(t, 8.0/4, res.RequestsPerSec, 1e-9)
	require.InDelta(t, 4.0, res.DurationS, 1e-9)
	within(t, 3000, res.Latency.Max)
	require.EqualValues(t, 8, res.Histogram.Count(), "transport errors have no latency")

	require.Len(t, res.Series, 4)
	want := []struct {
		reqs, errs int64
		p50        float64
	}{{5, 1, 10}, {0, 0, 0}, {3, 1, 100}, {0, 0, 0}}
	for i, w := range want {
		p := res.Series[i]
		require.Equal(t, i, p.T)
		require.InDelta(t, 1, p.Seconds, 1e-9)
		require.Equal(t, w.reqs, p.Requests, "second %d", i)
		require.Equal(t, w.errs, p.Errors, "second %d", i)
		require.InDelta(t, float64(w.reqs), p.RPS, 1e-9)
		if w.p50 > 0 {
			within(t, w.p50, p.P50)
		}
	}
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
		r.RecordError(start, fmt.Errorf("error %d", i))
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

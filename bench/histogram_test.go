package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// within returns the HDR precision bound (3 significant digits) around v.
func within(t *testing.T, want, got float64) {
	t.Helper()
	require.InDelta(t, want, got, want*0.001+0.001, "want %g, got %g", want, got)
}

func TestPercentilesUniform(t *testing.T) {
	h := NewHistogram()
	for ms := 1; ms <= 100; ms++ {
		h.Record(time.Duration(ms) * time.Millisecond)
	}
	require.EqualValues(t, 100, h.Count())
	p := h.Percentiles()
	// 100 values: the p-th percentile is the ceil(p)-th smallest value.
	within(t, 50, p.P50)
	within(t, 90, p.P90)
	within(t, 99, p.P99)
	within(t, 100, p.P999)
	within(t, 100, p.Max)
	within(t, 25, h.Quantile(0.25))
	within(t, 1, h.Quantile(0))
}

func TestPercentilesSkewed(t *testing.T) {
	// 990 fast requests at 2 ms, 9 at 200 ms, one at 1.5 s.
	h := NewHistogram()
	for range 990 {
		h.Record(2 * time.Millisecond)
	}
	for range 9 {
		h.Record(200 * time.Millisecond)
	}
	h.Record(1500 * time.Millisecond)
	p := h.Percentiles()
	within(t, 2, p.P50)
	within(t, 2, p.P90)
	within(t, 2, p.P99)    // rank 990 is the last fast one
	within(t, 200, p.P999) // rank 999
	within(t, 1500, p.Max)
}

func TestHistogramMerge(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for ms := 1; ms <= 100; ms++ {
		d := time.Duration(ms) * time.Millisecond
		all.Record(d)
		if ms%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(b)
	require.Equal(t, all.Count(), a.Count())
	require.Equal(t, all.Percentiles(), a.Percentiles())
	within(t, 50, a.Percentiles().P50)

	c := a.Clone()
	a.Reset()
	require.Zero(t, a.Count())
	require.Equal(t, all.Percentiles(), c.Percentiles())
	require.Equal(t, Percentiles{}, a.Percentiles())
	require.Zero(t, a.Quantile(0.5))
	require.Nil(t, a.Spectrum())
}

func TestHistogramClamps(t *testing.T) {
	h := NewHistogram()
	h.Record(0)
	h.Record(-time.Second)
	h.Record(2 * time.Minute)
	require.EqualValues(t, 3, h.Count())
	within(t, 0.001, h.Quantile(0))
	within(t, 60_000, h.Percentiles().Max)
}

func TestSpectrum(t *testing.T) {
	h := NewHistogram()
	for ms := 1; ms <= 1000; ms++ {
		h.Record(time.Duration(ms) * time.Millisecond)
	}
	s := h.Spectrum()
	require.Greater(t, len(s), 20)
	for i := 1; i < len(s); i++ {
		require.Greater(t, s[i].Percentile, s[i-1].Percentile)
		require.GreaterOrEqual(t, s[i].Ms, s[i-1].Ms)
	}
	last := s[len(s)-1]
	require.EqualValues(t, 100, last.Percentile)
	within(t, 1000, last.Ms)
	// Points get denser towards the tail: more above 90% than below.
	above := 0
	for _, p := range s {
		if p.Percentile > 90 {
			above++
		}
	}
	require.Greater(t, above, len(s)/2)
}

// e2e's delivery latencies can pass a minute behind a backlog: they go in a
// histogram reaching an hour. What passes a histogram's end is counted.
func TestHistogramRangeAndClamping(t *testing.T) {
	short := NewHistogram()
	short.Record(90 * time.Second)
	within(t, 60_000, short.Percentiles().Max)
	require.EqualValues(t, 1, short.Clamped())

	long := NewLongHistogram()
	long.Record(90 * time.Second)
	within(t, 90_000, long.Percentiles().Max)
	require.Zero(t, long.Clamped())
	long.Record(2 * time.Hour)
	require.EqualValues(t, 1, long.Clamped())

	merged := NewHistogram()
	merged.Merge(short)
	require.EqualValues(t, 1, merged.Clamped())
	require.EqualValues(t, 1, merged.Clone().Clamped())
	merged.Reset()
	require.Zero(t, merged.Clamped())
}

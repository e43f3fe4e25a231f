package bench

import (
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: latencies are recorded in microseconds from 1µs to 60s
// (a request's latency: twice the longest timeout) or, for e2e's delivery
// latencies, an hour, with 3 significant digits (an error of at most 0.1%).
const (
	histMinUs     = 1
	histMaxUs     = 60_000_000
	histLongMaxUs = 3_600_000_000
	histDigits    = 3
)

// Histogram records latencies. It is not safe for concurrent use.
type Histogram struct {
	h       *hdr.Histogram
	maxUs   int64
	clamped int64
}

// NewHistogram returns an empty histogram covering 1µs–60s at 3 significant digits.
func NewHistogram() *Histogram { return newHistogram(histMaxUs) }

// NewLongHistogram returns an empty histogram covering 1µs–1h: a backlog's
// delivery latency can pass a minute.
func NewLongHistogram() *Histogram { return newHistogram(histLongMaxUs) }

func newHistogram(maxUs int64) *Histogram {
	return &Histogram{h: hdr.New(histMinUs, maxUs, histDigits), maxUs: maxUs}
}

// Record adds one latency. Values outside the histogram's range are
// clamped into it; Clamped counts those above it.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us > h.maxUs {
		h.clamped++
	}
	us = min(max(us, histMinUs), h.maxUs)
	_ = h.h.RecordValue(us) // in range: cannot fail
}

// Clamped counts the latencies recorded at the histogram's maximum because
// they were longer.
func (h *Histogram) Clamped() int64 { return h.clamped }

// Merge adds every value recorded in o to h.
func (h *Histogram) Merge(o *Histogram) {
	h.h.Merge(o.h)
	h.clamped += o.clamped
}

// Reset empties h, keeping its memory.
func (h *Histogram) Reset() {
	h.h.Reset()
	h.clamped = 0
}

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Clone returns a deep copy of h.
func (h *Histogram) Clone() *Histogram {
	return &Histogram{h: h.h.Clone(), maxUs: h.maxUs, clamped: h.clamped}
}

// Quantile returns the latency below which the fraction q (0..1) of the
// recorded values lie, in milliseconds; 0 when h is empty.
func (h *Histogram) Quantile(q float64) float64 {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return usToMs(h.h.ValueAtQuantile(q * 100))
}

// Percentiles are latencies in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

var summaryPercentiles = []float64{50, 90, 99, 99.9}

// Percentiles returns p50, p90, p99, p99.9 and max in milliseconds (zeros
// when h is empty).
func (h *Histogram) Percentiles() Percentiles {
	if h.h.TotalCount() == 0 {
		return Percentiles{}
	}
	v := h.h.ValueAtPercentilesSlice(summaryPercentiles)
	return Percentiles{
		P50: usToMs(v[0]), P90: usToMs(v[1]), P99: usToMs(v[2]), P999: usToMs(v[3]),
		Max: usToMs(h.h.Max()),
	}
}

// SpectrumPoint is one point of a percentile spectrum: Percentile percent of
// the requests took at most Ms milliseconds.
type SpectrumPoint struct {
	Percentile float64 `json:"p"`
	Ms         float64 `json:"ms"`
}

// spectrumTicks is the number of points per halving of the remaining
// fraction (HdrHistogram's "ticks per half distance").
const spectrumTicks = 5

// Spectrum returns the percentile spectrum of h, the data of HdrHistogram's
// latency-by-percentile plot: points get denser towards 100%, ending at the
// maximum. Its length grows with log2 of the count (about 10 per halving).
func (h *Histogram) Spectrum() []SpectrumPoint {
	if h.h.TotalCount() == 0 {
		return nil
	}
	br := h.h.CumulativeDistributionWithTicks(spectrumTicks)
	out := make([]SpectrumPoint, 0, len(br))
	for _, b := range br {
		p := SpectrumPoint{Percentile: b.Quantile, Ms: usToMs(b.ValueAt)}
		if n := len(out); n > 0 && out[n-1].Percentile == p.Percentile {
			out[n-1] = p
			continue
		}
		out = append(out, p)
	}
	return out
}

func usToMs(us int64) float64 { return float64(us) / 1000 }

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// HistogramQuantiles are quantiles of a Prometheus histogram, estimated
// from its buckets the way PromQL's histogram_quantile does: linear
// interpolation inside the bucket holding the rank. They are only as fine
// as the buckets.
type HistogramQuantiles struct {
	Metric string  `json:"metric"`
	Note   string  `json:"note"`
	Count  float64 `json:"count"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
}

// FetchHistogramQuantiles reads url (a Prometheus text exposition) and
// estimates p50 and p99 of the histogram name, summed over its label sets,
// in milliseconds (the histogram's unit being seconds).
func FetchHistogramQuantiles(ctx context.Context, url, name string) (*HistogramQuantiles, error) {
	buckets, err := FetchBuckets(ctx, url, name)
	if err != nil {
		return nil, err
	}
	q := DeltaQuantiles(name, nil, buckets)
	q.Note = "approximated from the histogram's buckets"
	return q, nil
}

// FetchBuckets reads the buckets of histogram name from url.
func FetchBuckets(ctx context.Context, url, name string) ([]Bucket, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: %s: %s", url, resp.Status)
	}
	return ParseHistogram(resp.Body, name)
}

// DeltaQuantiles estimates p50 and p99 (in ms) of what a histogram
// observed between two scrapes: after minus before, bucket by bucket.
func DeltaQuantiles(name string, before, after []Bucket) *HistogramQuantiles {
	delta := make([]Bucket, len(after))
	for i, b := range after {
		delta[i] = b
		for _, o := range before {
			if o.Le == b.Le {
				delta[i].Count -= o.Count
			}
		}
	}
	q := &HistogramQuantiles{Metric: name, Note: "observed between two scrapes; approximated from the histogram's buckets"}
	if len(delta) > 0 {
		q.Count = delta[len(delta)-1].Count
	}
	q.P50 = 1000 * BucketQuantile(0.50, delta)
	q.P99 = 1000 * BucketQuantile(0.99, delta)
	return q
}

// Bucket is a cumulative histogram bucket: Count observations ≤ Le.
type Bucket struct {
	Le    float64
	Count float64
}

// ParseHistogram reads the buckets of histogram name from a Prometheus text
// exposition, summing the series of every label set, sorted by bound (the
// last one +Inf). It returns an error when there are none.
func ParseHistogram(r io.Reader, name string) ([]Bucket, error) {
	sums := map[float64]float64{}
	prefix := name + "_bucket"
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		rest := line[len(prefix):]
		if !strings.HasPrefix(rest, "{") {
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			continue
		}
		le, ok := labelValue(rest[1:end], "le")
		if !ok {
			continue
		}
		bound, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		fields := strings.Fields(rest[end+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sums[bound] += v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(sums) == 0 {
		return nil, fmt.Errorf("bench: no histogram %s in the metrics", name)
	}
	out := make([]Bucket, 0, len(sums))
	for le, c := range sums {
		out = append(out, Bucket{Le: le, Count: c})
	}
	slices.SortFunc(out, func(a, b Bucket) int {
		switch {
		case a.Le < b.Le:
			return -1
		case a.Le > b.Le:
			return 1
		}
		return 0
	})
	return out, nil
}

// labelValue finds key="value" in a label list (values hold no escaped quotes here).
func labelValue(labels, key string) (string, bool) {
	for _, part := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok && k == key {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// BucketQuantile estimates quantile q (0..1) of cumulative buckets as
// PromQL's histogram_quantile: linear interpolation inside the bucket that
// holds the rank, the lower bound of the first bucket being 0; a rank in
// the +Inf bucket gives the highest finite bound. It returns 0 for an empty
// histogram.
func BucketQuantile(q float64, buckets []Bucket) float64 {
	if len(buckets) == 0 {
		return 0
	}
	total := buckets[len(buckets)-1].Count
	if total <= 0 {
		return 0
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, b := range buckets {
		if b.Count >= rank {
			if math.IsInf(b.Le, 1) {
				return prevLe
			}
			if b.Count == prevCount {
				return b.Le
			}
			return prevLe + (b.Le-prevLe)*(rank-prevCount)/(b.Count-prevCount)
		}
		prevLe, prevCount = b.Le, b.Count
	}
	return prevLe
}

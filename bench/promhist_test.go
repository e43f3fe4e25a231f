package bench

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDeltaQuantiles: what a histogram observed between two scrapes, not
// since the process started.
func TestDeltaQuantiles(t *testing.T) {
	before := []Bucket{{Le: 0.001, Count: 0}, {Le: 0.01, Count: 0}, {Le: 1, Count: 1000}, {Le: math.Inf(1), Count: 1000}}
	after := []Bucket{{Le: 0.001, Count: 500}, {Le: 0.01, Count: 1000}, {Le: 1, Count: 2000}, {Le: math.Inf(1), Count: 2000}}
	q := DeltaQuantiles("m", before, after)
	require.Equal(t, 1000.0, q.Count)
	require.InDelta(t, 1.0, q.P50, 0.01, "half of the new observations are under 1 ms")
	require.Less(t, q.P99, 10.0, "the slow ones were all before the first scrape")

	all := DeltaQuantiles("m", nil, after)
	require.Equal(t, 2000.0, all.Count)
	require.Greater(t, all.P99, 10.0)
}

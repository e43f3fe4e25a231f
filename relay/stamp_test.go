package relay

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// appendReceivedAt agrees with time.AppendFormat(ReceivedAtLayout) for
// times across years, zones and second boundaries, in any order (the
// shared per-second prefix is replaced whenever the second changes).
func TestAppendReceivedAtMatchesAppendFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	zones := []*time.Location{time.UTC, time.FixedZone("x", -7*3600-1800), time.FixedZone("y", 13*3600)}
	base := time.Date(2026, 12, 31, 23, 59, 59, 999_999_000, time.UTC)
	for i := range 20000 {
		var tm time.Time
		switch i % 3 {
		case 0: // around one second boundary, back and forth
			tm = base.Add(time.Duration(rng.IntN(4000)-2000) * time.Microsecond)
		case 1: // anywhere from 1970 to 2200
			tm = time.Unix(rng.Int64N(7_258_118_400), rng.Int64N(1e9))
		default: // nanoseconds that must be truncated, not rounded
			tm = base.Add(time.Duration(rng.IntN(1e9)))
		}
		tm = tm.In(zones[rng.IntN(len(zones))])
		want := tm.UTC().AppendFormat(nil, ReceivedAtLayout)
		require.Equal(t, string(want), string(appendReceivedAt([]byte("x"), tm)[1:]), "%v", tm)
	}
}

func BenchmarkAppendReceivedAt(b *testing.B) {
	buf := make([]byte, 0, 64)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		buf = appendReceivedAt(buf[:0], now)
	}
}

package backoff

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCeilingDoublesUpToMax(t *testing.T) {
	p := Policy{Initial: time.Second, Max: 10 * time.Second}
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 60: 10 * time.Second} {
		require.Equal(t, want, p.Ceiling(n), "n=%d", n)
	}
}

func TestDelayIsFullJitter(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Minute}
	require.Equal(t, time.Duration(0), p.Delay(3, func() float64 { return 0 }))
	require.Equal(t, 2*time.Second, p.Delay(3, func() float64 { return 0.5 }))
	for range 1000 {
		d := p.Delay(4, nil)
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, 8*time.Second)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		require.Equal(t, tc.want, RetryAfter(tc.in, now), tc.in)
	}
}

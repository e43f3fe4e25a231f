// Package backoff computes retry delays: exponential with full jitter, and
// the Retry-After header an instance may send.
package backoff

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// Policy is exponential backoff with full jitter: the n-th retry waits a
// uniformly random time in [0, min(Max, Initial·2^(n-1))).
type Policy struct {
	Initial time.Duration
	Max     time.Duration
}

// Delay returns the wait before retry n (n ≥ 1). rnd returns a float in
// [0, 1); nil uses math/rand/v2.
func (p Policy) Delay(n int, rnd func() float64) time.Duration {
	if rnd == nil {
		rnd = rand.Float64
	}
	ceiling := p.Ceiling(n)
	return time.Duration(rnd() * float64(ceiling))
}

// Ceiling is the largest delay retry n may wait.
func (p Policy) Ceiling(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	c := p.Initial
	for i := 1; i < n && c < p.Max; i++ {
		c *= 2
	}
	return min(c, p.Max)
}

// RetryAfter parses a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when the header is absent or malformed.
func RetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	s, err := strconv.Atoi(v)
	if errors.Is(err, strconv.ErrRange) && v[0] != '-' {
		s, err = math.MaxInt, nil // digits past int64: "much later" too
	}
	if err == nil {
		if s < 0 {
			return 0
		}
		if s > int(math.MaxInt64/int64(time.Second)) {
			return time.Duration(math.MaxInt64) // "much later": the caller caps it (max_age)
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

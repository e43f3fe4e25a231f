package backoff

import (
	"testing"
	"time"
)

// A huge delay-seconds value must not wrap around: an instance asking for
// "as long as possible" must get at least what it asked up to the cap, never
// a tiny or negative delay.
func TestRegressionRetryAfterHugeValuesDoNotWrap(t *testing.T) {
	now := time.Now()
	for _, v := range []string{"9223372037", "18446744074", "9999999999", "99999999999999", "9223372036854775808", "99999999999999999999"} {
		d := RetryAfter(v, now)
		t.Logf("Retry-After: %s -> %v", v, d)
		if d < 24*time.Hour {
			t.Errorf("Retry-After: %s parsed as %v (wrapped around); want a huge delay", v, d)
		}
	}
}

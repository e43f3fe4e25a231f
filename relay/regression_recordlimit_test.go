package relay

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Regression (found by a hostile-input run): against topics whose
// max.message.bytes is below what max_body_bytes lets in, a body with one
// entry too large was answered 413, but its other entries, for other
// partitions, were written, and written again at every retry of Meta's.
// With MaxRecordBytes (serve sets it from the topics' limit) such a body
// is refused whole, and nothing is written.
func TestRegressionTooLargeEntryRefusesTheWholeBody(t *testing.T) {
	h := newHarness(t, func(c *IngressConfig) { c.MaxRecordBytes = 16 << 10 })
	big := strings.Repeat("y", 20<<10)
	body := fmt.Appendf(nil, `{"object":"page","entry":[{"id":"104857392810345","m":"small"},{"id":"209384756102938","m":%q}]}`, big)
	for range 3 { // Meta retries
		code, answer := h.post(body, sign(testSecret, body))
		require.Equal(t, 413, code, answer)
		require.Contains(t, answer, "larger than the topics accept")
	}
	require.Empty(t, records(t, h.broker.addr(), testEvents, 2), "nothing of a refused body is written")

	small := []byte(`{"object":"page","entry":[{"id":"104857392810345","m":"small"}]}`)
	code, answer := h.post(small, sign(testSecret, small))
	require.Equal(t, 200, code, answer)
	require.Len(t, records(t, h.broker.addr(), testEvents, 2), 1)
}

// Regression (found in review): entries of one partition that each fit
// the topics' limit were batched together past it (the batch bound was
// max_batch_bytes), so the broker refused the batch: 413, with the body's
// other entries written. serve lowers the producer's batch bound to the
// limit too (LimitBatchBytes), so such entries go in batches of their own.
func TestRegressionEntriesThatFitAreNotBatchedPastTheTopicsLimit(t *testing.T) {
	const limit = 16 << 10
	h := newHarness(t, func(c *IngressConfig) { c.MaxRecordBytes = limit })
	h.producer.LimitBatchBytes(limit) // as serve does
	h.broker.setMaxMessageBytes(testEvents, limit)
	mid := strings.Repeat("y", 10<<10)
	body := fmt.Appendf(nil, `{"object":"page","entry":[{"id":"209384756102938","m":"small"},{"id":"104857392810345","m":%q},{"id":"17841405822304914","m":%q}]}`, mid, mid)
	code, answer := h.post(body, sign(testSecret, body))
	require.Equal(t, 200, code, answer)
	require.Len(t, records(t, h.broker.addr(), testEvents, 2), 3, "every entry written, once")
}

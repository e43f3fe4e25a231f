package relay

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Regression test for a bug found in review and since fixed; the
// comment describes the bug it guards against.
//
// TestRegressionLaterRoundSentAfterEarlierRoundFailed: one webhook body whose
// entries for one tenant exceed MaxBatchBytes is split by flush.group into
// rounds, sent one after another "so that the partition's order holds".
// But Producer.send sends round n+1 even when round n of the same
// partition failed: the tail of the body is written while its head is
// not, the body is answered 503, and Meta's retry writes the whole body
// again. The partition then holds e1, e2, e0, e1, e2: e1 is delivered
// before e0, against "within one request, a tenant's entries keep body
// order" and the per-tenant order guarantee.
func TestRegressionLaterRoundSentAfterEarlierRoundFailed(t *testing.T) {
	b := startBroker(t)
	p := brokerProducer(t, b, ProducerConfig{
		MaxBatchBytes: 150, // each ~130-byte record gets a round of its own
		AckTimeout:    2 * time.Second,
	})

	// The first produce request (round 0) fails with a retriable error,
	// as a leader change or a slow ISR would make it; later ones succeed.
	b.c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		return produceAnswer(req, kerr.RequestTimedOut.Code), nil, true // handles one request only
	})

	batch := func() *Batch {
		var bt Batch
		for i := range 3 {
			bt.Records = append(bt.Records, Record{
				Topic: testEvents, Partition: 0, Key: []byte("acme"),
				Value: fmt.Appendf(nil, `{"e":%d,"pad":%q}`, i, strings.Repeat("x", 90)),
				Time:  time.Now(),
			})
		}
		return &bt
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.Error(t, p.Produce(ctx, batch()), "round 0 failed: the batch is not acknowledged (503)")

	written := records(t, b.addr(), testEvents, 1)
	var got []string
	for _, r := range written {
		got = append(got, string(r.value[:7]))
	}
	// Meta retries the 503; this time everything is acknowledged.
	require.NoError(t, p.Produce(ctx, batch()))
	all := records(t, b.addr(), testEvents, 1)
	var order []string
	for _, r := range all {
		order = append(order, string(r.value[:7]))
	}
	t.Logf("after the failed produce: %v; after the retry: %v", got, order)
	require.Empty(t, got, "records of a later round were written although an earlier round of the same partition failed")
}

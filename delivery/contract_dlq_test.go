package delivery

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDLQRecordsAreDeadLettersOrMarkers pins relay.dlq's record contract as
// the README gives it to programs that read it: every record is a dead
// letter (a Meta webhook body with the DLQ's three headers) or, after a
// redrive, a marker with relay-dlq-marker: redriven and the value's four
// keys.
func TestDLQRecordsAreDeadLettersOrMarkers(t *testing.T) {
	e := newTestEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	te := simpleEvents("acme", "1", "acme", 1)[0]
	ev := &Event{Key: []byte(te.Tenant), Value: te.Value, Headers: te.headers(), Time: time.Now()}
	ev.fill()
	require.NoError(t, e.dlq.DeadLetter(ctx, ev, "status 400", 1, time.Now()))
	n, err := e.dlq.Redrive(ctx, "acme", 0)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	recs := e.records(testDLQTopic, 0)
	require.Len(t, recs, 2)
	for _, r := range recs {
		if r.header(headerDLQMarker) != "" {
			require.Equal(t, "redriven", r.header(headerDLQMarker))
			require.Equal(t, "acme", r.header(HeaderTenant))
			require.Empty(t, r.header(HeaderDLQReason), "a marker is no dead letter")
			var m map[string]any
			require.NoError(t, json.Unmarshal(r.Value, &m))
			require.Equal(t, "acme", m["tenant"])
			require.EqualValues(t, recs[0].Offset, m["redriven_through"])
			require.EqualValues(t, 1, m["count"])
			require.Contains(t, m, "at")
			continue
		}
		var body struct {
			Object *string           `json:"object"`
			Entry  []json.RawMessage `json:"entry"`
		}
		require.NoError(t, json.Unmarshal(r.Value, &body))
		require.NotNil(t, body.Object, "relay.dlq offset %d: value %s is not a Meta webhook body", r.Offset, r.Value)
		require.Len(t, body.Entry, 1, "relay.dlq offset %d: value %s is not an event", r.Offset, r.Value)
		require.Equal(t, "status 400", r.header(HeaderDLQReason))
		require.Equal(t, "1", r.header(HeaderDLQAttempts))
		require.NotEmpty(t, r.header(HeaderDLQFirstAttemptAt))
		require.NotEmpty(t, r.header(HeaderEventID))
	}
	require.NotEmpty(t, recs[1].header(headerDLQMarker), "the marker follows what it covers")
}

package relay

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// While Kafka is away every flush fails, up to hundreds a second: the
// failures are logged once, then once per failureLogEvery with the count
// since, and their end once. Every failed request used to be a line.
func TestProduceFailuresAreLoggedWithoutFlooding(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	clock := time.Unix(1_800_000_000, 0)
	l := failureLog{now: func() time.Time { return clock }}
	down := errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")

	l.report(log, nil, 5) // working: nothing to say
	for range 200 {       // 2 s of failures at 100 a second
		l.report(log, down, 3)
		clock = clock.Add(10 * time.Millisecond)
	}
	require.Equal(t, 1, strings.Count(out.String(), "produce failed"), out.String())
	clock = clock.Add(failureLogEvery)
	l.report(log, down, 3)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2)
	require.Contains(t, lines[1], "requests=200 records=600", "the count since the last line")
	require.Contains(t, lines[1], "connection refused")

	l.report(log, nil, 5)
	l.report(log, nil, 5)
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[2], "produce works again")
	require.Contains(t, lines[2], "failed_requests=201")

	l.report(log, down, 1) // a new outage is said at once
	require.Equal(t, 3, strings.Count(out.String(), "produce failed"))
}

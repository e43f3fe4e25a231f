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
// since, and their end once, failureLogEvery after the last failure.
// Every failed request used to be a line.
func TestProduceFailuresAreLoggedWithoutFlooding(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	clock := time.Unix(1_800_000_000, 0)
	l := failureLog{now: func() time.Time { return clock }}
	down := errors.New("dial tcp 127.0.0.1:9092: connect: connection refused")
	lines := func() []string { return strings.Split(strings.TrimSpace(out.String()), "\n") }

	l.report(log, nil, 5) // working: nothing to say
	for range 200 {       // 2 s of failures at 100 a second
		l.report(log, down, 3)
		clock = clock.Add(10 * time.Millisecond)
	}
	require.Equal(t, 1, strings.Count(out.String(), "produce failed"), out.String())
	clock = clock.Add(failureLogEvery)
	l.report(log, down, 3)
	require.Len(t, lines(), 2)
	require.Contains(t, lines()[1], "requests=200 records=600", "the count since the last line")
	require.Contains(t, lines()[1], "connection refused")

	l.report(log, nil, 5) // a success right after a failure: not over yet
	require.Len(t, lines(), 2)
	clock = clock.Add(failureLogEvery)
	l.report(log, nil, 5)
	l.report(log, nil, 5)
	require.Len(t, lines(), 3)
	require.Contains(t, lines()[2], "produce works again")
	require.Contains(t, lines()[2], "failed_requests=201")

	l.report(log, down, 1) // a new outage is said at once
	require.Equal(t, 3, strings.Count(out.String(), "produce failed"))
}

// One leader away: flushes touching it fail and the others succeed, by
// turns. That is one outage, not a new one at every failure (a first
// version said "works again" at each success, two lines a flush).
func TestInterleavedProduceFailuresAreOneOutage(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	clock := time.Unix(1_800_000_000, 0)
	l := failureLog{now: func() time.Time { return clock }}
	down := errors.New("produce relay.events/3: [5] Leader Not Available")
	for i := range 400 { // 4 s, every other flush failing
		if i%2 == 0 {
			l.report(log, down, 1)
		} else {
			l.report(log, nil, 1)
		}
		clock = clock.Add(10 * time.Millisecond)
	}
	require.Equal(t, 1, strings.Count(out.String(), "\n"), out.String())
	require.NotContains(t, out.String(), "works again")
}

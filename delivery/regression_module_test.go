package delivery

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// flakyModule fails the event at failOffset once with its context alive,
// as a module hitting a transient error would, and records what it was
// handed, in order.
type flakyModule struct {
	mu         sync.Mutex
	failOffset int64
	failed     bool
	handled    []int64
}

func (m *flakyModule) Name() string { return "flaky" }

func (m *flakyModule) Handle(_ context.Context, ev *Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handled = append(m.handled, ev.Offset)
	if ev.Offset == m.failOffset && !m.failed {
		m.failed = true
		return errors.New("transient")
	}
	return nil
}

func (m *flakyModule) seen() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int64(nil), m.handled...)
}

// Regression: a module error with the context still alive made the worker
// move on to the next event. The failed event was never handed again in
// that generation (later events went first), the commit point stayed
// behind it, and the tracker grew by an entry per later event.
func TestRegressionModuleErrorHandsTheEventAgain(t *testing.T) {
	const group = "flaky.group"
	b := newBareCluster(t, "flaky.events", 1)
	b.produce(0, "e0", "e1", "e2", "e3", "e4")
	mod := &flakyModule{failOffset: 1}
	b.run(group, mod)
	require.Eventually(t, func() bool { return b.committed(group, 0) == 5 }, waitFor, 20*time.Millisecond, "every event committed")
	require.Equal(t, []int64{0, 1, 1, 2, 3, 4}, mod.seen(), "offset 1 handed again before offset 2")
}

// With a window above 1, two handlers may finish at once; their commit
// points reach the committer in the tracker's order only if the tracker
// reports them while it still holds its lock. (Reported after it, a
// lower point could overwrite a higher one: a commit going back.)
func TestTrackerReportsUnderItsLock(t *testing.T) {
	tr := newTracker(0)
	tr.add(0)
	called := false
	tr.done(0, func(next int64) {
		called = true
		require.False(t, tr.mu.TryLock(), "the tracker's lock is held while it reports")
		require.Equal(t, int64(1), next)
	})
	require.True(t, called)
}

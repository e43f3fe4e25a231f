package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// GOGC is 400 while the live heap is small and falls to Go's default as
// it grows, so that the heap's headroom stays under 256 MiB or the live
// heap itself: the embedded broker's index grows with the data it keeps,
// and a soak of ten minutes at 2,000 events/s had the process at five
// times its 110 MB live heap.
func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 400},
		{20 << 20, 400},
		{64 << 20, 400},
		{128 << 20, 200},
		{200 << 20, 128},
		{256 << 20, 100},
		{4 << 30, 100},
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
		if headroom := tc.live * uint64(gcPercentFor(tc.live)) / 100; tc.live > 0 && headroom > max(gcHeadroom, tc.live) {
			t.Errorf("live %d MiB: headroom %d MiB", tc.live>>20, headroom>>20)
		}
	}
}

// The heap goal follows the live heap from the first collections on: a
// first version looked every 10 s, so a relay whose live heap grew at
// start (the embedded broker rebuilding its index) ran meanwhile with a
// goal five times it.
func TestTuneGCFollowsEachCollection(t *testing.T) {
	if os.Getenv("GOGC") != "" {
		t.Skip("GOGC is set: the relay leaves it alone")
	}
	before := debug.SetGCPercent(100)
	stop := tuneGC()
	defer func() {
		// The hook may be running now: stop it, then let one more
		// collection pass it before putting GOGC back for later tests.
		stop()
		runtime.GC()
		runtime.GC()
		debug.SetGCPercent(before)
	}()
	keep := make([][]byte, 0, 384)
	for range 384 { // the live heap grows to 384 MiB
		keep = append(keep, make([]byte, 1<<20))
	}
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/heap/goal:bytes"}}
	var live, goal uint64
	deadline := time.Now().Add(5 * time.Second) // the first version looked only every 10 s
	for time.Now().Before(deadline) {
		runtime.GC() // the hook runs just after, in the finalizer goroutine
		metrics.Read(s)
		live, goal = s[0].Value.Uint64(), s[1].Value.Uint64()
		if live >= 384<<20 && goal-live <= max(gcHeadroom, live)*11/10 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.KeepAlive(keep)
	require.LessOrEqual(t, goal-live, max(uint64(gcHeadroom), live)*11/10,
		"live %d MiB, heap goal %d MiB", live>>20, goal>>20)
}

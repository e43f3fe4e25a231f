package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// The relay collects garbage less often than Go's default while its live
// heap is small: its garbage is per request, and fewer collections bought
// +25 % delivered events/s in relay bench e2e on 2 cores. But the embedded
// broker's index of record batches grows with what it keeps (about 70
// bytes a batch), and GOGC=400 would let the heap grow to five times
// that. So the headroom above the live heap is kept under gcHeadroom, or
// the live heap itself as with Go's default, whichever is larger.
const (
	gcHeadroom   = 256 << 20
	maxGCPercent = 400
)

// gcPercentFor is the GOGC for a live heap of live bytes: 400 up to a
// quarter of gcHeadroom, then less, down to Go's default 100 from
// gcHeadroom on.
func gcPercentFor(live uint64) int {
	if live == 0 {
		return maxGCPercent
	}
	return int(min(max(100*gcHeadroom/live, 100), maxGCPercent))
}

// tuneGC sets GOGC from the live heap after every collection until stop is
// called (main never does); GOGC in the environment keeps it from being
// called. Before the first collection the heap goal is Go's minimum (4 MiB)
// times 4, so 400 is safe until then; from then on each collection's live
// heap sets the next goal, also while the embedded broker rebuilds its
// index at a start.
func tuneGC() (stop func()) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	cur := maxGCPercent
	debug.SetGCPercent(cur)
	var stopped atomic.Bool
	// A finalizer runs after the collection that found its object
	// unreachable: a hook called once per collection, re-armed each time.
	var arm func()
	arm = func() {
		runtime.SetFinalizer(new([32]byte), func(*[32]byte) {
			if stopped.Load() {
				return
			}
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				if p := gcPercentFor(sample[0].Value.Uint64()); p != cur {
					debug.SetGCPercent(p)
					cur = p
				}
			}
			arm()
		})
	}
	arm()
	return func() { stopped.Store(true) }
}

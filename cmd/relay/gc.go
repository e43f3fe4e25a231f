package main

import (
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The relay collects garbage less often than Go's default while its live
// heap is small: its garbage is per request, and fewer collections bought
// +25 % delivered events/s in relay bench e2e on 2 cores. But the embedded
// broker's index of record batches grows with what it keeps (about 70
// bytes a batch), and GOGC=400 would let the heap grow to five times
// that. So the headroom above the live heap is kept under gcHeadroom, or
// the live heap itself as with Go's default, whichever is larger.
const (
	gcHeadroom     = 256 << 20
	maxGCPercent   = 400
	gcTuneInterval = 10 * time.Second
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

// tuneGC sets GOGC from the live heap now and every gcTuneInterval, for
// the life of the process. GOGC in the environment turns it off.
func tuneGC() {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	live := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	cur := gcPercentFor(live())
	debug.SetGCPercent(cur)
	go func() {
		for range time.Tick(gcTuneInterval) {
			if p := gcPercentFor(live()); p != cur {
				debug.SetGCPercent(p)
				cur = p
			}
		}
	}()
}

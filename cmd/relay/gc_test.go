package main

import "testing"

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

package bench

import (
	"syscall"
	"time"
)

// preciseSleepMax is the longest wait the scheduler sleeps with
// preciseSleep; longer ones use a runtime timer, which wakes up to about 1
// ms late when the process is idle (the netpoller waits in whole
// milliseconds).
const preciseSleepMax = 2 * time.Millisecond

// pacingQuantum is the shortest sleep of the open-loop scheduler: at rates
// above 1/pacingQuantum (4000/s) requests go out in small groups rather
// than one wake-up each; a request is at most this late.
const pacingQuantum = 250 * time.Microsecond

// preciseSleep blocks the calling thread in nanosleep(2): it wakes within
// the kernel's timer slack (50 µs by default) instead of the runtime
// timers' millisecond.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}

//go:build !linux

package bench

import "time"

// preciseSleepMax is the longest wait the scheduler sleeps with preciseSleep.
const preciseSleepMax = 2 * time.Millisecond

// preciseSleep sleeps d; outside Linux it is time.Sleep.
func preciseSleep(d time.Duration) { time.Sleep(d) }

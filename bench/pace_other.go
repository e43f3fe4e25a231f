//go:build !linux

package bench

import "time"

// preciseSleepMax is the longest wait the scheduler sleeps with preciseSleep.
const preciseSleepMax = 2 * time.Millisecond

// pacingQuantum is the shortest sleep of the open-loop scheduler.
const pacingQuantum = 250 * time.Microsecond

// preciseSleep sleeps d; outside Linux it is time.Sleep.
func preciseSleep(d time.Duration) { time.Sleep(d) }

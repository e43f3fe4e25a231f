//go:build race

package relay

// raceEnabled: under the race detector sync.Pool drops items at random, so
// allocation counts are only checked without it (CI runs both ways:
// -race for the tests, the benchmarks without).
const raceEnabled = true

package delivery

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// outageRun is what one run of TestOutage_OtherTenantFlowsAtFullSpeed saw.
type outageRun struct {
	outage     bool
	rateB      float64       // B's delivered events/s over the window
	phases     [3]float64    // B's delivered events/s while A refused, answered 503, hung
	window     time.Duration // B's rate is measured over [t0, t0+window)
	maxBreaker float64       // highest relay_delivery_breaker_state{tenant="A"} sampled
	maxPaused  float64       // highest relay_delivery_paused_partitions sampled
}

// TestOutage_OtherTenantFlowsAtFullSpeed: tenants A and B, each with a
// backlog in its own partition. In an outage run, A's instance first
// refuses connections (nothing listens on its port), then answers 503,
// then hangs (each request blocks past the sink's Timeout), while B is
// delivered to; B's delivered events/s over that window is compared with a
// run in which A is healthy (same test, same machine, same load; the
// medians of a few interleaved runs of each, so that one noisy run does
// not decide). A's breaker opens and its partition is paused; when A
// recovers it receives every event, in order, none dead-lettered.
//
// Not parallel: the throughput comparison runs alone.
func TestOutage_OtherTenantFlowsAtFullSpeed(t *testing.T) {
	const (
		runsEach = 5
		nA       = 30
		nB       = 5000 // more than B can take in a run: B is never idle
		phase    = 300 * time.Millisecond
		warmup   = 200 * time.Millisecond
	)
	e := newTestEnv(t, 2)

	// A's address: a port nothing listens on (connections refused) until
	// the outage moves on, or a healthy run starts an instance on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addrA := ln.Addr().String()
	require.NoError(t, ln.Close())
	listenA := func() net.Listener {
		var l net.Listener
		require.Eventually(t, func() bool {
			l, err = net.Listen("tcp", addrA)
			return err == nil
		}, waitFor, 10*time.Millisecond, "listen on %s again", addrA)
		return l
	}
	// B's instance takes a millisecond per event, as a fast real instance
	// would: B's rate is then what the relay makes of its instance, not
	// what is left of this shared machine's CPU (see below).
	instB := newInstance(t, e.ca, e.caFile, func(http.ResponseWriter, *http.Request, *hit) int {
		time.Sleep(time.Millisecond)
		return http.StatusOK
	})
	instB.setLight()
	e.setTenants(
		tenantConf{ID: "A", Account: "1", URL: "https://" + addrA + "/hooks/meta", CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "B", Account: "2", URL: instB.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	evsA := simpleEvents("A", "1", "A", nA)
	evsB := simpleEvents("B", "2", "B", nB)
	e.produce(e.partition("A"), evsA...)
	e.produce(e.partition("B"), evsB...)
	wantA := make([]string, nA)
	for i, ev := range evsA {
		wantA[i] = ev.ID
	}

	// hang blocks until the relay gives up on the request (its Timeout),
	// far longer than it would take to answer.
	hang := func(_ http.ResponseWriter, r *http.Request, _ *hit) int {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return http.StatusGatewayTimeout // marks the hung requests; nobody reads it
	}
	hung := func(in *testInstance) bool {
		for _, h := range in.allHits() {
			if h.Status == http.StatusGatewayTimeout {
				return true
			}
		}
		return false
	}

	run := func(i int, outage bool) outageRun {
		res := outageRun{outage: outage}
		instB.reset()
		var instA *testInstance
		if !outage {
			instA = startInstance(t, listenA(), e.ca, e.caFile, answer(200))
		}
		r := e.start(fmt.Sprintf("relay.test.outage.%d", i), func(c *SinkConfig) {
			c.Timeout = 250 * time.Millisecond
			c.MaxAttempts = 1 << 30 // the outage must not dead-letter anything
		}, nil)

		// The same sampling of the gauges in both kinds of runs.
		var (
			mu                    sync.Mutex
			maxBreaker, maxPaused float64
			stop                  = make(chan struct{})
			once                  sync.Once
			wg                    sync.WaitGroup
		)
		wg.Go(func() {
			tk := time.NewTicker(10 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				b, _ := gatherValue(r.metrics, "relay_delivery_breaker_state", "tenant", "A")
				p, _ := gatherValue(r.metrics, "relay_delivery_paused_partitions")
				mu.Lock()
				maxBreaker, maxPaused = max(maxBreaker, b), max(maxPaused, p)
				mu.Unlock()
			}
		})
		stopSampling := func() {
			once.Do(func() { close(stop) })
			wg.Wait()
		}
		defer stopSampling()
		sampled := func() (float64, float64) {
			mu.Lock()
			defer mu.Unlock()
			return maxBreaker, maxPaused
		}

		require.Eventually(t, func() bool { return instB.count() > 0 }, waitFor, tick)
		t0 := instB.allHits()[0].At.Add(warmup)
		require.Eventually(t, func() bool { return time.Since(t0) >= 0 }, waitFor, tick)
		var end time.Time
		var marks []time.Time
		if outage {
			// Refusing: until a phase has passed and A's breaker opened.
			require.Eventually(t, func() bool {
				b, _ := sampled()
				return time.Since(t0) >= phase && b == 2
			}, waitFor, tick)
			// 503s: until a phase has passed and A answered one.
			instA = startInstance(t, listenA(), e.ca, e.caFile, answer(http.StatusServiceUnavailable))
			t1 := time.Now()
			marks = append(marks, t1)
			require.Eventually(t, func() bool { return time.Since(t1) >= phase && instA.count() > 0 }, waitFor, tick)
			// Hanging: until a phase has passed and a request timed out.
			instA.setRespond(hang)
			t2 := time.Now()
			marks = append(marks, t2)
			require.Eventually(t, func() bool { return time.Since(t2) >= phase && hung(instA) }, waitFor, tick)
			end = time.Now()
		} else {
			// As long as an outage typically lasts (3 phases, each a bit
			// longer than phase while waiting for its condition).
			end = t0.Add(3*phase + 200*time.Millisecond)
			require.Eventually(t, func() bool { return time.Since(end) >= 0 }, waitFor, tick)
		}
		res.window = end.Sub(t0)
		hitsB := instB.allHits()
		inWindow := 0
		for _, h := range hitsB {
			if !h.At.Before(t0) && h.At.Before(end) {
				inWindow++
			}
		}
		require.Less(t, len(hitsB), nB, "B's backlog ran out during the window; make it longer")
		res.rateB = float64(inWindow) / res.window.Seconds()
		if outage {
			bounds := []time.Time{t0, marks[0], marks[1], end}
			for k := range 3 {
				n := 0
				for _, h := range hitsB {
					if !h.At.Before(bounds[k]) && h.At.Before(bounds[k+1]) {
						n++
					}
				}
				res.phases[k] = float64(n) / bounds[k+1].Sub(bounds[k]).Seconds()
				require.Positive(t, n, "B receives while A %s", []string{"refuses connections", "answers 503", "hangs"}[k])
			}
		}

		if outage {
			b, p := sampled()
			require.Equal(t, float64(2), b, "A's breaker opened")
			require.GreaterOrEqual(t, p, float64(1), "A's partition was paused")
			require.Empty(t, instA.delivered(), "nothing was delivered to A during its outage")
			instA.setRespond(answer(200)) // A recovers
		}
		instA.waitDelivered(nA)
		require.Equal(t, wantA, instA.delivered(), "A: every event, in order, none missing")
		require.NoError(t, r.stop())
		instA.close()
		stopSampling()
		res.maxBreaker, res.maxPaused = sampled()
		return res
	}

	// Runs alternate healthy, outage, healthy, …, healthy: each outage run
	// is bracketed by two healthy runs. The machine is shared (other
	// builds and benchmarks come and go), so B's throughput drifts from
	// run to run; the ratio of an outage run to the mean of the two
	// healthy runs around it cancels that drift, and the median of those
	// ratios is what is held to 10%. The medians of each kind of run are
	// reported too. (With B's instance answering at once, B is CPU-bound
	// on a 2-core machine shared with other work, and the noise alone,
	// measured with no outage at all, moved that median ratio by up to 6%:
	// too close to the bound for a test that must pass reliably.)
	var healthy, outage, ratios []float64
	for i := range 2*runsEach + 1 {
		res := run(i, i%2 == 1)
		t.Logf("run %d outage=%v: B %.0f events/s over %v (per phase: %.0f) (A breaker max %v, paused max %v)",
			i, res.outage, res.rateB, res.window.Round(time.Millisecond), res.phases, res.maxBreaker, res.maxPaused)
		if res.outage {
			outage = append(outage, res.rateB)
		} else {
			healthy = append(healthy, res.rateB)
		}
	}
	for k, o := range outage {
		ratios = append(ratios, o/((healthy[k]+healthy[k+1])/2))
	}
	require.Empty(t, e.deadLetters("A"), "nothing of A dead-lettered")
	require.Empty(t, e.deadLetters("B"))

	mh, mo, mr := median(healthy), median(outage), median(ratios)
	t.Logf("B throughput: median %.0f events/s over %d runs with A healthy, %.0f events/s over %d runs during A's outage (%+.1f%%); median outage/bracketing-healthy ratio %.3f",
		mh, len(healthy), mo, len(outage), 100*(mo-mh)/mh, mr)
	require.InDelta(t, 1, mr, 0.10, "B's throughput during A's outage must be within 10% of B's throughput without it")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

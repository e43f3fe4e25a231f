package main

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// loadGen posts unique signed Messenger bodies from several goroutines and
// remembers which of them were answered 200, by their message id.
type loadGen struct {
	url     string
	tenants []testTenant // bodies go to each tenant's first account in turn
	prefix  string

	mu        sync.Mutex
	acked     map[string]string // mid → tenant, answered 200
	attempted map[string]string // mid → tenant, sent
	statuses  map[int]int
	errs      map[string]int
	// after is set by markAfter: requests started after it are recorded
	// in lateStatuses / lateErrs as well.
	after        time.Time
	lateStatuses map[int]int
	lateErrs     map[string]int
	lateOK       []string

	wg sync.WaitGroup
}

// startLoad starts workers posting to url until ctx is done, the relay
// refuses connections, or each worker sent maxPerWorker requests.
func startLoad(ctx context.Context, t *testing.T, url, prefix string, workers, maxPerWorker int, tenants ...testTenant) *loadGen {
	g := &loadGen{
		url: url, tenants: tenants, prefix: prefix,
		acked: map[string]string{}, attempted: map[string]string{},
		statuses: map[int]int{}, errs: map[string]int{},
		lateStatuses: map[int]int{}, lateErrs: map[string]int{},
	}
	// Bodies are built up front from the fixture: the workers only post.
	base := readFixture(t, "messenger_message.json")
	for w := range workers {
		g.wg.Go(func() {
			c := newHTTPClient()
			c.Timeout = 20 * time.Second
			defer c.CloseIdleConnections()
			for n := range maxPerWorker {
				if ctx.Err() != nil {
					return
				}
				tn := tenants[(w+n)%len(tenants)]
				mid := fmt.Sprintf("%s_w%d_n%d", prefix, w, n)
				body := strings.Replace(string(base), "104857392810345", tn.Accounts[0], -1)
				body = strings.Replace(body, "m_Ae3kXq1b9Lz0mVq7dRk2sTqZb8nW4yPc", mid, 1)
				g.mu.Lock()
				g.attempted[mid] = tn.ID
				late := !g.after.IsZero()
				g.mu.Unlock()
				r, err := post(c, url, []byte(body), sign([]byte(body), testAppSecret))
				g.mu.Lock()
				if err != nil {
					g.errs[errKind(err)]++
					if late {
						g.lateErrs[errKind(err)]++
					}
				} else {
					g.statuses[r.Status]++
					if r.Status == http.StatusOK {
						g.acked[mid] = tn.ID
					}
					if late {
						g.lateStatuses[r.Status]++
						if r.Status == http.StatusOK {
							g.lateOK = append(g.lateOK, mid)
						}
					}
				}
				g.mu.Unlock()
				if err != nil && isConnRefused(err) {
					return // the relay is gone
				}
			}
		})
	}
	return g
}

// markAfter starts recording the outcomes of requests sent from now on.
func (g *loadGen) markAfter() {
	g.mu.Lock()
	g.after = time.Now()
	g.mu.Unlock()
}

func (g *loadGen) ackedCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.acked)
}

// wait waits for the workers to stop.
func (g *loadGen) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("load workers did not stop within %v", timeout)
	}
}

func (g *loadGen) summary() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return fmt.Sprintf("sent %d, answered 200: %d, statuses %v, errors %v", len(g.attempted), len(g.acked), g.statuses, g.errs)
}

// errKind names an error for the summary without its addresses.
func errKind(err error) string {
	s := err.Error()
	switch {
	case isConnRefused(err):
		return "connection refused"
	case strings.Contains(s, "connection reset"):
		return "connection reset"
	case strings.Contains(s, "EOF"):
		return "EOF"
	case strings.Contains(s, "Client.Timeout"), strings.Contains(s, "deadline exceeded"):
		return "timeout"
	case strings.Contains(s, "broken pipe"):
		return "broken pipe"
	}
	return s
}

// checkAcked reads relay.events and checks that every acked mid is there,
// once or more, in its tenant's partition with its tenant's key. It returns
// how many acked mids were written more than once.
func checkAcked(t *testing.T, broker string, acked map[string]string, partitionOf map[string]int) (dups int) {
	t.Helper()
	recs := readTopic(t, broker, "relay.events")
	seen := map[string]int{}
	for _, r := range recs {
		mid := midOf(r.Value)
		if mid == "" {
			continue
		}
		seen[mid]++
		if tn, ok := acked[mid]; ok {
			if r.Key != tn || r.Headers["relay-tenant"] != tn {
				t.Errorf("%s: key %q, relay-tenant %q; want %q", mid, r.Key, r.Headers["relay-tenant"], tn)
			}
			if p, ok := partitionOf[tn]; ok && r.Partition != p {
				t.Errorf("%s: partition %d, want %s's partition %d", mid, r.Partition, tn, p)
			}
		}
	}
	var missing []string
	for mid := range acked {
		switch n := seen[mid]; {
		case n == 0:
			missing = append(missing, mid)
		case n > 1:
			dups++
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) > 20 {
			missing = append(missing[:20], fmt.Sprintf("… %d more", len(missing)-20))
		}
		t.Errorf("%d of %d events answered 200 are not in relay.events: %v", len(missing), len(acked), missing)
	}
	return dups
}

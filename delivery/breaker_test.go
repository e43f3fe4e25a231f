package delivery

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tenant"
)

// breakerSink returns a sink over e's tenants, its metrics registry, and
// the tenant's instance state with its breaker tripped open.
func breakerSink(t *testing.T, e *testEnv, id string) (*Sink, *prometheus.Registry, *instance) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := NewSink(e.testSinkConfig(reg))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	in, err := s.instanceFor(e.reg.Snapshot().Tenant(id))
	require.NoError(t, err)
	for range s.cfg.Breaker.Failures {
		_, _ = in.breaker.Execute(func() (struct{}, error) { return struct{}{}, &DeliveryError{Status: 503} })
	}
	require.Equal(t, gobreaker.StateOpen, in.breaker.State())
	return s, reg, in
}

// breakerTenants lists the tenants with a relay_delivery_breaker_state series.
func breakerTenants(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	return labelValues(t, reg, "relay_delivery_breaker_state", "tenant")
}

// labelValues lists the values of label over the series of metric.
func labelValues(t *testing.T, reg *prometheus.Registry, metric, label string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var values []string
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					values = append(values, l.GetValue())
				}
			}
		}
	}
	return values
}

// Regression: an attempt cut short by a rebalance (context.Canceled)
// counted as a success, so a cut probe of a dead instance closed its
// breaker, and the next generation sent it breaker.failures attempts of
// up to delivery.timeout each. A cut now counts neither way, and frees
// the probe's slot.
func TestBreakerIgnoresAttemptsCutByARebalance(t *testing.T) {
	e := newTestEnv(t, 1)
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: "https://127.0.0.1:1/", CAFile: e.caFile, Secret: newSecret(t)})
	_, _, in := breakerSink(t, e, "acme")
	require.Eventually(t, func() bool { return in.breaker.State() == gobreaker.StateHalfOpen }, waitFor, tick)

	_, err := in.breaker.Execute(func() (struct{}, error) {
		return struct{}{}, &DeliveryError{Err: context.Canceled}
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, gobreaker.StateHalfOpen, in.breaker.State(), "a cut probe closed the breaker")
	_, err = in.breaker.Execute(func() (struct{}, error) { return struct{}{}, nil })
	require.NoError(t, err, "the next probe is let through")
	require.Equal(t, gobreaker.StateClosed, in.breaker.State())
}

// Regression: a removed tenant's breaker, still held by a paused Handle,
// moved to half-open after the prune and put the removed tenant's
// breaker series back, for good.
func TestRemovedTenantsBreakerStaysGone(t *testing.T) {
	e := newTestEnv(t, 2)
	acme := tenantConf{ID: "acme", Account: "1", URL: "https://127.0.0.1:1/", CAFile: e.caFile, Secret: newSecret(t)}
	globex := tenantConf{ID: "globex", Account: "2", URL: "https://127.0.0.1:1/", CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(acme, globex)
	s, reg, in := breakerSink(t, e, "acme")
	require.Equal(t, []string{"acme"}, breakerTenants(t, reg))
	oldAcme := e.reg.Snapshot().Tenant("acme")

	e.setTenants(globex) // acme removed
	_, err := s.instanceFor(e.reg.Snapshot().Tenant("globex"))
	require.NoError(t, err)
	require.Equal(t, []string{"globex"}, breakerTenants(t, reg), "acme pruned")
	require.Eventually(t, func() bool { return in.breaker.State() == gobreaker.StateHalfOpen }, waitFor, tick)
	require.Equal(t, []string{"globex"}, breakerTenants(t, reg), "acme's series came back")

	// Nor does a lookup with acme from the old snapshot bring it back.
	_, err = s.instanceFor(oldAcme)
	require.ErrorIs(t, err, errTenantStale)
	require.Equal(t, []string{"globex"}, breakerTenants(t, reg))
}

// A tenant looked up in an older tenants file, whose settings changed
// since, is not rebuilt from its old settings over the current ones.
func TestStaleTenantNotRebuilt(t *testing.T) {
	e := newTestEnv(t, 1)
	conf := tenantConf{ID: "acme", Account: "1", URL: "https://127.0.0.1:1/", CAFile: e.caFile, Secret: newSecret(t)}
	e.setTenants(conf)
	s, err := NewSink(e.testSinkConfig(prometheus.NewRegistry()))
	require.NoError(t, err)
	t.Cleanup(s.Close)
	old := e.reg.Snapshot().Tenant("acme")
	conf.URL = "https://127.0.0.1:2/"
	e.setTenants(conf)
	cur, err := s.instanceFor(e.reg.Snapshot().Tenant("acme"))
	require.NoError(t, err)
	_, err = s.instanceFor(old)
	require.ErrorIs(t, err, errTenantStale)
	got, err := s.instanceFor(e.reg.Snapshot().Tenant("acme"))
	require.NoError(t, err)
	require.Same(t, cur, got, "the current state was replaced")
	require.Equal(t, "https://127.0.0.1:2/", got.url)
}

// A tenant's ca_file replaced by one that does not load leaves the
// previous CA in use (tlsconf); WatchCAFiles makes it seen in
// relay_delivery_ca_reload_failing{tenant}, until the file loads again.
func TestWatchCAFilesReportsAFileThatDoesNotLoad(t *testing.T) {
	sc := newCAScene(t)
	sc.breakCA()
	require.Eventually(t, func() bool { return sc.failing() == 1 }, waitFor, tick)
	require.NoError(t, os.WriteFile(sc.caFile, sc.good, 0o600))
	require.Eventually(t, func() bool { return sc.failing() == 0 }, waitFor, tick)
}

// caScene is tenant acme with a ca_file of its own, a sink that has built
// its delivery state, and WatchCAFiles running on it.
type caScene struct {
	t      *testing.T
	e      *testEnv
	s      *Sink
	reg    *prometheus.Registry
	caFile string
	good   []byte // the CA file's content as it loads
}

func newCAScene(t *testing.T) *caScene {
	t.Helper()
	sc := &caScene{t: t, e: newTestEnv(t, 1), reg: prometheus.NewRegistry(), caFile: filepath.Join(t.TempDir(), "acme-ca.pem")}
	var err error
	sc.good, err = os.ReadFile(sc.e.caFile)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(sc.caFile, sc.good, 0o600))
	sc.e.setTenants(tenantConf{ID: "acme", Account: "1", URL: "https://127.0.0.1:1/", CAFile: sc.caFile, Secret: newSecret(t)})
	sc.s, err = NewSink(sc.e.testSinkConfig(sc.reg))
	require.NoError(t, err)
	t.Cleanup(sc.s.Close)
	_, err = sc.s.instanceFor(sc.acme())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sc.s.WatchCAFiles(ctx, 10*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return sc
}

func (sc *caScene) acme() *tenant.Tenant { return sc.e.reg.Snapshot().Tenant("acme") }

// breakCA replaces the CA file by one that does not load.
func (sc *caScene) breakCA() {
	require.NoError(sc.t, os.WriteFile(sc.caFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), 0o600))
}

// failing is relay_delivery_ca_reload_failing{tenant="acme"}.
func (sc *caScene) failing() float64 {
	return metricValue(sc.t, sc.reg, "relay_delivery_ca_reload_failing", "tenant", "acme")
}

// The log line saying a tenant's breaker opened names the last failure,
// so that an operator sees why without debug logs: here the instance's
// certificate is not valid for the name in the tenant's url. It does not
// quote the url, whose query may hold a token.
func TestBreakerOpeningNamesTheLastFailure(t *testing.T) {
	e := newTestEnv(t, 1)
	inst := newInstance(t, e.ca, e.caFile, answer(200))
	// The certificate is for 127.0.0.1; the url names another host that
	// resolves to it.
	url := strings.Replace(inst.URL, "127.0.0.1", "localhost", 1) + "?token=QUERYSECRET123"
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: url, CAFile: e.caFile, Secret: newSecret(t)})
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 1)...)

	var log lockedBuffer
	r := e.start("relay.test.breakerlog", func(c *SinkConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&log, nil))
	}, nil)
	require.Eventually(t, func() bool { return strings.Contains(log.String(), "to=open") }, waitFor, tick)
	require.NoError(t, r.stop())
	line := ""
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, "to=open") {
			line = l
			break
		}
	}
	require.Contains(t, line, "last_error=")
	require.Contains(t, line, "wanted to match localhost")
	require.NotContains(t, log.String(), "QUERYSECRET123", "the url's query in the log")
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

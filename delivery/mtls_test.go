package delivery

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tlsconf"
)

// TestMTLS_InstanceRequiringClientCertAcceptsRelay: an instance that
// requires a client certificate refuses a client without one, and accepts
// the relay, seeing the relay's common name.
func TestMTLS_InstanceRequiringClientCertAcceptsRelay(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := newInstance(t, e.ca, e.caFile, answer(200))

	// The instance really requires a client certificate.
	roots := x509.NewCertPool()
	roots.AddCert(e.ca.Cert.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Post(inst.URL, "application/json", strings.NewReader("{}"))
	if err == nil {
		res.Body.Close()
	}
	require.Error(t, err, "a client without certificate must be refused")
	require.Zero(t, inst.count())

	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	e.produce(e.partition("acme"), simpleEvents("acme", "1", "acme", 3)...)
	e.start("relay.test.mtls-ok", nil, nil)
	inst.waitDelivered(3)
	for _, h := range inst.allHits() {
		require.Equal(t, "relay", h.CN)
		require.GreaterOrEqual(t, h.TLS, uint16(tls.VersionTLS12))
	}
}

// TestMTLS_UntrustedInstanceNeverGetsEvent: the instance's certificate is
// signed by another CA than the tenant's ca_file. The relay never sends it
// an event (its handler is never called); after max_attempts the event is
// in relay.dlq with a TLS reason.
func TestMTLS_UntrustedInstanceNeverGetsEvent(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	otherCA, err := tlsconf.NewCA("somebody else's CA")
	require.NoError(t, err)
	// It trusts the relay's client certificate: only the relay's check of
	// the instance can stop the request.
	impostor := newInstance(t, otherCA, e.caFile, answer(200))
	good := newInstance(t, e.ca, e.caFile, answer(200))
	e.setTenants(
		tenantConf{ID: "acme", Account: "1", URL: impostor.URL, CAFile: e.caFile, Secret: newSecret(t)},
		tenantConf{ID: "globex", Account: "2", URL: good.URL, CAFile: e.caFile, Secret: newSecret(t)},
	)
	evs := simpleEvents("acme", "1", "acme", 1)
	e.produce(e.partition("acme"), evs...)
	e.produce(e.partition("globex"), simpleEvents("globex", "2", "globex", 2)...)

	const maxAttempts = 3
	r := e.start("relay.test.mtls-untrusted", func(c *SinkConfig) { c.MaxAttempts = maxAttempts }, nil)
	require.Eventually(t, func() bool { return len(e.deadLetters("acme")) == 1 }, waitFor, 20*time.Millisecond)
	good.waitDelivered(2)

	dl := e.deadLetters("acme")[0]
	require.Equal(t, evs[0].ID, dl.EventID)
	require.Equal(t, maxAttempts, dl.Attempts)
	require.Contains(t, strings.ToLower(dl.Reason), "tls")
	require.Contains(t, dl.Reason, "attempts")
	require.Equal(t, string(evs[0].Value), string(dl.Value))
	require.Zero(t, impostor.count(), "the impostor's handler must never be called")
	// The counter moves just after the write the test saw: wait for it.
	require.Eventually(t, func() bool {
		return r.gauge("relay_delivery_dead_letters_total", "reason", "max_attempts") == 1
	}, waitFor, 20*time.Millisecond)
}

// TestMTLS_ReplacedClientCertUsedByNextConnection: the relay's client
// certificate files are replaced on disk (new certificate, new common
// name); the next new connection presents it.
func TestMTLS_ReplacedClientCertUsedByNextConnection(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 1)
	inst := e.acmeInstance(answer(200))
	evs := simpleEvents("acme", "1", "acme", 4)
	p := e.partition("acme")
	e.start("relay.test.mtls-rotate", nil, nil)

	e.produce(p, evs[0])
	inst.waitDelivered(1)
	require.Equal(t, "relay", inst.attemptsOf(evs[0].ID)[0].CN)

	// A new certificate on disk; the open keep-alive connection still
	// carries the old one.
	e.writeRelayCert("relay-rotated")
	e.produce(p, evs[1])
	inst.waitDelivered(2)
	require.Equal(t, "relay", inst.attemptsOf(evs[1].ID)[0].CN, "an open connection is not touched")

	// Force a new connection: it presents the new certificate.
	inst.srv.CloseClientConnections()
	e.produce(p, evs[2], evs[3])
	inst.waitDelivered(4)
	for _, ev := range evs[2:] {
		for _, h := range inst.attemptsOf(ev.ID) {
			require.Equal(t, "relay-rotated", h.CN, "event %s", ev.ID)
		}
	}
}

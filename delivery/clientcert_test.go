package delivery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tlsconf"
)

// Regression: a relay client certificate that expired while in use stayed
// in use; every instance refused the handshake, and events were retried,
// then dead-lettered, tenant after tenant. Delivery now pauses until a
// renewed certificate is installed, spending no attempts, as it waits for
// one at start.
func TestExpiredClientCertificatePausesDelivery(t *testing.T) {
	e := newTestEnv(t, 1)
	inst := newInstance(t, e.ca, e.caFile, answer(http.StatusOK))
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(t)})
	p := e.partition("acme")
	notAfter := e.writeRelayCertUntil(time.Now().Add(3 * time.Second))
	evs := simpleEvents("acme", "1", "acme", 2)
	e.produce(p, evs[0])
	var told []bool
	var toldMu sync.Mutex
	r := e.start("relay.test.certexpiry", func(c *SinkConfig) {
		c.CertExpired = func(expired bool) { toldMu.Lock(); told = append(told, expired); toldMu.Unlock() }
	}, nil)
	inst.waitDelivered(1)

	require.Eventually(t, func() bool { return time.Now().After(notAfter) }, 10*time.Second, 10*time.Millisecond)
	e.produce(p, evs[1])
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_paused_partitions") == 1 }, waitFor, tick,
		"the partition waits for a valid certificate")
	require.Equal(t, 1, inst.count(), "no attempt with the expired certificate")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dead, err := e.dlq.List(ctx, "acme")
	require.NoError(t, err)
	require.Empty(t, dead, "nothing dead-lettered")

	e.writeRelayCert("relay") // renewed
	inst.waitDelivered(2)
	require.Equal(t, []string{evs[0].ID, evs[1].ID}, inst.delivered(), "in order")
	require.Eventually(t, func() bool { return r.gauge("relay_delivery_paused_partitions") == 0 }, waitFor, tick)
	toldMu.Lock()
	defer toldMu.Unlock()
	require.Equal(t, []bool{true, false}, told, "told when it paused and when it resumed")
}

// writeRelayCertUntil issues a client certificate that expires at notAfter
// and writes it over the relay's client certificate files.
func (e *testEnv) writeRelayCertUntil(notAfter time.Time) time.Time {
	e.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(e.t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "relay"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter.Truncate(time.Second),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, e.ca.Cert.Cert, &key.PublicKey, e.ca.Key)
	require.NoError(e.t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(e.t, err)
	require.NoError(e.t, (&tlsconf.Cert{Cert: cert, Key: key}).WriteFiles(e.relayCert, e.relayKey))
	return cert.NotAfter
}

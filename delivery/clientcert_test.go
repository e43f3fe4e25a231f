package delivery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net/http"
	"path/filepath"
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
	inst := e.acmeInstance(answer(http.StatusOK))
	p := e.partition("acme")
	// Valid for 4–5 s (NotAfter is whole seconds): time to join the group
	// and deliver the first event on a slow machine.
	notAfter := e.writeRelayCertUntil(time.Now().Add(5 * time.Second))
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

// blockingHandler stalls the first Error record (a log write that blocks:
// a full stderr pipe, a slow journald) until release is closed.
type blockingHandler struct {
	entered, release chan struct{}
	once             sync.Once
}

func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level == slog.LevelError {
		h.once.Do(func() { close(h.entered); <-h.release })
	}
	return nil
}
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler      { return h }

// Regression: the reports of the certificate's expiry and renewal could
// arrive out of order. A handler that saw the expiry and stalled before
// reporting it (here, in a log write) was overtaken by one that saw the
// renewal, and its late report left relay_delivery_waiting_for_client_cert
// at 1 while delivery ran. Reports are now made in order, each from a
// fresh look, so the last one is the truth.
func TestClientCertReportsComeInOrder(t *testing.T) {
	ca, err := tlsconf.NewCA("test CA")
	require.NoError(t, err)
	dir := t.TempDir()
	e := &testEnv{t: t, ca: ca, relayCert: filepath.Join(dir, "c.pem"), relayKey: filepath.Join(dir, "k.pem")}
	notAfter := e.writeRelayCertUntil(time.Now().Add(2 * time.Second))
	client, err := tlsconf.NewClient(e.relayCert, e.relayKey, tlsconf.CheckInterval(0))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return time.Now().After(notAfter) }, 5*time.Second, 10*time.Millisecond)

	h := &blockingHandler{entered: make(chan struct{}), release: make(chan struct{})}
	var mu sync.Mutex
	var told []bool
	s := &Sink{cfg: SinkConfig{TLS: client, Logger: slog.New(h), CertExpired: func(expired bool) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, expired)
	}}}

	a := make(chan bool)
	go func() { a <- s.clientCertExpired() }() // sees the expiry, stalls reporting it
	<-h.entered
	e.writeRelayCert("relay") // renewed
	b := make(chan bool, 1)
	go func() { b <- s.clientCertExpired() }() // sees the renewal
	// Give it the chance to overtake: before the fix it reported at once;
	// now it waits for the first report, and this wait runs out.
	bDone := false
	select {
	case bv := <-b:
		require.False(t, bv)
		bDone = true
	case <-time.After(500 * time.Millisecond):
	}
	close(h.release)
	<-a
	if !bDone {
		require.False(t, <-b)
	}
	require.False(t, s.clientCertExpired(), "the certificate is valid")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []bool{true, false}, told, "reported in order, the last one true to the state")
}

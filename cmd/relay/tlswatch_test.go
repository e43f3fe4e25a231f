package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tlsconf"
)

// A replaced ingress certificate that does not load (here: a new
// certificate beside the old key, then the key's own certificate but
// expired) keeps the old one in use, as tlsconf does; the relay now says so
// in its log and in relay_tls_reload_failing, and again once the files
// load. Before, a failed rotation went unnoticed until the old certificate
// expired, and an expired one was served until every peer refused it.
func TestFailedCertificateRotationIsReported(t *testing.T) {
	files, err := tlsconf.InitDevCA(filepath.Join(t.TempDir(), "certs"), []string{"acme"}, false)
	require.NoError(t, err)
	e := newRelayEnv(t, relayOptions{IngressTLS: &files.Ingress})
	p := e.start()
	const series = `relay_tls_reload_failing{files="ingress"}`
	require.Equal(t, 0.0, metric(t, e.Admin, series))
	const expiry = `relay_tls_cert_not_after_seconds{files="ingress"}`
	notAfter := func(pair tlsconf.FilePair) float64 {
		kp, err := tls.LoadX509KeyPair(pair.Cert, pair.Key)
		require.NoError(t, err)
		return float64(kp.Leaf.NotAfter.Unix())
	}
	require.True(t, waitFor(20*time.Second, func() bool { return metric(t, e.Admin, expiry) == notAfter(files.Ingress) }),
		"the expiry of the certificate in use")

	good, err := os.ReadFile(files.Ingress.Cert)
	require.NoError(t, err)
	other, err := os.ReadFile(files.Tenants["acme"].Cert) // not the ingress key's certificate
	require.NoError(t, err)
	writeFileAtomic(t, files.Ingress.Cert, other)
	require.True(t, waitFor(20*time.Second, func() bool { return metric(t, e.Admin, series) == 1 }), "the failed rotation is not reported")
	require.True(t, p.waitLog("certificate files replaced but they do not load", 5*time.Second))

	writeFileAtomic(t, files.Ingress.Cert, good)
	require.True(t, waitFor(20*time.Second, func() bool { return metric(t, e.Admin, series) == 0 }))
	require.True(t, p.waitLog("certificate files load again", 5*time.Second))

	writeFileAtomic(t, files.Ingress.Cert, expiredCopy(t, files.CA, files.Ingress))
	require.True(t, waitFor(20*time.Second, func() bool { return metric(t, e.Admin, series) == 1 }), "the expired certificate is not reported")
	require.True(t, p.waitLog(`cert file: certificate \"CN=localhost\" expired at `, 5*time.Second))

	// A renewal that loads moves the expiry on.
	renewed := renewedCopy(t, files.CA, files.Ingress, 90*24*time.Hour)
	writeFileAtomic(t, files.Ingress.Cert, renewed)
	block, _ := pem.Decode(renewed)
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	require.True(t, waitFor(20*time.Second, func() bool { return metric(t, e.Admin, expiry) == float64(leaf.NotAfter.Unix()) }),
		"the renewed certificate's expiry is not shown")
}

// expiredCopy returns, in PEM, the certificate of pair re-issued by the CA
// with its validity moved to two days ago: the same key, expired.
func expiredCopy(t *testing.T, ca, pair tlsconf.FilePair) []byte {
	t.Helper()
	return reissued(t, ca, pair, time.Now().Add(-72*time.Hour), time.Now().Add(-48*time.Hour))
}

// renewedCopy returns, in PEM, the certificate of pair re-issued by the CA
// for the given time from now.
func renewedCopy(t *testing.T, ca, pair tlsconf.FilePair, validity time.Duration) []byte {
	t.Helper()
	return reissued(t, ca, pair, time.Now().Add(-time.Hour), time.Now().Add(validity).Truncate(time.Second))
}

func reissued(t *testing.T, ca, pair tlsconf.FilePair, notBefore, notAfter time.Time) []byte {
	t.Helper()
	issuer, err := tlsconf.LoadCA(ca.Cert, ca.Key)
	require.NoError(t, err)
	kp, err := tls.LoadX509KeyPair(pair.Cert, pair.Key)
	require.NoError(t, err)
	tmpl := *kp.Leaf
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, issuer.Cert.Cert, kp.Leaf.PublicKey, issuer.Key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

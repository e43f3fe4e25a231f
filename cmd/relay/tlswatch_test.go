package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tlsconf"
)

// A replaced ingress certificate that does not load (here: a new
// certificate beside the old key) keeps the old one in use, as tlsconf
// does; the relay now says so in its log and in
// relay_tls_reload_failing, and again once the files load. Before, a
// failed rotation went unnoticed until the old certificate expired.
func TestFailedCertificateRotationIsReported(t *testing.T) {
	files, err := tlsconf.InitDevCA(filepath.Join(t.TempDir(), "certs"), []string{"acme"}, false)
	require.NoError(t, err)
	e := newRelayEnv(t, relayOptions{IngressTLS: &files.Ingress})
	p := e.start()
	const series = `relay_tls_reload_failing{files="ingress"}`
	require.Equal(t, 0.0, metric(t, e.Admin, series))

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
}

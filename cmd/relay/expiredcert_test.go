package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tlsconf"
)

// An expired ingress certificate is served, not refused: a load balancer
// that does not verify its targets still gets through, where refusing it
// took a working ingress down at its next restart. serve says so in its
// log and in relay_tls_cert_not_after_seconds; check-config warns.
func TestExpiredIngressCertificateIsServedAndReported(t *testing.T) {
	certs := dlvDevCA(t, "acme")
	expired := tlsconf.FilePair{Cert: certs.Ingress.Cert + ".expired.pem", Key: certs.Ingress.Key}
	require.NoError(t, os.WriteFile(expired.Cert, expiredCopy(t, certs.CA, certs.Ingress), 0o600))
	e := newRelayEnv(t, relayOptions{IngressTLS: &expired, Delivery: "{enabled: false}"})

	code, stdout, stderr := checkConfig(t, e.Dir, nil, "--config", e.ConfigPath)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "configuration ok")
	require.Contains(t, stderr, "warning: ingress.tls: "+expired.Cert+" expired at ")

	p := e.start()
	require.True(t, p.waitLog("the ingress certificate has expired; serving it all the same", 5*time.Second))
	notAfter := metric(t, e.Admin, `relay_tls_cert_not_after_seconds{files="ingress"}`) // -1: no such series
	require.True(t, notAfter > 0 && notAfter < float64(time.Now().Unix()), "the gauge shows the expiry in the past: %v", notAfter)
}

// check-config warns of a delivery client certificate that delivery would
// wait for because it does not load (here: expired), as it warns of a
// missing one.
func TestCheckConfigWarnsOfAClientCertificateThatDoesNotLoad(t *testing.T) {
	certs := dlvDevCA(t, "acme")
	expired := tlsconf.FilePair{Cert: certs.RelayClient.Cert + ".expired.pem", Key: certs.RelayClient.Key}
	require.NoError(t, os.WriteFile(expired.Cert, expiredCopy(t, certs.CA, certs.RelayClient), 0o600))
	e := newRelayEnv(t, relayOptions{Delivery: "{client_cert_file: " + expired.Cert + ", client_key_file: " + expired.Key + "}"})
	code, _, stderr := checkConfig(t, e.Dir, nil, "--config", e.ConfigPath)
	require.Equal(t, 0, code, stderr)
	require.True(t, strings.Contains(stderr, "warning: delivery: ") && strings.Contains(stderr, "expired at ") &&
		strings.Contains(stderr, "delivery waits until the files load"), stderr)

	// Missing files: the same warning, with how to make them.
	e = newRelayEnv(t, relayOptions{Delivery: "{client_cert_file: missing.pem, client_key_file: missing-key.pem}"})
	code, _, stderr = checkConfig(t, e.Dir, nil, "--config", e.ConfigPath)
	require.Equal(t, 0, code, stderr)
	require.True(t, strings.Contains(stderr, "warning: delivery: ") && strings.Contains(stderr, "missing.pem") &&
		strings.Contains(stderr, "delivery waits for the file; relay certs init makes one"), stderr)
}

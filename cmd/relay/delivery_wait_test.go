package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/relaymw/relay/tlsconf"
	"github.com/stretchr/testify/require"
)

// Until the relay's client certificate exists and loads, delivery waits. The
// delivery metrics are there meanwhile (zeros, and the wait itself), so
// that dashboards and alerts see the state rather than no data.
func TestDeliveryMetricsWhileWaitingForTheClientCert(t *testing.T) {
	made, err := tlsconf.InitDevCA(filepath.Join(t.TempDir(), "certs"), []string{"acme"}, false)
	require.NoError(t, err)
	later := filepath.Join(t.TempDir(), "certs")
	files := &tlsconf.DevFiles{}
	files.RelayClient.Cert = filepath.Join(later, filepath.Base(made.RelayClient.Cert))
	files.RelayClient.Key = filepath.Join(later, filepath.Base(made.RelayClient.Key))

	e := newRelayEnv(t, relayOptions{Delivery: dlvDelivery(files, "")})
	p := e.start()
	require.True(t, p.waitLog("delivery waits for the relay's client certificate", 10*time.Second))
	require.Equal(t, 1.0, metric(t, e.Admin, "relay_delivery_waiting_for_client_cert"))
	require.Equal(t, 0.0, metric(t, e.Admin, "relay_delivery_retries_total"))
	require.Equal(t, 0.0, metric(t, e.Admin, "relay_delivery_paused_partitions"))

	// Files that are there but do not load (garbage, as a file caught half
	// written): delivery goes on waiting; it used to give up for good.
	require.NoError(t, os.MkdirAll(later, 0o700))
	writeFileAtomic(t, files.RelayClient.Cert, []byte("not a certificate"))
	writeFileAtomic(t, files.RelayClient.Key, []byte("not a key"))
	require.True(t, p.waitLog("the relay's client certificate does not load", 10*time.Second))
	require.Equal(t, 1.0, metric(t, e.Admin, "relay_delivery_waiting_for_client_cert"))

	for _, f := range [][2]string{{made.RelayClient.Cert, files.RelayClient.Cert}, {made.RelayClient.Key, files.RelayClient.Key}} {
		b, err := os.ReadFile(f[0])
		require.NoError(t, err)
		writeFileAtomic(t, f[1], b)
	}
	require.True(t, waitFor(20*time.Second, func() bool {
		return metric(t, e.Admin, "relay_delivery_waiting_for_client_cert") == 0
	}), "delivery starts once the certificate exists")
}

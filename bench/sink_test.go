package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/delivery"
	"github.com/relaymw/relay/tlsconf"
)

// startTestSink runs a Sink checking secret, and returns it with a client
// trusting its certificate.
func startTestSink(t *testing.T, cfg SinkConfig) (*Sink, *http.Client) {
	t.Helper()
	dir := t.TempDir()
	ca, err := tlsconf.NewCA("sink test")
	require.NoError(t, err)
	cert, err := ca.IssueServer("127.0.0.1")
	require.NoError(t, err)
	cfg.CertFile, cfg.KeyFile = filepath.Join(dir, "s.pem"), filepath.Join(dir, "s-key.pem")
	require.NoError(t, cert.WriteFiles(cfg.CertFile, cfg.KeyFile))
	s, err := StartSink("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return s, &http.Client{Transport: tr}
}

// postSigned delivers body as the relay does, signed with secret at ts.
func postDelivery(t *testing.T, c *http.Client, url, secret, id string, ts int64, body []byte) int {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("X-Hub-Signature-256", delivery.MetaSignature(secret, body))
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", delivery.StandardSignature(key, id, ts, body))
	res, err := c.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	return res.StatusCode
}

// The sink shows an instance's engineer what to check: both signatures,
// and a webhook-timestamp near now (Standard Webhooks' 5 minutes), which
// a replayed delivery fails. It used to take the replay.
func TestSinkRefusesAReplayedTimestamp(t *testing.T) {
	secret := NewSigningSecret()
	var out bytes.Buffer
	s, c := startTestSink(t, SinkConfig{Secret: secret, Out: &out})
	body := []byte(`{"object":"page","entry":[]}`)
	require.Equal(t, http.StatusNoContent, postDelivery(t, c, s.URL(), secret, "fresh", time.Now().Unix(), body))
	require.Equal(t, http.StatusUnauthorized, postDelivery(t, c, s.URL(), secret, "replayed", 1_000_000_000, body))

	var fresh, replayed Receipt
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 2)
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &fresh))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &replayed))
	require.True(t, fresh.TimestampOK && fresh.StandardOK && fresh.MetaOK)
	require.False(t, replayed.TimestampOK)
	require.True(t, replayed.StandardOK, "the signature itself is right")
}

// A body over the sink's limit is answered 413, not cut and then found
// "mismatching" (401), which the relay would dead-letter as a signature
// problem.
func TestSinkAnswersTooLargeBodies413(t *testing.T) {
	secret := NewSigningSecret()
	s, c := startTestSink(t, SinkConfig{Secret: secret, MaxBody: 1024})
	require.Equal(t, http.StatusNoContent, postDelivery(t, c, s.URL(), secret, "small", time.Now().Unix(), bytes.Repeat([]byte("a"), 1024)))
	require.Equal(t, http.StatusRequestEntityTooLarge, postDelivery(t, c, s.URL(), secret, "large", time.Now().Unix(), bytes.Repeat([]byte("a"), 1025)))
}

// With PrintBody, each line carries the body and both signature headers
// as received, so that an engineer can check them with other tools.
func TestSinkPrintsTheSignaturesWithTheBody(t *testing.T) {
	secret := NewSigningSecret()
	var out bytes.Buffer
	s, c := startTestSink(t, SinkConfig{Secret: secret, Out: &out, PrintBody: true})
	body := []byte(`{"object":"page","entry":[{"id":"1"}]}`)
	ts := time.Now().Unix()
	require.Equal(t, http.StatusNoContent, postDelivery(t, c, s.URL(), secret, "evt", ts, body))
	var rc Receipt
	require.NoError(t, json.Unmarshal(out.Bytes(), &rc))
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	require.Equal(t, string(body), rc.Body)
	require.Equal(t, delivery.StandardSignature(key, "evt", ts, body), rc.Signature)
	require.Equal(t, delivery.MetaSignature(secret, body), rc.MetaSignature)
}

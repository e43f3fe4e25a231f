package relay

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// get sends a GET on c and reads the answer.
func get(t *testing.T, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := io.WriteString(c, "GET /other HTTP/1.1\r\nHost: relay\r\n\r\n")
	require.NoError(t, err)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, res.Body)
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	return res
}

// Regression: a connection past ingress.max_concurrency got fasthttp's own
// 503, with no Retry-After (the ingress contract gives every 503 one),
// logged at debug level only and counted nowhere. The relay now answers
// it: 503 with Retry-After, counted in relay_ingress_requests_total.
func TestConnectionPastMaxConcurrencyGets503WithRetryAfter(t *testing.T) {
	reg := prometheus.NewRegistry()
	in := &Ingress{cfg: IngressConfig{Path: "/webhooks/meta", Metrics: NewMetrics(reg), Logger: slog.New(slog.DiscardHandler)}, retryAfter: "7"}
	s := in.NewServer(ServerConfig{MaxConcurrency: 1, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, s.Shutdown())
		require.NoError(t, <-done)
	})
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	// The one connection allowed, kept open.
	first, firstR := dial()
	require.Equal(t, http.StatusNotFound, get(t, first, firstR).StatusCode)

	second, secondR := dial()
	res := get(t, second, secondR)
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, "7", res.Header.Get("Retry-After"))
	_, err = secondR.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the refused connection is closed")
	codes := func(code string) float64 { return testutil.ToFloat64(in.cfg.Metrics.requests.WithLabelValues(code)) }
	require.Equal(t, 1.0, codes("503"))

	// Once the first closes, a new connection is served again.
	require.NoError(t, first.Close())
	require.Eventually(t, func() bool {
		c, br := dial()
		defer c.Close()
		return get(t, c, br).StatusCode == http.StatusNotFound
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 2.0, codes("404"))
}

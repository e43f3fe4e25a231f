package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tlsconf"
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

// limited is an ingress server that serves one connection at a time.
type limited struct {
	s    *Server
	in   *Ingress
	addr string
	done chan error // Serve's return
}

// startLimited starts a limited server, over TLS with tlsConf if not nil
// (as serve wraps its listener).
func startLimited(t *testing.T, tlsConf *tls.Config) *limited {
	t.Helper()
	in := &Ingress{cfg: IngressConfig{Path: "/webhooks/meta", Metrics: NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.DiscardHandler)}, retryAfter: "7"}
	// IdleTimeout: the connection served must stay open all along.
	s := in.NewServer(ServerConfig{MaxConcurrency: 1, MaxBodyBytes: 4 << 20, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: time.Hour})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	l := &limited{s: s, in: in, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { l.done <- s.Serve(ln) }()
	return l
}

// stop shuts the server down and checks that Serve ended cleanly.
func (l *limited) stop(t *testing.T) {
	require.NoError(t, l.s.Shutdown())
	require.NoError(t, <-l.done)
}

func (l *limited) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", l.addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// answeredOnlyAfter sends a request in two parts on a connection past the
// limit, and checks that no answer comes before the second part and that
// the 503 comes after it.
func (l *limited) answeredOnlyAfter(t *testing.T, first, rest string) {
	t.Helper()
	c, br := l.dial(t)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := io.WriteString(c, first)
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond))) // well within the 1 s the relay waits for a head
	_, err = br.ReadByte()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "no answer before the request's head ends")
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, rest)
	require.NoError(t, err)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.NoError(t, c.Close())
}

// codes is relay_ingress_requests_total{code}.
func (l *limited) codes(code string) float64 {
	return testutil.ToFloat64(l.in.cfg.Metrics.requests.WithLabelValues(code))
}

// counted waits for relay_ingress_requests_total{code="503"} to reach
// want: a refusal is counted once the client closed, a moment after it
// read the answer.
func (l *limited) counted(t *testing.T, want float64) {
	t.Helper()
	require.Eventually(t, func() bool { return l.codes("503") == want }, 10*time.Second, 5*time.Millisecond)
}

// Regression: a connection past ingress.max_concurrency got fasthttp's own
// 503, with no Retry-After (the ingress contract gives every 503 one),
// logged at debug level only and counted nowhere. The relay now answers
// it: 503 with Retry-After, counted in relay_ingress_requests_total.
func TestConnectionPastMaxConcurrencyGets503WithRetryAfter(t *testing.T) {
	l := startLimited(t, nil)
	t.Cleanup(func() { l.stop(t) })
	dial := func() (net.Conn, *bufio.Reader) { return l.dial(t) }

	// The one connection allowed, kept open.
	first, firstR := dial()
	require.Equal(t, http.StatusNotFound, get(t, first, firstR).StatusCode)

	second, secondR := dial()
	res := get(t, second, secondR)
	require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	require.Equal(t, "7", res.Header.Get("Retry-After"))
	_, err := secondR.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the refused connection is closed")
	require.NoError(t, second.Close()) // as a client does once answered: the relay waits for it
	codes := l.codes
	counted := func(want float64) { t.Helper(); l.counted(t, want) }
	counted(1)

	// A Go client gets the 503 too: answered before its request, it would
	// drop it as unsolicited and fail the request instead.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	for range 100 {
		res, err := client.Get("http://" + l.addr + "/other")
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
		require.Equal(t, "7", res.Header.Get("Retry-After"))
	}
	counted(101)

	// A POST's body is read before the close, so that the close does not
	// reset the connection before the client reads the answer (a 3 MB
	// body, as Meta's may be, lost it 6 times in 10 when only 64 KiB were
	// read).
	big := bytes.Repeat([]byte("x"), 3<<20)
	for range 10 {
		res, err := client.Post("http://"+l.addr+"/webhooks/meta", "application/json", bytes.NewReader(big))
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	}
	counted(111)

	// A head line as long as the refusal's read buffer: its end is not the
	// blank line that ends the head (taken for it, the answer came before
	// the request).
	l.answeredOnlyAfter(t, "GET /other?p="+strings.Repeat("a", 4096-len("GET /other?p= HTTP/1.1"))+" HTTP/1.1\r\n", "Host: relay\r\n\r\n")
	counted(112)
	// A blank line before the request line is ignored, not taken for the
	// head's end.
	l.answeredOnlyAfter(t, "\r\n", "GET /other HTTP/1.1\r\nHost: relay\r\n\r\n")
	counted(113)

	// A connection that sends no request is closed unanswered, and counted
	// apart.
	idle, idleR := dial()
	_, err = idleR.ReadByte()
	require.ErrorIs(t, err, io.EOF)
	require.NoError(t, idle.Close())
	require.Eventually(t, func() bool { return testutil.ToFloat64(l.in.cfg.Metrics.unanswered) == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 113.0, codes("503"))

	// Once the first closes, a new connection is served again.
	require.NoError(t, first.Close())
	require.Eventually(t, func() bool {
		res, err := client.Get("http://" + l.addr + "/other")
		if err != nil {
			return false
		}
		_ = res.Body.Close()
		return res.StatusCode == http.StatusNotFound
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 2.0, codes("404"))
}

// Regression: a POST with "Expect: 100-continue" and a Content-Length
// over ingress.max_body_bytes was told "100 Continue", sent its whole
// body, and only then got 413. It now gets 413 at once; a body within
// the limit still gets 100 Continue.
func TestExpectContinueOverTheLimitGets413First(t *testing.T) {
	h := newHarness(t, nil)
	expectEarly413(t, h)
	require.Equal(t, 1.0, testutil.ToFloat64(h.ingress.cfg.Metrics.requests.WithLabelValues("413")))

	c2, br2, path := dialHarness(t, h)
	body := `{"object":"page","entry":[]}`
	_, err := fmt.Fprintf(c2, "POST %s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", path, len(body))
	require.NoError(t, err)
	line, err := br2.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 100 Continue\r\n", line)
	line, err = br2.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "\r\n", line)
	_, err = io.WriteString(c2, body)
	require.NoError(t, err)
	res, err := http.ReadResponse(br2, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, res.StatusCode, "unsigned: refused by the handler")
}

// Regression: a refusal under way outlived the server's shutdown, for up
// to 6 s, and was counted after it. Shutdown now waits for refusals until
// its context is done, then closes their connections.
func TestShutdownEndsRefusalsUnderWay(t *testing.T) {
	l := startLimited(t, nil)
	s, done := l.s, l.done
	dial := func() (net.Conn, *bufio.Reader) { return l.dial(t) }
	first, firstR := dial()
	require.Equal(t, http.StatusNotFound, get(t, first, firstR).StatusCode)
	second, secondR := dial() // answered, then left open: the refusal lingers
	require.Equal(t, http.StatusServiceUnavailable, get(t, second, secondR).StatusCode)
	require.Equal(t, 1, s.refusalsUnderWay())

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, s.ShutdownWithContext(ctx))
	require.NoError(t, <-done)
	require.Less(t, time.Since(start), 3*time.Second)
	require.Zero(t, s.refusalsUnderWay(), "no refusal outlives the shutdown")
	require.Equal(t, 1.0, testutil.ToFloat64(l.in.cfg.Metrics.unanswered), "cut off by the shutdown before the client closed")
}

// A connection past the limit over TLS (the listener wrapped as serve
// wraps it) gets its 503 too, its body read under the handshake's
// encryption, and its client verifies the relay's certificate.
func TestConnectionPastMaxConcurrencyOverTLS(t *testing.T) {
	ca, err := tlsconf.NewCA("relay test CA")
	require.NoError(t, err)
	leaf, err := ca.IssueServer("127.0.0.1")
	require.NoError(t, err)
	l := startLimited(t, &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}, MinVersion: tls.VersionTLS12})
	t.Cleanup(func() { l.stop(t) })
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert.Cert)
	url := "https://" + l.addr

	held := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(held.CloseIdleConnections)
	res, err := (&http.Client{Transport: held, Timeout: 10 * time.Second}).Get(url + "/other")
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, res.Body) // read to the end, or the client closes the connection
	require.NoError(t, err)
	require.NoError(t, res.Body.Close())
	require.Equal(t, http.StatusNotFound, res.StatusCode, "the one connection allowed, kept alive")

	refused := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	for range 10 {
		res, err := refused.Get(url + "/other")
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
		require.Equal(t, "7", res.Header.Get("Retry-After"))
	}
	big := bytes.Repeat([]byte("x"), 3<<20)
	for range 3 {
		res, err := refused.Post(url+"/webhooks/meta", "application/json", bytes.NewReader(big))
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusServiceUnavailable, res.StatusCode)
	}
	l.counted(t, 13)
	require.Zero(t, testutil.ToFloat64(l.in.cfg.Metrics.unanswered))
}

// Regression: answers given before the handler runs (fasthttp's 413 over
// the limit, the early 413 of Expect: 100-continue, refusals) each added
// a 0 s sample to relay_ingress_request_duration_seconds, pulling its
// quantiles down just when requests are refused. They are counted, with
// no duration.
func TestAnswersBeforeTheHandlerRecordNoDuration(t *testing.T) {
	h := newHarness(t, nil)
	samples := func() uint64 {
		mfs, err := h.reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "relay_ingress_request_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("no relay_ingress_request_duration_seconds")
		return 0
	}
	big := bytes.Repeat([]byte("x"), 65<<10) // over the harness's 64 KiB
	code, _ := h.post(big, sign(testSecret, big))
	require.Equal(t, http.StatusRequestEntityTooLarge, code)

	expectEarly413(t, h)

	require.Equal(t, 2.0, testutil.ToFloat64(h.ingress.cfg.Metrics.requests.WithLabelValues("413")))
	require.Zero(t, samples())
	code, _ = h.post([]byte(`{}`), "") // unsigned: the handler answers 401, and times it
	require.Equal(t, http.StatusUnauthorized, code)
	require.EqualValues(t, 1, samples())
}

// dialHarness opens a raw connection to h's ingress, closed when the test
// ends, with a 10 s deadline; path is the webhook path.
func dialHarness(t *testing.T, h *harness) (c net.Conn, br *bufio.Reader, path string) {
	t.Helper()
	u, err := url.Parse(h.url)
	require.NoError(t, err)
	c, err = net.Dial("tcp", u.Host)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	return c, bufio.NewReader(c), u.Path
}

// expectEarly413 sends a POST head announcing 1 MiB with Expect:
// 100-continue, over the harness's limit, and checks that 413 comes at once.
func expectEarly413(t *testing.T, h *harness) {
	t.Helper()
	c, br, path := dialHarness(t, h)
	_, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", path, 1<<20)
	require.NoError(t, err)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusRequestEntityTooLarge, res.StatusCode)
}

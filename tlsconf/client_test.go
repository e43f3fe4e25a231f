package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewClientErrors(t *testing.T) {
	ca := newTestCA(t, "relay CA")
	files := newPairFiles(t, "client")
	files.write(t, fileWriter{"rename", writeByRename}, issueClient(t, ca, "relay"))

	tests := []struct {
		name    string
		key     string
		opts    []Option
		wantErr string
	}{
		{"missing key", files.key + ".missing", nil, "client: reload: open "},
		{"empty key path", "", nil, "client: reload: key pair: empty cert or key file path"},
		{"server option", files.key, []Option{RequireClientCert("ca.pem")}, "client: option RequireClientCert applies to NewServer only"},
		{"zero handshake timeout", files.key, []Option{HandshakeTimeout(0)}, "client: option HandshakeTimeout: 0s is not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(files.cert, tt.key, tt.opts...)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}

	t.Run("missing server CA", func(t *testing.T) {
		c, err := NewClient(files.cert, files.key)
		require.NoError(t, err)
		_, err = c.Dialer(files.cert + ".missing")
		require.ErrorContains(t, err, "client: server CA: reload: open ")
	})

	now := time.Now()
	t.Run("expired certificate", func(t *testing.T) {
		expired := newPairFiles(t, "client")
		expired.write(t, fileWriter{"rename", writeByRename}, serverValidBetween(t, ca, now.Add(-48*time.Hour), now.Add(-time.Hour)))
		_, err := NewClient(expired.cert, expired.key)
		require.ErrorContains(t, err, "client: reload: "+expired.cert+" and "+expired.key+`: cert file: certificate "CN=localhost" expired at `)
	})
	t.Run("expired server CA", func(t *testing.T) {
		c, err := NewClient(files.cert, files.key)
		require.NoError(t, err)
		caFile := writeCAFile(t, caValidBetween(t, "expired CA", now.Add(-48*time.Hour), now.Add(-time.Hour)))
		_, err = c.Dialer(caFile)
		require.ErrorContains(t, err, "client: server CA: reload: "+caFile+`: CA certificate "CN=expired CA" expired at `)
	})
}

func TestClientVerifiesServer(t *testing.T) {
	tenantCA, otherCA, relayCA := newTestCA(t, "tenant CA"), newTestCA(t, "other CA"), newTestCA(t, "relay CA")
	client, _ := newTestClient(t, relayCA, "relay")
	tenantCAFile := writeCAFile(t, tenantCA)

	tests := []struct {
		name     string
		serverCA *CA
		hosts    []string // server certificate SANs
		caFile   string   // "": system roots
		dialHost string
		wantErr  string // "" for success
	}{
		{name: "IP SAN 127.0.0.1", serverCA: tenantCA, caFile: tenantCAFile, dialHost: "127.0.0.1"},
		{name: "DNS SAN localhost", serverCA: tenantCA, caFile: tenantCAFile, dialHost: "localhost"},
		{name: "CA bundle", serverCA: tenantCA, caFile: writeCAFile(t, otherCA, tenantCA), dialHost: "127.0.0.1"},
		{name: "server signed by another CA", serverCA: otherCA, caFile: tenantCAFile, dialHost: "127.0.0.1",
			wantErr: "tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "system roots do not hold the dev CA", serverCA: tenantCA, caFile: "", dialHost: "127.0.0.1",
			wantErr: "tls: failed to verify certificate: x509: "},
		{name: "certificate not for the IP", serverCA: tenantCA, hosts: []string{"tenant.example"}, caFile: tenantCAFile, dialHost: "127.0.0.1",
			wantErr: "tls: failed to verify certificate: x509: cannot validate certificate for 127.0.0.1"},
		{name: "certificate not for the name", serverCA: tenantCA, hosts: []string{"127.0.0.1"}, caFile: tenantCAFile, dialHost: "localhost",
			wantErr: "tls: failed to verify certificate: x509: certificate is not valid for any names, but wanted to match localhost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := newPairFiles(t, "server")
			files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, tt.serverCA, tt.hosts...))
			srv, err := NewServer(files.cert, files.key)
			require.NoError(t, err)
			s := startServer(t, srv.Config())
			_, port, err := net.SplitHostPort(s.addr)
			require.NoError(t, err)

			d := newDialer(t, client, tt.caFile)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			conn, err := d.DialTLSContext(ctx, "tcp", net.JoinHostPort(tt.dialHost, port))
			if tt.wantErr == "" {
				require.NoError(t, err)
				defer conn.Close()
				require.NoError(t, echo(conn, "hello"))
				return
			}
			require.Error(t, err)
			assert.ErrorContains(t, err, tt.wantErr)
			var verr *tls.CertificateVerificationError
			assert.True(t, errors.As(err, &verr), "want a *tls.CertificateVerificationError, got %T", errors.Unwrap(err))
			assert.ErrorContains(t, err, "client: tls handshake with "+net.JoinHostPort(tt.dialHost, port))
		})
	}
}

func TestDialerConfig(t *testing.T) {
	tenantCA, relayCA := newTestCA(t, "tenant CA"), newTestCA(t, "relay CA")
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, tenantCA))
	srv, err := NewServer(files.cert, files.key, RequireClientCert(writeCAFile(t, relayCA)))
	require.NoError(t, err)
	s := startServer(t, srv.Config())
	client, _ := newTestClient(t, relayCA, "relay")
	d := newDialer(t, client, writeCAFile(t, tenantCA))

	cfg := d.Config()
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	assert.False(t, cfg.InsecureSkipVerify)
	assert.Empty(t, cfg.ServerName)
	assert.NotNil(t, cfg.RootCAs)

	raw, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer raw.Close()
	err = tls.Client(raw, cfg).Handshake()
	require.ErrorContains(t, err, "ServerName", "no handshake without a server name")

	cfg.ServerName = "127.0.0.1"
	conn, err := tls.Dial("tcp", s.addr, cfg)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, echo(conn, "hi"))
	h := s.next(t)
	require.NoError(t, h.err)
	assert.Equal(t, "relay", h.state.PeerCertificates[0].Subject.CommonName)

	system := newDialer(t, client, "")
	assert.Nil(t, system.Config().RootCAs, "an empty CA file means the system roots")
	assert.NoError(t, system.Reload())
	assert.NoError(t, system.LastError())
}

// silentListener accepts TCP connections and never answers, to stall
// handshakes.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		conns []net.Conn // read once the accept loop is done
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

func TestDialerBoundsHandshake(t *testing.T) {
	relayCA := newTestCA(t, "relay CA")
	files := newPairFiles(t, "client")
	files.write(t, fileWriter{"rename", writeByRename}, issueClient(t, relayCA, "relay"))
	caFile := writeCAFile(t, relayCA)
	addr := silentListener(t)

	tests := []struct {
		name    string
		opts    []Option
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error
	}{
		{
			name: "handshake timeout",
			opts: []Option{HandshakeTimeout(100 * time.Millisecond)},
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), waitTimeout)
			},
			wantErr: context.DeadlineExceeded,
		},
		{
			name: "context deadline",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 100*time.Millisecond)
			},
			wantErr: context.DeadlineExceeded,
		},
		{
			name: "context canceled",
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, cancel
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(files.cert, files.key, tt.opts...)
			require.NoError(t, err)
			d := newDialer(t, c, caFile)
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			conn, err := d.DialTLSContext(ctx, "tcp", addr)
			if err == nil {
				_ = conn.Close()
			}
			require.ErrorIs(t, err, tt.wantErr)
			assert.Less(t, time.Since(start), waitTimeout/2, "the dial must give up when it is told to")
		})
	}
}

// TestDialerWithHTTPTransport is the delivery sink's use: one
// http.Transport per tenant instance with DialTLSContext from a Dialer. New
// CA, server and client certificate files apply to new connections, while
// the open keep-alive connection goes on working.
func TestDialerWithHTTPTransport(t *testing.T) {
	tenantCA1, tenantCA2, relayCA := newTestCA(t, "tenant CA 1"), newTestCA(t, "tenant CA 2"), newTestCA(t, "relay CA")

	serverFiles := newPairFiles(t, "tenant")
	serverFiles.write(t, fileWriter{"rename", writeByRename}, issueServer(t, tenantCA1))
	srv, err := NewServer(serverFiles.cert, serverFiles.key, RequireClientCert(writeCAFile(t, relayCA)), CheckInterval(0))
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.Config())
	require.NoError(t, err)
	hs := &http.Server{
		ReadHeaderTimeout: waitTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
		}),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = hs.Close()
		require.ErrorIs(t, <-served, http.ErrServerClosed)
	})

	client, clientFiles := newTestClient(t, relayCA, "relay-1")
	tenantCAFile := writeCAFile(t, tenantCA1)
	d := newDialer(t, client, tenantCAFile)
	tr := &http.Transport{DialTLSContext: d.DialTLSContext}
	t.Cleanup(tr.CloseIdleConnections)
	url := "https://" + ln.Addr().String() + "/"

	// get returns the client CN the server saw and whether the connection
	// was reused.
	get := func() (string, bool) {
		t.Helper()
		var reused bool
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		})
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.NotNil(t, resp.TLS, "the transport sees the *tls.Conn")
		return string(body), reused
	}

	cn, reused := get()
	assert.Equal(t, "relay-1", cn)
	assert.False(t, reused)

	// The tenant moves to a new CA, and the relay gets a new client
	// certificate.
	serverFiles.write(t, fileWriter{"rename", writeByRename}, issueServer(t, tenantCA2))
	writeByRename(t, tenantCAFile, tenantCA2.CertPEM())
	clientFiles.write(t, fileWriter{"in place", writeInPlace}, issueClient(t, relayCA, "relay-2"))

	cn, reused = get()
	assert.True(t, reused, "the keep-alive connection stays open")
	assert.Equal(t, "relay-1", cn)

	tr.CloseIdleConnections()
	cn, reused = get()
	assert.False(t, reused)
	assert.Equal(t, "relay-2", cn, "a new connection presents the new client certificate")
	assert.NoError(t, d.LastError())
	assert.NoError(t, client.LastError())

	// A broken CA file keeps the loaded CAs for new connections.
	writeInPlace(t, tenantCAFile, []byte("-----BEGIN CERTIFICATE-----\n"))
	tr.CloseIdleConnections()
	cn, _ = get()
	assert.Equal(t, "relay-2", cn)
	assert.ErrorContains(t, d.LastError(), "client: server CA: reload: ")
	assert.ErrorContains(t, d.Reload(), "truncated or malformed PEM block")
	assert.Equal(t, fmt.Sprint(d.Reload()), fmt.Sprint(d.LastError()))
}

package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewServerErrors(t *testing.T) {
	ca := newTestCA(t, "test CA")
	now := time.Now()
	expiredCA := caValidBetween(t, "expired CA", now.Add(-48*time.Hour), now.Add(-time.Hour))
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, ca))

	tests := []struct {
		name    string
		cert    string
		opts    []Option
		wantErr string
	}{
		{"missing cert", files.cert + ".missing", nil, "server: reload: open "},
		{"empty client CA path", files.cert, []Option{RequireClientCert("")}, "server: option RequireClientCert: empty CA file path"},
		{"missing client CA", files.cert, []Option{RequireClientCert(files.cert + ".missing")}, "server: client CA: reload: open "},
		{"client option", files.cert, []Option{HandshakeTimeout(time.Second)}, "server: option HandshakeTimeout applies to NewClient only"},
		{"expired client CA", files.cert, []Option{RequireClientCert(writeCAFile(t, expiredCA))}, `ca.pem: CA certificate "CN=expired CA" expired at `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.cert, files.key, tt.opts...)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}

}

// An expired certificate is served at start rather than refused: a load
// balancer that does not verify its targets still gets through (refusing
// it took a working ingress down at its next restart), and NotAfter tells
// the caller. A replacement that has expired is still refused.
func TestNewServerServesAnExpiredCertificateAtStart(t *testing.T) {
	ca := newTestCA(t, "test CA")
	now := time.Now()
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, serverValidBetween(t, ca, now.Add(-48*time.Hour), now.Add(-time.Hour)))
	srv, err := NewServer(files.cert, files.key)
	require.NoError(t, err)
	require.True(t, srv.NotAfter().Before(now), "NotAfter shows it expired")

	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.Config())
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a peer that does not verify
	require.NoError(t, err, "a peer that does not verify gets through")
	c.Close()
	_, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: poolOf(ca), ServerName: "localhost"})
	require.ErrorContains(t, err, "expired", "a verifying peer refuses it")

	// A valid replacement is taken; an expired one after it is refused.
	files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, ca))
	require.NoError(t, srv.Reload())
	require.True(t, srv.NotAfter().After(now))
	files.write(t, fileWriter{"rename", writeByRename}, serverValidBetween(t, ca, now.Add(-48*time.Hour), now.Add(-time.Hour)))
	require.ErrorContains(t, srv.Reload(), `cert file: certificate "CN=localhost" expired at `)
	require.True(t, srv.NotAfter().After(now), "the valid one stays in use")
}

func TestServerConfig(t *testing.T) {
	ca := newTestCA(t, "test CA")
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, ca))

	srv, err := NewServer(files.cert, files.key)
	require.NoError(t, err)
	cfg := srv.Config()
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	assert.Equal(t, tls.NoClientCert, cfg.ClientAuth)
	assert.NotNil(t, cfg.GetCertificate)
	assert.Empty(t, cfg.Certificates, "a static certificate would shadow GetCertificate")
	assert.NotSame(t, cfg, srv.Config(), "each call returns a config of its own")

	mtls, err := NewServer(files.cert, files.key, RequireClientCert(writeCAFile(t, ca)))
	require.NoError(t, err)
	cfg = mtls.Config()
	assert.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	assert.Equal(t, tls.RequireAndVerifyClientCert, cfg.ClientAuth)
	assert.NotNil(t, cfg.ClientCAs)
	assert.NotNil(t, cfg.GetConfigForClient)

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		s := startServer(t, srv.Config())
		c, err := tls.Dial("tcp", s.addr, &tls.Config{
			MinVersion: tls.VersionTLS10,
			MaxVersion: tls.VersionTLS11,
			RootCAs:    poolOf(ca),
			ServerName: "127.0.0.1",
		})
		if err == nil {
			_ = c.Close()
		}
		require.Error(t, err)
		assert.ErrorContains(t, s.next(t).err, "client offered only unsupported versions")
	})
}

func TestServerMutualTLS(t *testing.T) {
	serverCA, relayCA, otherCA := newTestCA(t, "tenant CA"), newTestCA(t, "relay CA"), newTestCA(t, "other CA")
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, serverCA))
	serverCAFile := writeCAFile(t, serverCA)

	srv, err := NewServer(files.cert, files.key, RequireClientCert(writeCAFile(t, relayCA)))
	require.NoError(t, err)
	s := startServer(t, srv.Config())

	tests := []struct {
		name      string
		clientCA  *CA // nil: the client presents no certificate
		wantCN    string
		serverErr string // the server's handshake error; "" for success
	}{
		{name: "client certificate from the client CA", clientCA: relayCA, wantCN: "relay"},
		{name: "client certificate from another CA", clientCA: otherCA, serverErr: "certificate signed by unknown authority"},
		{name: "no client certificate", serverErr: "client didn't provide a certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conn *tls.Conn
			if tt.clientCA != nil {
				client, _ := newTestClient(t, tt.clientCA, "relay")
				conn, err = s.dial(t, newDialer(t, client, serverCAFile))
			} else {
				conn, err = tls.Dial("tcp", s.addr, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: poolOf(serverCA), ServerName: "127.0.0.1"})
				if err == nil {
					t.Cleanup(func() { _ = conn.Close() })
				}
			}
			if err == nil {
				// TLS 1.3: the server judges the client certificate after the
				// client's handshake returned; its verdict arrives as an alert.
				err = echo(conn, "ping")
			}
			h := s.next(t)
			if tt.serverErr == "" {
				require.NoError(t, err)
				require.NoError(t, h.err)
				require.NotEmpty(t, h.state.PeerCertificates)
				assert.Equal(t, tt.wantCN, h.state.PeerCertificates[0].Subject.CommonName, "the server sees the client certificate")
				require.Len(t, h.state.VerifiedChains, 1)
				return
			}
			require.Error(t, err, "the client must be refused")
			require.ErrorContains(t, h.err, tt.serverErr)
		})
	}
}

func TestServerPicksUpNewCertificate(t *testing.T) {
	ca, relayCA := newTestCA(t, "tenant CA"), newTestCA(t, "relay CA")
	client, _ := newTestClient(t, relayCA, "relay")
	d := newDialer(t, client, writeCAFile(t, ca))

	for _, w := range fileWriters() {
		t.Run(w.name, func(t *testing.T) {
			files := newPairFiles(t, "server")
			a, b := issueServer(t, ca), issueServer(t, ca)
			files.write(t, w, a)
			srv, err := NewServer(files.cert, files.key, CheckInterval(0))
			require.NoError(t, err)
			s := startServer(t, srv.Config())

			old, err := s.dial(t, d)
			require.NoError(t, err)
			require.NoError(t, echo(old, "before"))
			assert.Equal(t, a.Cert.Raw, servedLeaf(t, old).Raw)

			files.write(t, w, b)

			fresh, err := s.dial(t, d)
			require.NoError(t, err)
			require.NoError(t, echo(fresh, "new"))
			assert.Equal(t, b.Cert.Raw, servedLeaf(t, fresh).Raw, "the next handshake serves the new certificate")
			require.NoError(t, echo(old, "after"), "the open connection keeps working")
			assert.NoError(t, srv.LastError())

			// A corrupt replacement keeps the new certificate serving.
			w.write(t, files.cert, []byte("-----BEGIN CERTIFICATE-----\nMIIB"))
			again, err := s.dial(t, d)
			require.NoError(t, err)
			require.NoError(t, echo(again, "still"))
			assert.Equal(t, b.Cert.Raw, servedLeaf(t, again).Raw)
			assert.ErrorContains(t, srv.LastError(), "server: reload: ")
			assert.ErrorContains(t, srv.Reload(), "truncated or malformed PEM block")
			require.NoError(t, echo(old, "still after"))
		})
	}
}

func TestServerPicksUpNewClientCA(t *testing.T) {
	tenantCA, relayCA1, relayCA2 := newTestCA(t, "tenant CA"), newTestCA(t, "relay CA 1"), newTestCA(t, "relay CA 2")
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, issueServer(t, tenantCA))
	clientCAFile := writeCAFile(t, relayCA1)
	srv, err := NewServer(files.cert, files.key, RequireClientCert(clientCAFile), CheckInterval(0))
	require.NoError(t, err)
	s := startServer(t, srv.Config())

	tenantCAFile := writeCAFile(t, tenantCA)
	client1, _ := newTestClient(t, relayCA1, "relay-1")
	client2, _ := newTestClient(t, relayCA2, "relay-2")
	d1, d2 := newDialer(t, client1, tenantCAFile), newDialer(t, client2, tenantCAFile)

	// try dials with d and reports the server's handshake error.
	try := func(d *Dialer) error {
		conn, err := s.dial(t, d)
		if err == nil {
			err = echo(conn, "ping")
		}
		h := s.next(t)
		if (err == nil) != (h.err == nil) {
			t.Fatalf("client and server disagree: client %v, server %v", err, h.err)
		}
		return h.err
	}
	require.NoError(t, try(d1))
	require.Error(t, try(d2))
	old, err := s.dial(t, d1)
	require.NoError(t, err)
	require.NoError(t, echo(old, "ping"))
	require.NoError(t, s.next(t).err)

	writeByRename(t, clientCAFile, relayCA2.CertPEM())
	require.NoError(t, try(d2), "a client of the new CA is accepted")
	require.ErrorContains(t, try(d1), "certificate signed by unknown authority", "a client of the removed CA is refused")
	require.NoError(t, echo(old, "pong"), "the open connection keeps working")

	writeInPlace(t, clientCAFile, []byte("garbage"))
	require.NoError(t, try(d2), "a broken CA file keeps the loaded pool")
	assert.ErrorContains(t, srv.LastError(), "no PEM certificate found")
}

// TestServerServesWhileFilesAreRewritten runs handshakes from several
// goroutines while the certificate files are rewritten in place, so that
// checks see empty, half-written and mismatched files: every handshake must
// still succeed with one of the two certificates.
func TestServerServesWhileFilesAreRewritten(t *testing.T) {
	ca, relayCA := newTestCA(t, "tenant CA"), newTestCA(t, "relay CA")
	certs := []*Cert{issueServer(t, ca), issueServer(t, ca)}
	files := newPairFiles(t, "server")
	files.write(t, fileWriter{"rename", writeByRename}, certs[0])
	srv, err := NewServer(files.cert, files.key, CheckInterval(0))
	require.NoError(t, err)
	cfg := srv.Config()
	s := startServer(t, cfg)
	s.discardHandshakes(t)
	client, _ := newTestClient(t, relayCA, "relay")
	d := newDialer(t, client, writeCAFile(t, ca))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && i < 25; i++ {
				dctx, dcancel := context.WithTimeout(ctx, waitTimeout)
				c, err := d.DialTLSContext(dctx, "tcp", s.addr)
				dcancel()
				if err == nil {
					err = echo(c, "x")
					leaf := c.(*tls.Conn).ConnectionState().PeerCertificates[0]
					if !leaf.Equal(certs[0].Cert) && !leaf.Equal(certs[1].Cert) {
						err = errors.New("served an unknown certificate")
					}
					_ = c.Close()
				}
				if err != nil {
					errs <- fmt.Errorf("handshake %d: %w", i, err)
					cancel()
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	broken := 0
	for i := 0; ; i++ {
		select {
		case <-done:
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d rewrites; a handshake's check had just failed after %d of them", i, broken)
			files.write(t, fileWriter{"in place", writeInPlace}, certs[1])
			require.NoError(t, srv.Reload())
			return
		default:
			files.write(t, fileWriter{"in place", writeInPlace}, certs[i%2])
			if srv.LastError() != nil {
				broken++
			}
		}
	}
}

package tlsconf

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitTimeout bounds every wait of the tests on the other side of a
// connection.
const waitTimeout = 10 * time.Second

// fileWriter replaces a file's content the way a deployment tool would.
type fileWriter struct {
	name  string
	write func(t *testing.T, path string, data []byte)
}

// fileWriters are the two ways certificate files get replaced: a new file
// renamed over the old one (atomic), and the old file truncated and
// rewritten (in place, same inode).
func fileWriters() []fileWriter {
	return []fileWriter{
		{"rename", writeByRename},
		{"in place", writeInPlace},
	}
}

func writeByRename(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func writeInPlace(t *testing.T, path string, data []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, data, 0o600))
}

// pairFiles names a cert and key file in a fresh temporary directory.
type pairFiles struct{ cert, key string }

func newPairFiles(t *testing.T, name string) pairFiles {
	dir := t.TempDir()
	return pairFiles{filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")}
}

// write writes c to the pair's files with w, certificate first.
func (p pairFiles) write(t *testing.T, w fileWriter, c *Cert) {
	t.Helper()
	key, err := c.KeyPEM()
	require.NoError(t, err)
	w.write(t, p.cert, c.CertPEM())
	w.write(t, p.key, key)
}

func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	require.NoError(t, err)
	return ca
}

func issueServer(t *testing.T, ca *CA, hosts ...string) *Cert {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	c, err := ca.IssueServer(hosts...)
	require.NoError(t, err)
	return c
}

func issueClient(t *testing.T, ca *CA, cn string) *Cert {
	t.Helper()
	c, err := ca.IssueClient(cn)
	require.NoError(t, err)
	return c
}

// serverValidBetween issues a certificate for localhost, like issueServer,
// valid from notBefore to notAfter: one that has expired, or one not valid
// yet.
func serverValidBetween(t *testing.T, ca *CA, notBefore, notAfter time.Time) *Cert {
	t.Helper()
	return certValidBetween(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, notBefore, notAfter, ca)
}

// caValidBetween makes a CA, like newTestCA, valid from notBefore to
// notAfter.
func caValidBetween(t *testing.T, name string, notBefore, notAfter time.Time) *CA {
	t.Helper()
	c := certValidBetween(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, notBefore, notAfter, nil)
	return &CA{Cert: *c}
}

// certValidBetween makes a P-256 key and a certificate from tmpl valid from
// notBefore to notAfter, signed by parent, or by itself if parent is nil.
// The development CA (newCert) always makes certificates valid from now.
func certValidBetween(t *testing.T, tmpl *x509.Certificate, notBefore, notAfter time.Time, parent *CA) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	require.NoError(t, err)
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &Cert{Cert: cert, Key: key}
}

// writeCAFile writes the CA certificates into a new temporary file.
func writeCAFile(t *testing.T, cas ...*CA) string {
	t.Helper()
	var data []byte
	for _, ca := range cas {
		data = append(data, ca.CertPEM()...)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

// serverHandshake is what the test server saw of one handshake.
type serverHandshake struct {
	state tls.ConnectionState
	err   error
}

// testServer is a TLS echo server on loopback.
type testServer struct {
	addr       string
	handshakes chan serverHandshake
}

// startServer serves cfg on 127.0.0.1 until the test ends: each connection
// is handshaken, reported on handshakes, then echoed.
func startServer(t *testing.T, cfg *tls.Config) *testServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	s := &testServer{addr: ln.Addr().String(), handshakes: make(chan serverHandshake, 64)}

	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	serve := func(c net.Conn) {
		defer func() {
			_ = c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
		tc := c.(*tls.Conn)
		hctx, hcancel := context.WithTimeout(ctx, waitTimeout)
		err := tc.HandshakeContext(hctx)
		hcancel()
		select {
		case s.handshakes <- serverHandshake{tc.ConnectionState(), err}:
		case <-ctx.Done():
			return
		}
		if err == nil {
			_, _ = io.Copy(tc, tc)
		}
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	t.Cleanup(func() {
		cancel()
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

// next returns the server's view of the next handshake.
func (s *testServer) next(t *testing.T) serverHandshake {
	t.Helper()
	select {
	case h := <-s.handshakes:
		return h
	case <-time.After(waitTimeout):
		t.Fatal("no handshake on the server side within", waitTimeout)
		return serverHandshake{}
	}
}

// discardHandshakes drops the server's reports until the test ends, for
// tests that make more connections than the report buffer holds.
func (s *testServer) discardHandshakes(t *testing.T) {
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-s.handshakes:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-stopped })
}

// dial opens a connection to s with d; the connection is closed when the
// test ends.
func (s *testServer) dial(t *testing.T, d *Dialer) (*tls.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := d.DialTLSContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*tls.Conn), nil
}

// echo sends msg over c and reads it back. With TLS 1.3 a server that refuses
// the client certificate does so after the client's handshake returned, so
// the refusal shows here.
func echo(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// servedLeaf returns the leaf certificate the server presented on c.
func servedLeaf(t *testing.T, c *tls.Conn) *x509.Certificate {
	t.Helper()
	certs := c.ConnectionState().PeerCertificates
	require.NotEmpty(t, certs)
	return certs[0]
}

// newTestClient returns a client presenting a certificate issued by ca, with
// lazy checks on every handshake.
func newTestClient(t *testing.T, ca *CA, cn string) (*Client, pairFiles) {
	t.Helper()
	files := newPairFiles(t, "client")
	files.write(t, fileWriter{"rename", writeByRename}, issueClient(t, ca, cn))
	c, err := NewClient(files.cert, files.key, CheckInterval(0))
	require.NoError(t, err)
	return c, files
}

// newDialer returns c's dialer for caFile.
func newDialer(t *testing.T, c *Client, caFile string) *Dialer {
	t.Helper()
	d, err := c.Dialer(caFile)
	require.NoError(t, err)
	return d
}

// poolOf returns a pool holding the CAs.
func poolOf(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert.Cert)
	}
	return p
}

// fakeClock is a clock the test steps by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

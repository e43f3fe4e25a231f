package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, "dev CA")
	c := ca.Cert.Cert
	assert.Equal(t, "dev CA", c.Subject.CommonName)
	assert.True(t, c.IsCA)
	assert.True(t, c.BasicConstraintsValid)
	assert.NotZero(t, c.KeyUsage&x509.KeyUsageCertSign)
	assert.Equal(t, elliptic.P256(), ca.Key.Curve)
	assert.WithinDuration(t, time.Now().Add(10*365*24*time.Hour), c.NotAfter, 2*time.Hour)
	assert.True(t, c.NotBefore.Before(time.Now()))
	require.NoError(t, c.CheckSignatureFrom(c), "self-signed")

	_, err := NewCA("")
	require.ErrorContains(t, err, "devca: empty CA common name")
}

func TestCAIssue(t *testing.T) {
	ca, other := newTestCA(t, "dev CA"), newTestCA(t, "other CA")
	verify := func(c *Cert, root *CA, usage x509.ExtKeyUsage, name string) error {
		_, err := c.Cert.Verify(x509.VerifyOptions{
			Roots:     poolOf(root),
			KeyUsages: []x509.ExtKeyUsage{usage},
			DNSName:   name,
		})
		return err
	}

	t.Run("server", func(t *testing.T) {
		c, err := ca.IssueServer("tenant.example", "127.0.0.1", "::1", "localhost")
		require.NoError(t, err)
		assert.Equal(t, "tenant.example", c.Cert.Subject.CommonName)
		assert.Equal(t, []string{"tenant.example", "localhost"}, c.Cert.DNSNames)
		require.Len(t, c.Cert.IPAddresses, 2)
		assert.True(t, c.Cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")))
		assert.True(t, c.Cert.IPAddresses[1].Equal(net.IPv6loopback))
		assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, c.Cert.ExtKeyUsage)
		assert.False(t, c.Cert.IsCA)
		assert.WithinDuration(t, time.Now().Add(365*24*time.Hour), c.Cert.NotAfter, 2*time.Hour)
		assert.Equal(t, elliptic.P256(), c.Key.Curve)

		for _, name := range []string{"tenant.example", "localhost", "127.0.0.1", "::1"} {
			assert.NoError(t, verify(c, ca, x509.ExtKeyUsageServerAuth, name), name)
		}
		assert.Error(t, verify(c, ca, x509.ExtKeyUsageServerAuth, "other.example"))
		assert.Error(t, verify(c, ca, x509.ExtKeyUsageClientAuth, ""), "not a client certificate")
		assert.Error(t, verify(c, other, x509.ExtKeyUsageServerAuth, ""), "signed by its own CA only")

		_, err = ca.IssueServer()
		assert.ErrorContains(t, err, "devca: server certificate: no hosts")
		_, err = ca.IssueServer("localhost", "")
		assert.ErrorContains(t, err, "devca: server certificate: empty host")
	})

	t.Run("client", func(t *testing.T) {
		c, err := ca.IssueClient("relay")
		require.NoError(t, err)
		assert.Equal(t, "relay", c.Cert.Subject.CommonName)
		assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, c.Cert.ExtKeyUsage)
		assert.Empty(t, c.Cert.DNSNames)
		assert.NoError(t, verify(c, ca, x509.ExtKeyUsageClientAuth, ""))
		assert.Error(t, verify(c, ca, x509.ExtKeyUsageServerAuth, ""), "not a server certificate")

		_, err = ca.IssueClient("")
		assert.ErrorContains(t, err, "devca: client certificate: empty common name")
	})

	t.Run("serials differ", func(t *testing.T) {
		a, b := issueClient(t, ca, "relay"), issueClient(t, ca, "relay")
		assert.NotEqual(t, a.Cert.SerialNumber, b.Cert.SerialNumber)
	})
}

func TestCertWriteFiles(t *testing.T) {
	ca := newTestCA(t, "dev CA")
	c := issueServer(t, ca)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "s.pem"), filepath.Join(dir, "s-key.pem")

	require.NoError(t, c.WriteFiles(certFile, keyFile))
	assertMode(t, certFile, 0o644)
	assertMode(t, keyFile, 0o600)
	kp, err := LoadKeyPair(certFile, keyFile)
	require.NoError(t, err)
	assert.Equal(t, c.Cert.Raw, kp.Certificate().Leaf.Raw)
	_, isECDSA := kp.Certificate().PrivateKey.(*ecdsa.PrivateKey)
	assert.True(t, isECDSA)

	// Rewriting replaces the files and leaves no temporary file behind.
	c2 := issueServer(t, ca)
	require.NoError(t, c2.WriteFiles(certFile, keyFile))
	require.NoError(t, kp.Reload())
	assert.Equal(t, c2.Cert.Raw, kp.Certificate().Leaf.Raw)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2)

	err = c.WriteFiles(filepath.Join(dir, "missing", "s.pem"), keyFile)
	require.ErrorContains(t, err, "devca: write ")

	tc := c.TLSCertificate()
	assert.Equal(t, c.Cert, tc.Leaf)
	assert.Equal(t, [][]byte{c.Cert.Raw}, tc.Certificate)
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, want, fi.Mode().Perm(), path)
}

func TestInitDevCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	files, err := InitDevCA(dir, []string{"acme", "globex"}, false)
	require.NoError(t, err)

	want := []string{
		"ca.pem", "ca-key.pem",
		"relay-client.pem", "relay-client-key.pem",
		"ingress.pem", "ingress-key.pem",
		"acme.pem", "acme-key.pem",
		"globex.pem", "globex-key.pem",
	}
	var got []string
	for _, p := range files.Paths() {
		assert.Equal(t, dir, filepath.Dir(p))
		got = append(got, filepath.Base(p))
	}
	assert.Equal(t, want, got)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, len(want), "nothing else in the directory")
	for _, p := range files.Paths() {
		if filepath.Ext(p) == ".pem" && len(p) > 8 && p[len(p)-8:] == "-key.pem" {
			assertMode(t, p, 0o600)
		} else {
			assertMode(t, p, 0o644)
		}
	}
	assert.Equal(t, FilePair{filepath.Join(dir, "acme.pem"), filepath.Join(dir, "acme-key.pem")}, files.Tenants["acme"])

	// Every server certificate is for localhost, 127.0.0.1 and ::1 and
	// chains to the CA; so does the relay's client certificate.
	caPool, err := LoadCAPool(files.CA.Cert)
	require.NoError(t, err)
	for _, fp := range []FilePair{files.Ingress, files.Tenants["acme"], files.Tenants["globex"]} {
		kp, err := LoadKeyPair(fp.Cert, fp.Key)
		require.NoError(t, err)
		for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
			_, err := kp.Certificate().Leaf.Verify(x509.VerifyOptions{Roots: caPool.Pool(), DNSName: host})
			assert.NoError(t, err, "%s for %s", fp.Cert, host)
		}
	}
	kp, err := LoadKeyPair(files.RelayClient.Cert, files.RelayClient.Key)
	require.NoError(t, err)
	_, err = kp.Certificate().Leaf.Verify(x509.VerifyOptions{
		Roots: caPool.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	assert.NoError(t, err)
	caKey, err := LoadKeyPair(files.CA.Cert, files.CA.Key)
	require.NoError(t, err, "the CA key matches the CA certificate")
	assert.True(t, caKey.Certificate().Leaf.IsCA)

	// The files work together: the relay delivers to acme over mutual TLS.
	srv, err := NewServer(files.Tenants["acme"].Cert, files.Tenants["acme"].Key, RequireClientCert(files.CA.Cert))
	require.NoError(t, err)
	s := startServer(t, srv.Config())
	client, err := NewClient(files.RelayClient.Cert, files.RelayClient.Key)
	require.NoError(t, err)
	conn, err := s.dial(t, newDialer(t, client, files.CA.Cert))
	require.NoError(t, err)
	require.NoError(t, echo(conn, "webhook"))
	h := s.next(t)
	require.NoError(t, h.err)
	assert.Equal(t, "relay", h.state.PeerCertificates[0].Subject.CommonName)

	t.Run("keeps what exists and adds a tenant from the same CA", func(t *testing.T) {
		caBefore, err := os.ReadFile(files.CA.Cert)
		require.NoError(t, err)
		acmeBefore, err := os.ReadFile(files.Tenants["acme"].Cert)
		require.NoError(t, err)
		more, err := InitDevCA(dir, []string{"acme", "initech"}, false)
		require.NoError(t, err)
		assert.Equal(t, []string{more.Tenants["initech"].Cert, more.Tenants["initech"].Key}, more.Written)
		caAfter, err := os.ReadFile(files.CA.Cert)
		require.NoError(t, err)
		assert.Equal(t, caBefore, caAfter, "the CA is kept")
		acmeAfter, err := os.ReadFile(files.Tenants["acme"].Cert)
		require.NoError(t, err)
		assert.Equal(t, acmeBefore, acmeAfter, "acme's certificate is kept")
		// The relay's client certificate and initech's server certificate
		// work together: same CA.
		srv, err := NewServer(more.Tenants["initech"].Cert, more.Tenants["initech"].Key, RequireClientCert(files.CA.Cert))
		require.NoError(t, err)
		s := startServer(t, srv.Config())
		conn, err := s.dial(t, newDialer(t, client, files.CA.Cert))
		require.NoError(t, err)
		require.NoError(t, echo(conn, "webhook"))
		require.NoError(t, s.next(t).err)

		again, err := InitDevCA(dir, []string{"acme", "initech"}, false)
		require.NoError(t, err)
		assert.Empty(t, again.Written, "everything exists: nothing to write")
	})

	t.Run("refuses half a pair or certificates without their CA", func(t *testing.T) {
		other := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(other, "initech-key.pem"), []byte("mine"), 0o600))
		_, err := InitDevCA(other, []string{"initech"}, false)
		require.ErrorContains(t, err, "one exists without the other")
		entries, err := os.ReadDir(other)
		require.NoError(t, err)
		assert.Len(t, entries, 1, "nothing is written")

		third := t.TempDir()
		for _, name := range []string{"ingress.pem", "ingress-key.pem"} {
			require.NoError(t, os.WriteFile(filepath.Join(third, name), []byte("old"), 0o600))
		}
		_, err = InitDevCA(third, nil, false)
		require.ErrorContains(t, err, "but the CA that issued them")
		entries, err = os.ReadDir(third)
		require.NoError(t, err)
		assert.Len(t, entries, 2, "nothing is written")
	})

	t.Run("force overwrites", func(t *testing.T) {
		before, err := os.ReadFile(files.CA.Cert)
		require.NoError(t, err)
		again, err := InitDevCA(dir, []string{"acme"}, true)
		require.NoError(t, err)
		after, err := os.ReadFile(again.CA.Cert)
		require.NoError(t, err)
		assert.NotEqual(t, before, after, "a new CA")
		_, err = LoadKeyPair(again.Tenants["acme"].Cert, again.Tenants["acme"].Key)
		require.NoError(t, err)
	})
}

func TestInitDevCATenantNames(t *testing.T) {
	tests := []struct {
		name    string
		tenants []string
		wantErr string // "" for success
	}{
		{"letters digits and punctuation", []string{"Acme-1", "globex_2", "initech.eu"}, ""},
		{"no tenants", nil, ""},
		{"empty", []string{""}, "must be 1 to 64 characters"},
		{"too long", []string{string(make([]byte, 65))}, "must be 1 to 64 characters"},
		{"slash", []string{"a/b"}, `'/' is not a letter`},
		{"backslash", []string{`a\b`}, `'\\' is not a letter`},
		{"parent", []string{"../x"}, "must not start with '.'"},
		{"dot dot", []string{".."}, "must not start with '.'"},
		{"space", []string{"a b"}, `' ' is not a letter`},
		{"non-ASCII letter", []string{"café"}, `'é' is not a letter`},
		{"listed twice", []string{"acme", "acme"}, `tenant "acme": listed twice`},
		{"the CA's name", []string{"ca"}, `tenant "ca": file ca.pem is also the built-in file`},
		{"the relay client's name", []string{"relay-client"}, "relay-client.pem is also the built-in file"},
		{"the ingress' name", []string{"ingress"}, "ingress.pem is also the built-in file"},
		{"a CA key name", []string{"ca-key"}, "ca-key.pem is also the built-in file"},
		{"another tenant's key", []string{"foo", "foo-key"}, `file foo-key.pem is also the tenant "foo" file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := InitDevCA(dir, tt.tenants, false)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			assert.ErrorContains(t, err, "devca: ")
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing is written")
		})
	}

	_, err := InitDevCA("", nil, false)
	require.ErrorContains(t, err, "devca: empty directory")
}

// A --force run that fails part way (here globex's key cannot be replaced;
// in life a full disk or a permission) leaves the new CA beside
// certificates of the old one. The error now names what was already
// written, so that the operator knows the set is mixed.
func TestInitDevCAPartialFailureNamesWhatWasWritten(t *testing.T) {
	dir := t.TempDir()
	_, err := InitDevCA(dir, []string{"acme", "globex", "zeta"}, false)
	require.NoError(t, err)
	key := filepath.Join(dir, "globex-key.pem")
	require.NoError(t, os.Remove(key))
	require.NoError(t, os.MkdirAll(filepath.Join(key, "x"), 0o755)) // a rename over it fails
	_, err = InitDevCA(dir, []string{"acme", "globex", "zeta"}, true)
	require.Error(t, err)
	require.ErrorContains(t, err, "already written: "+filepath.Join(dir, "ca.pem"))
	require.ErrorContains(t, err, "run it again with --force to make a consistent set")

	// Without --force, the old CA's certificates left beside the new CA
	// are not kept as if they belonged to it.
	require.NoError(t, os.RemoveAll(key))
	require.NoError(t, os.Remove(filepath.Join(dir, "globex.pem")))
	_, err = InitDevCA(dir, []string{"acme", "globex", "zeta"}, false)
	require.ErrorContains(t, err, "zeta.pem was not issued by "+filepath.Join(dir, "ca.pem"))
}

// A kept certificate that has expired, or expires within 30 days, is issued
// anew from the same CA: the relay refuses an expired certificate, and
// the files of a year-old development setup would otherwise stay expired.
func TestInitDevCARenewsExpiringCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	files, err := InitDevCA(dir, []string{"acme", "globex"}, false)
	require.NoError(t, err)
	ca, err := LoadCA(files.CA.Cert, files.CA.Key)
	require.NoError(t, err)

	// acme's certificate expired an hour ago; globex's has 40 days left.
	reissue := func(fp FilePair, notAfter time.Time) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "localhost"},
			NotBefore: notAfter.Add(-365 * 24 * time.Hour), NotAfter: notAfter, DNSNames: []string{"localhost"},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert.Cert, &key.PublicKey, ca.Key)
		require.NoError(t, err)
		cert, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		require.NoError(t, (&Cert{Cert: cert, Key: key}).WriteFiles(fp.Cert, fp.Key))
	}
	reissue(files.Tenants["acme"], time.Now().Add(-time.Hour))
	reissue(files.Tenants["globex"], time.Now().Add(40*24*time.Hour))
	globexBefore, err := os.ReadFile(files.Tenants["globex"].Cert)
	require.NoError(t, err)

	again, err := InitDevCA(dir, []string{"acme", "globex"}, false)
	require.NoError(t, err)
	require.Equal(t, []string{files.Tenants["acme"].Cert, files.Tenants["acme"].Key}, again.Written)
	kp, err := LoadKeyPair(files.Tenants["acme"].Cert, files.Tenants["acme"].Key)
	require.NoError(t, err, "renewed")
	require.NoError(t, kp.Certificate().Leaf.CheckSignatureFrom(ca.Cert.Cert), "from the same CA")
	globexAfter, err := os.ReadFile(files.Tenants["globex"].Cert)
	require.NoError(t, err)
	require.Equal(t, globexBefore, globexAfter, "40 days left: kept")
}

// A CA that has expired, or expires within 30 days, is not issued from:
// what it would renew could not be verified for long, and a new CA takes
// --force, since it invalidates what was handed out. A first version
// renewed the leaves from an expired CA and reported success.
func TestInitDevCARefusesAnExpiringCA(t *testing.T) {
	for _, caLeft := range []time.Duration{-24 * time.Hour, 10 * 24 * time.Hour} {
		dir := filepath.Join(t.TempDir(), "certs")
		files, err := InitDevCA(dir, []string{"acme"}, false)
		require.NoError(t, err)
		now := time.Now()
		ca := caValidBetween(t, "relay development CA", now.Add(-10*365*24*time.Hour), now.Add(caLeft))
		require.NoError(t, ca.Cert.WriteFiles(files.CA.Cert, files.CA.Key))
		for _, fp := range []FilePair{files.RelayClient, files.Ingress, files.Tenants["acme"]} {
			require.NoError(t, serverValidBetween(t, ca, now.Add(-365*24*time.Hour), now.Add(-time.Hour)).WriteFiles(fp.Cert, fp.Key))
		}
		before, err := os.ReadFile(files.Tenants["acme"].Cert)
		require.NoError(t, err)

		_, err = InitDevCA(dir, []string{"acme"}, false)
		require.ErrorContains(t, err, "expires at", "CA left %s", caLeft)
		require.ErrorContains(t, err, "--force makes a new CA")
		after, err := os.ReadFile(files.Tenants["acme"].Cert)
		require.NoError(t, err)
		require.Equal(t, before, after, "nothing written")

		_, err = InitDevCA(dir, []string{"acme"}, true)
		require.NoError(t, err, "--force replaces it")
	}
}

package tlsconf

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadKeyPairErrors(t *testing.T) {
	ca := newTestCA(t, "test CA")
	a, b := issueServer(t, ca), issueServer(t, ca)
	aKey, err := a.KeyPEM()
	require.NoError(t, err)
	bKey, err := b.KeyPEM()
	require.NoError(t, err)
	chain := append(a.CertPEM(), ca.CertPEM()...)

	tests := []struct {
		name     string
		cert     []byte // nil: file missing
		key      []byte
		opts     []Option
		wantErr  string
		emptyArg bool
	}{
		{name: "valid", cert: a.CertPEM(), key: aKey},
		{name: "valid chain", cert: chain, key: aKey},
		{name: "missing cert file", key: aKey, wantErr: "no such file"},
		{name: "missing key file", cert: a.CertPEM(), wantErr: "no such file"},
		{name: "empty path", emptyArg: true, wantErr: "empty cert or key file path"},
		{name: "garbage cert", cert: []byte("not a certificate"), key: aKey, wantErr: "failed to find any PEM data in certificate input"},
		{name: "empty key", cert: a.CertPEM(), key: []byte{}, wantErr: "failed to find any PEM data in key input"},
		{name: "key of another certificate", cert: a.CertPEM(), key: bKey, wantErr: "private key does not match public key"},
		{name: "truncated intermediate", cert: chain[:len(chain)-40], key: aKey, wantErr: "cert file: truncated or malformed PEM block"},
		{name: "truncated key", cert: a.CertPEM(), key: aKey[:len(aKey)/2], wantErr: "key file: truncated or malformed PEM block"},
		{name: "server option", cert: a.CertPEM(), key: aKey, opts: []Option{RequireClientCert("ca.pem")}, wantErr: "RequireClientCert applies to NewServer only"},
		{name: "client option", cert: a.CertPEM(), key: aKey, opts: []Option{HandshakeTimeout(time.Second)}, wantErr: "HandshakeTimeout applies to NewClient only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := newPairFiles(t, "server")
			if tt.cert != nil {
				require.NoError(t, os.WriteFile(files.cert, tt.cert, 0o644))
			}
			if tt.key != nil {
				require.NoError(t, os.WriteFile(files.key, tt.key, 0o600))
			}
			if tt.emptyArg {
				files.key = ""
			}
			kp, err := LoadKeyPair(files.cert, files.key, tt.opts...)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				assert.True(t, strings.HasPrefix(err.Error(), "reload: "), err.Error())
				return
			}
			require.NoError(t, err)
			got := kp.Certificate()
			require.NotNil(t, got.Leaf)
			assert.Equal(t, a.Cert.Raw, got.Leaf.Raw)
			assert.Equal(t, bytes.Count(tt.cert, []byte("BEGIN CERTIFICATE")), len(got.Certificate))
			assert.NoError(t, kp.LastError())
		})
	}
}

func TestKeyPairPicksUpReplacement(t *testing.T) {
	ca := newTestCA(t, "test CA")
	for _, w := range fileWriters() {
		t.Run(w.name, func(t *testing.T) {
			files := newPairFiles(t, "server")
			a, b := issueServer(t, ca), issueServer(t, ca)
			files.write(t, w, a)
			kp, err := LoadKeyPair(files.cert, files.key, CheckInterval(0))
			require.NoError(t, err)

			got, err := kp.GetCertificate(nil)
			require.NoError(t, err)
			assert.Equal(t, a.Cert.Raw, got.Leaf.Raw)

			files.write(t, w, b)
			got, err = kp.GetCertificate(nil)
			require.NoError(t, err)
			assert.Equal(t, b.Cert.Raw, got.Leaf.Raw, "the next handshake serves the new certificate")
			got, err = kp.GetClientCertificate(nil)
			require.NoError(t, err)
			assert.Equal(t, b.Cert.Raw, got.Leaf.Raw)
			assert.NoError(t, kp.LastError())
		})
	}
}

func TestKeyPairKeepsCertificateOnBadReplacement(t *testing.T) {
	ca := newTestCA(t, "test CA")
	a, b, c := issueServer(t, ca), issueServer(t, ca), issueServer(t, ca)
	bKey, err := b.KeyPEM()
	require.NoError(t, err)
	chain := append(b.CertPEM(), ca.CertPEM()...)

	tests := []struct {
		name    string
		breakIt func(t *testing.T, files pairFiles)
		wantErr string
	}{
		{"garbage cert", func(t *testing.T, f pairFiles) {
			writeInPlace(t, f.cert, []byte("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"))
		}, "reload: "},
		{"empty cert (truncated by an in-place write)", func(t *testing.T, f pairFiles) {
			writeInPlace(t, f.cert, nil)
		}, "failed to find any PEM data in certificate input"},
		{"half-written cert", func(t *testing.T, f pairFiles) {
			writeInPlace(t, f.cert, b.CertPEM()[:200])
		}, "cert file: truncated or malformed PEM block"},
		{"half-written chain", func(t *testing.T, f pairFiles) {
			writeInPlace(t, f.cert, chain[:len(chain)-100])
		}, "cert file: truncated or malformed PEM block"},
		{"new cert, old key", func(t *testing.T, f pairFiles) {
			writeByRename(t, f.cert, b.CertPEM())
		}, "private key does not match public key"},
		{"new key, old cert", func(t *testing.T, f pairFiles) {
			writeByRename(t, f.key, bKey)
		}, "private key does not match public key"},
		{"removed key", func(t *testing.T, f pairFiles) {
			require.NoError(t, os.Remove(f.key))
		}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := newPairFiles(t, "server")
			files.write(t, fileWriter{"rename", writeByRename}, a)
			kp, err := LoadKeyPair(files.cert, files.key, CheckInterval(0))
			require.NoError(t, err)

			tt.breakIt(t, files)

			// Lazily, during a handshake: the old certificate keeps serving.
			got, err := kp.GetCertificate(nil)
			require.NoError(t, err)
			assert.Equal(t, a.Cert.Raw, got.Leaf.Raw)
			require.ErrorContains(t, kp.LastError(), tt.wantErr)
			assert.True(t, strings.HasPrefix(kp.LastError().Error(), "reload: "), kp.LastError().Error())

			// Explicitly.
			require.ErrorContains(t, kp.Reload(), tt.wantErr)
			assert.Equal(t, a.Cert.Raw, kp.Certificate().Leaf.Raw)

			// A valid replacement heals it.
			files.write(t, fileWriter{"rename", writeByRename}, c)
			require.NoError(t, kp.Reload())
			assert.NoError(t, kp.LastError())
			assert.Equal(t, c.Cert.Raw, kp.Certificate().Leaf.Raw)
		})
	}

	t.Run("restoring the loaded files clears the error", func(t *testing.T) {
		files := newPairFiles(t, "server")
		files.write(t, fileWriter{"rename", writeByRename}, a)
		kp, err := LoadKeyPair(files.cert, files.key, CheckInterval(0))
		require.NoError(t, err)
		writeInPlace(t, files.cert, []byte("junk"))
		require.Error(t, kp.Reload())
		files.write(t, fileWriter{"in place", writeInPlace}, a)
		assert.Equal(t, a.Cert.Raw, kp.Certificate().Leaf.Raw)
		assert.NoError(t, kp.LastError())
	})
}

// An expired certificate would fail every handshake at the peer (Meta for
// the ingress, each instance for the delivery client) while nothing on the
// relay's side said why. It is refused at load; as a replacement it keeps
// the loaded certificate and is reported like any replacement that does not
// load (LastError, hence relay_tls_reload_failing). A certificate not valid
// yet, as when this host's clock is behind the issuer's, is taken.
func TestKeyPairRefusesExpiredCertificate(t *testing.T) {
	ca := newTestCA(t, "test CA")
	now := time.Now()
	expiredAt := now.Add(-time.Hour)
	valid := issueServer(t, ca)

	tests := []struct {
		name    string
		cert    *Cert
		wantErr string // empty: loads
	}{
		{"expired an hour ago", serverValidBetween(t, ca, now.Add(-48*time.Hour), expiredAt),
			`cert file: certificate "CN=localhost" expired at ` + expiredAt.UTC().Format(time.RFC3339) + " (its NotAfter)"},
		{"valid from in an hour (clock skew)", serverValidBetween(t, ca, now.Add(time.Hour), now.Add(48*time.Hour)), ""},
		{"valid", issueServer(t, ca), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Run("at load", func(t *testing.T) {
				files := newPairFiles(t, "server")
				files.write(t, fileWriter{"rename", writeByRename}, tt.cert)
				kp, err := LoadKeyPair(files.cert, files.key)
				if tt.wantErr != "" {
					require.ErrorContains(t, err, tt.wantErr)
					assert.ErrorContains(t, err, "reload: "+files.cert+" and "+files.key+": ", "the error names the files")
					return
				}
				require.NoError(t, err)
				assert.Equal(t, tt.cert.Cert.Raw, kp.Certificate().Leaf.Raw)
			})
			t.Run("as a replacement", func(t *testing.T) {
				files := newPairFiles(t, "server")
				files.write(t, fileWriter{"rename", writeByRename}, valid)
				kp, err := LoadKeyPair(files.cert, files.key, CheckInterval(0))
				require.NoError(t, err)

				files.write(t, fileWriter{"rename", writeByRename}, tt.cert)
				got, err := kp.GetCertificate(nil)
				require.NoError(t, err)
				if tt.wantErr == "" {
					assert.Equal(t, tt.cert.Cert.Raw, got.Leaf.Raw)
					assert.NoError(t, kp.LastError())
					return
				}
				assert.Equal(t, valid.Cert.Raw, got.Leaf.Raw, "the expired certificate replaced the valid one")
				assert.ErrorContains(t, kp.LastError(), tt.wantErr)
				assert.ErrorContains(t, kp.Reload(), tt.wantErr)
				assert.Equal(t, valid.Cert.Raw, kp.Certificate().Leaf.Raw)

				// Putting the valid files back clears the error.
				files.write(t, fileWriter{"rename", writeByRename}, valid)
				require.NoError(t, kp.Reload())
				assert.NoError(t, kp.LastError())
			})
		})
	}

	t.Run("judged by the reloader's clock", func(t *testing.T) {
		clock := &fakeClock{now: valid.Cert.NotAfter.Add(time.Second)}
		files := newPairFiles(t, "server")
		files.write(t, fileWriter{"rename", writeByRename}, valid)
		_, err := LoadKeyPair(files.cert, files.key, withClock(clock.Now))
		require.ErrorContains(t, err, "expired at "+valid.Cert.NotAfter.UTC().Format(time.RFC3339))
	})
}

// The relay has no passphrase to decrypt a key with. A key openssl wrote
// with one, in either of its forms, is refused with an error that says so
// and how to write an unencrypted copy, rather than Go's "tls: failed to
// parse private key". openssl is required: the test fails without it.
func TestKeyPairRefusesEncryptedKey(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is required on PATH for this test: %v", err)
	}
	ca := newTestCA(t, "test CA")
	c := issueServer(t, ca)

	tests := []struct {
		name    string
		args    []string // openssl pkey arguments that encrypt the key
		wantPEM string   // how the encrypted key file shows it
		wantErr string
	}{
		{"PKCS#8", []string{"-aes256"}, "-----BEGIN ENCRYPTED PRIVATE KEY-----",
			"key file is encrypted (PKCS#8 ENCRYPTED PRIVATE KEY): the relay needs an unencrypted PEM key"},
		{"legacy PEM encryption", []string{"-aes256", "-traditional"}, "Proc-Type: 4,ENCRYPTED",
			"key file is encrypted (EC PRIVATE KEY with Proc-Type: 4,ENCRYPTED): the relay needs an unencrypted PEM key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := newPairFiles(t, "server")
			files.write(t, fileWriter{"rename", writeByRename}, c)
			encrypted := filepath.Join(filepath.Dir(files.key), "encrypted-key.pem")
			args := append([]string{"pkey", "-in", files.key, "-passout", "pass:secret", "-out", encrypted}, tt.args...)
			out, err := exec.Command("openssl", args...).CombinedOutput()
			require.NoError(t, err, "openssl %s:\n%s", strings.Join(args, " "), out)
			keyPEM, err := os.ReadFile(encrypted)
			require.NoError(t, err)
			require.Contains(t, string(keyPEM), tt.wantPEM, "openssl wrote another form than this case is about")

			_, err = LoadKeyPair(files.cert, encrypted)
			require.ErrorContains(t, err, tt.wantErr)
			decrypted := filepath.Join(filepath.Dir(files.key), "encrypted-key-unencrypted.pem")
			assert.ErrorContains(t, err, fmt.Sprintf(`"openssl pkey -in %s -out %s"`, encrypted, decrypted), "the error names the file and how to decrypt it")

			// The advice works.
			args = []string{"pkey", "-in", encrypted, "-passin", "pass:secret", "-out", decrypted}
			out, err = exec.Command("openssl", args...).CombinedOutput()
			require.NoError(t, err, "openssl %s:\n%s", strings.Join(args, " "), out)
			_, err = LoadKeyPair(files.cert, decrypted)
			require.NoError(t, err)

			// As a replacement, it keeps the loaded key pair.
			kp, err := LoadKeyPair(files.cert, files.key, CheckInterval(-1))
			require.NoError(t, err)
			writeByRename(t, files.key, keyPEM)
			require.ErrorContains(t, kp.Reload(), tt.wantErr)
			assert.ErrorContains(t, kp.LastError(), tt.wantErr)
			assert.Equal(t, c.Cert.Raw, kp.Certificate().Leaf.Raw)
		})
	}
}

func TestKeyPairCheckInterval(t *testing.T) {
	ca := newTestCA(t, "test CA")
	a, b := issueServer(t, ca), issueServer(t, ca)

	tests := []struct {
		name     string
		opts     []Option
		interval time.Duration // 0: never picked up lazily
	}{
		{"default", nil, DefaultCheckInterval},
		{"5 minutes", []Option{CheckInterval(5 * time.Minute)}, 5 * time.Minute},
		{"negative: explicit reload only", []Option{CheckInterval(-1)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// From now: certificates are checked against this clock too.
			clock := &fakeClock{now: time.Now()}
			files := newPairFiles(t, "server")
			files.write(t, fileWriter{"rename", writeByRename}, a)
			kp, err := LoadKeyPair(files.cert, files.key, append(tt.opts, withClock(clock.Now))...)
			require.NoError(t, err)

			files.write(t, fileWriter{"rename", writeByRename}, b)
			if tt.interval == 0 {
				clock.Add(24 * time.Hour)
				assert.Equal(t, a.Cert.Raw, kp.Certificate().Leaf.Raw)
				require.NoError(t, kp.Reload())
				assert.Equal(t, b.Cert.Raw, kp.Certificate().Leaf.Raw)
				return
			}
			clock.Add(tt.interval - time.Millisecond)
			assert.Equal(t, a.Cert.Raw, kp.Certificate().Leaf.Raw, "checked before the interval passed")
			clock.Add(time.Millisecond)
			assert.Equal(t, b.Cert.Raw, kp.Certificate().Leaf.Raw, "not checked once the interval passed")

			// The interval restarts at each check.
			files.write(t, fileWriter{"rename", writeByRename}, a)
			clock.Add(tt.interval / 2)
			assert.Equal(t, b.Cert.Raw, kp.Certificate().Leaf.Raw)
			clock.Add(tt.interval / 2)
			assert.Equal(t, a.Cert.Raw, kp.Certificate().Leaf.Raw)
		})
	}
}

func TestCAPool(t *testing.T) {
	ca1, ca2 := newTestCA(t, "CA one"), newTestCA(t, "CA two")
	leaf1, leaf2 := issueServer(t, ca1), issueServer(t, ca2)
	verifies := func(p *CAPool, leaf *Cert) bool {
		_, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: p.Pool()})
		return err == nil
	}
	bundle := append(append([]byte("# bundle\n"), ca1.CertPEM()...), ca2.CertPEM()...)

	t.Run("load errors", func(t *testing.T) {
		tests := []struct {
			name    string
			data    []byte
			wantErr string
		}{
			{"missing", nil, "no such file"},
			{"empty", []byte{}, "no PEM certificate found"},
			{"key only", mustKeyPEM(t, leaf1), "no PEM certificate found"},
			{"half-written bundle", bundle[:len(bundle)-60], "truncated or malformed PEM block"},
			{"bad certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}), "certificate 1: x509: "},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "ca.pem")
				if tt.data != nil {
					require.NoError(t, os.WriteFile(path, tt.data, 0o644))
				}
				_, err := LoadCAPool(path)
				require.ErrorContains(t, err, tt.wantErr)
				assert.True(t, strings.HasPrefix(err.Error(), "reload: "), err.Error())
			})
		}
		_, err := LoadCAPool("")
		require.ErrorContains(t, err, "empty CA file path")
	})

	t.Run("bundle", func(t *testing.T) {
		p, err := LoadCAPool(writeCAFileData(t, bundle))
		require.NoError(t, err)
		assert.True(t, verifies(p, leaf1))
		assert.True(t, verifies(p, leaf2))
	})

	for _, w := range fileWriters() {
		t.Run("replaced "+w.name, func(t *testing.T) {
			path := writeCAFile(t, ca1)
			p, err := LoadCAPool(path, CheckInterval(0))
			require.NoError(t, err)
			require.True(t, verifies(p, leaf1))
			require.False(t, verifies(p, leaf2))

			w.write(t, path, ca2.CertPEM())
			assert.True(t, verifies(p, leaf2))
			assert.False(t, verifies(p, leaf1))

			// A half-written replacement keeps the loaded pool.
			w.write(t, path, bundle[:len(bundle)-60])
			assert.True(t, verifies(p, leaf2))
			assert.ErrorContains(t, p.LastError(), "truncated or malformed PEM block")
			assert.ErrorContains(t, p.Reload(), "truncated or malformed PEM block")

			w.write(t, path, bundle)
			require.NoError(t, p.Reload())
			assert.NoError(t, p.LastError())
			assert.True(t, verifies(p, leaf1))
			assert.True(t, verifies(p, leaf2))
		})
	}
}

// A CA file whose certificates have all expired verifies no peer: every
// handshake with it would fail. It is refused at load and, as a
// replacement, keeps the loaded CAs and is reported. An expired CA beside
// a valid one, as in a bundle during a CA rotation, is kept; a CA not valid
// yet is taken.
func TestCAPoolRefusesExpiredCA(t *testing.T) {
	now := time.Now()
	expiredAt, expiredBefore := now.Add(-time.Hour), now.Add(-2*time.Hour)
	expired := caValidBetween(t, "expired CA", now.Add(-48*time.Hour), expiredAt)
	expiredToo := caValidBetween(t, "expired CA too", now.Add(-48*time.Hour), expiredBefore)
	notYet := caValidBetween(t, "CA of tomorrow", now.Add(time.Hour), now.Add(48*time.Hour))
	current, loaded := newTestCA(t, "current CA"), newTestCA(t, "loaded CA")

	tests := []struct {
		name    string
		cas     []*CA
		wantErr string // empty: loads
	}{
		{"expired CA", []*CA{expired},
			`CA certificate "CN=expired CA" expired at ` + expiredAt.UTC().Format(time.RFC3339) + " (its NotAfter)"},
		{"bundle of expired CAs", []*CA{expiredToo, expired},
			`all 2 CA certificates have expired, the last ("CN=expired CA") at ` + expiredAt.UTC().Format(time.RFC3339)},
		{"expired CA beside a valid one", []*CA{expired, current}, ""},
		{"valid from in an hour (clock skew)", []*CA{notYet}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Run("at load", func(t *testing.T) {
				path := writeCAFile(t, tt.cas...)
				_, err := LoadCAPool(path)
				if tt.wantErr == "" {
					require.NoError(t, err)
					return
				}
				require.ErrorContains(t, err, tt.wantErr)
				assert.ErrorContains(t, err, "reload: "+path+": ", "the error names the file")
			})
			t.Run("as a replacement", func(t *testing.T) {
				path := writeCAFile(t, loaded)
				p, err := LoadCAPool(path, CheckInterval(0))
				require.NoError(t, err)
				var bundle []byte
				for _, ca := range tt.cas {
					bundle = append(bundle, ca.CertPEM()...)
				}
				writeByRename(t, path, bundle)
				if tt.wantErr == "" {
					assert.True(t, p.Pool().Equal(poolOf(tt.cas...)))
					assert.NoError(t, p.LastError())
					return
				}
				assert.True(t, p.Pool().Equal(poolOf(loaded)), "the expired CA replaced the loaded one")
				assert.ErrorContains(t, p.LastError(), tt.wantErr)
				assert.ErrorContains(t, p.Reload(), tt.wantErr)
			})
		})
	}
}

func mustKeyPEM(t *testing.T, c *Cert) []byte {
	t.Helper()
	k, err := c.KeyPEM()
	require.NoError(t, err)
	return k
}

func writeCAFileData(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

// TestOpenSSLKeys serves certificates and keys written by the openssl
// command line, in each key encoding it produces. openssl is required: the
// test fails without it.
func TestOpenSSLKeys(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is required on PATH for this test: %v", err)
	}
	const subj, san = "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1"
	selfSigned := func(key string) [][]string {
		return [][]string{{"req", "-x509", "-new", "-key", key, "-out", "cert.pem", "-days", "2", "-subj", subj, "-addext", san}}
	}

	tests := []struct {
		name     string
		cmds     [][]string        // run in the test's directory
		files    map[string]string // extra files written first
		keyType  string            // PEM type of the private key block
		certFile []string          // concatenated into the served cert file
		caFile   string            // what the client trusts
		chainLen int
	}{
		{
			name:     "req -newkey rsa (PKCS#8)",
			cmds:     [][]string{{"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", subj, "-addext", san}},
			keyType:  "PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name:     "genrsa -traditional (PKCS#1)",
			cmds:     append([][]string{{"genrsa", "-traditional", "-out", "key.pem", "2048"}}, selfSigned("key.pem")...),
			keyType:  "RSA PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name:     "ecparam -genkey (SEC1, with EC PARAMETERS)",
			cmds:     append([][]string{{"ecparam", "-genkey", "-name", "prime256v1", "-out", "key.pem"}}, selfSigned("key.pem")...),
			keyType:  "EC PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name:     "ecparam -genkey secp384r1 (SEC1)",
			cmds:     append([][]string{{"ecparam", "-genkey", "-noout", "-name", "secp384r1", "-out", "key.pem"}}, selfSigned("key.pem")...),
			keyType:  "EC PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name:     "genpkey EC (PKCS#8)",
			cmds:     append([][]string{{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "key.pem"}}, selfSigned("key.pem")...),
			keyType:  "PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name:     "genpkey RSA (PKCS#8)",
			cmds:     append([][]string{{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "key.pem"}}, selfSigned("key.pem")...),
			keyType:  "PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name:     "genpkey Ed25519 (PKCS#8)",
			cmds:     append([][]string{{"genpkey", "-algorithm", "ED25519", "-out", "key.pem"}}, selfSigned("key.pem")...),
			keyType:  "PRIVATE KEY",
			certFile: []string{"cert.pem"}, caFile: "cert.pem", chainLen: 1,
		},
		{
			name: "chain: RSA leaf, EC intermediate, EC root",
			files: map[string]string{
				"int.ext":  "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
				"leaf.ext": san + "\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
			},
			cmds: [][]string{
				{"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "root-key.pem", "-out", "root.pem", "-days", "2", "-subj", "/CN=openssl root"},
				{"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "int-key.pem", "-out", "int.csr", "-subj", "/CN=openssl intermediate"},
				{"x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root-key.pem", "-set_serial", "2", "-days", "2", "-extfile", "int.ext", "-out", "int.pem"},
				{"genrsa", "-traditional", "-out", "key.pem", "2048"},
				{"req", "-new", "-key", "key.pem", "-out", "leaf.csr", "-subj", subj},
				{"x509", "-req", "-in", "leaf.csr", "-CA", "int.pem", "-CAkey", "int-key.pem", "-set_serial", "3", "-days", "2", "-extfile", "leaf.ext", "-out", "leaf.pem"},
			},
			keyType:  "RSA PRIVATE KEY",
			certFile: []string{"leaf.pem", "int.pem"}, caFile: "root.pem", chainLen: 2,
		},
	}

	relayCA := newTestCA(t, "relay CA")
	client, _ := newTestClient(t, relayCA, "relay")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
			}
			for _, args := range tt.cmds {
				cmd := exec.Command("openssl", args...)
				cmd.Dir = dir
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "openssl %s:\n%s", strings.Join(args, " "), out)
			}
			keyPEM, err := os.ReadFile(filepath.Join(dir, "key.pem"))
			require.NoError(t, err)
			assert.Contains(t, string(keyPEM), "-----BEGIN "+tt.keyType+"-----", "openssl wrote another key encoding than this case is about")

			var chain []byte
			for _, name := range tt.certFile {
				b, err := os.ReadFile(filepath.Join(dir, name))
				require.NoError(t, err)
				chain = append(chain, b...)
			}
			certFile := filepath.Join(dir, "served.pem")
			require.NoError(t, os.WriteFile(certFile, chain, 0o644))

			srv, err := NewServer(certFile, filepath.Join(dir, "key.pem"))
			require.NoError(t, err)
			s := startServer(t, srv.Config())
			conn, err := s.dial(t, newDialer(t, client, filepath.Join(dir, tt.caFile)))
			require.NoError(t, err)
			require.NoError(t, echo(conn, "hello"))
			require.NoError(t, s.next(t).err)
			assert.Len(t, conn.ConnectionState().PeerCertificates, tt.chainLen)
			assert.Equal(t, "localhost", servedLeaf(t, conn).Subject.CommonName)
		})
	}
}

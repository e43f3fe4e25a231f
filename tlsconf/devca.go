package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Validity of the development certificates.
const (
	devCAValidity   = 10 * 365 * 24 * time.Hour
	devLeafValidity = 365 * 24 * time.Hour
	// devRenewBefore: a kept certificate expiring within it is issued anew.
	devRenewBefore = 30 * 24 * time.Hour
	devClockSkew   = time.Hour // NotBefore is backdated by this much
)

// Cert is a certificate and its ECDSA private key, held in memory.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// CertPEM returns the certificate in PEM.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// KeyPEM returns the private key in PEM, as PKCS#8.
func (c *Cert) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return nil, fmt.Errorf("devca: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TLSCertificate returns the certificate and key for a tls.Config.
func (c *Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// WriteFiles writes the certificate to certFile (mode 0644) and the key to
// keyFile (mode 0600). Each file is replaced atomically (write to a temporary
// file, then rename), so a reader never sees it half-written.
func (c *Cert) WriteFiles(certFile, keyFile string) error {
	keyPEM, err := c.KeyPEM()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(certFile, c.CertPEM(), 0o644); err != nil {
		return err
	}
	return writeFileAtomic(keyFile, keyPEM, 0o600)
}

// CA is an in-memory development certificate authority: an ECDSA P-256
// self-signed certificate valid for ten years that issues one-year server
// and client certificates.
type CA struct {
	Cert
}

// NewCA creates a CA with the given common name.
func NewCA(commonName string) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("devca: empty CA common name")
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	c, err := newCert(tmpl, devCAValidity, nil)
	if err != nil {
		return nil, fmt.Errorf("devca: CA %q: %w", commonName, err)
	}
	return &CA{Cert: *c}, nil
}

// IssueServer issues a server certificate (extended key usage server auth)
// for hosts, each a DNS name or an IP address; the common name is hosts[0].
func (ca *CA) IssueServer(hosts ...string) (*Cert, error) {
	if len(hosts) == 0 {
		return nil, errors.New("devca: server certificate: no hosts")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h != "":
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		default:
			return nil, errors.New("devca: server certificate: empty host")
		}
	}
	c, err := newCert(tmpl, devLeafValidity, ca)
	if err != nil {
		return nil, fmt.Errorf("devca: server certificate %q: %w", hosts[0], err)
	}
	return c, nil
}

// IssueClient issues a client certificate (extended key usage client auth)
// with the given common name.
func (ca *CA) IssueClient(commonName string) (*Cert, error) {
	if commonName == "" {
		return nil, errors.New("devca: client certificate: empty common name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	c, err := newCert(tmpl, devLeafValidity, ca)
	if err != nil {
		return nil, fmt.Errorf("devca: client certificate %q: %w", commonName, err)
	}
	return c, nil
}

// newCert generates a P-256 key and a certificate from tmpl, signed by
// parent, or self-signed if parent is nil.
func newCert(tmpl *x509.Certificate, validity time.Duration, parent *CA) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-devClockSkew)
	tmpl.NotAfter = now.Add(validity)

	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.Cert.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &Cert{Cert: cert, Key: key}, nil
}

// FilePair names a certificate file and its key file.
type FilePair struct {
	Cert string
	Key  string
}

// DevFiles names the files InitDevCA wrote.
type DevFiles struct {
	CA          FilePair            // ca.pem, ca-key.pem
	RelayClient FilePair            // relay-client.pem: the relay's delivery client certificate
	Ingress     FilePair            // ingress.pem: the relay's HTTPS ingress server certificate
	Tenants     map[string]FilePair // <tenant>.pem: each tenant instance's server certificate
	// Written lists the files this call wrote, in Paths order; the others
	// existed and were kept.
	Written []string
}

// InitDevCA creates a development CA in dir (created if missing) and writes
// it with the certificates it issues: ca.pem and ca-key.pem;
// relay-client.pem and relay-client-key.pem, the relay's client certificate;
// ingress.pem and ingress-key.pem, the ingress server certificate; and
// <tenant>.pem and <tenant>-key.pem, a server certificate for each tenant's
// instance. Server certificates are for localhost, 127.0.0.1 and ::1.
// Tenant names may hold ASCII letters, digits, '-', '_' and '.'.
//
// Files that exist are kept: with the CA's two files present, it issues
// from that CA only the certificates whose two files are both missing
// (adding a tenant) or that expire within 30 days. It refuses, writing
// nothing, when the CA expires within 30 days, when the CA is missing
// while other files exist, or when a certificate's file exists without
// its key's. force makes a new CA and replaces every file.
func InitDevCA(dir string, tenants []string, force bool) (*DevFiles, error) {
	if dir == "" {
		return nil, errors.New("devca: empty directory")
	}
	files := &DevFiles{
		CA:          devPair(dir, "ca"),
		RelayClient: devPair(dir, "relay-client"),
		Ingress:     devPair(dir, "ingress"),
		Tenants:     make(map[string]FilePair, len(tenants)),
	}
	taken := map[string]string{}
	for _, fp := range []FilePair{files.CA, files.RelayClient, files.Ingress} {
		taken[fp.Cert], taken[fp.Key] = "built-in", "built-in"
	}
	for _, t := range tenants {
		if err := validTenantName(t); err != nil {
			return nil, err
		}
		if _, dup := files.Tenants[t]; dup {
			return nil, fmt.Errorf("devca: tenant %q: listed twice", t)
		}
		fp := devPair(dir, t)
		for _, name := range []string{fp.Cert, fp.Key} {
			if owner, ok := taken[name]; ok {
				return nil, fmt.Errorf("devca: tenant %q: file %s is also the %s file", t, filepath.Base(name), owner)
			}
			taken[name] = fmt.Sprintf("tenant %q", t)
		}
		files.Tenants[t] = fp
	}

	var ca *CA
	keep := map[FilePair]bool{}
	if !force {
		var err error
		if ca, keep, err = existingDevFiles(files); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("devca: %w", err)
	}

	// Issue everything first, then write: a failure part way through the
	// writes names what was already replaced, since a CA and certificates
	// of another CA side by side do not work together.
	type issued struct {
		cert *Cert
		to   FilePair
	}
	var todo []issued
	if ca == nil {
		var err error
		if ca, err = NewCA("relay development CA"); err != nil {
			return nil, err
		}
		todo = append(todo, issued{&ca.Cert, files.CA})
	}
	if !keep[files.RelayClient] {
		client, err := ca.IssueClient("relay")
		if err != nil {
			return nil, err
		}
		todo = append(todo, issued{client, files.RelayClient})
	}
	servers := []FilePair{files.Ingress}
	for _, t := range tenants {
		servers = append(servers, files.Tenants[t])
	}
	for _, fp := range servers {
		if keep[fp] {
			continue
		}
		c, err := ca.IssueServer("localhost", "127.0.0.1", "::1")
		if err != nil {
			return nil, err
		}
		todo = append(todo, issued{c, fp})
	}
	var written []string
	for _, it := range todo {
		if err := it.cert.WriteFiles(it.to.Cert, it.to.Key); err != nil {
			if len(written) > 0 {
				again := "run it again to write the rest from the same CA"
				if force {
					again = "the others are of the old CA: run it again with --force to make a consistent set"
				}
				return nil, fmt.Errorf("%w (already written: %s; %s)", err, strings.Join(written, ", "), again)
			}
			return nil, err
		}
		written = append(written, it.to.Cert, it.to.Key)
	}
	for _, p := range files.Paths() {
		if slices.Contains(written, p) {
			files.Written = append(files.Written, p)
		}
	}
	return files, nil
}

// existingDevFiles looks at which of files exist. With none it returns no
// CA. With the CA's two files it loads the CA and returns the pairs that
// exist whole, to keep. Anything else is refused: certificates without
// the CA that issued them, or half a pair.
func existingDevFiles(files *DevFiles) (*CA, map[FilePair]bool, error) {
	pairs := []FilePair{files.CA, files.RelayClient, files.Ingress}
	for _, fp := range files.Tenants {
		pairs = append(pairs, fp)
	}
	exists := func(name string) (bool, error) {
		_, err := os.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("devca: %w", err)
		}
		return true, nil
	}
	keep := map[FilePair]bool{}
	var existing []string
	for _, fp := range pairs {
		c, err := exists(fp.Cert)
		if err != nil {
			return nil, nil, err
		}
		k, err := exists(fp.Key)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case c && k:
			keep[fp] = true
			existing = append(existing, fp.Cert, fp.Key)
		case c || k:
			return nil, nil, fmt.Errorf("devca: %s and %s: one exists without the other; remove it, or --force replaces every file, with a new CA", fp.Cert, fp.Key)
		}
	}
	if len(existing) == 0 {
		return nil, keep, nil
	}
	if !keep[files.CA] {
		return nil, nil, fmt.Errorf("devca: %s already exist(s) but the CA that issued them (%s) does not (--force replaces them all, with a new CA)", strings.Join(existing, ", "), files.CA.Cert)
	}
	ca, err := LoadCA(files.CA.Cert, files.CA.Key)
	if err != nil {
		return nil, nil, err
	}
	if at := ca.Cert.Cert.NotAfter; time.Now().After(at.Add(-devRenewBefore)) {
		// What it would issue could not be verified for long; a new CA
		// invalidates what was handed out, so that takes --force.
		return nil, nil, fmt.Errorf("devca: the CA %s expires at %s (or has): --force makes a new CA and replaces every file (hand the new %s to the instances)",
			files.CA.Cert, at.UTC().Format(time.RFC3339), filepath.Base(files.CA.Cert))
	}
	// What is kept must be of this CA, or the set does not work together
	// (a --force run that failed part way leaves the old CA's).
	for fp := range keep {
		if fp == files.CA {
			continue
		}
		pair, err := tls.LoadX509KeyPair(fp.Cert, fp.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("devca: %w", err)
		}
		if err := pair.Leaf.CheckSignatureFrom(ca.Cert.Cert); err != nil {
			return nil, nil, fmt.Errorf("devca: %s was not issued by %s (--force replaces them all, with a new CA)", fp.Cert, files.CA.Cert)
		}
		if time.Now().After(pair.Leaf.NotAfter.Add(-devRenewBefore)) {
			// Expired or about to: the relay refuses an expired
			// certificate, so issue it anew from the same CA.
			delete(keep, fp)
		}
	}
	return ca, keep, nil
}

// LoadCA reads a CA written by InitDevCA: its certificate and its key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("devca: CA: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("devca: CA %s: the key is not ECDSA", keyFile)
	}
	if !pair.Leaf.IsCA {
		return nil, fmt.Errorf("devca: %s is not a CA certificate", certFile)
	}
	return &CA{Cert: Cert{Cert: pair.Leaf, Key: key}}, nil
}

// Paths returns every file InitDevCA writes, CA first and tenants in name
// order, each certificate before its key.
func (f *DevFiles) Paths() []string {
	pairs := []FilePair{f.CA, f.RelayClient, f.Ingress}
	names := make([]string, 0, len(f.Tenants))
	for t := range f.Tenants {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		pairs = append(pairs, f.Tenants[t])
	}
	paths := make([]string, 0, 2*len(pairs))
	for _, fp := range pairs {
		paths = append(paths, fp.Cert, fp.Key)
	}
	return paths
}

func devPair(dir, name string) FilePair {
	return FilePair{
		Cert: filepath.Join(dir, name+".pem"),
		Key:  filepath.Join(dir, name+"-key.pem"),
	}
}

// validTenantName accepts 1 to 64 ASCII letters, digits, '-', '_' and '.',
// not starting with '.' (no hidden files, no "..").
func validTenantName(t string) error {
	if t == "" || len(t) > 64 {
		return fmt.Errorf("devca: tenant name %q: must be 1 to 64 characters", t)
	}
	if t[0] == '.' {
		return fmt.Errorf("devca: tenant name %q: must not start with '.'", t)
	}
	for _, r := range t {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return fmt.Errorf("devca: tenant name %q: %q is not a letter, digit, '-', '_' or '.'", t, r)
		}
	}
	return nil
}

// writeFileAtomic writes data to a temporary file in name's directory and
// renames it over name.
func writeFileAtomic(name string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("devca: write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
			err = fmt.Errorf("devca: write %s: %w", name, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

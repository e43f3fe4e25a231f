package tlsconf

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// KeyPair is a certificate chain and its private key loaded from two PEM
// files and re-read when they change. It accepts what openssl writes: PKCS#1
// RSA, PKCS#8 and SEC1 EC keys, and a certificate file holding the leaf
// followed by its intermediates. It refuses an encrypted key (the relay has
// no passphrase) and a leaf certificate that has expired. Its methods are
// safe for concurrent use.
type KeyPair struct {
	r *reloader[*tls.Certificate]
}

// LoadKeyPair loads certFile and keyFile. Later handshakes pick up new
// content of either file (see CheckInterval); a replacement that does not
// parse, or whose certificate has expired, keeps the loaded certificate and
// is reported by LastError. It accepts CheckInterval only.
func LoadKeyPair(certFile, keyFile string, opts ...Option) (*KeyPair, error) {
	o := applyOptions(opts)
	if err := o.check(false, false); err != nil {
		return nil, fmt.Errorf("reload: key pair: %w", err)
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("reload: key pair: empty cert or key file path")
	}
	parse := func(files []string, data [][]byte, now time.Time, first bool) (*tls.Certificate, error) {
		return parseKeyPair(files, data, now, first && o.expiredAtLoad)
	}
	r, err := newReloader(o, parse, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &KeyPair{r: r}, nil
}

// Certificate returns the current certificate, first re-reading the files
// if the check interval has passed. Its Leaf is set.
func (k *KeyPair) Certificate() *tls.Certificate { return k.r.get() }

// GetCertificate returns the current certificate; it fits
// tls.Config.GetCertificate.
func (k *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return k.r.get(), nil
}

// GetClientCertificate returns the current certificate; it fits
// tls.Config.GetClientCertificate.
func (k *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return k.r.get(), nil
}

// Reload re-reads the files now. If their content changed and does not
// parse, or holds an expired certificate, it returns the error and keeps the
// loaded certificate.
func (k *KeyPair) Reload() error { return k.r.reload() }

// LastError returns the error of the latest read of the files, lazy or
// explicit, or nil if the files matched or replaced the loaded certificate.
func (k *KeyPair) LastError() error { return k.r.lastError() }

// CAPool is a pool of CA certificates loaded from a PEM bundle file and
// re-read when it changes. Its methods are safe for concurrent use.
type CAPool struct {
	r *reloader[*x509.CertPool]
}

// LoadCAPool loads the PEM bundle in caFile, which must hold at least one
// certificate that has not expired (a bundle may keep an expired CA beside
// a valid one, as during a CA rotation). Later handshakes pick up new
// content (see CheckInterval); a replacement that does not parse, or whose
// certificates have all expired, keeps the loaded pool and is reported by
// LastError. It accepts CheckInterval only.
func LoadCAPool(caFile string, opts ...Option) (*CAPool, error) {
	o := applyOptions(opts)
	if err := o.check(false, false); err != nil {
		return nil, fmt.Errorf("reload: CA pool: %w", err)
	}
	if caFile == "" {
		return nil, errors.New("reload: CA pool: empty CA file path")
	}
	r, err := newReloader(o, parseCAPool, caFile)
	if err != nil {
		return nil, err
	}
	return &CAPool{r: r}, nil
}

// Pool returns the current pool, first re-reading the file if the check
// interval has passed. The pool must not be modified.
func (p *CAPool) Pool() *x509.CertPool { return p.r.get() }

// Reload re-reads the file now. If its content changed and does not parse,
// or its certificates have all expired, it returns the error and keeps the
// loaded pool.
func (p *CAPool) Reload() error { return p.r.reload() }

// LastError returns the error of the latest read of the file, lazy or
// explicit, or nil if the file matched or replaced the loaded pool.
func (p *CAPool) LastError() error { return p.r.lastError() }

// reloader holds the value parsed from a set of files and parses them again
// when their content changes. Checks run in the caller's goroutine.
type reloader[T any] struct {
	files    []string
	parse    parseFunc[T]
	interval time.Duration
	now      func() time.Time

	mu      sync.Mutex
	value   T
	sum     [sha256.Size]byte // of the files value was parsed from
	checked time.Time         // time of the latest check
	err     error             // of the latest check
}

// parseFunc parses the content of files, data[i] being that of files[i],
// into the value a reloader holds; now is the time certificates must be
// valid at; first says it is the first load, not a replacement.
type parseFunc[T any] func(files []string, data [][]byte, now time.Time, first bool) (T, error)

func newReloader[T any](o options, parse parseFunc[T], files ...string) (*reloader[T], error) {
	r := &reloader[T]{files: files, parse: parse, interval: o.checkInterval, now: o.now}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked = r.now()
	if err := r.reloadLocked(true); err != nil {
		return nil, err
	}
	return r, nil
}

// get returns the current value after a check, if one is due.
func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.interval >= 0 {
		now := r.now()
		if now.Sub(r.checked) >= r.interval || now.Before(r.checked) {
			r.checked = now
			_ = r.reloadLocked(false) // kept in r.err for LastError
		}
	}
	return r.value
}

func (r *reloader[T]) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checked = r.now()
	return r.reloadLocked(false)
}

func (r *reloader[T]) lastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// reloadLocked reads the files and, if their content differs from what value
// was parsed from (or first is set), parses them and replaces value. On
// failure value is kept. r.mu must be held.
func (r *reloader[T]) reloadLocked(first bool) error {
	data := make([][]byte, len(r.files))
	h := sha256.New()
	for i, name := range r.files {
		b, err := os.ReadFile(name)
		if err != nil {
			r.err = fmt.Errorf("reload: %w", err)
			return r.err
		}
		data[i] = b
		_ = binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if !first && sum == r.sum {
		r.err = nil
		return nil
	}
	v, err := r.parse(r.files, data, r.now(), first)
	if err != nil {
		r.err = fmt.Errorf("reload: %s: %w", joinNames(r.files), err)
		return r.err
	}
	r.value, r.sum, r.err = v, sum, nil
	return nil
}

func joinNames(files []string) string {
	if len(files) == 1 {
		return files[0]
	}
	return fmt.Sprintf("%s and %s", files[0], files[1])
}

// parseKeyPair parses data[0] as the certificate chain and data[1], from
// files[1], as its key. It refuses a leaf certificate expired at now, unless
// expiredOK: a verifying peer would refuse it. One not valid yet (this
// clock behind the issuer's) is accepted, and so are the intermediates as
// they are: a peer may verify through another path.
func parseKeyPair(files []string, data [][]byte, now time.Time, expiredOK bool) (*tls.Certificate, error) {
	if err := checkPEMComplete(data[0]); err != nil {
		return nil, fmt.Errorf("cert file: %w", err)
	}
	if err := checkPEMComplete(data[1]); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	cert, err := tls.X509KeyPair(data[0], data[1])
	if err != nil {
		if typ, ok := encryptedKey(data[1]); ok {
			return nil, fmt.Errorf("key file is encrypted (%s): the relay needs an unencrypted PEM key; "+
				"write one with \"openssl pkey -in %s -out %s\" (it asks for the passphrase), keep it mode 0600 and use that file",
				typ, files[1], decryptedName(files[1]))
		}
		return nil, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert file: %w", err)
		}
	}
	if leaf := cert.Leaf; now.After(leaf.NotAfter) && !expiredOK {
		return nil, fmt.Errorf("cert file: certificate %q expired at %s (its NotAfter); install a renewed one",
			leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// encryptedKey reports whether the key block tls.X509KeyPair uses (the first
// whose type ends in "PRIVATE KEY") is encrypted, as openssl writes it when
// given a passphrase: PKCS#8 "ENCRYPTED PRIVATE KEY", or the older PEM
// encryption with a "Proc-Type: 4,ENCRYPTED" header. It returns the form.
func encryptedKey(data []byte) (string, bool) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return "", false
		}
		if block.Type != "PRIVATE KEY" && !strings.HasSuffix(block.Type, " PRIVATE KEY") {
			continue
		}
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY":
			return "PKCS#8 ENCRYPTED PRIVATE KEY", true
		case strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"):
			return block.Type + " with Proc-Type: 4,ENCRYPTED", true
		}
		return "", false
	}
}

// decryptedName suggests a file name for the decrypted copy of the key file
// name: key.pem gives key-unencrypted.pem.
func decryptedName(name string) string {
	ext := filepath.Ext(name)
	return strings.TrimSuffix(name, ext) + "-unencrypted" + cmp.Or(ext, ".pem")
}

// parseCAPool parses data[0] as a bundle of PEM certificates; blocks of
// other types are skipped. It refuses a bundle whose certificates have all
// expired at now, which could verify no peer; an expired CA beside a valid
// one is kept (a bundle during a CA rotation).
func parseCAPool(_ []string, data [][]byte, now time.Time, _ bool) (*x509.CertPool, error) {
	if err := checkPEMComplete(data[0]); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	valid := false
	var lastExpired *x509.Certificate // of the expired ones, the last to expire
	for rest := data[0]; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
		switch {
		case !now.After(cert.NotAfter):
			valid = true
		case lastExpired == nil || cert.NotAfter.After(lastExpired.NotAfter):
			lastExpired = cert
		}
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	if !valid {
		name, at := lastExpired.Subject.String(), lastExpired.NotAfter.UTC().Format(time.RFC3339)
		if n == 1 {
			return nil, fmt.Errorf("CA certificate %q expired at %s (its NotAfter); install the renewed CA", name, at)
		}
		return nil, fmt.Errorf("all %d CA certificates have expired, the last (%q) at %s (its NotAfter); install the renewed CA", n, name, at)
	}
	return pool, nil
}

// checkPEMComplete reports a PEM block that begins but does not end, as in a
// file read while it is being written: pem.Decode and tls.X509KeyPair would
// silently drop it, and with it an intermediate certificate or a CA.
func checkPEMComplete(data []byte) error {
	rest := data
	for {
		block, r := pem.Decode(rest)
		if block == nil {
			break
		}
		rest = r
	}
	if bytes.Contains(rest, []byte("-----BEGIN")) {
		return errors.New("truncated or malformed PEM block")
	}
	return nil
}

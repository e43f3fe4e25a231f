package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Server is the TLS side of a listener: the relay's HTTPS ingress, or a
// listener that requires client certificates (RequireClientCert). Its
// certificate and client CA files are reloaded without a restart; existing
// connections are not touched.
type Server struct {
	keyPair   *KeyPair
	clientCAs *CAPool // nil unless client certificates are required
}

// NewServer loads certFile and keyFile and, with RequireClientCert, the
// client CA bundle. It accepts CheckInterval and RequireClientCert.
func NewServer(certFile, keyFile string, opts ...Option) (*Server, error) {
	o := applyOptions(opts)
	if err := o.check(true, false); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	// An expired certificate is served at start, not refused: a load
	// balancer that does not verify its targets' certificates still gets
	// through, and a verifying peer refuses it either way. The caller sees
	// it in NotAfter. A replacement that has expired is refused.
	kp, err := LoadKeyPair(certFile, keyFile, CheckInterval(o.checkInterval), withClock(o.now), serveExpiredAtLoad())
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{keyPair: kp}
	if o.requireClientCert {
		s.clientCAs, err = LoadCAPool(o.clientCAFile, CheckInterval(o.checkInterval), withClock(o.now))
		if err != nil {
			return nil, fmt.Errorf("server: client CA: %w", err)
		}
	}
	return s, nil
}

// Config returns a new config for a listener (tls.NewListener, or fasthttp's
// Server.TLSConfig). Each handshake uses the current certificate and, with
// RequireClientCert, the current client CA pool. The caller may adjust the
// config, e.g. NextProtos, before its first use; when client certificates
// are required, handshakes are based on this config itself, so adjustments
// made to a clone of it are not seen.
func (s *Server) Config() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.keyPair.GetCertificate,
	}
	if s.clientCAs == nil {
		return c
	}
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.ClientCAs = s.clientCAs.Pool()
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cc := c.Clone()
		cc.GetConfigForClient = nil
		cc.ClientCAs = s.clientCAs.Pool()
		return cc, nil
	}
	return c
}

// Reload re-reads the certificate, key and client CA files now. Whatever
// does not parse keeps its loaded version; the errors are returned joined.
func (s *Server) Reload() error {
	err := s.keyPair.Reload()
	if s.clientCAs != nil {
		err = errors.Join(err, s.clientCAs.Reload())
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

// NotAfter is when the certificate in use expires.
func (s *Server) NotAfter() time.Time { return s.keyPair.Certificate().Leaf.NotAfter }

// LastError returns the errors of the latest reads of the server's files,
// joined, or nil if each file matched or replaced what was loaded.
func (s *Server) LastError() error {
	err := s.keyPair.LastError()
	if s.clientCAs != nil {
		err = errors.Join(err, s.clientCAs.LastError())
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}

package tlsconf

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"
)

// dialTimeout bounds the TCP connect of a dial whose context has no earlier
// deadline, as net/http's default transport does.
const dialTimeout = 30 * time.Second

// Client is the relay's side of mutual TLS towards tenant instances: it
// presents the relay's client certificate, reloaded when its files change.
// Each destination gets a Dialer that verifies the server against that
// destination's CA file.
type Client struct {
	keyPair          *KeyPair
	checkInterval    time.Duration
	now              func() time.Time
	handshakeTimeout time.Duration
}

// NewClient loads the relay's client certificate from certFile and keyFile.
// It accepts CheckInterval and HandshakeTimeout.
//
// With both file names empty the client presents no certificate: plain
// TLS, for instances that do not ask for one.
func NewClient(certFile, keyFile string, opts ...Option) (*Client, error) {
	o := applyOptions(opts)
	if err := o.check(false, true); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	var kp *KeyPair
	if certFile != "" || keyFile != "" {
		var err error
		kp, err = LoadKeyPair(certFile, keyFile, CheckInterval(o.checkInterval), withClock(o.now))
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
	}
	return &Client{
		keyPair:          kp,
		checkInterval:    o.checkInterval,
		now:              o.now,
		handshakeTimeout: o.handshakeTimeout,
	}, nil
}

// Dialer returns a dialer for servers whose certificates verify against the
// CA bundle in caFile, reloaded when it changes; an empty caFile means the
// system roots.
func (c *Client) Dialer(caFile string) (*Dialer, error) {
	d := &Dialer{client: c}
	if caFile != "" {
		var err error
		d.roots, err = LoadCAPool(caFile, CheckInterval(c.checkInterval), withClock(c.now))
		if err != nil {
			return nil, fmt.Errorf("client: server CA: %w", err)
		}
	}
	return d, nil
}

// Reload re-reads the client certificate and key files now. If they do not
// parse, it returns the error and keeps the loaded certificate.
func (c *Client) Reload() error {
	if c.keyPair == nil {
		return nil
	}
	if err := c.keyPair.Reload(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// NotAfter is when the client certificate in use expires; zero without one.
func (c *Client) NotAfter() time.Time {
	if c.keyPair == nil {
		return time.Time{}
	}
	return c.keyPair.Certificate().Leaf.NotAfter
}

// LastError returns the error of the latest read of the client certificate
// files, or nil if they matched or replaced what was loaded.
func (c *Client) LastError() error {
	if c.keyPair == nil {
		return nil
	}
	if err := c.keyPair.LastError(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

// Dialer opens mutual-TLS connections to one destination. Each new
// connection uses the client certificate and server CA files as they are at
// dial time; open connections are not touched.
type Dialer struct {
	client *Client
	roots  *CAPool // nil: system roots
}

// DialTLSContext connects to addr and completes the TLS handshake, verifying
// the server certificate against the destination's CAs for the host of addr
// (a DNS name or an IP address). ctx bounds the whole dial; the handshake is
// also bounded by the client's handshake timeout. It fits
// http.Transport.DialTLSContext and returns a *tls.Conn.
func (d *Dialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	cfg := d.Config()
	cfg.ServerName = host

	nd := net.Dialer{Timeout: dialTimeout}
	raw, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	hctx, cancel := context.WithTimeout(ctx, d.client.handshakeTimeout)
	defer cancel()
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(hctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("client: tls handshake with %s: %w", addr, err)
	}
	return conn, nil
}

// Config returns a new client config holding the destination's CAs as they
// are now and presenting the current client certificate at each handshake.
// ServerName is left empty for the caller (net/http and fasthttp set it from
// the address); handshakes fail until it is set. Prefer DialTLSContext, which
// also picks up CA file changes for each new connection.
func (d *Dialer) Config() *tls.Config {
	var roots *x509.CertPool
	if d.roots != nil {
		roots = d.roots.Pool()
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if d.client.keyPair != nil {
		cfg.GetClientCertificate = d.client.keyPair.GetClientCertificate
	}
	return cfg
}

// Reload re-reads the destination's CA file now. If it does not parse, it
// returns the error and keeps the loaded CAs. With system roots it does
// nothing.
func (d *Dialer) Reload() error {
	if d.roots == nil {
		return nil
	}
	if err := d.roots.Reload(); err != nil {
		return fmt.Errorf("client: server CA: %w", err)
	}
	return nil
}

// LastError returns the error of the latest read of the destination's CA
// file, or nil if it matched or replaced what was loaded.
func (d *Dialer) LastError() error {
	if d.roots == nil {
		return nil
	}
	if err := d.roots.LastError(); err != nil {
		return fmt.Errorf("client: server CA: %w", err)
	}
	return nil
}

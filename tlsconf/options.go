package tlsconf

import (
	"errors"
	"fmt"
	"time"
)

// DefaultCheckInterval is how often, at most, handshakes compare certificate
// and CA files with what is loaded, unless CheckInterval says otherwise.
const DefaultCheckInterval = time.Second

// DefaultHandshakeTimeout bounds a client's TLS handshake, unless
// HandshakeTimeout says otherwise.
const DefaultHandshakeTimeout = 10 * time.Second

// An Option tunes LoadKeyPair, LoadCAPool, NewServer or NewClient. Each
// option says which of them accept it; the others return an error.
type Option func(*options)

type options struct {
	checkInterval time.Duration
	now           func() time.Time

	expiredAtLoad bool // set by serveExpiredAtLoad

	requireClientCert bool // set by RequireClientCert
	clientCAFile      string

	handshakeTimeoutSet bool // set by HandshakeTimeout
	handshakeTimeout    time.Duration
}

// CheckInterval sets how often, at most, a handshake compares the files with
// what is loaded (default DefaultCheckInterval). Zero checks on every
// handshake; a negative interval never checks, leaving only explicit Reload
// calls. Accepted everywhere.
func CheckInterval(d time.Duration) Option {
	return func(o *options) { o.checkInterval = d }
}

// RequireClientCert makes a server require a client certificate that
// verifies against the CA bundle in caFile, which is reloaded like the
// server's own certificate. NewServer only.
func RequireClientCert(caFile string) Option {
	return func(o *options) { o.requireClientCert, o.clientCAFile = true, caFile }
}

// HandshakeTimeout bounds the TLS handshake of each connection a client
// dials (default DefaultHandshakeTimeout); the dial's context still applies.
// It must be positive. NewClient only.
func HandshakeTimeout(d time.Duration) Option {
	return func(o *options) { o.handshakeTimeoutSet, o.handshakeTimeout = true, d }
}

// withClock replaces time.Now for the lazy reload checks; tests use it to
// step over the check interval without sleeping.
func withClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// serveExpiredAtLoad makes LoadKeyPair take an expired certificate at its
// first load (a replacement is still refused): what NewServer wants.
func serveExpiredAtLoad() Option {
	return func(o *options) { o.expiredAtLoad = true }
}

// applyOptions collects opts over the defaults.
func applyOptions(opts []Option) options {
	o := options{
		checkInterval:    DefaultCheckInterval,
		now:              time.Now,
		handshakeTimeout: DefaultHandshakeTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// check rejects the options that the constructor does not accept and the
// invalid values.
func (o options) check(server, client bool) error {
	if o.requireClientCert && !server {
		return errors.New("option RequireClientCert applies to NewServer only")
	}
	if o.requireClientCert && o.clientCAFile == "" {
		return errors.New("option RequireClientCert: empty CA file path")
	}
	if o.handshakeTimeoutSet && !client {
		return errors.New("option HandshakeTimeout applies to NewClient only")
	}
	if o.handshakeTimeout <= 0 {
		return fmt.Errorf("option HandshakeTimeout: %v is not positive", o.handshakeTimeout)
	}
	return nil
}

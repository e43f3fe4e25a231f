// Package tenant owns the relay's customers: the tenant model, the tenants
// file and its reloads, the account → tenant index (behind an LRU), and the
// durable assignment of one relay.events partition to each tenant.
package tenant

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Instance modes.
const (
	// ModePush: the relay POSTs each event to the instance's URL over mTLS.
	ModePush = "push"
	// ModeSubscribe: the instance connects to the relay and streams events.
	// Not built yet: a tenants file naming it is refused.
	ModeSubscribe = "subscribe"
)

// Tenant is one customer: the Meta accounts it owns and the instance its
// events go to. A Tenant taken from a Snapshot is immutable.
type Tenant struct {
	ID       string   `yaml:"id"`
	Accounts []string `yaml:"accounts"`
	Instance Instance `yaml:"instance"`

	// Partition is the tenant's own partition of the events topic, assigned
	// durably in Kafka; set by the Registry, not read from the file.
	Partition int32 `yaml:"-"`
}

// Instance is where a tenant's events are delivered.
type Instance struct {
	// Mode is "push" (the default, and the only one available).
	Mode string `yaml:"mode"`
	// URL receives the POSTs in push mode; https only.
	URL string `yaml:"url"`
	// CAFile verifies the instance's certificate; empty means system roots.
	CAFile string `yaml:"ca_file"`
	// SigningSecret ("whsec_" + base64) signs every delivery. It may also
	// come from SigningSecretFile or RELAY_TENANT_<ID>_SIGNING_SECRET.
	SigningSecret     string `yaml:"signing_secret"`
	SigningSecretFile string `yaml:"signing_secret_file"`
	// PreviousSigningSecret, while a rotation is under way, also signs
	// every delivery: webhook-signature then carries a signature by each
	// secret, so the instance verifies it with either. It may also come
	// from PreviousSigningSecretFile or
	// RELAY_TENANT_<ID>_PREVIOUS_SIGNING_SECRET.
	PreviousSigningSecret     string `yaml:"previous_signing_secret"`
	PreviousSigningSecretFile string `yaml:"previous_signing_secret_file"`
	// MaxInFlight overrides delivery.max_in_flight_per_tenant for this
	// tenant; above 1 only where the instance accepts events out of order.
	MaxInFlight int `yaml:"max_in_flight"`
}

// Fingerprint identifies the tenant's delivery settings, secrets included
// (hashed): delivery resumes a suspended tenant when it changes.
func (t *Tenant) Fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%d\x00%s", t.ID, t.Instance.Mode, t.Instance.URL, t.Instance.CAFile, t.Instance.SigningSecret, t.Instance.MaxInFlight, t.Instance.PreviousSigningSecret)
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// SigningKey returns the Standard Webhooks key: the base64-decoded part of
// the signing secret after "whsec_".
func (t *Tenant) SigningKey() ([]byte, error) {
	return decodeSigningSecret(t.Instance.SigningSecret)
}

// PreviousSigningKey is SigningKey for PreviousSigningSecret; nil when
// there is none.
func (t *Tenant) PreviousSigningKey() ([]byte, error) {
	if t.Instance.PreviousSigningSecret == "" {
		return nil, nil
	}
	return decodeSigningSecret(t.Instance.PreviousSigningSecret)
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

const signingSecretPrefix = "whsec_"

func decodeSigningSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, signingSecretPrefix)
	if !ok {
		return nil, fmt.Errorf("must start with %q", signingSecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("the part after %q must be standard base64: %w", signingSecretPrefix, err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("the key after %q must decode to at least 16 bytes (got %d)", signingSecretPrefix, len(key))
	}
	return key, nil
}

// validate checks one tenant; field is its path for messages, such as
// "tenants[2]".
func (t *Tenant) validate(field string) []error {
	var errs []error
	bad := func(f, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", field, f, fmt.Sprintf(format, args...)))
	}
	if !idPattern.MatchString(t.ID) {
		bad("id", "%q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", t.ID)
	}
	if len(t.Accounts) == 0 {
		bad("accounts", "at least one Meta account id is required")
	}
	for i, a := range t.Accounts {
		if a == "" || strings.ContainsAny(a, " \t\r\n\"") {
			bad(fmt.Sprintf("accounts[%d]", i), "%q is not an account id", a)
		}
	}
	in := &t.Instance
	switch in.Mode {
	case ModePush:
		u, err := url.Parse(in.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			bad("instance.url", "%q must be an https:// URL (delivery is over mutual TLS)", in.URL)
		}
	case ModeSubscribe:
		// Accepting it would hold the tenant's events, with nothing to
		// deliver them, until the broker's retention deleted them.
		bad("instance.mode", "%q is not available in this version (its events would wait with nothing to deliver them): use %q", in.Mode, ModePush)
	default:
		bad("instance.mode", "%q must be %q", in.Mode, ModePush)
	}
	if _, err := decodeSigningSecret(in.SigningSecret); err != nil {
		bad("instance.signing_secret", "%v", err)
	}
	if _, err := t.PreviousSigningKey(); err != nil {
		bad("instance.previous_signing_secret", "%v", err)
	}
	if in.MaxInFlight < 0 {
		bad("instance.max_in_flight", "must not be negative")
	}
	return errs
}

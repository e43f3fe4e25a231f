package config

import (
	"fmt"
	"time"
)

// Delivery configures delivery to tenant instances.
type Delivery struct {
	// Enabled runs delivery in this process (default true). Set false on
	// ingress-only nodes; delivery nodes share the consumer group.
	Enabled *bool `yaml:"enabled"`
	// ClientCertFile and ClientKeyFile are the relay's client certificate,
	// presented to instances (mutual TLS). Empty: no client certificate.
	// Set but missing: delivery waits for the files to appear.
	ClientCertFile string `yaml:"client_cert_file"`
	ClientKeyFile  string `yaml:"client_key_file"`
	// Timeout bounds one delivery attempt.
	Timeout time.Duration `yaml:"timeout"` // default 10s
	// MaxAttempts and MaxAge bound retries; then the event goes to the DLQ.
	MaxAttempts int           `yaml:"max_attempts"` // default 15
	MaxAge      time.Duration `yaml:"max_age"`      // default 72h
	// MaxInFlightPerTenant is how many events of one tenant may be in
	// delivery at once; above 1 only where the tenant allows reordering.
	MaxInFlightPerTenant int `yaml:"max_in_flight_per_tenant"` // default 1
	// RetryInitial and RetryMax shape the backoff: retry n waits a random
	// time up to min(RetryMax, RetryInitial·2^(n-1)) (full jitter), or the
	// instance's Retry-After. With the defaults, the 14 waits between 15
	// attempts add up to about an hour on average (at most about 2 hours).
	RetryInitial time.Duration `yaml:"retry_initial"` // default 1s
	RetryMax     time.Duration `yaml:"retry_max"`     // default 30m
	// Breaker is each tenant's circuit breaker.
	Breaker Breaker `yaml:"breaker"`
	// Group prefixes the consumer groups: the instance sink's is
	// "<group>.instance".
	Group string `yaml:"group"` // default relay
	// CommitInterval is how often delivered offsets are committed.
	CommitInterval time.Duration `yaml:"commit_interval"` // default 1s
}

// Breaker configures the per-tenant circuit breakers.
type Breaker struct {
	// Failures is how many consecutive failed attempts open the breaker.
	Failures int `yaml:"failures"` // default 5
	// OpenFor is how long it stays open (the tenant's partition paused)
	// before a half-open probe.
	OpenFor time.Duration `yaml:"open_for"` // default 30s
}

// On reports whether delivery runs in this process.
func (d *Delivery) On() bool { return d.Enabled == nil || *d.Enabled }

func (d *Delivery) setDefaults() {
	if d.Timeout == 0 {
		d.Timeout = 10 * time.Second
	}
	if d.MaxAttempts == 0 {
		d.MaxAttempts = 15
	}
	if d.MaxAge == 0 {
		d.MaxAge = 72 * time.Hour
	}
	if d.MaxInFlightPerTenant == 0 {
		d.MaxInFlightPerTenant = 1
	}
	if d.RetryInitial == 0 {
		d.RetryInitial = time.Second
	}
	if d.RetryMax == 0 {
		d.RetryMax = 30 * time.Minute
	}
	if d.Breaker.Failures == 0 {
		d.Breaker.Failures = 5
	}
	if d.Breaker.OpenFor == 0 {
		d.Breaker.OpenFor = 30 * time.Second
	}
	if d.Group == "" {
		d.Group = "relay"
	}
	if d.CommitInterval == 0 {
		d.CommitInterval = time.Second
	}
}

func (d *Delivery) validate() []error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("%s: %s", field, msg)) }
	if (d.ClientCertFile == "") != (d.ClientKeyFile == "") {
		bad("delivery", "set both client_cert_file and client_key_file, or neither")
	}
	durations := map[string]time.Duration{
		"delivery.timeout": d.Timeout, "delivery.max_age": d.MaxAge, "delivery.retry_initial": d.RetryInitial,
		"delivery.retry_max": d.RetryMax, "delivery.breaker.open_for": d.Breaker.OpenFor, "delivery.commit_interval": d.CommitInterval,
	}
	for _, name := range sortedKeys(durations) {
		if durations[name] < 0 {
			bad(name, "must be positive")
		}
	}
	counts := map[string]int{
		"delivery.max_attempts": d.MaxAttempts, "delivery.max_in_flight_per_tenant": d.MaxInFlightPerTenant,
		"delivery.breaker.failures": d.Breaker.Failures,
	}
	for _, name := range sortedKeys(counts) {
		if counts[name] < 0 {
			bad(name, "must be positive")
		}
	}
	if d.RetryMax > 0 && d.RetryInitial > d.RetryMax {
		bad("delivery.retry_initial", "must not exceed delivery.retry_max")
	}
	return errs
}

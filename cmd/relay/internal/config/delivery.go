package config

import (
	"fmt"
	"time"
)

// Delivery configures delivery to tenant instances.
type Delivery struct {
	// ClientCertFile and ClientKeyFile are the relay's client certificate,
	// presented to instances (mutual TLS).
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
}

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
}

func (d *Delivery) validate() []error {
	var errs []error
	if (d.ClientCertFile == "") != (d.ClientKeyFile == "") {
		errs = append(errs, fmt.Errorf("delivery: set both client_cert_file and client_key_file, or neither"))
	}
	if d.Timeout < 0 {
		errs = append(errs, fmt.Errorf("delivery.timeout: must be positive"))
	}
	if d.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("delivery.max_attempts: must be positive"))
	}
	if d.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("delivery.max_age: must be positive"))
	}
	if d.MaxInFlightPerTenant < 0 {
		errs = append(errs, fmt.Errorf("delivery.max_in_flight_per_tenant: must be positive"))
	}
	return errs
}

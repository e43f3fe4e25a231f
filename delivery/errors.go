package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

var (
	// ErrSuspended: the instance answered 410 Gone; its tenant is not
	// delivered to until the tenant's configuration changes.
	ErrSuspended = errors.New("delivery: tenant suspended after 410 Gone")
	// ErrUnknownTenant: the event names a tenant that is not configured.
	ErrUnknownTenant = errors.New("delivery: unknown tenant")
)

// DeliveryError is the outcome of one failed delivery attempt.
type DeliveryError struct {
	// Status is the instance's HTTP status, or 0 when no answer came
	// (connection refused, TLS failure, timeout).
	Status int
	// RetryAfter is the instance's Retry-After, if it sent one.
	RetryAfter time.Duration
	Err        error
}

func (e *DeliveryError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("instance answered %d", e.Status)
	}
	return fmt.Sprintf("no answer: %v", e.Err)
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// Verdict is what to do after an attempt.
type Verdict int

const (
	// Delivered: 2xx.
	Delivered Verdict = iota
	// Retry: 408, 425, 429, 5xx, timeouts, connection and TLS errors.
	Retry
	// Permanent: any other 4xx; the event goes to the DLQ at once.
	Permanent
	// Gone: 410; the tenant is suspended.
	Gone
)

func (v Verdict) String() string {
	return [...]string{"delivered", "retry", "permanent", "gone"}[v]
}

// Classify is the one place that decides retryable vs permanent.
func Classify(err error) Verdict {
	if err == nil {
		return Delivered
	}
	var de *DeliveryError
	if !errors.As(err, &de) || de.Status == 0 {
		return Retry // no answer: the instance may come back
	}
	switch s := de.Status; {
	case s >= 200 && s < 300:
		return Delivered
	case s == http.StatusGone:
		return Gone
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly, s == http.StatusTooManyRequests, s >= 500:
		return Retry
	default:
		return Permanent
	}
}

// reason names an attempt's failure for the DLQ header and metrics,
// without message contents: "status 400", "tls: certificate", "timeout",
// "connection".
func reason(err error) string {
	var de *DeliveryError
	if errors.As(err, &de) && de.Status != 0 {
		return fmt.Sprintf("status %d", de.Status)
	}
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var netErr net.Error
	switch {
	case errors.As(err, &cv), errors.As(err, &ua):
		return "tls: instance certificate not trusted"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	default:
		return "connection"
	}
}

// failureText says why an attempt failed, for logs: the status, or the
// error of the connection or the handshake without the request's URL,
// whose query may hold a token of the tenant's.
func failureText(err error) string {
	var de *DeliveryError
	if errors.As(err, &de) && de.Status != 0 {
		return de.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return "no answer: " + ue.Err.Error()
	}
	return err.Error()
}

package delivery

import (
	"time"

	"github.com/segmentio/kafka-go"
)

// Record header names written by the ingress (the Kafka records contract),
// and the ones the dead-letter queue adds.
const (
	HeaderTenant     = "relay-tenant"
	HeaderObject     = "relay-object"
	HeaderAccount    = "relay-account"
	HeaderEventID    = "relay-event-id"
	HeaderReceivedAt = "relay-received-at"

	HeaderDLQReason         = "relay-dlq-reason"
	HeaderDLQAttempts       = "relay-attempts"
	HeaderDLQFirstAttemptAt = "relay-first-attempt-at"
	HeaderRedrivenAt        = "relay-redriven-at"
)

// receivedAtLayout matches relay.ReceivedAtLayout; any RFC 3339 time parses.
const receivedAtLayout = time.RFC3339Nano

// Event is one record of relay.events as modules see it. Its slices are
// owned by the event; a module may keep them.
type Event struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafka.Header
	// Time is the record's timestamp.
	Time time.Time

	// From the headers: the tenant, the event id (webhook-id to
	// instances), and when the ingress received it (zero if missing).
	Tenant     string
	ID         string
	ReceivedAt time.Time
	// RedrivenAt is when relay dlq redrive put the event back (zero if it
	// never was); max_age counts from it, so a redriven event gets a fresh
	// chance however old it is.
	RedrivenAt time.Time
}

// Header returns the first value of the named header, or nil.
func (e *Event) Header(name string) []byte {
	for _, h := range e.Headers {
		if h.Key == name {
			return h.Value
		}
	}
	return nil
}

// fill sets the fields taken from headers.
func (e *Event) fill() {
	e.Tenant = string(e.Header(HeaderTenant))
	e.ID = string(e.Header(HeaderEventID))
	if t, err := time.Parse(receivedAtLayout, string(e.Header(HeaderReceivedAt))); err == nil {
		e.ReceivedAt = t
	}
	if t, err := time.Parse(time.RFC3339Nano, string(e.Header(HeaderRedrivenAt))); err == nil {
		e.RedrivenAt = t
	}
}

// ageOrigin is what max_age counts from: the redrive if there was one,
// else the ingress's receipt.
func (e *Event) ageOrigin() time.Time {
	if !e.RedrivenAt.IsZero() {
		return e.RedrivenAt
	}
	return e.ReceivedAt
}

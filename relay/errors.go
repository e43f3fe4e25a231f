package relay

import (
	"errors"
	"fmt"
)

// Signature errors. Each answers 401 and nothing is written.
var (
	ErrSignatureMissing   = errors.New("signature: X-Hub-Signature-256 header missing")
	ErrSignatureMalformed = errors.New("signature: X-Hub-Signature-256 is not sha256=<64 hex digits>")
	ErrSignatureMismatch  = errors.New("signature: no configured app secret matches")
	ErrNoSecrets          = errors.New("signature: at least one non-empty app secret is required")
)

// Body errors. Each answers 400.
var (
	ErrBodyEmpty   = errors.New("body: empty")
	ErrBodyInvalid = errors.New("body: not valid JSON")
	// ErrBodyTooDeep is an ErrBodyInvalid: encoding/json refuses such a
	// body too.
	ErrBodyTooDeep = fmt.Errorf("%w: nested deeper than %d levels", ErrBodyInvalid, maxDepth)
	ErrNotWebhook  = errors.New(`body: not a Meta webhook (want an object with a string "object" and an "entry" array of objects)`)
)

// Produce errors.
var (
	// ErrOverloaded means the producer's queue is full; the request is
	// refused at once with 503 rather than queued without bound.
	ErrOverloaded = errors.New("produce: too many records waiting for Kafka")
	// ErrTimeout means Kafka did not acknowledge within Batch.Timeout. The
	// producer may still be reading the batch: drop it, do not reuse it.
	ErrTimeout = errors.New("produce: kafka did not acknowledge in time")
	// ErrClosed means the producer was closed before the records were sent.
	ErrClosed = errors.New("produce: producer closed")
	// ErrRecordTooLarge means a record can never be accepted by the broker;
	// retrying will not help.
	ErrRecordTooLarge = errors.New("produce: record larger than the broker accepts")
)

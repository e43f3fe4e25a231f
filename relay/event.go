package relay

import (
	"crypto/sha256"
	"encoding/hex"
)

// EventID identifies an event: the first 16 bytes of the SHA-256 of its
// record value, {"object":…,"entry":[<entry>]}. The value is built from the
// object and the entry's raw bytes alone, so Meta's redelivery of an entry
// gets the same id, and anyone holding the value can recompute it
// (sha256sum, first 32 hex digits). It travels as the relay-event-id header
// and as webhook-id to instances.
type EventID [16]byte

// NewEventID computes the id of a record value.
func NewEventID(value []byte) EventID {
	sum := sha256.Sum256(value)
	return EventID(sum[:16])
}

// AppendHex appends the id's 32 lower-case hex digits to dst.
func (id EventID) AppendHex(dst []byte) []byte {
	return hex.AppendEncode(dst, id[:])
}

// String returns the id's 32 hex digits.
func (id EventID) String() string { return hex.EncodeToString(id[:]) }

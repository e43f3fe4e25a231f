package relay

import (
	"crypto/sha256"
	"encoding/hex"

	lru "github.com/hashicorp/golang-lru/v2"
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

// Dedupe remembers the ids of recently written events so that Meta's
// redeliveries are answered 200 without being written again. It is a
// bounded LRU: an entry redelivered after more than Size other events is
// written again, which delivery tolerates (at-least-once, same webhook-id).
type Dedupe struct {
	c *lru.Cache[EventID, struct{}]
}

// NewDedupe returns a cache of the given size (at least 1).
func NewDedupe(size int) (*Dedupe, error) {
	c, err := lru.New[EventID, struct{}](max(size, 1))
	if err != nil {
		return nil, err
	}
	return &Dedupe{c: c}, nil
}

// Seen reports whether id was written recently.
func (d *Dedupe) Seen(id EventID) bool {
	_, ok := d.c.Get(id)
	return ok
}

// Add records that id was written.
func (d *Dedupe) Add(id EventID) { d.c.Add(id, struct{}{}) }

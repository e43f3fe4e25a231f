package relay

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
)

// MaxDedupeSize bounds the size of a Dedupe: it takes at most 48 bytes per
// remembered id, 3 GiB at this size.
const MaxDedupeSize = 1 << 26

// Dedupe remembers the ids of the last size events written, so that Meta's
// redelivery of an event is answered 200 without writing it again. Ids
// leave in the order they entered (first in, first out): what matters is
// how recently an event was written, not how often Meta repeats it.
//
// It is an open-addressing hash set (linear probing, at most half full)
// next to a ring of the ids in the order they were added. Event ids are
// SHA-256 prefixes, uniformly spread, so their first 8 bytes are the hash.
// Nothing in it holds a pointer, so the garbage collector never scans it,
// and Seen and Add touch two or three cache lines where a map plus a linked
// list touch five or more; under load that was 7 % of the relay's CPU.
//
// The zero id is never remembered (SHA-256 gives it with probability
// 2^-128); the empty slot is the zero id.
type Dedupe struct {
	mu    sync.Mutex
	slots []EventID // len a power of two ≥ 2*len(ring)
	mask  uint64
	ring  []EventID // ring[next] is the oldest id once the ring is full
	next  int
	full  bool
}

// NewDedupe returns a set that remembers the last size ids (size ≥ 1).
func NewDedupe(size int) (*Dedupe, error) {
	if size < 1 || size > MaxDedupeSize {
		return nil, fmt.Errorf("relay: dedupe size %d: must be between 1 and %d", size, MaxDedupeSize)
	}
	n := uint64(1) << bits.Len64(uint64(2*size-1)) // the power of two ≥ 2*size
	return &Dedupe{slots: make([]EventID, n), mask: n - 1, ring: make([]EventID, size)}, nil
}

// Seen reports whether id was added among the last size ids.
func (d *Dedupe) Seen(id EventID) bool {
	if id == (EventID{}) {
		return false
	}
	d.mu.Lock()
	_, ok := d.find(id)
	d.mu.Unlock()
	return ok
}

// Add records that id was written, forgetting the oldest id when full. An id
// already remembered keeps its place.
func (d *Dedupe) Add(id EventID) {
	if id == (EventID{}) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.find(id)
	if ok {
		return
	}
	if d.full {
		old := d.ring[d.next]
		if j, ok := d.find(old); ok {
			d.remove(j)
			// The removal may have shifted another id into slot i's probe
			// sequence; find the free slot for id again.
			i, _ = d.find(id)
		}
	}
	d.slots[i] = id
	d.ring[d.next] = id
	d.next++
	if d.next == len(d.ring) {
		d.next, d.full = 0, true
	}
}

func (d *Dedupe) home(id *EventID) uint64 {
	return binary.LittleEndian.Uint64(id[:8]) & d.mask
}

// find returns id's slot and true, or the empty slot that ends its probe
// sequence and false. The table is never more than half full, so an empty
// slot always exists.
func (d *Dedupe) find(id EventID) (uint64, bool) {
	for i := d.home(&id); ; i = (i + 1) & d.mask {
		switch d.slots[i] {
		case id:
			return i, true
		case EventID{}:
			return i, false
		}
	}
}

// remove empties slot i and moves later ids of its cluster back so that
// every id stays reachable from its home slot (Knuth's algorithm R for
// linear probing; no tombstones).
func (d *Dedupe) remove(i uint64) {
	for j := (i + 1) & d.mask; d.slots[j] != (EventID{}); j = (j + 1) & d.mask {
		// The id in j may move to i unless its home lies cyclically in (i, j].
		if (j-d.home(&d.slots[j]))&d.mask >= (j-i)&d.mask {
			d.slots[i] = d.slots[j]
			i = j
		}
	}
	d.slots[i] = EventID{}
}

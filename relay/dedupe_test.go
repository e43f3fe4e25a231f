package relay

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func idOf(n uint64) EventID { return NewEventID(strconv.AppendUint(nil, n, 10)) }

func TestDedupeRemembersTheLastSizeIDs(t *testing.T) {
	d, err := NewDedupe(3)
	require.NoError(t, err)
	for n := range uint64(5) {
		d.Add(idOf(n))
	}
	for n := range uint64(5) {
		assert.Equal(t, n >= 2, d.Seen(idOf(n)), "id %d", n)
	}
	d.Add(idOf(3)) // already remembered: keeps its place, evicts nothing
	assert.True(t, d.Seen(idOf(2)))
	d.Add(idOf(5)) // evicts 2, the oldest
	assert.False(t, d.Seen(idOf(2)))
	assert.True(t, d.Seen(idOf(3)))
}

func TestDedupeRejectsBadSizes(t *testing.T) {
	for _, size := range []int{-1, 0, MaxDedupeSize + 1} {
		_, err := NewDedupe(size)
		assert.Error(t, err, "size %d", size)
	}
}

func TestDedupeZeroIDIsNeverRemembered(t *testing.T) {
	d, err := NewDedupe(4)
	require.NoError(t, err)
	d.Add(EventID{})
	assert.False(t, d.Seen(EventID{}))
}

// collidingID returns an id whose hash (its first 8 bytes) is h, made
// unique by tag.
func collidingID(h, tag uint64) EventID {
	var id EventID
	binary.LittleEndian.PutUint64(id[:8], h)
	binary.LittleEndian.PutUint64(id[8:], tag+1)
	return id
}

// The set is held to a plain map plus queue model under random operations,
// with ids crowded onto a few home slots (and around the end of the table)
// so that probe chains are long, wrap, and removals shift them back.
func TestDedupeMatchesModel(t *testing.T) {
	for _, size := range []int{1, 2, 7, 64} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			d, err := NewDedupe(size)
			require.NoError(t, err)
			tableLen := uint64(len(d.slots))
			rng := rand.New(rand.NewPCG(uint64(size), 42))
			model := map[EventID]bool{}
			var queue []EventID
			for op := range 20000 {
				// Homes: the last slot, the first, or anywhere; tags from a
				// small pool so that ids recur.
				var h uint64
				switch rng.IntN(3) {
				case 0:
					h = tableLen - 1
				case 1:
					h = 0
				default:
					h = rng.Uint64()
				}
				id := collidingID(h, rng.Uint64N(uint64(3*size)))
				if rng.IntN(2) == 0 {
					require.Equal(t, model[id], d.Seen(id), "op %d: Seen", op)
					continue
				}
				d.Add(id)
				if !model[id] {
					model[id] = true
					queue = append(queue, id)
					if len(queue) > size {
						delete(model, queue[0])
						queue = queue[1:]
					}
				}
				for _, q := range queue {
					require.True(t, d.Seen(q), "op %d: a remembered id is lost", op)
				}
			}
			n := 0
			for _, s := range d.slots {
				if s != (EventID{}) {
					n++
				}
			}
			assert.Equal(t, len(queue), n, "slots in use")
		})
	}
}

func TestDedupeConcurrentUse(t *testing.T) {
	d, err := NewDedupe(1000)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for g := range uint64(4) {
		wg.Go(func() {
			for n := range uint64(5000) {
				id := idOf(g<<32 | n)
				d.Add(id)
				d.Seen(id)
			}
		})
	}
	wg.Wait()
	seen := 0
	for g := range uint64(4) {
		for n := range uint64(5000) {
			if d.Seen(idOf(g<<32 | n)) {
				seen++
			}
		}
	}
	assert.Equal(t, 1000, seen)
}

func TestDedupeAllocatesNothing(t *testing.T) {
	d, err := NewDedupe(100)
	require.NoError(t, err)
	ids := make([]EventID, 1000)
	for i := range ids {
		ids[i] = idOf(uint64(i))
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		d.Seen(ids[i%len(ids)])
		d.Add(ids[i%len(ids)])
		i++
	})
	assert.Zero(t, allocs)
}

// BenchmarkDedupe is one Seen and one Add of a new id, the ingress's use,
// on a full set of the default size.
func BenchmarkDedupe(b *testing.B) {
	const size = 200000
	d, err := NewDedupe(size)
	require.NoError(b, err)
	ids := make([]EventID, 4*size)
	for i := range ids {
		ids[i] = idOf(uint64(i))
	}
	for _, id := range ids[:size] {
		d.Add(id)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := ids[(size+i)%len(ids)]
		if d.Seen(id) {
			b.Fatal("new id seen")
		}
		d.Add(id)
	}
}

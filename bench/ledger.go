package bench

import (
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaymw/relay/relay"
)

// Ledger is e2e's accounting: it matches the events of the requests the
// generator sent with the deliveries the instances received, by event id
// (webhook-id). The id of each entry of a body is computed the relay's way
// (relay.SplitBody, then relay.NewEventID of {"object":…,"entry":[…]}), so
// a delivery is matched to its request without trusting anything the relay
// adds. A delivery may arrive before its request's answer was seen; the
// ledger does not care about the order. It is safe for concurrent use.
type Ledger struct {
	shards [ledgerShards]ledgerShard
	bodies sync.Pool // *relay.Body
	values sync.Pool // *[]byte

	accepted         atomic.Int64 // distinct ids of requests answered 200
	acceptedReceived atomic.Int64 // of those, received at least once
	receipts         atomic.Int64 // every receipt
	lastReceipt      atomic.Int64 // Unix ns of the latest receipt
	sentTwice        atomic.Int64 // an id sent again (identical entries)
	badBodies        atomic.Int64 // bodies SplitBody refused
	badIDs           atomic.Int64 // receipts whose webhook-id is not an event id
}

const ledgerShards = 64

type ledgerShard struct {
	mu sync.Mutex
	m  map[relay.EventID]ledgerEntry
}

type ledgerEntry struct {
	sent     int64 // Unix ns of the request's latency origin
	first    int64 // Unix ns of the first receipt
	receipts int32
	flags    uint8
}

const (
	flagSent     = 1 << iota // the request was sent
	flagAccepted             // and answered 200
	flagMeasured             // and its latency origin lies in the measured window
)

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	l := &Ledger{}
	for i := range l.shards {
		l.shards[i].m = make(map[relay.EventID]ledgerEntry)
	}
	l.bodies.New = func() any { return new(relay.Body) }
	l.values.New = func() any { b := make([]byte, 0, 4096); return &b }
	return l
}

func (l *Ledger) shard(id relay.EventID) *ledgerShard { return &l.shards[id[0]%ledgerShards] }

// Sent records a sent body: its entries' events, sent at start, accepted
// when the relay answered 200, measured when start lies in the measured
// window. It returns the number of events in the body.
func (l *Ledger) Sent(body []byte, start time.Time, accepted, measured bool) (int, error) {
	b := l.bodies.Get().(*relay.Body)
	defer l.bodies.Put(b)
	if err := relay.SplitBody(body, b); err != nil {
		l.badBodies.Add(1)
		return 0, err
	}
	vp := l.values.Get().(*[]byte)
	defer l.values.Put(vp)
	flags := uint8(flagSent)
	if accepted {
		flags |= flagAccepted
	}
	if measured {
		flags |= flagMeasured
	}
	at := start.UnixNano()
	for i := range b.Entries {
		v := append((*vp)[:0], `{"object":`...)
		v = append(v, b.ObjectRaw...)
		v = append(v, `,"entry":[`...)
		v = append(v, b.Entries[i].Raw...)
		v = append(v, `]}`...)
		*vp = v
		l.sentEvent(relay.NewEventID(v), at, flags)
	}
	return len(b.Entries), nil
}

func (l *Ledger) sentEvent(id relay.EventID, at int64, flags uint8) {
	s := l.shard(id)
	s.mu.Lock()
	e := s.m[id]
	if e.flags&flagSent != 0 {
		s.mu.Unlock()
		l.sentTwice.Add(1)
		return
	}
	e.sent, e.flags = at, flags
	s.m[id] = e
	s.mu.Unlock()
	if flags&flagAccepted != 0 {
		l.accepted.Add(1)
		if e.receipts > 0 {
			l.acceptedReceived.Add(1)
		}
	}
}

// Received records a delivery of the event whose webhook-id is id (32 hex
// digits), received at at.
func (l *Ledger) Received(id string, at time.Time) {
	var eid relay.EventID
	if len(id) != 2*len(eid) {
		l.badIDs.Add(1)
		return
	}
	if _, err := hex.Decode(eid[:], []byte(id)); err != nil {
		l.badIDs.Add(1)
		return
	}
	ns := at.UnixNano()
	s := l.shard(eid)
	s.mu.Lock()
	e := s.m[eid]
	e.receipts++
	if e.receipts == 1 {
		e.first = ns
	}
	s.m[eid] = e
	s.mu.Unlock()
	if e.receipts == 1 && e.flags&flagAccepted != 0 {
		l.acceptedReceived.Add(1)
	}
	l.receipts.Add(1)
	for {
		last := l.lastReceipt.Load()
		if ns <= last || l.lastReceipt.CompareAndSwap(last, ns) {
			break
		}
	}
}

// Accepted returns the number of distinct events answered 200 so far.
func (l *Ledger) Accepted() int64 { return l.accepted.Load() }

// Outstanding returns the number of events answered 200 and not yet received.
func (l *Ledger) Outstanding() int64 { return l.accepted.Load() - l.acceptedReceived.Load() }

// Receipts returns the number of deliveries received so far.
func (l *Ledger) Receipts() int64 { return l.receipts.Load() }

// LastReceipt returns when the latest delivery was received (zero: none yet).
func (l *Ledger) LastReceipt() time.Time {
	ns := l.lastReceipt.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// maxLostIDs bounds the lost ids a summary lists.
const maxLostIDs = 20

// LedgerSummary is the ledger's account at the end of a run.
type LedgerSummary struct {
	Accepted int64 // distinct events whose request was answered 200
	// Delivered counts accepted events received at least once.
	Delivered int64
	// Lost counts accepted events never received; LostIDs lists some.
	Lost    int64
	LostIDs []string
	// Duplicates counts receipts of an event already received.
	Duplicates int64
	// Unacknowledged counts distinct events received whose request was sent
	// but not answered 200 (a 503 or timeout whose write landed anyway:
	// at-least-once, not an error).
	Unacknowledged int64
	// Unexpected counts distinct events received that were never sent.
	Unexpected int64
	SentTwice  int64 // events whose id was sent more than once
	BadBodies  int64 // bodies that did not split (never expected)
	BadIDs     int64 // receipts whose webhook-id is not 32 hex digits
	// MeasuredAccepted counts accepted events sent in the measured window;
	// Latency holds, for those received, the time from their request's
	// send (open loop: scheduled send) to their first receipt.
	MeasuredAccepted int64
	Latency          *Histogram
	// FirstReceipts are the first receipts of accepted events, sorted by
	// time: when, and how long after their request's send.
	FirstReceipts []FirstReceipt
}

// FirstReceipt is the first delivery of one accepted event.
type FirstReceipt struct {
	At       time.Time
	Latency  time.Duration
	Measured bool
}

// Summary tallies the ledger.
func (l *Ledger) Summary() *LedgerSummary {
	s := &LedgerSummary{
		Latency:   NewLongHistogram(),
		SentTwice: l.sentTwice.Load(), BadBodies: l.badBodies.Load(), BadIDs: l.badIDs.Load(),
	}
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for id, e := range sh.m {
			if e.receipts > 1 {
				s.Duplicates += int64(e.receipts - 1)
			}
			switch {
			case e.flags&flagAccepted != 0:
				s.Accepted++
				measured := e.flags&flagMeasured != 0
				if measured {
					s.MeasuredAccepted++
				}
				if e.receipts == 0 {
					s.Lost++
					if len(s.LostIDs) < maxLostIDs {
						s.LostIDs = append(s.LostIDs, id.String())
					}
					continue
				}
				s.Delivered++
				lat := time.Duration(e.first - e.sent)
				if measured {
					s.Latency.Record(lat)
				}
				s.FirstReceipts = append(s.FirstReceipts, FirstReceipt{At: time.Unix(0, e.first), Latency: lat, Measured: measured})
			case e.flags&flagSent != 0:
				if e.receipts > 0 {
					s.Unacknowledged++
				}
			default:
				s.Unexpected++
			}
		}
		sh.mu.Unlock()
	}
	slices.Sort(s.LostIDs)
	slices.SortFunc(s.FirstReceipts, func(a, b FirstReceipt) int { return a.At.Compare(b.At) })
	return s
}

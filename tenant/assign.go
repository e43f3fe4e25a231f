package tenant

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
)

// Assigner gives each tenant its own partition of the events topic and
// records the assignment durably in a compacted Kafka topic (relay.tenants),
// so that it is the same across restarts, reloads and relay nodes.
//
// The assignment topic has one partition, so its records are totally
// ordered, and it is read with one rule, the same on every node: replaying
// the log, the first claim of a tenant whose partition no earlier winning
// claim took wins; every later claim of that tenant, or of that partition,
// loses. Only a record keyed by its tenant counts, since compaction keeps
// records by key. Two nodes that add tenants at the same moment may both
// claim one partition; the log's order decides, and the loser claims
// again. Many claims go out in several requests, in order; one that fails
// leaves the claims before it written and the rest not. The rule needs
// nothing more for that: each claim stands alone, and Assign answers only
// from a replay that needs no claim, so its next run (or another node's)
// reads which claims stand and makes the others again. Because compaction
// keeps only a key's latest record, a node that sees a tenant's latest
// record differ from its winning claim (a losing claim, a tombstone,
// garbage) writes the winner again; and a node that sees a losing claim of
// a tenant without a partition come before the latest record of that
// partition's winner writes the losing claim again, after it. So
// compaction can never resurrect a losing claim nor drop a winning one.
type Assigner struct {
	Admin *Admin
	// Topic is the assignment topic (relay.tenants).
	Topic string
	// Events is the topic whose partitions are assigned (relay.events).
	Events string

	writeRecords int // claims per produce request; 0: maxWriteRecords (tests lower it)
}

// claim is the value of one assignment record; its key is the tenant id.
type claim struct {
	Tenant    string    `json:"tenant"`
	Partition int32     `json:"partition"`
	At        time.Time `json:"at"`
}

// assignments is the outcome of replaying the assignment log.
type assignments struct {
	winner map[string]int32 // tenant → partition
	owner  map[int32]string // partition → tenant
	latest map[string]int32 // key → partition of its latest record; -1: no claim
	at     map[string]int64 // key → offset of its latest record
}

func newAssignments() *assignments {
	return &assignments{winner: map[string]int32{}, owner: map[int32]string{}, latest: map[string]int32{}, at: map[string]int64{}}
}

// EnsureTopics creates the assignment topic (compacted, one partition, kept
// for good) and the events topic if missing; with events.Enforce, it also
// sets both topics' configs if they exist.
//
// Kept for good: a broker that applies time retention to a compacted topic
// (the embedded one does, with a 7-day default) would delete the claims,
// and tenants would be given partitions anew, some another's.
func (a *Assigner) EnsureTopics(ctx context.Context, events TopicSpec) error {
	return a.Admin.EnsureTopics(ctx,
		TopicSpec{Name: a.Topic, Partitions: 1, Enforce: events.Enforce, Configs: map[string]string{
			"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1",
		}},
		events,
	)
}

// Partition returns tenant id's partition as recorded, without claiming
// anything: false if it has none yet. Tools that act on one tenant use it,
// so that a stale local tenants file cannot claim partitions.
func (a *Assigner) Partition(ctx context.Context, id string) (int32, bool, error) {
	st, err := a.read(ctx)
	if err != nil {
		return 0, false, err
	}
	p, ok := st.winner[id]
	return p, ok, nil
}

// Assign returns the partition of every tenant in ids, claiming partitions
// for those that have none, and grows the events topic to hold them.
func (a *Assigner) Assign(ctx context.Context, ids []string) (map[string]int32, error) {
	ids = slices.Sorted(slices.Values(ids)) // same claims in the same order on every node
	const attempts = 8
	for range attempts {
		st, err := a.read(ctx)
		if err != nil {
			return nil, err
		}
		var claims []claim
		for id, p := range st.winner {
			if st.latest[id] != p {
				claims = append(claims, claim{Tenant: id, Partition: p}) // correction, see type doc
			}
		}
		for id, p := range st.latest {
			if _, won := st.winner[id]; won || p < 0 {
				continue
			}
			if o, owned := st.owner[p]; owned && st.at[o] > st.at[id] {
				claims = append(claims, claim{Tenant: id, Partition: p}) // loses again, after the winner; see type doc
			}
		}
		next := int32(0)
		for _, id := range ids {
			if _, ok := st.winner[id]; ok {
				continue
			}
			for st.owner[next] != "" {
				next++
			}
			st.owner[next] = id
			claims = append(claims, claim{Tenant: id, Partition: next})
		}
		if len(claims) == 0 {
			out := make(map[string]int32, len(ids))
			top := int32(-1)
			for _, id := range ids {
				out[id] = st.winner[id]
			}
			for p := range st.owner {
				top = max(top, p)
			}
			if err := a.Admin.EnsurePartitions(ctx, a.Events, int(top)+1); err != nil {
				return nil, err
			}
			return out, nil
		}
		if err := a.write(ctx, claims); err != nil {
			return nil, err
		}
	}
	return nil, ErrAssignment
}

// read replays the whole assignment log.
func (a *Assigner) read(ctx context.Context) (*assignments, error) {
	st := newAssignments()
	offset := kafka.FirstOffset
	for {
		res, err := a.Admin.Client.Fetch(ctx, &kafka.FetchRequest{
			Topic: a.Topic, Partition: 0, Offset: offset,
			MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a.Topic, err)
		}
		if res.Error != nil {
			if errors.Is(res.Error, kafka.OffsetOutOfRange) && offset != kafka.FirstOffset {
				offset = kafka.FirstOffset // compaction or retention moved the start; replay again
				st = newAssignments()
				continue
			}
			return nil, fmt.Errorf("read %s: %w", a.Topic, res.Error)
		}
		n := 0
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", a.Topic, err)
			}
			n++
			offset = r.Offset + 1
			if r.Key == nil {
				continue // compaction drops keyless records; not ours
			}
			key, err := io.ReadAll(r.Key)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", a.Topic, err)
			}
			st.latest[string(key)], st.at[string(key)] = -1, r.Offset
			if r.Value == nil {
				continue
			}
			var c claim
			b, err := io.ReadAll(r.Value)
			if err != nil || json.Unmarshal(b, &c) != nil || c.Tenant == "" || c.Tenant != string(key) || c.Partition < 0 {
				continue // not ours; never fatal
			}
			st.apply(c)
		}
		if offset < 0 {
			offset = res.LogStartOffset
			if offset < 0 {
				offset = 0
			}
		}
		if offset >= res.HighWatermark {
			return st, nil
		}
		if n == 0 && offset < res.LogStartOffset {
			offset = res.LogStartOffset
		}
	}
}

// apply is the replay rule: first valid claim of a tenant wins.
func (st *assignments) apply(c claim) {
	st.latest[c.Tenant] = c.Partition
	if _, ok := st.winner[c.Tenant]; ok {
		return
	}
	if _, taken := st.owner[c.Partition]; taken {
		return
	}
	st.winner[c.Tenant] = c.Partition
	st.owner[c.Partition] = c.Tenant
}

// Claims are written in produce requests of at most maxWriteBytes and
// maxWriteRecords: one request holding every claim of a few thousand new
// tenants passes a real cluster's default max.message.bytes (1 MiB), and
// the whole tenants file was refused.
const (
	maxWriteBytes   = 256 << 10
	maxWriteRecords = 1000
	recordOverhead  = 32 // a record's framing besides key and value, at most
)

// write appends claims with acks=all, in order, in requests of at most
// maxWriteBytes and maxWriteRecords sent one after another. A request that
// fails ends the write: the claims before it are in the log, the later
// ones are not sent (see the type doc).
func (a *Assigner) write(ctx context.Context, claims []claim) error {
	now := time.Now().UTC()
	perWrite := cmp.Or(a.writeRecords, maxWriteRecords)
	var recs []kafka.Record
	size, written := 0, 0
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		res, err := a.Admin.Client.Produce(ctx, &kafka.ProduceRequest{
			Topic: a.Topic, Partition: 0, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(recs...),
		})
		if err == nil {
			err = res.Error
		}
		if err != nil {
			return fmt.Errorf("write %s (%d of %d claims written): %w", a.Topic, written, len(claims), err)
		}
		written += len(recs)
		recs, size = nil, 0
		return nil
	}
	for _, c := range claims {
		c.At = now
		v, err := json.Marshal(c)
		if err != nil {
			return err
		}
		n := len(c.Tenant) + len(v) + recordOverhead
		if len(recs) == perWrite || len(recs) > 0 && size+n > maxWriteBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		recs = append(recs, kafka.Record{Key: kafka.NewBytes([]byte(c.Tenant)), Value: kafka.NewBytes(v), Time: now})
		size += n
	}
	return flush()
}

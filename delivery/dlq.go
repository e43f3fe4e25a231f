package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// headerDLQMarker marks a redrive marker record in the DLQ topic: every
// earlier dead letter of its tenant was redriven.
const headerDLQMarker = "relay-dlq-marker"

// DLQ is the dead-letter topic: one partition, so dead letters keep the
// order in which they were given up on, which for one tenant is the
// order of its partition.
type DLQ struct {
	// Client reaches the cluster (its Addr set to the bootstrap brokers).
	Client *kafka.Client
	// Topic is the dead-letter topic (relay.dlq).
	Topic string
	// Events is the events topic, where a redrive writes back to.
	Events string
}

var _ DeadLetters = (*DLQ)(nil)

// Bounds of what a dead letter adds to its event's record.
const (
	// MaxReasonBytes bounds relay-dlq-reason; a longer reason (an error's
	// text) is cut.
	MaxReasonBytes = 1024
	// DeadLetterOverhead is at least what a dead letter's record is larger
	// than its event's: the three headers it adds, with a reason of at
	// most MaxReasonBytes. The ingress refuses an entry whose record the
	// DLQ topic could not take with that much more (serve).
	DeadLetterOverhead = 2 << 10
)

// DeadLetter writes ev to the DLQ with acks=all: its original key, value
// and headers, plus relay-dlq-reason, relay-attempts and
// relay-first-attempt-at.
func (d *DLQ) DeadLetter(ctx context.Context, ev *Event, reason string, attempts int, first time.Time) error {
	headers := make([]kafka.Header, 0, len(ev.Headers)+3)
	for _, h := range ev.Headers {
		if !strings.HasPrefix(h.Key, "relay-dlq-") && h.Key != HeaderDLQAttempts && h.Key != HeaderDLQFirstAttemptAt {
			headers = append(headers, h)
		}
	}
	if len(reason) > MaxReasonBytes {
		reason = strings.ToValidUTF8(reason[:MaxReasonBytes-len("…")], "") + "…"
	}
	headers = append(headers,
		kafka.Header{Key: HeaderDLQReason, Value: []byte(reason)},
		kafka.Header{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(attempts))},
		kafka.Header{Key: HeaderDLQFirstAttemptAt, Value: []byte(first.UTC().Format(time.RFC3339Nano))},
	)
	key := ev.Key
	if len(key) == 0 {
		key = []byte(ev.Tenant)
	}
	return d.produce(ctx, d.Topic, 0, []kafka.Record{{Key: kafka.NewBytes(key), Value: kafka.NewBytes(ev.Value), Headers: headers, Time: ev.Time}})
}

func (d *DLQ) produce(ctx context.Context, topic string, partition int, recs []kafka.Record) error {
	res, err := d.Client.Produce(ctx, &kafka.ProduceRequest{
		Topic: topic, Partition: partition, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...),
	})
	if err != nil {
		return fmt.Errorf("write %s/%d: %w", topic, partition, err)
	}
	if res.Error != nil {
		return fmt.Errorf("write %s/%d: %w", topic, partition, res.Error)
	}
	return nil
}

// DeadLetter is one event in the DLQ.
type DeadLetter struct {
	Offset       int64
	Tenant       string
	EventID      string
	Reason       string
	Attempts     int
	FirstAttempt time.Time
	ReceivedAt   time.Time
	Key          []byte
	Value        []byte
	Headers      []kafka.Header
}

// List returns tenant's dead letters not yet redriven, in order, all in
// memory at once. Each reads them one fetch at a time.
func (d *DLQ) List(ctx context.Context, tenantID string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := d.Each(ctx, tenantID, func(dl DeadLetter) error {
		out = append(out, dl)
		return nil
	})
	return out, err
}

// Each calls fn with each of tenant's dead letters not yet redriven, in
// order; an error from fn stops it and is returned. It reads the DLQ twice:
// once to learn which records are pending, keeping only their offsets,
// then from the first of them on. So memory holds one fetch of records at
// a time, whatever the DLQ's size: a tenant whose instance was down for
// days may have millions of dead letters.
func (d *DLQ) Each(ctx context.Context, tenantID string, fn func(DeadLetter) error) error {
	offsets, err := d.pending(ctx, tenantID)
	if err != nil || len(offsets) == 0 {
		return err
	}
	next := 0
	err = d.scan(ctx, offsets[0], func(offset int64, key, value []byte, headers []kafka.Header) error {
		for next < len(offsets) && offsets[next] < offset {
			next++ // gone since the first read (retention, DeleteRecords)
		}
		if next == len(offsets) {
			return errScanDone
		}
		if offsets[next] != offset {
			return nil
		}
		next++
		ev := deadLetterEvent(key, headers)
		dl := DeadLetter{
			Offset: offset, Tenant: ev.Tenant, EventID: ev.ID, ReceivedAt: ev.ReceivedAt,
			Reason: string(ev.Header(HeaderDLQReason)), Key: key, Value: value, Headers: headers,
		}
		dl.Attempts, _ = strconv.Atoi(string(ev.Header(HeaderDLQAttempts)))
		dl.FirstAttempt, _ = time.Parse(time.RFC3339Nano, string(ev.Header(HeaderDLQFirstAttemptAt)))
		if err := fn(dl); err != nil {
			return err
		}
		if next == len(offsets) {
			return errScanDone
		}
		return nil
	})
	if errors.Is(err, errScanDone) {
		return nil
	}
	return err
}

// errScanDone stops a scan early, without error.
var errScanDone = errors.New("scan done")

// pending reads the whole DLQ and returns the offsets of tenant's dead
// letters not yet redriven, in order.
func (d *DLQ) pending(ctx context.Context, tenantID string) ([]int64, error) {
	var out []int64
	err := d.scan(ctx, kafka.FirstOffset, func(offset int64, key, value []byte, headers []kafka.Header) error {
		ev := deadLetterEvent(key, headers)
		if ev.Tenant != tenantID {
			return nil
		}
		if ev.Header(headerDLQMarker) == nil {
			out = append(out, offset)
			return nil
		}
		// The dead letters the marker's redrive wrote back, up to
		// redriven_through, are done; one written while that redrive was
		// under way (after it read the DLQ, before its marker) is not.
		var m struct {
			Through *int64 `json:"redriven_through"`
		}
		through := offset
		if json.Unmarshal(value, &m) == nil && m.Through != nil {
			through = *m.Through
		}
		done, _ := slices.BinarySearch(out, through+1)
		out = append(out[:0], out[done:]...)
		return nil
	})
	return out, err
}

// deadLetterEvent reads a DLQ record's headers; a record without
// relay-tenant belongs to the tenant its key names.
func deadLetterEvent(key []byte, headers []kafka.Header) Event {
	ev := Event{Headers: headers}
	ev.fill()
	if ev.Tenant == "" {
		ev.Tenant = string(key)
	}
	return ev
}

// scan reads the DLQ partition in order from offset (kafka.FirstOffset for
// all of it) up to its end as it was when the scan got there, calling fn
// with each record. An error from fn stops it and is returned. Records
// that left the log meanwhile (retention, DeleteRecords) are skipped.
func (d *DLQ) scan(ctx context.Context, offset int64, fn func(offset int64, key, value []byte, headers []kafka.Header) error) error {
	if offset < 0 {
		start, err := d.logStart(ctx)
		if err != nil {
			return err
		}
		offset = start
	}
	for {
		from := offset
		res, err := d.Client.Fetch(ctx, &kafka.FetchRequest{
			Topic: d.Topic, Partition: 0, Offset: from, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			return fmt.Errorf("read %s: %w", d.Topic, err)
		}
		if res.Error != nil {
			if errors.Is(res.Error, kafka.OffsetOutOfRange) {
				// What was at from is gone: go on from the log's start.
				if start, err := d.logStart(ctx); err == nil && start > from {
					offset = start
					continue
				}
			}
			return fmt.Errorf("read %s: %w", d.Topic, res.Error)
		}
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", d.Topic, err)
			}
			if r.Offset < from {
				// A fetch returns whole batches: the records before from
				// were read already, or deleted.
				continue
			}
			key, _ := readBytes(r.Key)
			value, _ := readBytes(r.Value)
			if err := fn(r.Offset, key, value, r.Headers); err != nil {
				return err
			}
			offset = r.Offset + 1
		}
		if offset >= res.HighWatermark {
			return nil
		}
	}
}

// logStart is the DLQ partition's first offset.
func (d *DLQ) logStart(ctx context.Context) (int64, error) {
	res, err := d.Client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		d.Topic: {kafka.FirstOffsetOf(0)},
	}})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", d.Topic, err)
	}
	for _, p := range res.Topics[d.Topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("read %s: %w", d.Topic, p.Error)
		}
		return p.FirstOffset, nil
	}
	return 0, fmt.Errorf("read %s: no offsets in the answer", d.Topic)
}

// Redrive writes tenant's dead letters back into its partition of the
// events topic, in their original order, with their original key, value
// and headers (the DLQ's own headers dropped, relay-redriven-at added), then
// marks them redriven so that a later redrive does not repeat them. If the
// process dies between the two steps, a later redrive repeats them: the
// instance sees the same webhook-id twice. A redrive that fails part way
// marks what it wrote. Two redrives of one tenant at once both write every
// dead letter: run one at a time. It holds one chunk of dead letters in
// memory at a time (see Each).
func (d *DLQ) Redrive(ctx context.Context, tenantID string, partition int32) (int, error) {
	now := time.Now().UTC()
	var (
		chunk          []kafka.Record
		size           int   // of chunk, roughly, in bytes
		last           int64 // the DLQ offset of chunk's last dead letter
		written        int
		writtenThrough int64 // the DLQ offset of the last dead letter written
	)
	// One produce request per chunk, in order. A chunk is bounded in bytes
	// as well as in records: the broker refuses a request larger than the
	// topic's max.message.bytes, and 500 dead letters of 20 KB already are.
	flush := func() error {
		// kafka-go may still send a request whose context has ended, and
		// a chunk written but reported failed is not marked.
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.produce(ctx, d.Events, int(partition), chunk); err != nil {
			return err
		}
		written += len(chunk)
		writtenThrough = last
		chunk, size = chunk[:0], 0
		return nil
	}
	err := d.Each(ctx, tenantID, func(dl DeadLetter) error {
		var headers []kafka.Header
		n := len(dl.Key) + len(dl.Value) + 64
		for _, h := range dl.Headers {
			switch h.Key {
			case HeaderDLQReason, HeaderDLQAttempts, HeaderDLQFirstAttemptAt, HeaderRedrivenAt:
				continue
			}
			headers = append(headers, h)
			n += len(h.Key) + len(h.Value)
		}
		headers = append(headers, kafka.Header{Key: HeaderRedrivenAt, Value: []byte(now.Format(time.RFC3339Nano))})
		if len(chunk) > 0 && (len(chunk) == redriveChunkRecords || size+n > redriveChunkBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		chunk = append(chunk, kafka.Record{Key: kafka.NewBytes(dl.Key), Value: kafka.NewBytes(dl.Value), Headers: headers, Time: now})
		size += n
		last = dl.Offset
		return nil
	})
	if err == nil && len(chunk) > 0 {
		err = flush()
	}
	if err != nil {
		if written > 0 {
			// Mark what was written, so that a later redrive goes on
			// from there instead of writing it again.
			if merr := d.mark(ctx, tenantID, writtenThrough, written, now); merr != nil {
				err = errors.Join(err, merr)
			}
		}
		return written, err
	}
	if written == 0 {
		return 0, nil
	}
	if err := d.mark(ctx, tenantID, writtenThrough, written, now); err != nil {
		return written, fmt.Errorf("redriven, but marking them so failed (a later redrive repeats them): %w", err)
	}
	return written, nil
}

// Bounds of one redrive produce request.
const (
	redriveChunkRecords = 500
	redriveChunkBytes   = 1 << 20
)

// mark writes the marker saying tenant's dead letters through offset are
// redriven (count of them, this time), so List and Redrive start after it.
func (d *DLQ) mark(ctx context.Context, tenantID string, through int64, count int, at time.Time) error {
	// Also when ctx has just ended (the command's --timeout, Ctrl-C): what
	// was written must be marked, or a later redrive writes it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	marker, _ := json.Marshal(map[string]any{"tenant": tenantID, "redriven_through": through, "count": count, "at": at})
	return d.produce(ctx, d.Topic, 0, []kafka.Record{{
		Key: kafka.NewBytes([]byte(tenantID)), Value: kafka.NewBytes(marker), Time: at,
		Headers: []kafka.Header{{Key: HeaderTenant, Value: []byte(tenantID)}, {Key: headerDLQMarker, Value: []byte("redriven")}},
	}})
}

package relay

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/stretchr/testify/require"
)

// kafkaGoRecords reads records as kafka-go's protocol.RecordReader, with
// no allocation per record (as the producer did before it encoded batches
// itself).
type kafkaGoRecords struct {
	recs     []Record
	next     int
	rec      protocol.Record
	key, val readCloser
}

// readCloser is a reusable protocol.Bytes over a byte slice.
type readCloser struct{ bytes.Reader }

func (*readCloser) Close() error { return nil }

func (k *kafkaGoRecords) ReadRecord() (*protocol.Record, error) {
	if k.next == len(k.recs) {
		return nil, io.EOF
	}
	r := &k.recs[k.next]
	k.next++
	k.key.Reset(r.Key)
	k.val.Reset(r.Value)
	k.rec = protocol.Record{Time: r.Time, Headers: r.Headers, Value: &k.val}
	if r.Key != nil {
		k.rec.Key = &k.key
	}
	return &k.rec, nil
}

// The hand-written encoder writes, byte for byte, what kafka-go's
// RecordSet writes for the same records: the broker, kcat and every
// consumer read the same batches as before.
func TestAppendRecordBatchMatchesKafkaGo(t *testing.T) {
	at := time.UnixMilli(1_790_000_000_123)
	cases := map[string][]Record{
		"one record":                      {{Key: []byte("acme"), Value: []byte(`{"a":1}`), Time: at}},
		"no key, no headers, empty value": {{Value: []byte{}, Time: at}},
		"empty key":                       {{Key: []byte{}, Value: []byte("v"), Time: at}},
		"headers, nil and empty values": {{
			Key: []byte("acme"), Value: []byte("v"), Time: at,
			Headers: []kafka.Header{{Key: "relay-tenant", Value: []byte("acme")}, {Key: "nil", Value: nil}, {Key: "empty", Value: []byte{}}},
		}},
		"many records, long values, times apart": func() []Record {
			var rs []Record
			for i := range 300 {
				rs = append(rs, Record{
					Key:     []byte("tenant-" + strings.Repeat("x", i%7)),
					Value:   bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*37),
					Time:    at.Add(time.Duration(i%11) * time.Second),
					Headers: []kafka.Header{{Key: "relay-event-id", Value: []byte(strings.Repeat("f", 32))}},
				})
			}
			return rs
		}(),
		"times out of order": {
			{Key: []byte("k"), Value: []byte("late"), Time: at.Add(time.Hour)},
			{Key: []byte("k"), Value: []byte("early"), Time: at},
		},
	}
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			var want bytes.Buffer
			rs := protocol.RecordSet{Version: 2, Records: &kafkaGoRecords{recs: recs}}
			_, err := rs.WriteTo(&want)
			require.NoError(t, err)

			wire := make([]*wireRecord, len(recs))
			for i := range recs {
				wire[i] = &wireRecord{src: &recs[i]}
			}
			got := appendRecordBatch([]byte("prefix"), wire, 0)
			require.Equal(t, "prefix", string(got[:6]), "what was in dst stays")
			require.Equal(t, want.Bytes(), got[6:])
		})
	}
}

// A record without a time takes the flush's time, as kafka-go gives it
// the time of encoding.
func TestAppendRecordBatchZeroTimeTakesNow(t *testing.T) {
	now := time.UnixMilli(1_790_000_000_999)
	recs := []Record{{Key: []byte("acme"), Value: []byte("v")}}
	got := appendRecordBatch(nil, []*wireRecord{{src: &recs[0]}}, now.UnixMilli())

	var rs protocol.RecordSet
	_, err := rs.ReadFrom(bytes.NewReader(got))
	require.NoError(t, err)
	r, err := rs.Records.ReadRecord()
	require.NoError(t, err)
	require.True(t, r.Time.Equal(now), "time %v, want %v", r.Time, now)
}

func TestVarintLen(t *testing.T) {
	for _, v := range []int64{0, 1, -1, 63, 64, -64, -65, 127, 128, 8191, 8192, 1 << 20, -1 << 20, 1 << 40, math.MaxInt64, math.MinInt64} {
		require.Equal(t, len(binary.AppendVarint(nil, v)), varintLen(v), "varintLen(%d)", v)
	}
}

// BenchmarkRecordBatch encodes one partition's batch of six 1 KB records
// with the relay's headers, as a flush under load carries per partition
// with 10 tenants: kafka-go's RecordSet against appendRecordBatch.
func BenchmarkRecordBatch(b *testing.B) {
	recs := make([]Record, 6)
	wire := make([]*wireRecord, len(recs))
	for i := range recs {
		recs[i] = Record{
			Key: []byte("tenant-0007"), Value: oneKB(i), Time: time.Now(),
			Headers: []kafka.Header{
				{Key: "relay-tenant", Value: []byte("tenant-0007")},
				{Key: "relay-object", Value: []byte("page")},
				{Key: "relay-account", Value: []byte("104857392810345")},
				{Key: "relay-event-id", Value: []byte(strings.Repeat("f", 32))},
				{Key: "relay-received-at", Value: []byte("2026-11-27T06:00:00.123456Z")},
			},
		}
		wire[i] = &wireRecord{src: &recs[i]}
	}
	b.Run("kafka-go", func(b *testing.B) {
		var buf bytes.Buffer
		k := &kafkaGoRecords{recs: recs}
		b.ReportAllocs()
		for b.Loop() {
			buf.Reset()
			k.next = 0
			rs := protocol.RecordSet{Version: 2, Records: k}
			if _, err := rs.WriteTo(&buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("relay", func(b *testing.B) {
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			buf = appendRecordBatch(buf[:0], wire, 0)
		}
	})
}

// FuzzAppendRecordBatch holds the encoder to kafka-go's output for
// arbitrary keys, values, headers, record counts and times.
func FuzzAppendRecordBatch(f *testing.F) {
	f.Add([]byte("acme"), false, []byte(`{"a":1}`), "relay-tenant", []byte("acme"), false, uint8(1), int64(0), int64(0))
	f.Add([]byte{}, true, []byte{}, "", []byte{}, true, uint8(7), int64(-3_600_000), int64(86_400_000))
	f.Fuzz(func(t *testing.T, key []byte, keyNil bool, value []byte, hkey string, hval []byte, hvalNil bool, n uint8, step, jitter int64) {
		if keyNil {
			key = nil
		}
		if hvalNil {
			hval = nil
		}
		at := int64(1_790_000_000_123)
		recs := make([]Record, 1+int(n%8))
		wire := make([]*wireRecord, len(recs))
		for i := range recs {
			// Times stay within a decade of 2026, where kafka-go and the
			// encoder agree (see appendRecordBatch).
			ms := at + (step%(1<<35))*int64(i) + (jitter%(1<<35))*int64(i%2)
			recs[i] = Record{Key: key, Value: value, Time: time.UnixMilli(ms), Headers: []kafka.Header{{Key: hkey, Value: hval}}}
			wire[i] = &wireRecord{src: &recs[i]}
		}
		var want bytes.Buffer
		rs := protocol.RecordSet{Version: 2, Records: &kafkaGoRecords{recs: recs}}
		if _, err := rs.WriteTo(&want); err != nil {
			t.Fatal(err)
		}
		if got := appendRecordBatch(nil, wire, 0); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("differs from kafka-go for %d records (%d against %d bytes)", len(recs), len(got), want.Len())
		}
	})
}

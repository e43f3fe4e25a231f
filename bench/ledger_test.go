package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/relay"
)

// benchInstance is a tenant's real mTLS instance (Sink) for the ledger tests.
type benchInstance struct {
	sink   *Sink
	secret string
}

// benchDeliverer posts events to instances the way the relay does: the
// record value as body, webhook-id, both signatures, over mutual TLS.
type benchDeliverer struct {
	t      *testing.T
	client *http.Client
}

func newBenchDeliverer(t *testing.T, c *e2eCerts) *benchDeliverer {
	pem, err := os.ReadFile(c.ca)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	cert, err := tls.LoadX509KeyPair(c.clientCert, c.clientKey)
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}
	t.Cleanup(tr.CloseIdleConnections)
	return &benchDeliverer{t: t, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// deliver posts value with the given webhook-id and wants 204.
func (d *benchDeliverer) deliver(in benchInstance, id string, value []byte) {
	d.t.Helper()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(in.secret, "whsec_"))
	require.NoError(d.t, err)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(value)
	req, err := http.NewRequest(http.MethodPost, in.sink.URL(), bytes.NewReader(value))
	require.NoError(d.t, err)
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	req.Header.Set(SignatureHeader, metaSignature(in.secret, value))
	resp, err := d.client.Do(req)
	require.NoError(d.t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(d.t, http.StatusNoContent, resp.StatusCode)
}

// benchRecordValues builds the record values of a body independently of
// the ledger: {"object":<object>,"entry":[<entry>]} per entry.
func benchRecordValues(t *testing.T, body []byte) [][]byte {
	var b relay.Body
	require.NoError(t, relay.SplitBody(body, &b))
	var out [][]byte
	for _, e := range b.Entries {
		v := []byte(`{"object":` + string(b.ObjectRaw) + `,"entry":[` + string(e.Raw) + `]}`)
		out = append(out, v)
	}
	return out
}

// Instances that answer 2xx but forget every 4th delivery: the ledger
// reports exactly the forgotten events whose request was answered 200 as
// lost, whatever the order of answers and deliveries, and counts
// duplicates, deliveries of unacknowledged requests, unexpected events and
// malformed ids apart.
func TestBenchLedgerLostWithRealDeliveries(t *testing.T) {
	certs, err := writeE2ECerts(t.TempDir())
	require.NoError(t, err)
	ledger := NewLedger()

	const k = 4
	var (
		forgetting atomic.Bool
		receipts   atomic.Int64
		mu         sync.Mutex
		forgotten  = map[string]bool{}
	)
	forgetting.Store(true)
	onReceive := func(rc Receipt) {
		if forgetting.Load() && receipts.Add(1)%k == 0 {
			mu.Lock()
			forgotten[rc.ID] = true
			mu.Unlock()
			return // answered 204 all the same
		}
		ledger.Received(rc.ID, rc.At)
	}
	var instances []benchInstance
	for range 2 {
		secret := NewSigningSecret()
		s, err := StartSink("127.0.0.1:0", SinkConfig{
			CertFile: certs.serverCert, KeyFile: certs.serverKey, ClientCAFile: certs.ca,
			Secret: secret, OnReceive: onReceive,
		})
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, s.Close(context.Background())) })
		instances = append(instances, benchInstance{sink: s, secret: secret})
	}
	d := newBenchDeliverer(t, certs)

	p, err := NewPayloads(PayloadOptions{Tenants: Tenants(2)})
	require.NoError(t, err)
	var (
		accepted        = map[string]bool{} // event id → measured
		refusedReceived = map[string]bool{}
	)
	for seq := range uint64(60) {
		body := p.AppendBody(nil, 1000+seq)
		ok := seq%10 != 9 // every tenth request "answered 503"
		measured := seq >= 10
		start := time.Now()
		values := benchRecordValues(t, body)
		deliverAll := func() {
			if !ok && seq == 59 {
				return // an unacknowledged request whose write did not land
			}
			for i, v := range values {
				id := relay.NewEventID(v).String()
				d.deliver(instances[(int(seq)+i)%2], id, v)
			}
		}
		// Half of the deliveries arrive before the generator saw the answer.
		if seq%2 == 0 {
			deliverAll()
		}
		n, err := ledger.Sent(body, start, ok, measured)
		require.NoError(t, err)
		require.Equal(t, len(values), n)
		if seq%2 == 1 {
			deliverAll()
		}
		for _, v := range values {
			id := relay.NewEventID(v).String()
			if ok {
				accepted[id] = measured
			} else if seq != 59 {
				refusedReceived[id] = true
			}
		}
	}
	forgetting.Store(false)

	mu.Lock()
	var wantLost []string
	wantUnack := 0
	for id := range forgotten {
		if _, ok := accepted[id]; ok {
			wantLost = append(wantLost, id)
		}
	}
	for id := range refusedReceived {
		if !forgotten[id] {
			wantUnack++
		}
	}
	mu.Unlock()
	slices.Sort(wantLost)
	require.NotEmpty(t, wantLost)
	require.Equal(t, int64(len(wantLost)), ledger.Outstanding())

	// A duplicate of a delivered event (pick one not forgotten), an event
	// never sent, and a malformed webhook-id.
	var dup string
	for id := range accepted {
		if !forgotten[id] {
			dup = id
			break
		}
	}
	d.deliver(instances[0], dup, []byte(`{"dup":true}`))
	stray := []byte(`{"object":"page","entry":[{"id":"1","time":1}]}`)
	d.deliver(instances[1], relay.NewEventID(stray).String(), stray)
	d.deliver(instances[0], "not-an-event-id", stray)

	s := ledger.Summary()
	wantMeasured := 0
	for _, m := range accepted {
		if m {
			wantMeasured++
		}
	}
	require.Equal(t, int64(len(accepted)), s.Accepted)
	require.Equal(t, int64(len(wantLost)), s.Lost)
	require.Equal(t, int64(len(accepted)-len(wantLost)), s.Delivered)
	require.Len(t, s.LostIDs, min(len(wantLost), maxLostIDs))
	for _, id := range s.LostIDs {
		require.Contains(t, wantLost, id)
	}
	require.Equal(t, int64(1), s.Duplicates)
	require.Equal(t, int64(1), s.Unexpected)
	require.Equal(t, int64(1), s.BadIDs)
	require.Equal(t, int64(wantUnack), s.Unacknowledged)
	require.Zero(t, s.SentTwice)
	require.Equal(t, int64(wantMeasured), s.MeasuredAccepted)

	lostMeasured := 0
	for _, id := range wantLost {
		if accepted[id] {
			lostMeasured++
		}
	}
	require.Equal(t, int64(wantMeasured-lostMeasured), s.Latency.Count())
	require.Positive(t, s.Latency.Percentiles().P50)
	require.Len(t, s.FirstReceipts, int(s.Delivered))
	require.True(t, slices.IsSortedFunc(s.FirstReceipts, func(a, b FirstReceipt) int { return a.At.Compare(b.At) }))
	t.Logf("accepted %d, lost %d (forgotten %d), unacknowledged delivered %d", s.Accepted, s.Lost, len(forgotten), s.Unacknowledged)
}

// The same body sent twice (identical entries) is one event.
func TestBenchLedgerSentTwice(t *testing.T) {
	l := NewLedger()
	body := []byte(`{"object":"page","entry":[{"id":"1","time":1},{"id":"1","time":1}]}`)
	n, err := l.Sent(body, time.Now(), true, true)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, int64(1), l.Accepted())
	_, err = l.Sent([]byte(`not json`), time.Now(), true, true)
	require.Error(t, err)
	s := l.Summary()
	require.Equal(t, int64(1), s.SentTwice)
	require.Equal(t, int64(1), s.BadBodies)
	require.Equal(t, int64(1), s.Lost)
}

// An event the relay accepted and has not delivered when the wait ends
// for lack of deliveries (--drain-idle) is counted lost, and may only be
// in a retry backoff: the summary says so, as it did when the wait ended
// by its timeout. A negative wait is refused rather than ending at once.
func TestBenchE2EIdleDrainSaysLostMayBeLate(t *testing.T) {
	p, err := NewPayloads(PayloadOptions{Tenants: Tenants(1), Templates: []string{"messenger_message"}})
	require.NoError(t, err)
	l := NewLedger()
	_, err = l.Sent(p.AppendBody(nil, 7), time.Now(), true, true)
	require.NoError(t, err)
	end := drain(context.Background(), l, time.Now(), 100*time.Millisecond, time.Minute)
	require.Equal(t, "idle", end)
	res := &E2EResult{DrainEnd: end, Lost: l.Summary().Lost}
	require.Equal(t, int64(1), res.Lost)
	var b strings.Builder
	require.NoError(t, res.WriteSummary(&b))
	require.Contains(t, b.String(), "would only be late")

	_, err = E2E(context.Background(), E2EConfig{Exe: "relay", DrainIdle: -time.Second})
	require.ErrorContains(t, err, "negative drain")
}

// Behind a closed-loop backlog an event can reach its instance minutes
// after its send; its latency must not stop at the generator's 60 s.
func TestBenchLedgerLatencyPassesAMinute(t *testing.T) {
	l := NewLedger()
	sent := time.Now()
	body := []byte(`{"object":"page","entry":[{"id":"1","time":1}]}`)
	_, err := l.Sent(body, sent, true, true)
	require.NoError(t, err)
	l.Received(relay.NewEventID([]byte(`{"object":"page","entry":[{"id":"1","time":1}]}`)).String(), sent.Add(90*time.Second))
	s := l.Summary()
	require.Zero(t, s.Lost)
	within(t, 90_000, s.Latency.Percentiles().Max)
	require.Zero(t, s.Latency.Clamped())
}

// e2e's delivery run states one rate: its 2xx rate, the contract's
// ok_per_sec, is the delivered rate, as its requests_per_sec is.
func TestBenchE2EDeliveryRatesAgree(t *testing.T) {
	l := NewLedger()
	ws := time.Now()
	for i := range 230 {
		body := fmt.Appendf(nil, `{"object":"page","entry":[{"id":"%d","time":1}]}`, i)
		_, err := l.Sent(body, ws, true, true)
		require.NoError(t, err)
		l.Received(relay.NewEventID(body).String(), ws.Add(time.Duration(i)*10*time.Millisecond))
	}
	res := &E2EResult{Ingest: &Result{RequestsPerSec: 100}}
	res.fill(l.Summary(), ws, ws.Add(2*time.Second), ws.Add(2*time.Second), 2*time.Second)
	require.InDelta(t, res.DeliveredPerSec, res.Delivery.RequestsPerSec, 1e-9)
	require.InDelta(t, res.DeliveredPerSec, res.Delivery.OKPerSec, 1e-9)
}

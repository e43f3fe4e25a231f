package relay

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/valyala/fasthttp"
)

// wantRecord is what one entry of a fixture must become.
type wantRecord struct {
	topic, tenant, account string
	partition              int
}

func TestIngressFixturesWriteRecords(t *testing.T) {
	want := map[string][]wantRecord{
		"batch_two_pages.json": {
			{testEvents, "acme", "104857392810345", 0},
			{testEvents, "globex", "209384756102938", 1},
		},
		"instagram_comment.json":               {{testEvents, "acme", "17841405822304914", 0}},
		"instagram_dm.json":                    {{testEvents, "acme", "17841405822304914", 0}},
		"messenger_message.json":               {{testEvents, "acme", "104857392810345", 0}},
		"messenger_postback_and_receipts.json": {{testEvents, "acme", "104857392810345", 0}},
		"page_feed_comment.json":               {{testEvents, "acme", "104857392810345", 0}},
		"permissions_revoked.json":             {{testUnrouted, "", "10210299214172187", 0}},
		"signature_vector_escaped.raw":         {{testEvents, "acme", "104857392810345", 0}},
		// WhatsApp: phone_number_id is tried first, and acme owns it.
		"whatsapp_message_and_status.json": {{testEvents, "acme", "106540352242922", 0}},
	}
	for _, f := range loadFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			h := newHarness(t, nil)
			before := time.Now().UTC().Add(-time.Second)
			code, _ := h.post(f.body, f.signature)
			require.Equal(t, fasthttp.StatusOK, code)

			var b Body
			require.NoError(t, SplitBody(f.body, &b))
			got := append(records(t, h.broker.addr(), testEvents, 2), records(t, h.broker.addr(), testUnrouted, 1)...)
			require.Len(t, got, len(want[f.name]))
			for i, w := range want[f.name] {
				r := findRecord(t, got, string(b.Entries[i].Raw))
				wantValue := `{"object":` + string(b.ObjectRaw) + `,"entry":[` + string(b.Entries[i].Raw) + `]}`
				require.Equal(t, wantValue, string(r.value), "value is the entry's raw bytes in a one-entry body")
				require.Equal(t, w.partition, r.partition)
				require.Equal(t, string(b.Object), r.headers[HeaderObject])
				require.Equal(t, w.account, r.headers[HeaderAccount])
				sum := sha256.Sum256(r.value)
				require.Equal(t, hex.EncodeToString(sum[:16]), r.headers[HeaderEventID], "event id = first 16 bytes of sha256(value)")
				at, err := time.Parse(time.RFC3339Nano, r.headers[HeaderReceivedAt])
				require.NoError(t, err)
				require.True(t, strings.HasSuffix(r.headers[HeaderReceivedAt], "Z"), "UTC")
				require.WithinRange(t, at, before, time.Now().UTC().Add(time.Second))
				if w.topic == testEvents {
					require.Equal(t, w.tenant, r.key)
					require.Equal(t, w.tenant, r.headers[HeaderTenant])
				} else {
					require.Equal(t, w.account, r.key)
					_, has := r.headers[HeaderTenant]
					require.False(t, has, "unrouted records name no tenant")
				}
			}
		})
	}
}

func findRecord(t testing.TB, rs []record, entry string) record {
	t.Helper()
	for _, r := range rs {
		if strings.Contains(string(r.value), entry) {
			return r
		}
	}
	t.Fatalf("no record holds entry %s", entry)
	return record{}
}

func highWatermarks(t testing.TB, h *harness) int {
	t.Helper()
	return len(records(t, h.broker.addr(), testEvents, 2)) + len(records(t, h.broker.addr(), testUnrouted, 1))
}

func TestIngressRefusesBadSignaturesAndWritesNothing(t *testing.T) {
	h := newHarness(t, nil)
	f := fixtureByName(t, "batch_two_pages.json")
	hexSum := f.signature[len("sha256="):]
	esc := fixtureByName(t, "signature_vector_escaped.raw")
	for _, tc := range []struct {
		name, sig string
		body      []byte
	}{
		{"missing header", "", f.body},
		{"sha1 only", "sha1=" + hexSum[:40], f.body},
		{"wrong prefix", "sha512=" + hexSum, f.body},
		{"bad hex", "sha256=" + strings.Repeat("g", 64), f.body},
		{"wrong secret", sign("not_the_secret", f.body), f.body},
		{"re-serialised body", esc.signature, unescapedVector(esc.body)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _ := h.post(tc.body, tc.sig)
			require.Equal(t, fasthttp.StatusUnauthorized, code)
		})
	}
	require.Zero(t, highWatermarks(t, h), "nothing written for a refused signature")
	require.Equal(t, 6.0, testutil.ToFloat64(h.ingress.cfg.Metrics.byStatus[401]))
	require.Equal(t, 1.0, testutil.ToFloat64(h.ingress.cfg.Metrics.signatureFail.WithLabelValues("missing")))
	require.Equal(t, 3.0, testutil.ToFloat64(h.ingress.cfg.Metrics.signatureFail.WithLabelValues("malformed")))
	require.Equal(t, 2.0, testutil.ToFloat64(h.ingress.cfg.Metrics.signatureFail.WithLabelValues("mismatch")))
}

func TestIngressBodies(t *testing.T) {
	h := newHarness(t, nil)
	big := []byte(`{"object":"page","entry":[{"id":"104857392810345","pad":"` + strings.Repeat("x", 70<<10) + `"}]}`)
	for _, tc := range []struct {
		name string
		body []byte
		code int
	}{
		{"empty", nil, 400},
		{"not json", []byte("hello"), 400},
		{"json, not a webhook", []byte(`{"hello":"world"}`), 400},
		{"over max_body_bytes", big, 413},
		{"no entries", []byte(`{"object":"page","entry":[]}`), 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _ := h.post(tc.body, sign(testSecret, tc.body))
			require.Equal(t, tc.code, code)
		})
	}
	require.Zero(t, highWatermarks(t, h))
}

func TestIngressHandshake(t *testing.T) {
	h := newHarness(t, nil)
	get := func(query string) (int, string, string) {
		code, body, err := h.client.Get(nil, h.url+"?"+query)
		require.NoError(t, err)
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.SetRequestURI(h.url + "?" + query)
		require.NoError(t, h.client.Do(req, res))
		return code, string(body), string(res.Header.ContentType())
	}
	code, body, ct := get("hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1158201444")
	require.Equal(t, 200, code)
	require.Equal(t, "1158201444", body)
	require.Contains(t, ct, "text/plain")
	for _, q := range []string{
		"hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1",
		"hub.mode=unsubscribe&hub.verify_token=tok&hub.challenge=1",
		"hub.mode=subscribe&hub.challenge=1",
		"",
	} {
		code, _, _ := get(q)
		require.Equal(t, 403, code, q)
	}
	code, _, err := h.client.Get(nil, strings.Replace(h.url, "/webhooks/meta", "/other", 1))
	require.NoError(t, err)
	require.Equal(t, 404, code)
}

// An empty configured token is never a token: it would complete a
// handshake that names none.
func TestIngressHandshakeIgnoresAnEmptyToken(t *testing.T) {
	h := newHarness(t, func(c *IngressConfig) { c.VerifyTokens = []string{"", "tok"} })
	for q, want := range map[string]int{
		"hub.mode=subscribe&hub.challenge=1":                      403,
		"hub.mode=subscribe&hub.verify_token=&hub.challenge=1":    403,
		"hub.mode=subscribe&hub.verify_token=tok&hub.challenge=1": 200,
	} {
		code, _, err := h.client.Get(nil, h.url+"?"+q)
		require.NoError(t, err)
		require.Equal(t, want, code, q)
	}
}

func TestIngressDedupe(t *testing.T) {
	h := newHarness(t, nil)
	f := fixtureByName(t, "batch_two_pages.json")
	for range 3 {
		code, _ := h.post(f.body, f.signature)
		require.Equal(t, 200, code)
	}
	require.Equal(t, 2, highWatermarks(t, h), "Meta's redeliveries are not written again")
	require.Equal(t, 4.0, testutil.ToFloat64(h.ingress.cfg.Metrics.duplicates))
	require.Equal(t, 2.0, testutil.ToFloat64(h.ingress.cfg.Metrics.written))
}

func TestIngressNotReadyAnswers503(t *testing.T) {
	h := newHarness(t, func(c *IngressConfig) { c.Ready = func() bool { return false } })
	f := fixtureByName(t, "messenger_message.json")
	code, _ := h.post(f.body, f.signature)
	require.Equal(t, 503, code)
	require.Zero(t, highWatermarks(t, h))
}

// TestIngressBrokerDownThenBack: with the broker stopped every POST gets
// 503 (never 200); once it is back, the same relay answers 200 again and
// what was written before is still there.
func TestIngressBrokerDownThenBack(t *testing.T) {
	h := newHarness(t, nil)
	body := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"104857392810345","time":%d}]}`, i))
	}
	code, _ := h.post(body(0), sign(testSecret, body(0)))
	require.Equal(t, 200, code)

	h.broker.stop()
	for i := 1; i <= 5; i++ {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(h.url)
		req.Header.SetMethod("POST")
		req.Header.Set("X-Hub-Signature-256", sign(testSecret, body(i)))
		req.SetBody(body(i))
		require.NoError(t, h.client.DoTimeout(req, res, 10*time.Second))
		require.Equal(t, 503, res.StatusCode())
		require.Equal(t, "5", string(res.Header.Peek("Retry-After")))
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(res)
	}

	h.broker.start()
	i := 100
	require.Eventually(t, func() bool {
		i++
		code, _ := h.post(body(i), sign(testSecret, body(i)))
		return code == 200
	}, 30*time.Second, 100*time.Millisecond, "200 again without restarting the relay")
	got := records(t, h.broker.addr(), testEvents, 1)
	require.Contains(t, string(got[0].value), `"time":0`, "written before the outage, survived the broker restart")
	require.Contains(t, string(got[len(got)-1].value), fmt.Sprintf(`"time":%d`, i))
}

// TestIngressKafkaTooSlowAnswers503: a broker that does not acknowledge
// within the produce timeout gets 503, never 200.
func TestIngressKafkaTooSlowAnswers503(t *testing.T) {
	h := newHarness(t, func(c *IngressConfig) { c.ProduceTimeout = 300 * time.Millisecond })
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	h.broker.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		h.broker.c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	f := fixtureByName(t, "messenger_message.json")
	code, _ := h.post(f.body, f.signature)
	require.Equal(t, 503, code)
	once.Do(func() { close(release) })
}

// TestIngressConcurrentRequestsShareProduceRequests: group commit. Many
// concurrent requests must go out in fewer produce requests than requests.
func TestIngressConcurrentRequestsShareProduceRequests(t *testing.T) {
	h := newHarness(t, nil)
	var produces, mu = 0, sync.Mutex{}
	h.broker.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		mu.Lock()
		produces++
		mu.Unlock()
		h.broker.c.KeepControl()
		return nil, nil, false
	})
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b := []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"104857392810345","n":%d}]}`, i))
			code, _ := h.post(b, sign(testSecret, b))
			require.Equal(t, 200, code)
		})
	}
	wg.Wait()
	require.Len(t, records(t, h.broker.addr(), testEvents, 1), n)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests in %d produce requests", n, produces)
	require.Less(t, produces, n, "requests share produce requests")
}

// keep the imports used by helpers in one place.
var (
	_ = kafka.TCP
	_ = kfake.NumBrokers
	_ = context.Background
)

package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestHTTPContract exercises the ingress's HTTP contract over the wire
// against a running relay: the GET handshake, every way a signature can be
// wrong (401, nothing written), bodies that are not webhooks (400), a body
// over ingress.max_body_bytes (413), an unknown account (200, unrouted) and
// a redelivery (200, written once, counted as a duplicate).
func TestHTTPContract(t *testing.T) {
	const maxBody = 4096
	e := newRelayEnv(t, relayOptions{MaxBodyBytes: maxBody})
	e.start()
	c := newHTTPClient()

	// nothingWritten runs f and checks that neither topic grew.
	nothingWritten := func(t *testing.T, f func()) {
		t.Helper()
		ev0, un0 := topicCounts(t, e.Kafka)
		f()
		ev1, un1 := topicCounts(t, e.Kafka)
		if ev1 != ev0 || un1 != un0 {
			t.Errorf("records were written: relay.events %d → %d, relay.unrouted %d → %d", ev0, ev1, un0, un1)
		}
	}

	t.Run("handshake", func(t *testing.T) {
		get := func(q url.Values) (*http.Response, string) {
			t.Helper()
			resp, err := c.Get(e.URL() + "?" + q.Encode())
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
		resp, body := get(url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {testVerifyToken}, "hub.challenge": {"1158201444"}})
		if resp.StatusCode != 200 || body != "1158201444" {
			t.Errorf("right token: %d %q, want 200 with the challenge", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("right token: Content-Type %q, want text/plain", ct)
		}
		resp, body = get(url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"not-the-token"}, "hub.challenge": {"1158201444"}})
		if resp.StatusCode != 403 || strings.Contains(body, "1158201444") {
			t.Errorf("wrong token: %d %q, want 403 without the challenge", resp.StatusCode, body)
		}
		resp, _ = get(url.Values{"hub.verify_token": {testVerifyToken}, "hub.challenge": {"1"}})
		if resp.StatusCode != 403 {
			t.Errorf("no hub.mode: %d, want 403", resp.StatusCode)
		}
	})

	body := readFixture(t, "messenger_message.json")
	goodSig := sign(body, testAppSecret)
	t.Run("bad signatures", func(t *testing.T) {
		sha1Mac := hmac.New(sha1.New, []byte(testAppSecret))
		sha1Mac.Write(body)
		sha1Sig := "sha1=" + hex.EncodeToString(sha1Mac.Sum(nil))
		cases := []struct {
			name   string
			header map[string]string
			reason string
		}{
			{"missing header", nil, "missing"},
			{"sha1 only (X-Hub-Signature)", map[string]string{"X-Hub-Signature": sha1Sig}, "missing"},
			{"sha1 value in X-Hub-Signature-256", map[string]string{"X-Hub-Signature-256": sha1Sig}, "malformed"},
			{"wrong prefix", map[string]string{"X-Hub-Signature-256": "sha512=" + strings.TrimPrefix(goodSig, "sha256=")}, "malformed"},
			{"upper-case prefix", map[string]string{"X-Hub-Signature-256": "SHA256=" + strings.TrimPrefix(goodSig, "sha256=")}, "malformed"},
			{"no prefix", map[string]string{"X-Hub-Signature-256": strings.TrimPrefix(goodSig, "sha256=")}, "malformed"},
			{"bad hex", map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("zz", 32)}, "malformed"},
			{"truncated", map[string]string{"X-Hub-Signature-256": goodSig[:len(goodSig)-2]}, "malformed"},
			{"empty value", map[string]string{"X-Hub-Signature-256": "sha256="}, "malformed"},
			{"wrong secret", map[string]string{"X-Hub-Signature-256": sign(body, "not_the_app_secret")}, "mismatch"},
			{"other body's signature", map[string]string{"X-Hub-Signature-256": sign(readFixture(t, "instagram_dm.json"), testAppSecret)}, "mismatch"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				series := `relay_ingress_signature_failures_total{reason="` + tc.reason + `"}`
				before := metric(t, e.Admin, series)
				nothingWritten(t, func() {
					req, _ := http.NewRequest(http.MethodPost, e.URL(), bytes.NewReader(body))
					for k, v := range tc.header {
						req.Header.Set(k, v)
					}
					resp, err := c.Do(req)
					if err != nil {
						t.Fatalf("POST: %v", err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 401 {
						t.Errorf("status %d (%q), want 401", resp.StatusCode, b)
					}
				})
				if after := metric(t, e.Admin, series); after != before+1 {
					t.Errorf("%s went %v → %v, want +1", series, before, after)
				}
			})
		}
	})

	t.Run("not a webhook", func(t *testing.T) {
		for _, tc := range []struct{ name, body string }{
			{"empty", ""},
			{"whitespace", " \n"},
			{"not JSON", "object=page&entry=1"},
			{"truncated JSON", `{"object":"page","entry":[{"id":"104857392810345"`},
			{"JSON array", `[{"object":"page"}]`},
			{"no entry", `{"object":"page"}`},
			{"entry not an array", `{"object":"page","entry":{"id":"104857392810345"}}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				nothingWritten(t, func() {
					r, err := post(c, e.URL(), []byte(tc.body), sign([]byte(tc.body), testAppSecret))
					if err != nil {
						t.Fatalf("POST: %v", err)
					}
					if r.Status != 400 {
						t.Errorf("status %d (%q), want 400", r.Status, r.Body)
					}
				})
			})
		}
	})

	t.Run("body over max_body_bytes", func(t *testing.T) {
		pad := strings.Repeat("x", maxBody)
		big := []byte(`{"object":"page","entry":[{"id":"104857392810345","time":1,"messaging":[{"message":{"mid":"m_big","text":"` + pad + `"}}]}]}`)
		nothingWritten(t, func() {
			r, err := post(c, e.URL(), big, sign(big, testAppSecret))
			if err != nil {
				t.Fatalf("POST of %d bytes: %v", len(big), err)
			}
			if r.Status != 413 {
				t.Errorf("POST of %d bytes (limit %d): status %d (%q), want 413", len(big), maxBody, r.Status, r.Body)
			}
		})
		// Just under the limit is fine.
		small := []byte(`{"object":"page","entry":[{"id":"104857392810345","time":1,"messaging":[{"message":{"mid":"m_small","text":"`)
		small = append(small, strings.Repeat("y", maxBody-len(small)-len(`"}}]}]}`))...)
		small = append(small, `"}}]}]}`...)
		if len(small) != maxBody {
			t.Fatalf("test bug: body of %d bytes", len(small))
		}
		mustPost(t, c, e.URL(), small, 200)
	})

	t.Run("unknown account", func(t *testing.T) {
		// What the dashboard's Test button sends: entry id "0".
		test := []byte(`{"object":"page","entry":[{"id":"0","time":1718035200123,"messaging":[{"sender":{"id":"12334"},"recipient":{"id":"23245"},"timestamp":1718035199871,"message":{"mid":"test_message_id","text":"test_message"}}]}]}`)
		before := readTopic(t, e.Kafka, "relay.unrouted")
		ev0 := len(readTopic(t, e.Kafka, "relay.events"))
		mustPost(t, c, e.URL(), test, 200)
		after := readTopic(t, e.Kafka, "relay.unrouted")
		if ev1 := len(readTopic(t, e.Kafka, "relay.events")); ev1 != ev0 {
			t.Errorf("relay.events went %d → %d for an unknown account", ev0, ev1)
		}
		if len(after) != len(before)+1 {
			t.Fatalf("relay.unrouted went %d → %d, want +1", len(before), len(after))
		}
		r := after[len(after)-1]
		obj, entries := webhookEntries(t, test)
		if want := expectedValue(obj, entries[0]); !bytes.Equal(r.Value, want) {
			t.Errorf("unrouted value %s, want %s", r.Value, want)
		}
		if r.Key != "0" || r.Headers["relay-account"] != "0" || r.Headers["relay-object"] != "page" {
			t.Errorf("unrouted record: key %q, headers %v; want key and relay-account \"0\", relay-object page", r.Key, r.Headers)
		}
		if _, ok := r.Headers["relay-tenant"]; ok {
			t.Errorf("unrouted record has relay-tenant %q", r.Headers["relay-tenant"])
		}
	})

	t.Run("redelivery written once", func(t *testing.T) {
		redo := messengerBody(t, "104857392810345", "m_redelivered_once")
		dup0 := metric(t, e.Admin, "relay_ingress_duplicates_total")
		ev0 := readTopic(t, e.Kafka, "relay.events")
		mustPost(t, c, e.URL(), redo, 200)
		mustPost(t, c, e.URL(), redo, 200)
		ev1 := readTopic(t, e.Kafka, "relay.events")
		n := 0
		for _, r := range ev1 {
			if midOf(r.Value) == "m_redelivered_once" {
				n++
			}
		}
		if n != 1 || len(ev1) != len(ev0)+1 {
			t.Errorf("posted twice: %d records with its mid (relay.events %d → %d), want exactly 1", n, len(ev0), len(ev1))
		}
		if dup1 := metric(t, e.Admin, "relay_ingress_duplicates_total"); dup1 != dup0+1 {
			t.Errorf("relay_ingress_duplicates_total went %v → %v, want +1", dup0, dup1)
		}
	})

	t.Run("redelivered entry in another body", func(t *testing.T) {
		// Meta may redeliver an entry batched differently: the event is the
		// entry, so the second body writes nothing new.
		batch := readFixture(t, "batch_two_pages.json")
		obj, entries := webhookEntries(t, batch)
		single := []byte(`{"object":` + string(obj) + `,"entry":[` + string(entries[1]) + `]}`)
		mustPost(t, c, e.URL(), batch, 200)
		dup0 := metric(t, e.Admin, "relay_ingress_duplicates_total")
		nothingWritten(t, func() { mustPost(t, c, e.URL(), single, 200) })
		if dup1 := metric(t, e.Admin, "relay_ingress_duplicates_total"); dup1 != dup0+1 {
			t.Errorf("relay_ingress_duplicates_total went %v → %v, want +1", dup0, dup1)
		}
	})

	t.Run("other paths and methods", func(t *testing.T) {
		r, err := post(c, "http://"+e.Ingress+"/webhooks/other", body, goodSig)
		if err != nil || r.Status != 404 {
			t.Errorf("POST to another path: %v %d, want 404", err, r.Status)
		}
		req, _ := http.NewRequest(http.MethodPut, e.URL(), bytes.NewReader(body))
		req.Header.Set("X-Hub-Signature-256", goodSig)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("PUT: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Errorf("PUT: %d, want 405", resp.StatusCode)
		}
	})
}

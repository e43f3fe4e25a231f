package main

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestKafkaUnavailable runs one relay as the Kafka of another (its embedded
// broker is reached through kafka.brokers), kills that Kafka under the
// relay's feet and checks the contract: 503 with Retry-After, never 200,
// /readyz 503; and 200 again once Kafka is back.
func TestKafkaUnavailable(t *testing.T) {
	// The "cluster": a relay whose only job here is its embedded broker.
	kafkaEnv := newRelayEnv(t, relayOptions{})
	kafkaProc := kafkaEnv.start()

	e := newRelayEnv(t, relayOptions{
		Brokers:        []string{kafkaEnv.Kafka},
		ProduceTimeout: time.Second,
		RetryAfter:     3 * time.Second,
	})
	e.start()
	c := newHTTPClient()
	mustPost(t, c, e.URL(), messengerBody(t, tenantAcme.Accounts[0], "m_before_outage"), 200)

	kafkaProc.kill()

	// Every POST while Kafka is gone: 503 with Retry-After, never 200.
	for i := range 5 {
		body := messengerBody(t, tenantAcme.Accounts[0], "m_outage_"+strconv.Itoa(i))
		start := time.Now()
		r, err := post(c, e.URL(), body, sign(body, testAppSecret))
		if err != nil {
			t.Fatalf("POST %d with Kafka down: %v", i, err)
		}
		if r.Status != http.StatusServiceUnavailable {
			t.Errorf("POST %d with Kafka down: %d %q, want 503", i, r.Status, r.Body)
		}
		if ra := r.Header.Get("Retry-After"); ra != "3" {
			t.Errorf("POST %d with Kafka down: Retry-After %q, want \"3\" (ingress.retry_after)", i, ra)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("POST %d with Kafka down took %v; kafka.produce_timeout is 1s", i, took.Round(time.Millisecond))
		}
	}
	if !waitFor(15*time.Second, func() bool {
		resp, err := http.Get("http://" + e.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}) {
		t.Errorf("/readyz did not answer 503 with Kafka down")
	}

	// Kafka back (same data, same address): the relay recovers by itself.
	kafkaEnv.start()
	body := messengerBody(t, tenantAcme.Accounts[0], "m_after_outage")
	var last postResult
	if !waitFor(30*time.Second, func() bool {
		r, err := post(c, e.URL(), body, sign(body, testAppSecret))
		if err == nil {
			last = r
		}
		return err == nil && r.Status == 200
	}) {
		t.Fatalf("no 200 within 30s of Kafka coming back; last answer %d %q", last.Status, last.Body)
	}
	checkAcked(t, kafkaEnv.Kafka, map[string]string{"m_before_outage": "acme", "m_after_outage": "acme"}, nil)
}

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestWarnsOfATopicThatRefusesLargeRecords: against a real cluster, topics
// made before the relay keep their own max.message.bytes. A relay whose
// ingress.max_body_bytes is above it says so at start, naming the topic;
// one within it says nothing.
func TestWarnsOfATopicThatRefusesLargeRecords(t *testing.T) {
	// The "cluster": a relay whose embedded broker made the topics for
	// bodies of up to 8 MiB (max.message.bytes 9 MiB).
	kafkaEnv := newRelayEnv(t, relayOptions{})
	kafkaEnv.start()

	fits := newRelayEnv(t, relayOptions{Brokers: []string{kafkaEnv.Kafka}})
	p := fits.start()
	if strings.Contains(p.Stderr(), "max.message.bytes") {
		t.Errorf("a warning with topics large enough:\n%s", p.Stderr())
	}
	p.stop()

	tooBig := newRelayEnv(t, relayOptions{Brokers: []string{kafkaEnv.Kafka}, MaxBodyBytes: 16 << 20})
	p = tooBig.start()
	for _, topic := range []string{"relay.events", "relay.unrouted", "relay.dlq"} {
		if !p.waitLog("topic="+topic+" max.message.bytes=9437184", 10*time.Second) {
			t.Errorf("no warning naming %s:\n%s", topic, p.Stderr())
		}
	}

	// A body whose second entry is over the topics' limit is refused
	// whole, before anything is written: the first entry used to be
	// written at every retry of the 413'd body.
	events, unrouted := topicCounts(t, kafkaEnv.Kafka)
	body := fmt.Appendf(nil, `{"object":"page","entry":[{"id":%q,"time":1,"messaging":[]},{"id":"209384756102938","time":2,"m":%q}]}`,
		tenantAcme.Accounts[0], strings.Repeat("y", 10<<20))
	c := newHTTPClient()
	for range 2 {
		mustPost(t, c, tooBig.URL(), body, 413)
	}
	if e, u := topicCounts(t, kafkaEnv.Kafka); e != events || u != unrouted {
		t.Errorf("a refused body wrote %d events and %d unrouted", e-events, u-unrouted)
	}
}

package main

import (
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
}

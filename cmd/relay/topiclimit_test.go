package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
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

// A dead letter is its event's record and a few headers more. Against a
// cluster whose relay.dlq takes no more than relay.events (Kafka's default
// 1 MiB on both, scaled down here), the largest events the ingress let in
// could not be dead-lettered, and the tenant's partition waited for good.
// The ingress now refuses an entry whose dead letter the DLQ could not
// take.
func TestEntryTooLargeToDeadLetterIsRefused(t *testing.T) {
	kafkaEnv := newRelayEnv(t, relayOptions{})
	kafkaEnv.start()
	const limit = 64 << 10
	setTopicConfig(t, kafkaEnv.Kafka, "relay.dlq", "max.message.bytes", strconv.Itoa(limit))

	relay := newRelayEnv(t, relayOptions{Brokers: []string{kafkaEnv.Kafka}})
	p := relay.start()
	if !p.waitLog("topic=relay.dlq max.message.bytes=65536", 10*time.Second) {
		t.Errorf("no warning naming relay.dlq:\n%s", p.Stderr())
	}
	entry := func(pad int) []byte {
		return fmt.Appendf(nil, `{"object":"page","entry":[{"id":%q,"time":1,"m":%q}]}`, tenantAcme.Accounts[0], strings.Repeat("y", pad))
	}
	c := newHTTPClient()
	mustPost(t, c, relay.URL(), entry(limit-1<<10), 413) // fits relay.dlq alone, not as a dead letter
	mustPost(t, c, relay.URL(), entry(limit/2), 200)
}

// setTopicConfig sets one config of a topic on the broker at addr.
func setTopicConfig(t *testing.T, addr, topic, name, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &kafka.Transport{} // not the default one: it keeps metadata of whatever broker had addr before
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}
	res, err := client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: name, Value: value, ConfigOperation: kafka.ConfigOperationSet}},
	}}})
	if err != nil {
		t.Fatalf("alter %s: %v", topic, err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			t.Fatalf("alter %s: %v", topic, r.Error)
		}
	}
}

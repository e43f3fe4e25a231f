package main

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"
)

// TestSIGKILLDurability SIGKILLs the relay in the middle of a load of
// unique signed bodies for two tenants, twice, restarting it on the same
// data folder each time: every event that was answered 200 must be in
// relay.events after the restart, in its tenant's partition, and so must
// everything written before (the embedded broker's data survives).
func TestSIGKILLDurability(t *testing.T) {
	e := newRelayEnv(t, relayOptions{})
	p := e.start()
	c := newHTTPClient()
	tenants := []testTenant{tenantAcme, tenantGlobex}

	// Before any kill: one event per tenant, to learn the partitions.
	acked := map[string]string{}
	for _, tn := range tenants {
		mid := "m_before_kill_" + tn.ID
		mustPost(t, c, e.URL(), messengerBody(t, tn.Accounts[0], mid), 200)
		acked[mid] = tn.ID
	}
	partitionOf := map[string]int{}
	for _, r := range readTopic(t, e.Kafka, "relay.events") {
		partitionOf[r.Key] = r.Partition
	}
	if len(partitionOf) != 2 || partitionOf["acme"] == partitionOf["globex"] {
		t.Fatalf("tenant partitions %v: want acme and globex in partitions of their own", partitionOf)
	}
	checkAcked(t, e.Kafka, acked, partitionOf)

	for cycle := 1; cycle <= 2; cycle++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		load := startLoad(ctx, t, e.URL(), fmt.Sprintf("m_kill%d", cycle), 8, 5000, tenants...)
		// Kill in the middle of the load: once it is well under way.
		loadStart := time.Now()
		if !waitFor(20*time.Second, func() bool { return load.ackedCount() >= 200 && time.Since(loadStart) >= time.Second }) {
			cancel()
			load.wait(t, 30*time.Second)
			t.Fatalf("cycle %d: the load did not get going: %s", cycle, load.summary())
		}
		p.kill()
		killedAt := time.Now()
		load.wait(t, 30*time.Second)
		cancel()
		t.Logf("cycle %d: killed %v into the load; %s", cycle, killedAt.Sub(loadStart).Round(time.Millisecond), load.summary())
		if load.statuses[500] > 0 {
			t.Errorf("cycle %d: %d answers 500 under load", cycle, load.statuses[500])
		}
		maps.Copy(acked, load.acked)

		p = e.start()
		dups := checkAcked(t, e.Kafka, acked, partitionOf)
		events, _ := topicCounts(t, e.Kafka)
		t.Logf("cycle %d: after restart relay.events holds %d records for %d events answered 200 so far; %d of them written more than once",
			cycle, events, len(acked), dups)
		if events < len(acked) {
			t.Errorf("cycle %d: relay.events holds %d records, fewer than the %d events answered 200", cycle, events, len(acked))
		}
		// The relay keeps serving after the restart, with the same partitions.
		for _, tn := range tenants {
			mid := fmt.Sprintf("m_after_kill%d_%s", cycle, tn.ID)
			mustPost(t, c, e.URL(), messengerBody(t, tn.Accounts[0], mid), 200)
			acked[mid] = tn.ID
		}
		checkAcked(t, e.Kafka, acked, partitionOf)
		if t.Failed() {
			return
		}
	}
}

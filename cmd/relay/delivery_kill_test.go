package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"
)

// TestDeliveryKill SIGKILLs the relay twice while it delivers to two
// tenants' instances under a load of unique signed bodies, restarting it on
// the same data folder each time, and checks the delivery guarantees at
// the instances: every event answered 200 arrives; every receipt's
// webhook-id is sha256(body)[:16] of its body; a redelivery carries the
// same webhook-id and the same body as the first; and each tenant's first
// receipts come in the order of its partition in relay.events.
func TestDeliveryKill(t *testing.T) {
	t.Parallel()
	files := dlvDevCA(t, "acme", "globex")
	secrets := map[string]string{"acme": dlvSecretAcme, "globex": dlvSecretGlobex}
	inst := map[string]*dlvInstance{}
	var tenants []testTenant
	for _, tn := range []testTenant{tenantAcme, tenantGlobex} {
		in := dlvStartInstance(t, tn.ID, files.Tenants[tn.ID].Cert, files.Tenants[tn.ID].Key, files.CA.Cert)
		inst[tn.ID] = in
		tn.URL, tn.CAFile, tn.Secret = in.URL(tn.ID), files.CA.Cert, secrets[tn.ID]
		tenants = append(tenants, tn)
	}
	e := newRelayEnv(t, relayOptions{Tenants: tenants, Delivery: dlvDelivery(files, "")})
	p := e.start()

	acked := map[string]string{} // mid → tenant, answered 200
	const kills = 2
	for cycle := 1; cycle <= kills; cycle++ {
		before := map[string]int{}
		for id, in := range inst {
			before[id] = in.count()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		load := startLoad(ctx, t, e.URL(), fmt.Sprintf("m_dlvkill%d", cycle), 3, 600, tenants...)
		// Kill while deliveries are under way: once both instances have
		// received a good number of events since this cycle began.
		flowing := func() bool {
			for id, in := range inst {
				if in.count() < before[id]+150 {
					return false
				}
			}
			return true
		}
		if !waitFor(45*time.Second, flowing) {
			cancel()
			load.wait(t, 30*time.Second)
			t.Fatalf("cycle %d: deliveries did not get going: acme got %d, globex %d since the cycle began; load %s",
				cycle, inst["acme"].count()-before["acme"], inst["globex"].count()-before["globex"], load.summary())
		}
		p.kill()
		killedAt := time.Now()
		cancel()
		load.wait(t, 30*time.Second)
		maps.Copy(acked, load.acked)
		arrived := dlvArrivedMids(inst)
		pending := 0
		for mid := range acked {
			if !arrived[mid] {
				pending++
			}
		}
		t.Logf("cycle %d: killed with %d events answered 200 not yet delivered; %s", cycle, pending, load.summary())
		if pending == 0 {
			t.Logf("cycle %d: every event was delivered before the kill (the kill caught no backlog)", cycle)
		}
		p = e.start()
		t.Logf("cycle %d: restarted %v after the kill", cycle, time.Since(killedAt).Round(time.Millisecond))
	}

	// Keep posting a little after the last restart, then stop.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	load := startLoad(ctx, t, e.URL(), "m_dlvkill_after", 2, 50, tenants...)
	load.wait(t, 40*time.Second)
	cancel()
	maps.Copy(acked, load.acked)
	if load.ackedCount() == 0 {
		t.Fatalf("after the last restart no POST was answered 200: %s", load.summary())
	}

	// Every event answered 200 arrives, and so does everything else in
	// the tenants' partitions (events written but not answered, cut off
	// by a kill).
	var missing []string
	if !waitFor(60*time.Second, func() bool {
		arrived := dlvArrivedMids(inst)
		missing = missing[:0]
		for mid := range acked {
			if !arrived[mid] {
				missing = append(missing, mid)
			}
		}
		return len(missing) == 0
	}) {
		sort.Strings(missing)
		t.Fatalf("%d of %d events answered 200 never arrived at their instance, e.g. %v", len(missing), len(acked), missing[:min(len(missing), 10)])
	}
	partOrder, partitionOf := dlvPartitionOrder(t, e.Kafka)
	if len(partitionOf) != 2 || partitionOf["acme"] == partitionOf["globex"] {
		t.Fatalf("tenant partitions %v: want acme and globex in partitions of their own", partitionOf)
	}
	if !waitFor(30*time.Second, func() bool {
		for id, in := range inst {
			got, _ := in.ids()
			if len(got) < len(partOrder[id]) {
				return false
			}
		}
		return true
	}) {
		for id, in := range inst {
			got, _ := in.ids()
			t.Errorf("%s: %d distinct events arrived of the %d in its partition", id, len(got), len(partOrder[id]))
		}
		t.FailNow()
	}

	totalDups := 0
	for _, id := range []string{"acme", "globex"} {
		in := inst[id]
		receipts := in.snapshot()
		var problems []string
		first := map[string]dlvReceipt{} // webhook-id → first receipt
		idOfMid := map[string]string{}   // mid → webhook-id of its first receipt
		for _, rc := range receipts {
			for _, p := range dlvCheckReceipt(rc, secrets[id], "relay") {
				problems = append(problems, fmt.Sprintf("receipt %d: %s", rc.Seq, p))
			}
			if rc.Path != "/"+id+"/meta" {
				problems = append(problems, fmt.Sprintf("receipt %d: path %q", rc.Seq, rc.Path))
			}
			wid := rc.Header.Get("webhook-id")
			mid := midOf(rc.Body)
			if tn, ok := acked[mid]; ok && tn != id {
				problems = append(problems, fmt.Sprintf("receipt %d: %s's event %s at %s's instance", rc.Seq, tn, mid, id))
			}
			if f, seen := first[wid]; seen {
				if string(f.Body) != string(rc.Body) {
					problems = append(problems, fmt.Sprintf("receipt %d: redelivery of %s (first: receipt %d) with a different body", rc.Seq, wid, f.Seq))
				}
			} else {
				first[wid] = rc
			}
			if w, seen := idOfMid[mid]; seen && w != wid {
				problems = append(problems, fmt.Sprintf("receipt %d: event %s redelivered with webhook-id %s, first with %s", rc.Seq, mid, wid, w))
			} else if !seen {
				idOfMid[mid] = wid
			}
		}
		dlvReportBad(t, id+"'s instance", problems)

		got, dups := in.ids()
		totalDups += dups
		if !slices.Equal(got, partOrder[id]) {
			i := 0
			for i < min(len(got), len(partOrder[id])) && got[i] == partOrder[id][i] {
				i++
			}
			t.Errorf("%s: first receipts (%d events) differ from the partition's order (%d events) at position %d: got %v, want %v",
				id, len(got), len(partOrder[id]), i, got[i:min(len(got), i+3)], partOrder[id][i:min(len(partOrder[id]), i+3)])
		}
		// Where each run of redeliveries began: the index in the partition
		// of its first event, and how many distinct events had arrived.
		pos := map[string]int{}
		for i, wid := range partOrder[id] {
			pos[wid] = i
		}
		seenSoFar := map[string]bool{}
		inRun := false
		for _, rc := range receipts {
			wid := rc.Header.Get("webhook-id")
			if seenSoFar[wid] {
				if !inRun {
					t.Logf("%s: redelivery from partition index %d after %d distinct events had arrived", id, pos[wid], len(seenSoFar))
				}
				inRun = true
			} else {
				inRun = false
				seenSoFar[wid] = true
			}
		}
		t.Logf("%s: %d receipts, %d distinct events (partition %d holds %d), %d redeliveries",
			id, len(receipts), len(got), partitionOf[id], len(partOrder[id]), dups)
	}
	t.Logf("%d events answered 200 over %d kills; %d redeliveries in all", len(acked), kills, totalDups)
}

// dlvArrivedMids is the set of message ids the instances received.
func dlvArrivedMids(inst map[string]*dlvInstance) map[string]bool {
	arrived := map[string]bool{}
	for _, in := range inst {
		for _, rc := range in.snapshot() {
			arrived[midOf(rc.Body)] = true
		}
	}
	return arrived
}

// dlvPartitionOrder reads relay.events and returns each tenant's distinct
// event ids in offset order, and each tenant's partition. It checks that
// every record's relay-event-id is the id of its value.
func dlvPartitionOrder(t *testing.T, broker string) (order map[string][]string, partitionOf map[string]int) {
	t.Helper()
	order, partitionOf = map[string][]string{}, map[string]int{}
	seen := map[string]bool{}
	for _, r := range readTopic(t, broker, "relay.events") {
		if p, ok := partitionOf[r.Key]; ok && p != r.Partition {
			t.Errorf("tenant %s in partitions %d and %d", r.Key, p, r.Partition)
		}
		partitionOf[r.Key] = r.Partition
		id := eventID(r.Value)
		if h := r.Headers["relay-event-id"]; h != id {
			t.Errorf("relay.events/%d@%d: relay-event-id %q, want %q", r.Partition, r.Offset, h, id)
		}
		if !seen[id] {
			seen[id] = true
			order[r.Key] = append(order[r.Key], id)
		}
	}
	return order, partitionOf
}

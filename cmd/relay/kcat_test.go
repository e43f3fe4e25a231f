package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kcatMessage is one line of kcat -J: the JSON envelope of a record.
type kcatMessage struct {
	Topic     string   `json:"topic"`
	Partition int      `json:"partition"`
	Offset    int64    `json:"offset"`
	Headers   []string `json:"headers"` // key, value, key, value, ...
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
}

func (m kcatMessage) header(k string) (string, int) {
	v, n := "", 0
	for i := 0; i+1 < len(m.Headers); i += 2 {
		if m.Headers[i] == k {
			v = m.Headers[i+1]
			n++
		}
	}
	return v, n
}

// kcatConsume reads every record of topic with kcat (librdkafka) and exits
// at the end of the partitions.
func kcatConsume(t *testing.T, kcat, broker, topic string) []kcatMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-b", broker, "-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat -C -t %s: %v\nstderr:\n%s", topic, err, stderr.String())
	}
	var out []kcatMessage
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var m kcatMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("kcat printed a line that is not its JSON envelope: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// fixtureRoute is what the relay must make of one fixture's entries: the
// tenant of each entry, "" for unrouted (tenants as in the example
// tenants.yaml: acme, globex).
var fixtureRoutes = []struct {
	file    string
	tenants []string
	account []string // relay-account of each entry
}{
	{"batch_two_pages.json", []string{"acme", "globex"}, []string{"104857392810345", "209384756102938"}},
	{"instagram_comment.json", []string{"acme"}, []string{"17841405822304914"}},
	{"instagram_dm.json", []string{"acme"}, []string{"17841405822304914"}},
	{"messenger_message.json", []string{"acme"}, []string{"104857392810345"}},
	{"messenger_postback_and_receipts.json", []string{"acme"}, []string{"104857392810345"}},
	{"page_feed_comment.json", []string{"acme"}, []string{"104857392810345"}},
	{"permissions_revoked.json", []string{""}, []string{"10210299214172187"}},
	{"whatsapp_message_and_status.json", []string{"acme"}, []string{"106540352242922"}},
	{"signature_vector_escaped.raw", []string{"acme"}, []string{"104857392810345"}},
}

// TestKcatInterop posts every Meta fixture, signed as SIGNATURES.txt says,
// and reads the relay's topics back with kcat, a librdkafka client
// independent of the relay's kafka-go: counts per topic, partitions per
// tenant, keys, the five headers, and values byte for byte.
func TestKcatInterop(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is not on PATH: this test reads the relay's topics with an independent Kafka client. Install it: apt-get install -y kcat")
	}

	// Every fixture must be covered by the table, and every signature in
	// SIGNATURES.txt is what the relay must accept.
	sigs := map[string]string{}
	for _, line := range strings.Split(string(readFixture(t, "SIGNATURES.txt")), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && strings.HasPrefix(f[2], "sha256=") {
			sigs[f[0]] = f[2]
		}
	}
	files, _ := filepath.Glob(filepath.Join(fixturesDir, "*.json"))
	files = append(files, filepath.Join(fixturesDir, "signature_vector_escaped.raw"))
	if len(files) != len(fixtureRoutes) {
		t.Fatalf("testdata/meta has %d fixtures, the test knows %d: update fixtureRoutes", len(files), len(fixtureRoutes))
	}

	e := newRelayEnv(t, relayOptions{})
	e.start()
	c := newHTTPClient()
	start := time.Now().UTC().Add(-time.Second)

	type want struct {
		fixture, tenant, account, object string
		value                            []byte
	}
	var wantEvents, wantUnrouted []want
	for _, fr := range fixtureRoutes {
		body := readFixture(t, fr.file)
		sig, ok := sigs[fr.file]
		if !ok {
			t.Fatalf("SIGNATURES.txt has no signature for %s", fr.file)
		}
		if got := sign(body, testAppSecret); got != sig {
			t.Fatalf("%s: SIGNATURES.txt says %s, HMAC-SHA256 of the file is %s", fr.file, sig, got)
		}
		r, err := post(c, e.URL(), body, sig)
		if err != nil {
			t.Fatalf("POST %s: %v", fr.file, err)
		}
		if r.Status != 200 {
			t.Fatalf("POST %s: %d %q, want 200", fr.file, r.Status, r.Body)
		}
		object, entries := webhookEntries(t, body)
		if len(entries) != len(fr.tenants) {
			t.Fatalf("%s has %d entries, table says %d", fr.file, len(entries), len(fr.tenants))
		}
		var objName string
		_ = json.Unmarshal(object, &objName)
		for i, entry := range entries {
			w := want{fixture: fr.file, tenant: fr.tenants[i], account: fr.account[i], object: objName, value: expectedValue(object, entry)}
			if w.tenant == "" {
				wantUnrouted = append(wantUnrouted, w)
			} else {
				wantEvents = append(wantEvents, w)
			}
		}
	}
	end := time.Now().UTC().Add(time.Second)

	events := kcatConsume(t, kcat, e.Kafka, "relay.events")
	unrouted := kcatConsume(t, kcat, e.Kafka, "relay.unrouted")
	t.Logf("kcat read %d records from relay.events and %d from relay.unrouted", len(events), len(unrouted))
	if len(events) != len(wantEvents) {
		t.Errorf("relay.events holds %d records, want %d (one per routed entry)", len(events), len(wantEvents))
	}
	if len(unrouted) != len(wantUnrouted) {
		t.Errorf("relay.unrouted holds %d records, want %d", len(unrouted), len(wantUnrouted))
	}

	check := func(topic string, got []kcatMessage, wants []want) {
		t.Helper()
		byValue := map[string]kcatMessage{}
		for _, m := range got {
			if m.Payload == nil {
				t.Errorf("%s: record at %d/%d has no value", topic, m.Partition, m.Offset)
				continue
			}
			byValue[*m.Payload] = m
		}
		tenantPartition := map[string]int{}
		for _, w := range wants {
			m, ok := byValue[string(w.value)]
			if !ok {
				t.Errorf("%s: no record whose value is exactly %s (entry of %s)", topic, w.value, w.fixture)
				continue
			}
			wantKey := w.tenant
			if w.tenant == "" {
				wantKey = w.account
			}
			if m.Key == nil || *m.Key != wantKey {
				t.Errorf("%s: %s: key %v, want %q", topic, w.fixture, ptrString(m.Key), wantKey)
			}
			if w.tenant != "" {
				if p, seen := tenantPartition[w.tenant]; seen && p != m.Partition {
					t.Errorf("%s: tenant %s has records in partitions %d and %d: want one partition per tenant", topic, w.tenant, p, m.Partition)
				}
				tenantPartition[w.tenant] = m.Partition
			} else if m.Partition != 0 {
				t.Errorf("%s: %s in partition %d, want 0", topic, w.fixture, m.Partition)
			}
			hs := map[string]string{
				"relay-object": w.object, "relay-account": w.account, "relay-event-id": eventID(w.value),
			}
			if w.tenant != "" {
				hs["relay-tenant"] = w.tenant
			}
			for k, v := range hs {
				if got, n := m.header(k); n != 1 || got != v {
					t.Errorf("%s: %s: header %s = %q (%d times), want %q once", topic, w.fixture, k, got, n, v)
				}
			}
			if w.tenant == "" {
				if _, n := m.header("relay-tenant"); n != 0 {
					t.Errorf("%s: %s: unrouted record has a relay-tenant header", topic, w.fixture)
				}
			}
			ra, n := m.header("relay-received-at")
			at, err := time.Parse(time.RFC3339Nano, ra)
			switch {
			case n != 1:
				t.Errorf("%s: %s: relay-received-at appears %d times", topic, w.fixture, n)
			case err != nil:
				t.Errorf("%s: %s: relay-received-at %q is not RFC 3339: %v", topic, w.fixture, ra, err)
			case !strings.HasSuffix(ra, "Z"):
				t.Errorf("%s: %s: relay-received-at %q is not in UTC", topic, w.fixture, ra)
			case at.Before(start) || at.After(end):
				t.Errorf("%s: %s: relay-received-at %s is outside the test's run (%s to %s)", topic, w.fixture, ra, start, end)
			}
		}
		if topic == "relay.events" && tenantPartition["acme"] == tenantPartition["globex"] {
			t.Errorf("acme and globex share partition %d: each tenant must have its own", tenantPartition["acme"])
		}
	}
	check("relay.events", events, wantEvents)
	check("relay.unrouted", unrouted, wantUnrouted)

	// The escaped vector: its entry is kept exactly as sent, \u escapes and
	// \/ included, never re-serialised.
	esc := readFixture(t, "signature_vector_escaped.raw")
	obj, entries := webhookEntries(t, esc)
	val := string(expectedValue(obj, entries[0]))
	if !strings.Contains(val, `Ol\u00e1! caf\u00e9 at https:\/\/shop.example\/p?x=1 \u0040home \ud83d\ude00`) {
		t.Fatalf("test bug: the escaped fixture's entry lost its escapes: %s", val)
	}
	found := false
	for _, m := range events {
		if m.Payload != nil && *m.Payload == val {
			found = true
		}
	}
	if !found {
		t.Errorf("relay.events has no record holding signature_vector_escaped.raw's entry with its escapes as sent")
	}
}

func ptrString(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

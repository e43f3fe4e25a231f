package main

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tenantClaims replays relay.tenants as the relay documents it (the first
// claim of a tenant whose partition no earlier claim took wins) and returns
// tenant → partition.
func tenantClaims(t *testing.T, broker string) map[string]int {
	t.Helper()
	winner, owner := map[string]int{}, map[int]string{}
	for _, r := range readTopic(t, broker, "relay.tenants") {
		var c struct {
			Tenant    string `json:"tenant"`
			Partition int    `json:"partition"`
		}
		if json.Unmarshal(r.Value, &c) != nil || c.Tenant == "" {
			continue
		}
		if _, ok := winner[c.Tenant]; ok {
			continue
		}
		if _, taken := owner[c.Partition]; taken {
			continue
		}
		winner[c.Tenant], owner[c.Partition] = c.Partition, c.Tenant
	}
	return winner
}

// TestTenantReload adds a tenant to a running relay, by changing the
// tenants file (atomic rename) and by SIGHUP, then gives it a broken file.
func TestTenantReload(t *testing.T) {
	t.Run("file change", func(t *testing.T) {
		t.Parallel()
		testTenantReload(t, false)
	})
	t.Run("SIGHUP", func(t *testing.T) {
		t.Parallel()
		testTenantReload(t, true)
	})
}

func testTenantReload(t *testing.T, sighup bool) {
	a, b := tenantAcme, tenantGlobex
	cT := testTenant{ID: "initech", Accounts: []string{"300000000000003"}}
	dT := testTenant{ID: "umbrella", Accounts: []string{"400000000000004"}}
	opts := relayOptions{Tenants: []testTenant{a, b}, ReloadInterval: 200 * time.Millisecond}
	if sighup {
		// Only SIGHUP reloads: the file is not polled within the test.
		opts.ReloadInterval = time.Hour
	}
	e := newRelayEnv(t, opts)
	p := e.start()
	c := newHTTPClient()

	pageOf := map[string]string{a.ID: a.Accounts[0], b.ID: b.Accounts[0], cT.ID: cT.Accounts[0], dT.ID: dT.Accounts[0]}
	postAs := func(tenant, mid string) {
		t.Helper()
		mustPost(t, c, e.URL(), messengerBody(t, pageOf[tenant], mid), 200)
	}
	// where returns the topic, partition and key of the record holding mid.
	where := func(mid string) (topic string, partition int, key string) {
		t.Helper()
		found := 0
		for _, topicName := range []string{"relay.events", "relay.unrouted"} {
			for _, r := range readTopic(t, e.Kafka, topicName) {
				if midOf(r.Value) == mid {
					topic, partition, key = topicName, r.Partition, r.Key
					found++
				}
			}
		}
		if found != 1 {
			t.Fatalf("%d records hold mid %s, want 1", found, mid)
		}
		return topic, partition, key
	}
	requireIn := func(mid, tenant string, partition int) {
		t.Helper()
		topic, p, key := where(mid)
		if topic != "relay.events" || p != partition || key != tenant {
			t.Errorf("%s: in %s/%d with key %q, want relay.events/%d with key %q", mid, topic, p, key, partition, tenant)
		}
	}
	reload := func() {
		t.Helper()
		if sighup {
			p.signal(syscall.SIGHUP)
		}
	}

	// A and B serve, each in its own partition.
	postAs(a.ID, "m_A_1")
	postAs(b.ID, "m_B_1")
	_, pA, _ := where("m_A_1")
	_, pB, _ := where("m_B_1")
	if pA == pB {
		t.Fatalf("acme and globex share partition %d", pA)
	}
	claims0 := tenantClaims(t, e.Kafka)
	if want := map[string]int{a.ID: pA, b.ID: pB}; !maps.Equal(claims0, want) {
		t.Fatalf("relay.tenants claims %v, want %v (the partitions the records are in)", claims0, want)
	}

	// Add C, while A and B get traffic.
	okSeries, failedSeries := `relay_tenant_reloads_total{result="ok"}`, `relay_tenant_reloads_total{result="failed"}`
	ok0 := metric(t, e.Admin, okSeries)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	load := startLoad(loadCtx, t, e.URL(), "m_reload_load", 4, 2000, a, b)
	writeFileAtomic(t, e.TenantsPath, []byte(tenantsYAML(a, b, cT)))
	reload()
	if !waitFor(20*time.Second, func() bool { return metric(t, e.Admin, "relay_tenant_tenants") == 3 }) {
		t.Fatalf("relay_tenant_tenants did not become 3 within 20s after the tenants file gained a tenant")
	}
	if ok1 := metric(t, e.Admin, okSeries); ok1 != ok0+1 {
		t.Errorf("%s went %v → %v, want +1", okSeries, ok0, ok1)
	}
	postAs(cT.ID, "m_C_2")
	postAs(a.ID, "m_A_2")
	postAs(b.ID, "m_B_2")
	stopLoad()
	load.wait(t, 30*time.Second)
	t.Logf("load during the reload: %s", load.summary())
	for code, n := range load.statuses {
		if code != 200 {
			t.Errorf("%d requests for acme and globex answered %d during the reload, want 200", n, code)
		}
	}
	if len(load.errs) > 0 {
		t.Errorf("requests for acme and globex failed during the reload: %v", load.errs)
	}
	checkAcked(t, e.Kafka, load.acked, map[string]int{a.ID: pA, b.ID: pB})
	_, pC, _ := where("m_C_2")
	if pC == pA || pC == pB {
		t.Errorf("new tenant %s landed in partition %d: acme has %d, globex %d; want a partition of its own", cT.ID, pC, pA, pB)
	}
	requireIn("m_C_2", cT.ID, pC)
	requireIn("m_A_2", a.ID, pA)
	requireIn("m_B_2", b.ID, pB)
	claims1 := tenantClaims(t, e.Kafka)
	if want := map[string]int{a.ID: pA, b.ID: pB, cT.ID: pC}; !maps.Equal(claims1, want) {
		t.Errorf("relay.tenants claims after adding %s: %v, want %v", cT.ID, claims1, want)
	}
	if n := partitionCount(t, e.Kafka, "relay.events"); n < 3 {
		t.Errorf("relay.events has %d partitions with 3 tenants", n)
	}

	// A broken file: D added, but with an http:// URL and a malformed
	// secret. It must be refused as a whole: A, B and C stay as they are and
	// D's account stays unrouted.
	failed0 := metric(t, e.Admin, failedSeries)
	broken := tenantsYAML(a, b, cT, dT)
	broken = strings.Replace(broken, instanceURL(dT.ID), "http"+strings.TrimPrefix(instanceURL(dT.ID), "https"), 1)
	if strings.Contains(broken, instanceURL(dT.ID)) {
		t.Fatalf("test bug: broken file not broken:\n%s", broken)
	}
	writeFileAtomic(t, e.TenantsPath, []byte(broken))
	reload()
	if !waitFor(20*time.Second, func() bool { return metric(t, e.Admin, failedSeries) >= failed0+1 }) {
		t.Fatalf("%s did not increase within 20s of a broken tenants file", failedSeries)
	}
	if f := metric(t, e.Admin, failedSeries); f != failed0+1 {
		t.Errorf("%s went %v → %v, want +1", failedSeries, failed0, f)
	}
	if !p.waitLog("tenants reload refused", 5*time.Second) {
		t.Errorf("no error logged for the refused tenants file")
	} else if !strings.Contains(p.Stderr(), "level=ERROR") || !strings.Contains(p.Stderr(), "tenants[3].instance.url") {
		t.Errorf("the refusal is not logged at ERROR naming the bad field tenants[3].instance.url")
	}
	if n := metric(t, e.Admin, "relay_tenant_tenants"); n != 3 {
		t.Errorf("relay_tenant_tenants = %v after a refused file, want 3", n)
	}
	postAs(a.ID, "m_A_3")
	postAs(b.ID, "m_B_3")
	postAs(cT.ID, "m_C_3")
	postAs(dT.ID, "m_D_3")
	requireIn("m_A_3", a.ID, pA)
	requireIn("m_B_3", b.ID, pB)
	requireIn("m_C_3", cT.ID, pC)
	if topic, _, key := where("m_D_3"); topic != "relay.unrouted" || key != dT.Accounts[0] {
		t.Errorf("the refused file's new tenant got its event: in %s with key %q, want relay.unrouted", topic, key)
	}
	if claims2 := tenantClaims(t, e.Kafka); !maps.Equal(claims2, claims1) {
		t.Errorf("relay.tenants claims changed by a refused file: %v, want %v", claims2, claims1)
	}
	resp, err := http.Get("http://" + e.Admin + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz answers %d after a refused tenants file, want 200", resp.StatusCode)
	}
}

// TestTenantRemoveAndReadd removes a tenant and adds it back: while it is
// gone its accounts are unrouted and its partition is not given to a tenant
// added meanwhile; back, it has its old partition again. A restart keeps
// every partition.
func TestTenantRemoveAndReadd(t *testing.T) {
	a, b := tenantAcme, tenantGlobex
	dT := testTenant{ID: "umbrella", Accounts: []string{"400000000000004"}}
	e := newRelayEnv(t, relayOptions{Tenants: []testTenant{a, b}, ReloadInterval: 200 * time.Millisecond})
	p := e.start()
	c := newHTTPClient()
	waitTenants := func(n float64) {
		t.Helper()
		if !waitFor(20*time.Second, func() bool { return metric(t, e.Admin, "relay_tenant_tenants") == n }) {
			t.Fatalf("relay_tenant_tenants did not become %v within 20s", n)
		}
	}
	postTo := func(account, mid string) {
		t.Helper()
		mustPost(t, c, e.URL(), messengerBody(t, account, mid), 200)
	}
	find := func(mid string) (topic string, partition int, key string) {
		t.Helper()
		for _, topicName := range []string{"relay.events", "relay.unrouted"} {
			for _, r := range readTopic(t, e.Kafka, topicName) {
				if midOf(r.Value) == mid {
					return topicName, r.Partition, r.Key
				}
			}
		}
		t.Fatalf("no record holds %s", mid)
		return
	}
	claims0 := tenantClaims(t, e.Kafka)
	pB, ok := claims0[b.ID]
	if !ok || len(claims0) != 2 {
		t.Fatalf("claims %v: want acme and globex", claims0)
	}

	// B removed, D added.
	writeFileAtomic(t, e.TenantsPath, []byte(tenantsYAML(a, dT)))
	if !waitFor(20*time.Second, func() bool {
		return metric(t, e.Admin, `relay_tenant_reloads_total{result="ok"}`) >= 2
	}) {
		t.Fatalf("the file without globex was not loaded")
	}
	waitTenants(2)
	postTo(b.Accounts[0], "m_B_removed")
	postTo(dT.Accounts[0], "m_D_added")
	if topic, _, key := find("m_B_removed"); topic != "relay.unrouted" || key != b.Accounts[0] {
		t.Errorf("event for removed tenant globex: in %s with key %q, want relay.unrouted", topic, key)
	}
	topic, pD, _ := find("m_D_added")
	if topic != "relay.events" || pD == pB || pD == claims0[a.ID] {
		t.Errorf("tenant added while globex is away: in %s/%d; acme has %d, globex had %d: want a partition of its own", topic, pD, claims0[a.ID], pB)
	}

	// B back.
	writeFileAtomic(t, e.TenantsPath, []byte(tenantsYAML(a, b, dT)))
	waitTenants(3)
	postTo(b.Accounts[0], "m_B_back")
	if topic, p, key := find("m_B_back"); topic != "relay.events" || p != pB || key != b.ID {
		t.Errorf("globex back: in %s/%d key %q, want relay.events/%d (its old partition)", topic, p, key, pB)
	}
	want := map[string]int{a.ID: claims0[a.ID], b.ID: pB, dT.ID: pD}
	if got := tenantClaims(t, e.Kafka); !maps.Equal(got, want) {
		t.Errorf("claims %v, want %v", got, want)
	}

	// A restart keeps every tenant's partition.
	p.signal(syscall.SIGTERM)
	if !p.wait(20 * time.Second) {
		t.Fatalf("relay did not stop on SIGTERM")
	}
	e.start()
	postTo(a.Accounts[0], "m_A_restart")
	postTo(b.Accounts[0], "m_B_restart")
	postTo(dT.Accounts[0], "m_D_restart")
	for mid, tn := range map[string]string{"m_A_restart": a.ID, "m_B_restart": b.ID, "m_D_restart": dT.ID} {
		if topic, p, key := find(mid); topic != "relay.events" || p != want[tn] || key != tn {
			t.Errorf("after restart %s: in %s/%d key %q, want relay.events/%d key %q", mid, topic, p, key, want[tn], tn)
		}
	}
}

// TestTenantReloadEmptyFile truncates the tenants file, as a write in place
// (an editor, a shell redirection) does for a moment before writing the new
// content, and the file watch sees it. A file with no tenants key at all is
// not a tenants file: it must be refused like any invalid file, and the
// tenants in force stay.
func TestTenantReloadEmptyFile(t *testing.T) {
	e := newRelayEnv(t, relayOptions{ReloadInterval: 200 * time.Millisecond})
	p := e.start()
	c := newHTTPClient()
	failed0 := metric(t, e.Admin, `relay_tenant_reloads_total{result="failed"}`)
	ok0 := metric(t, e.Admin, `relay_tenant_reloads_total{result="ok"}`)
	writeFileAtomic(t, e.TenantsPath, nil)
	p.signal(syscall.SIGHUP)
	if !waitFor(20*time.Second, func() bool {
		return metric(t, e.Admin, `relay_tenant_reloads_total{result="failed"}`) > failed0 ||
			metric(t, e.Admin, `relay_tenant_reloads_total{result="ok"}`) > ok0
	}) {
		t.Fatalf("the empty tenants file was neither loaded nor refused within 20s")
	}
	if n := metric(t, e.Admin, "relay_tenant_tenants"); n != 2 {
		t.Errorf("an empty tenants file was loaded: relay_tenant_tenants = %v, want the 2 tenants in force", n)
	}
	mustPost(t, c, e.URL(), messengerBody(t, tenantAcme.Accounts[0], "m_after_empty"), 200)
	for _, r := range readTopic(t, e.Kafka, "relay.unrouted") {
		if midOf(r.Value) == "m_after_empty" {
			t.Errorf("acme's event went to relay.unrouted after the tenants file was emptied: every tenant was dropped")
		}
	}
}

package tenant

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestAssign_First(t *testing.T) {
	tc := newTestCluster(t)
	require.Equal(t, 1, tc.eventsPartitions())

	got := tc.assign(tc.assigner(), "globex", "acme", "initech", "umbrella")
	requireDistinct(t, got)
	// Claims go in id order to the lowest free partitions.
	require.Equal(t, map[string]int32{"acme": 0, "globex": 1, "initech": 2, "umbrella": 3}, got)
	require.Equal(t, 4, tc.eventsPartitions(), "relay.events grows to hold every tenant's partition")

	// Every claim is in relay.tenants, keyed by tenant.
	latest := latestClaims(tc.records())
	require.Len(t, latest, 4)
	for id, p := range got {
		require.Equal(t, id, latest[id].Tenant)
		require.Equal(t, p, latest[id].Partition)
		require.False(t, latest[id].At.IsZero())
	}
}

func TestAssign_Empty(t *testing.T) {
	tc := newTestCluster(t)
	got := tc.assign(tc.assigner())
	require.Empty(t, got)
	require.Empty(t, tc.records())
	require.Equal(t, 1, tc.eventsPartitions())
}

func TestAssign_Stable(t *testing.T) {
	tc := newTestCluster(t)
	first := tc.assigner()
	ids := []string{"acme", "globex", "initech"}
	want := tc.assign(first, ids...)
	requireDistinct(t, want)
	n := len(tc.records())

	tests := []struct {
		name string
		a    func() *Assigner
		ids  []string
	}{
		{name: "same assigner, same ids", a: func() *Assigner { return first }, ids: ids},
		{name: "same assigner, other order", a: func() *Assigner { return first }, ids: []string{"initech", "acme", "globex"}},
		{name: "restart", a: tc.assigner, ids: ids},
		{name: "another node, subset", a: tc.assigner, ids: []string{"globex"}},
		{name: "duplicates in ids", a: tc.assigner, ids: []string{"acme", "acme", "initech"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tc.assign(tt.a(), tt.ids...)
			for id, p := range got {
				require.Equal(t, want[id], p, id)
			}
			require.Len(t, tc.records(), n, "nothing is claimed again")
			require.Equal(t, 3, tc.eventsPartitions())
		})
	}
}

func TestAssign_AddAndRemove(t *testing.T) {
	tc := newTestCluster(t)
	a := tc.assigner()
	before := tc.assign(a, "acme", "globex", "initech")

	// Adding a tenant gives it a new partition and moves no one.
	got := tc.assign(a, "acme", "globex", "initech", "hooli")
	requireDistinct(t, got)
	for id, p := range before {
		require.Equal(t, p, got[id], id)
	}
	require.Equal(t, int32(3), got["hooli"])
	require.Equal(t, 4, tc.eventsPartitions())

	// Removed tenants keep their partitions reserved: later tenants never
	// get them, on this node or another.
	tc.assign(a, "acme", "hooli")
	later := tc.assign(tc.assigner(), "acme", "hooli", "zeta", "alpha", "beta")
	requireDistinct(t, later)
	for _, id := range []string{"zeta", "alpha", "beta"} {
		require.NotContains(t, []int32{before["globex"], before["initech"]}, later[id], id)
		require.GreaterOrEqual(t, later[id], int32(4), id)
	}
	require.Equal(t, 7, tc.eventsPartitions())

	// A removed tenant that comes back gets its old partition.
	back := tc.assign(tc.assigner(), "globex", "initech")
	require.Equal(t, before["globex"], back["globex"])
	require.Equal(t, before["initech"], back["initech"])
}

// TestAssign_ConcurrentNodes races relay nodes that add different tenants
// at the same moment, many times: every tenant ends with its own
// partition, and all nodes agree.
func TestAssign_ConcurrentNodes(t *testing.T) {
	tc := newTestCluster(t)
	nodes := []*Assigner{tc.assigner(), tc.assigner()}
	const rounds = 20
	seen := []map[string]int32{{}, {}} // node → tenant → partition it returned
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var all []string
	for round := range rounds {
		var wg sync.WaitGroup
		results := make([]map[string]int32, len(nodes))
		errs := make([]error, len(nodes))
		for i, a := range nodes {
			// Each node knows the tenants of every earlier round and adds
			// two of its own, plus one both nodes add at once.
			ids := slices.Clone(all)
			ids = append(ids, fmt.Sprintf("r%02d-n%d-a", round, i), fmt.Sprintf("r%02d-n%d-b", round, i), fmt.Sprintf("r%02d-shared", round))
			wg.Go(func() { results[i], errs[i] = a.Assign(ctx, ids) })
		}
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "round %d node %d", round, i)
			requireDistinct(t, results[i])
			for id, p := range results[i] {
				if prev, ok := seen[i][id]; ok {
					require.Equal(t, prev, p, "round %d: node %d saw %s move", round, i, id)
				}
				seen[i][id] = p
			}
		}
		for i := range nodes {
			all = append(all, fmt.Sprintf("r%02d-n%d-a", round, i), fmt.Sprintf("r%02d-n%d-b", round, i))
		}
		all = append(all, fmt.Sprintf("r%02d-shared", round))
	}
	require.Len(t, all, rounds*5)

	// Both nodes and a third, fresh one agree on every tenant.
	final := map[string]map[string]int32{}
	for i, a := range append(nodes, tc.assigner()) {
		final[fmt.Sprint(i)] = tc.assign(a, all...)
	}
	requireDistinct(t, final["0"])
	require.Equal(t, final["0"], final["1"])
	require.Equal(t, final["0"], final["2"])
	for i := range nodes {
		for id, p := range seen[i] {
			require.Equal(t, final["0"][id], p, "node %d returned %s:%d during the race", i, id, p)
		}
	}
	t.Logf("%d tenants, %d claim records (the rest are lost races and corrections)", len(all), len(tc.records()))
	top := slices.Max(slices.Collect(maps.Values(final["0"])))
	require.GreaterOrEqual(t, tc.eventsPartitions(), int(top)+1)

	// What the race left in the log survives compaction unchanged.
	compactAndCheck(t, tc, final["0"])
}

// TestAssign_CompactionCorrection: a later, losing claim of a tenant is
// that tenant's latest record, so compaction would keep it and drop the
// winning one. Assign writes the winner again, and after compaction every
// tenant keeps its partition.
func TestAssign_CompactionCorrection(t *testing.T) {
	tc := newTestCluster(t)
	want := tc.assign(tc.assigner(), "acme", "globex", "initech")
	require.Equal(t, map[string]int32{"acme": 0, "globex": 1, "initech": 2}, want)

	// Losing claims written by hand: acme for globex's partition, initech
	// for a free one (it already has a partition, so it loses all the same).
	tc.produceClaim("acme", 1)
	tc.produceClaim("initech", 9)
	latest := latestClaims(tc.records())
	require.Equal(t, int32(1), latest["acme"].Partition)
	require.Equal(t, int32(9), latest["initech"].Partition)

	// The losing claims change nothing, and Assign corrects the log.
	got := tc.assign(tc.assigner(), "acme", "globex", "initech")
	require.Equal(t, want, got)
	recs := tc.records()
	latest = latestClaims(recs)
	for id, p := range want {
		require.Equal(t, p, latest[id].Partition, "latest record of %s restores the winner", id)
	}
	require.Len(t, recs, 3+2+2, "one correction per losing claim")

	// Partition 9 was never won: the next tenant takes partition 3.
	got = tc.assign(tc.assigner(), "acme", "globex", "initech", "hooli")
	require.Equal(t, int32(3), got["hooli"])
	want["hooli"] = 3

	compactAndCheck(t, tc, want)
	require.NotContains(t, tc.records(), recs[3], "compaction dropped the losing claims")
}

// compactAndCheck compacts relay.tenants and checks that a fresh node
// still sees want, even while it adds a tenant that sorts first (and so
// would take any partition compaction freed).
func compactAndCheck(t *testing.T, tc *testCluster, want map[string]int32) {
	t.Helper()
	// kfake never compacts the last batch: end the log with a keyless
	// record (compaction drops those), so every claim is compactable.
	tc.produce(nil, []byte("filler"))
	tc.c.Compact()
	after := tc.records()
	keys := map[string]bool{}
	for _, r := range after[:len(after)-1] {
		require.NotNil(t, r.Key)
		require.False(t, keys[string(r.Key)], "compaction keeps one record per key, %s has two", r.Key)
		keys[string(r.Key)] = true
	}

	ids := append(slices.Collect(maps.Keys(want)), "0-first")
	got := tc.assign(tc.assigner(), ids...)
	requireDistinct(t, got)
	top := int32(-1)
	for id, p := range want {
		require.Equal(t, p, got[id], "compaction moved %s", id)
		top = max(top, p)
	}
	require.Greater(t, got["0-first"], top, "a new tenant took a partition in use")
}

// TestAssign_IgnoresGarbage: records that are not claims, or not valid
// ones, never assign anything and never break the replay.
func TestAssign_IgnoresGarbage(t *testing.T) {
	tests := []struct {
		name       string
		key, value []byte
	}{
		{name: "not JSON", key: []byte("acme"), value: []byte("\x00\xffnot json")},
		{name: "JSON of another shape", key: []byte("x"), value: []byte(`[1,2,3]`)},
		{name: "wrong field types", key: []byte("acme"), value: []byte(`{"tenant":42,"partition":"zero"}`)},
		{name: "no tenant", key: []byte("x"), value: []byte(`{"partition":0}`)},
		{name: "negative partition", key: []byte("acme"), value: []byte(`{"tenant":"acme","partition":-1}`)},
		{name: "tombstone of a stranger", key: []byte("someone"), value: nil},
		{name: "empty value", key: []byte("acme"), value: []byte{}},
		{name: "no key, no value", key: nil, value: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCluster(t)
			// Garbage before any claim, and between claims.
			tc.produce(tt.key, tt.value)
			want := tc.assign(tc.assigner(), "acme", "globex")
			require.Equal(t, map[string]int32{"acme": 0, "globex": 1}, want)
			tc.produce(tt.key, tt.value)
			tc.produce([]byte("acme"), []byte("{"))
			got := tc.assign(tc.assigner(), "acme", "globex", "initech")
			require.Equal(t, int32(2), got["initech"])
			want["initech"] = 2
			require.Equal(t, want, got)
		})
	}
}

func TestAssign_ContextCanceled(t *testing.T) {
	tc := newTestCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := tc.assigner().Assign(ctx, []string{"acme"})
	require.ErrorIs(t, err, context.Canceled)
}

func TestAdmin_Topics(t *testing.T) {
	tc := newTestCluster(t)
	ad := tc.admin()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Creating existing topics is fine and changes nothing.
	require.NoError(t, ad.EnsureTopics(ctx, TopicSpec{Name: testEventsTopic, Partitions: 5}, TopicSpec{Name: "relay.dlq"}))
	require.Equal(t, 1, tc.eventsPartitions())
	n, err := ad.Partitions(ctx, "relay.dlq")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	for _, step := range []struct{ ask, want int }{{3, 3}, {2, 3}, {3, 3}, {6, 6}} {
		require.NoError(t, ad.EnsurePartitions(ctx, testEventsTopic, step.ask))
		require.Equal(t, step.want, tc.eventsPartitions(), "ask %d", step.ask)
	}
	_, err = ad.Partitions(ctx, "no.such.topic")
	require.Error(t, err)
}

// TestAssign_CompactionKeepsAnswer writes, by hand, records that other
// nodes could leave behind, then compacts: a fresh node must still see
// the same partitions.
func TestAssign_CompactionKeepsAnswer(t *testing.T) {
	tests := []struct {
		name string
		// before runs after acme, globex and initech got 0, 1 and 2.
		before func(tc *testCluster)
	}{
		{
			// A node claimed 0 for w, lost to acme and stopped before
			// claiming again; another node's later losing claim of acme
			// then made every node write acme's winner again, after w's
			// claim. Compaction keeps both: w's is then first.
			name: "stale losing claim of a gone tenant before a correction",
			before: func(tc *testCluster) {
				tc.produceClaim("w", 0)
				tc.produceClaim("acme", 5)
			},
		},
		{
			name:   "garbage under a tenant's key",
			before: func(tc *testCluster) { tc.produce([]byte("globex"), []byte("garbage")) },
		},
		{
			name:   "tombstone of a tenant",
			before: func(tc *testCluster) { tc.produce([]byte("globex"), nil) },
		},
		{
			name:   "claim under another key",
			before: func(tc *testCluster) { tc.produce([]byte("x"), []byte(`{"tenant":"hooli","partition":1}`)) },
		},
		{
			name: "claim under another key, then garbage under that key",
			before: func(tc *testCluster) {
				tc.produce([]byte("x"), []byte(`{"tenant":"hooli","partition":7}`))
				tc.produce([]byte("x"), []byte("garbage"))
			},
		},
		{
			name:   "keyless claim",
			before: func(tc *testCluster) { tc.produce(nil, []byte(`{"tenant":"hooli","partition":3}`)) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCluster(t)
			want := tc.assign(tc.assigner(), "acme", "globex", "initech")
			require.Equal(t, map[string]int32{"acme": 0, "globex": 1, "initech": 2}, want)
			tt.before(tc)
			got := tc.assign(tc.assigner(), "acme", "globex", "initech", "hooli")
			for id, p := range want {
				require.Equal(t, p, got[id], id)
			}
			want["hooli"] = got["hooli"]
			requireDistinct(t, got)
			compactAndCheck(t, tc, want)
		})
	}
}

// TestAssign_WriteFailingPartWay: claims go out in several produce
// requests when there are many, and one of them can fail after others
// were written. The claims written stand, the others are made again by
// the next Assign, on this node or another with a different file, and no
// partition is given twice.
func TestAssign_WriteFailingPartWay(t *testing.T) {
	tc := newTestCluster(t)
	a := tc.assigner()
	a.writeRecords = 3
	var ids []string
	for i := range 10 {
		ids = append(ids, fmt.Sprintf("t%02d", i))
	}

	// The third request of claims fails, as a leader change would make it.
	var requests atomic.Int32
	tc.c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if requests.Add(1) < 3 {
			return nil, nil, false // written; the control stays for the next request
		}
		r := req.(*kmsg.ProduceRequest)
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range r.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true // handled: the control is dropped
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.Assign(ctx, ids)
	require.ErrorContains(t, err, "6 of 10 claims written")
	var keys []string
	for _, r := range tc.records() {
		keys = append(keys, string(r.Key))
	}
	require.Equal(t, ids[:6], keys, "the requests before the failed one are written, in order; none after it")

	// Another node, whose file differs, adds tenants meanwhile.
	other := tc.assign(tc.assigner(), "new", "t07")
	require.Equal(t, map[string]int32{"new": 6, "t07": 7}, other)

	// The next reload converges: the claims written keep their
	// partitions, the others get free ones, and every node agrees.
	got := tc.assign(a, ids...)
	requireDistinct(t, got)
	for i, id := range ids[:6] {
		require.Equal(t, int32(i), got[id], id)
	}
	require.Equal(t, int32(7), got["t07"])
	all := maps.Clone(got)
	all["new"] = 6
	requireDistinct(t, all)
	require.Equal(t, got, tc.assign(tc.assigner(), ids...), "a fresh node sees the same")
	for id, c := range latestClaims(tc.records()) {
		require.Equal(t, all[id], c.Partition, id)
	}
	require.Equal(t, 11, tc.eventsPartitions())
}

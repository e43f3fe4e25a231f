package tenant

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// Regression: relay.tenants was created with cleanup.policy=compact only,
// and the embedded broker applies time retention to compacted topics too
// (7 days by default). Its hourly pass deleted claims older than that, and
// the next Assign gave tenants partitions anew, some another tenant's,
// with that tenant's backlog in it. The topic is now kept for good, and an
// embedded broker's existing topic is fixed at start (Enforce).
func TestAssignmentsOutliveTheBrokersRetention(t *testing.T) {
	for name, oldInstall := range map[string]bool{"new install": false, "topic made by an older relay": true} {
		t.Run(name, func(t *testing.T) {
			tc := newEmptyCluster(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if oldInstall {
				require.NoError(t, tc.admin().EnsureTopics(ctx,
					TopicSpec{Name: testTenantsTopic, Partitions: 1, Configs: map[string]string{"cleanup.policy": "compact"}}))
			}
			require.NoError(t, tc.assigner().EnsureTopics(ctx, TopicSpec{Name: testEventsTopic, Partitions: 1, Enforce: true}))

			// zeta joined first (partition 0), acme later (1), 8 days ago.
			eightDaysAgo := time.Now().Add(-8 * 24 * time.Hour)
			for i, id := range []string{"zeta", "acme"} {
				v, err := json.Marshal(claim{Tenant: id, Partition: int32(i), At: eightDaysAgo})
				require.NoError(t, err)
				res, err := tc.admin().Client.Produce(ctx, &kafka.ProduceRequest{
					Topic: testTenantsTopic, Partition: 0, RequiredAcks: kafka.RequireAll,
					Records: kafka.NewRecordReader(kafka.Record{Key: kafka.NewBytes([]byte(id)), Value: kafka.NewBytes(v), Time: eightDaysAgo}),
				})
				require.NoError(t, err)
				require.NoError(t, res.Error)
			}
			want := map[string]int32{"zeta": 0, "acme": 1}
			require.Equal(t, want, tc.assign(tc.assigner(), "acme", "zeta"))

			tc.c.ApplyRetention() // what the broker's hourly pass does
			require.Equal(t, want, tc.assign(tc.assigner(), "acme", "zeta"), "partitions moved after the broker's retention pass")
		})
	}
}

// Partition reads a tenant's partition and claims nothing: `relay dlq
// redrive` used to call Assign with its own tenants file, which claimed
// partitions for whatever that (possibly stale) file listed.
func TestPartitionReadsWithoutClaiming(t *testing.T) {
	tc := newTestCluster(t)
	want := tc.assign(tc.assigner(), "acme", "globex")
	before := len(tc.records())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, ok, err := tc.assigner().Partition(ctx, "globex")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, want["globex"], p)
	_, ok, err = tc.assigner().Partition(ctx, "zeta")
	require.NoError(t, err)
	require.False(t, ok, "a tenant without a claim has no partition")
	require.Len(t, tc.records(), before, "nothing claimed")
}

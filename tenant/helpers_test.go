package tenant

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

const (
	testTenantsTopic = "relay.tenants"
	testEventsTopic  = "relay.events"
)

// testCluster is a single-node Kafka-protocol broker on loopback,
// persisting into a temp dir, with its assignment and events topics
// created the way the relay creates them at start.
type testCluster struct {
	t    testing.TB
	c    *kfake.Cluster
	addr string
}

func newTestCluster(t testing.TB) *testCluster {
	t.Helper()
	tc := newEmptyCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, tc.assigner().EnsureTopics(ctx, TopicSpec{Name: testEventsTopic, Partitions: 1}))
	return tc
}

// newEmptyCluster is a one-broker cluster without topics.
func newEmptyCluster(t testing.TB) *testCluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &testCluster{t: t, c: c, addr: c.ListenAddrs()[0]}
}

// admin returns an Admin with its own client and transport, built like
// production builds it: each call stands for another relay node.
func (tc *testCluster) admin() *Admin {
	tr := &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: time.Second}
	tc.t.Cleanup(tr.CloseIdleConnections)
	return &Admin{
		Client:            &kafka.Client{Addr: kafka.TCP(tc.addr), Transport: tr, Timeout: 10 * time.Second},
		Brokers:           []string{tc.addr},
		ReplicationFactor: 1,
	}
}

// assigner returns a fresh Assigner: a restart, or another relay node.
func (tc *testCluster) assigner() *Assigner {
	return &Assigner{Admin: tc.admin(), Topic: testTenantsTopic, Events: testEventsTopic}
}

// assign runs Assign with a deadline and fails the test on error.
func (tc *testCluster) assign(a *Assigner, ids ...string) map[string]int32 {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := a.Assign(ctx, ids)
	require.NoError(tc.t, err)
	require.Len(tc.t, got, len(uniq(ids)))
	return got
}

// eventsPartitions is relay.events' partition count, read from the broker.
func (tc *testCluster) eventsPartitions() int {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := tc.admin().Partitions(ctx, testEventsTopic)
	require.NoError(tc.t, err)
	return n
}

// produce appends one record to relay.tenants by hand; a nil key or value
// is sent as null.
func (tc *testCluster) produce(key, value []byte) {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := kafka.Record{Time: time.Now()}
	if key != nil {
		rec.Key = kafka.NewBytes(key)
	}
	if value != nil {
		rec.Value = kafka.NewBytes(value)
	}
	res, err := tc.admin().Client.Produce(ctx, &kafka.ProduceRequest{
		Topic: testTenantsTopic, Partition: 0, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(rec),
	})
	require.NoError(tc.t, err)
	require.NoError(tc.t, res.Error)
}

// produceClaim appends a claim record (key = tenant) by hand.
func (tc *testCluster) produceClaim(tenant string, partition int32) {
	tc.t.Helper()
	v, err := json.Marshal(claim{Tenant: tenant, Partition: partition, At: time.Now().UTC()})
	require.NoError(tc.t, err)
	tc.produce([]byte(tenant), v)
}

// rawRecord is one record of relay.tenants as stored.
type rawRecord struct {
	Offset int64
	Key    []byte // nil: null key
	Value  []byte // nil: tombstone
}

// claim decodes the record's value, ok false for anything else.
func (r rawRecord) claim() (claim, bool) {
	var c claim
	if r.Value == nil || json.Unmarshal(r.Value, &c) != nil {
		return c, false
	}
	return c, true
}

// records reads relay.tenants from its start to its high watermark.
func (tc *testCluster) records() []rawRecord {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := tc.admin().Client
	var out []rawRecord
	offset := kafka.FirstOffset
	for {
		res, err := client.Fetch(ctx, &kafka.FetchRequest{
			Topic: testTenantsTopic, Offset: offset, MinBytes: 1, MaxBytes: 4 << 20, MaxWait: 50 * time.Millisecond,
		})
		require.NoError(tc.t, err)
		require.NoError(tc.t, res.Error)
		if offset == kafka.FirstOffset {
			offset = res.LogStartOffset
		}
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(tc.t, err)
			if r.Offset < offset {
				continue // batches may start before the offset asked for
			}
			rr := rawRecord{Offset: r.Offset, Key: readBytes(tc.t, r.Key), Value: readBytes(tc.t, r.Value)}
			out = append(out, rr)
			offset = r.Offset + 1
		}
		if offset >= res.HighWatermark {
			return out
		}
	}
}

func readBytes(t testing.TB, b kafka.Bytes) []byte {
	if b == nil {
		return nil
	}
	v, err := io.ReadAll(b)
	require.NoError(t, err)
	if v == nil {
		v = []byte{}
	}
	return v
}

// latestClaims is what compaction keeps: each key's latest record,
// decoded as a claim (keys whose latest record is no claim are left out).
func latestClaims(recs []rawRecord) map[string]claim {
	latest := map[string]claim{}
	for _, r := range recs {
		if r.Key == nil {
			continue
		}
		c, ok := r.claim()
		if !ok {
			delete(latest, string(r.Key))
			continue
		}
		latest[string(r.Key)] = c
	}
	return latest
}

// requireDistinct checks that no two tenants share a partition.
func requireDistinct(t testing.TB, parts map[string]int32) {
	t.Helper()
	seen := map[int32]string{}
	for id, p := range parts {
		require.GreaterOrEqual(t, p, int32(0), "tenant %s", id)
		other, dup := seen[p]
		require.False(t, dup, "tenants %s and %s share partition %d", id, other, p)
		seen[p] = id
	}
}

func uniq(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// newSecret returns a valid signing secret: "whsec_" + base64 of n random
// bytes.
func newSecret(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return signingSecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// tenantSpec is one tenant of a generated tenants file.
type tenantSpec struct {
	ID       string
	Accounts []string
}

// tenantsYAML renders a valid tenants file for specs, with one secret for
// all of them.
func tenantsYAML(secret string, specs ...tenantSpec) string {
	var b strings.Builder
	b.WriteString("tenants:\n")
	for _, s := range specs {
		accts, _ := json.Marshal(s.Accounts)
		fmt.Fprintf(&b, "  - id: %s\n    accounts: %s\n    instance: {mode: push, url: \"https://127.0.0.1:9443/%s\", signing_secret: %q}\n",
			s.ID, accts, s.ID, secret)
	}
	return b.String()
}

// writeFile replaces path's content atomically (a rename, as editors and
// ConfigMap updates do).
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// testRegistry is a Registry over a tenants file in a temp dir and a
// fresh broker.
type testRegistry struct {
	*Registry
	file    string
	cluster *testCluster
}

func newTestRegistry(t testing.TB, content string, mutate func(*RegistryConfig)) *testRegistry {
	t.Helper()
	tc := newTestCluster(t)
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	writeFile(t, file, content)
	cfg := RegistryConfig{File: file, Assigner: tc.assigner(), CacheSize: 128}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := NewRegistry(cfg)
	require.NoError(t, err)
	return &testRegistry{Registry: r, file: file, cluster: tc}
}

func (r *testRegistry) reload(t testing.TB) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return r.Reload(ctx)
}

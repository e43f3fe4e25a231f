package tenant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

var (
	acmeSpec   = tenantSpec{ID: "acme", Accounts: []string{"104857392810345", "17841405822304914", "106540352242922"}}
	globexSpec = tenantSpec{ID: "globex", Accounts: []string{"209384756102938"}}
	hooliSpec  = tenantSpec{ID: "hooli", Accounts: []string{"555000111222333", "555000111222334"}}
)

// counts is the registry's metrics, for comparing before and after.
type counts struct{ hit, miss, ok, failed float64 }

func (r *testRegistry) counts() counts {
	return counts{
		hit:    testutil.ToFloat64(r.hit),
		miss:   testutil.ToFloat64(r.miss),
		ok:     testutil.ToFloat64(r.reloads.WithLabelValues("ok")),
		failed: testutil.ToFloat64(r.reloads.WithLabelValues("failed")),
	}
}

// requireResolves checks every account of want resolves to its tenant and
// partition.
func requireResolves(t testing.TB, r *testRegistry, parts map[string]int32, specs ...tenantSpec) {
	t.Helper()
	for _, s := range specs {
		for _, a := range s.Accounts {
			id, p, ok := r.Resolve([]byte(a))
			require.True(t, ok, "account %s", a)
			require.Equal(t, s.ID, id, "account %s", a)
			require.Equal(t, parts[s.ID], p, "account %s", a)
		}
	}
}

func TestRegistry_BeforeFirstLoad(t *testing.T) {
	r := newTestRegistry(t, tenantsYAML(newSecret(t, 32), acmeSpec), nil)
	require.Nil(t, r.Snapshot())
	require.Nil(t, r.Lookup([]byte(acmeSpec.Accounts[0])))
	_, _, ok := r.Resolve([]byte(acmeSpec.Accounts[0]))
	require.False(t, ok)
}

func TestRegistry_ReloadAndLookup(t *testing.T) {
	secret := newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(secret, globexSpec, acmeSpec), nil)
	require.NoError(t, r.reload(t))

	s := r.Snapshot()
	require.NotNil(t, s)
	require.Equal(t, uint64(1), s.Version)
	require.WithinDuration(t, time.Now(), s.LoadedAt, 10*time.Second)
	require.Len(t, s.Tenants, 2)
	require.Equal(t, "acme", s.Tenants[0].ID, "tenants in id order")
	require.Equal(t, "globex", s.Tenants[1].ID)
	require.Equal(t, int32(0), s.Tenant("acme").Partition)
	require.Equal(t, int32(1), s.Tenant("globex").Partition)
	require.Nil(t, s.Tenant("nobody"))
	require.Equal(t, 2, s.Partitions())
	require.Equal(t, 2, r.cluster.eventsPartitions())
	require.Equal(t, 2.0, testutil.ToFloat64(r.tenantCount))
	require.Equal(t, secret, s.Tenant("acme").Instance.SigningSecret)

	tests := []struct {
		name    string
		account string
		wantID  string // "": not found
		hit     bool   // counted as an LRU hit
	}{
		{name: "first lookup misses the LRU", account: "104857392810345", wantID: "acme"},
		{name: "second lookup hits", account: "104857392810345", wantID: "acme", hit: true},
		{name: "other account of the same tenant", account: "106540352242922", wantID: "acme"},
		{name: "other tenant", account: "209384756102938", wantID: "globex"},
		{name: "other tenant again", account: "209384756102938", wantID: "globex", hit: true},
		{name: "unknown account", account: "999999999999999"},
		{name: "unknown account again, cached as unknown", account: "999999999999999", hit: true},
		{name: "prefix of an account", account: "10485739281034"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := r.counts()
			id, p, ok := r.Resolve([]byte(tt.account))
			after := r.counts()
			if tt.hit {
				require.Equal(t, before.hit+1, after.hit)
				require.Equal(t, before.miss, after.miss)
			} else {
				require.Equal(t, before.hit, after.hit)
				require.Equal(t, before.miss+1, after.miss)
			}
			if tt.wantID == "" {
				require.False(t, ok)
				require.Empty(t, id)
				require.Nil(t, r.Lookup([]byte(tt.account)))
				return
			}
			require.True(t, ok)
			require.Equal(t, tt.wantID, id)
			require.Equal(t, s.Tenant(tt.wantID).Partition, p)
			require.Same(t, s.Tenant(tt.wantID), r.Lookup([]byte(tt.account)))
		})
	}

	t.Run("empty account", func(t *testing.T) {
		before := r.counts()
		require.Nil(t, r.Lookup(nil))
		require.Nil(t, r.Lookup([]byte{}))
		require.Equal(t, before, r.counts(), "not counted")
	})

	t.Run("the caller may reuse its buffer", func(t *testing.T) {
		buf := []byte("209384756102938")
		require.Equal(t, "globex", r.Lookup(buf).ID)
		copy(buf, "104857392810345")
		require.Equal(t, "acme", r.Lookup(buf).ID)
		copy(buf, "999999999999999")
		require.Nil(t, r.Lookup(buf))
		copy(buf, "209384756102938")
		require.Equal(t, "globex", r.Lookup(buf).ID)
	})
}

// TestRegistry_AddTenantWhileServing: a tenant added to the file gets a new
// partition; no existing tenant moves.
func TestRegistry_AddTenantWhileServing(t *testing.T) {
	secret := newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec, globexSpec), nil)
	require.NoError(t, r.reload(t))
	before := map[string]int32{"acme": 0, "globex": 1}
	requireResolves(t, r, before, acmeSpec, globexSpec)
	_, _, ok := r.Resolve([]byte(hooliSpec.Accounts[0]))
	require.False(t, ok)

	// "aaa" sorts first: it must not take anyone's partition.
	aaa := tenantSpec{ID: "aaa", Accounts: []string{"777"}}
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec, hooliSpec, aaa))
	require.NoError(t, r.reload(t))
	s := r.Snapshot()
	require.Equal(t, uint64(2), s.Version)
	after := map[string]int32{"acme": 0, "globex": 1, "aaa": 2, "hooli": 3}
	for id, p := range after {
		require.Equal(t, p, s.Tenant(id).Partition, id)
	}
	requireResolves(t, r, after, acmeSpec, globexSpec, hooliSpec, aaa)
	require.Equal(t, 4, s.Partitions())
	require.Equal(t, 4, r.cluster.eventsPartitions())

	// Removing a tenant keeps its partition reserved.
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, hooliSpec, tenantSpec{ID: "zed", Accounts: []string{"888"}}))
	require.NoError(t, r.reload(t))
	s = r.Snapshot()
	require.Nil(t, s.Tenant("globex"))
	require.Nil(t, r.Lookup([]byte(globexSpec.Accounts[0])))
	require.Equal(t, int32(4), s.Tenant("zed").Partition)
	requireResolves(t, r, after, acmeSpec, hooliSpec)
}

func TestRegistry_BrokenFileKeepsSnapshot(t *testing.T) {
	secret := newSecret(t, 32)
	good := tenantsYAML(secret, acmeSpec, globexSpec)
	tests := []struct {
		name    string
		content *string // nil: remove the file
		want    string  // in the error
	}{
		{name: "bad YAML", content: ptr("tenants:\n  - id: [acme\n"), want: "yaml"},
		{name: "unknown key", content: ptr(good + "extra: 1\n"), want: "unknown key extra"},
		{name: "validation error", content: ptr(tenantsYAML(secret, acmeSpec, tenantSpec{ID: "globex", Accounts: acmeSpec.Accounts[:1]})),
			want: "tenants[1].accounts[0]"},
		{name: "bad secret", content: ptr(tenantsYAML("whsec_", acmeSpec)), want: "tenants[0].instance.signing_secret"},
		{name: "file removed", want: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRegistry(t, good, nil)
			require.NoError(t, r.reload(t))
			s := r.Snapshot()
			parts := map[string]int32{"acme": 0, "globex": 1}
			requireResolves(t, r, parts, acmeSpec, globexSpec) // fills the LRU
			records := len(r.cluster.records())

			if tt.content == nil {
				require.NoError(t, os.Remove(r.file))
			} else {
				writeFile(t, r.file, *tt.content)
			}
			before := r.counts()
			err := r.reload(t)
			require.ErrorIs(t, err, ErrInvalidFile)
			require.Contains(t, err.Error(), tt.want)

			after := r.counts()
			require.Equal(t, before.failed+1, after.failed)
			require.Equal(t, before.ok, after.ok)
			require.Same(t, s, r.Snapshot(), "the previous snapshot stays in force")
			require.Equal(t, uint64(1), r.Snapshot().Version)
			requireResolves(t, r, parts, acmeSpec, globexSpec)
			require.Equal(t, after.miss, r.counts().miss, "the LRU is still valid")
			require.Len(t, r.cluster.records(), records, "nothing claimed")

			// Fixing the file loads again.
			writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec, hooliSpec))
			require.NoError(t, r.reload(t))
			require.Equal(t, uint64(2), r.Snapshot().Version)
			requireResolves(t, r, map[string]int32{"acme": 0, "globex": 1, "hooli": 2}, acmeSpec, globexSpec, hooliSpec)
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestRegistry_BeforeSwap(t *testing.T) {
	secret := newSecret(t, 32)
	var (
		fail     atomic.Bool
		calls    atomic.Int32
		lastSeen atomic.Pointer[Snapshot]
		r        *testRegistry
	)
	errNotYet := errors.New("producer does not see the partitions yet")
	r = newTestRegistry(t, tenantsYAML(secret, acmeSpec), func(c *RegistryConfig) {
		c.BeforeSwap = func(ctx context.Context, s *Snapshot) error {
			calls.Add(1)
			lastSeen.Store(s)
			// The partitions are assigned and the topic grown before.
			ad := r.cluster.admin()
			n, err := ad.Partitions(ctx, testEventsTopic)
			if err != nil {
				return err
			}
			if n < s.Partitions() {
				return fmt.Errorf("events has %d partitions, snapshot needs %d", n, s.Partitions())
			}
			if fail.Load() {
				return errNotYet
			}
			return nil
		}
	})
	require.NoError(t, r.reload(t))
	require.Equal(t, int32(1), calls.Load())
	require.Same(t, lastSeen.Load(), r.Snapshot())
	old := r.Snapshot()

	fail.Store(true)
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec))
	err := r.reload(t)
	require.ErrorIs(t, err, errNotYet)
	require.Equal(t, int32(2), calls.Load())
	seen := lastSeen.Load()
	require.Equal(t, int32(1), seen.Tenant("globex").Partition, "BeforeSwap sees the new tenants with their partitions")
	require.Same(t, old, r.Snapshot(), "the previous snapshot stays in force")
	require.Nil(t, r.Lookup([]byte(globexSpec.Accounts[0])))
	require.Equal(t, 1.0, r.counts().failed)

	fail.Store(false)
	require.NoError(t, r.reload(t))
	require.Equal(t, uint64(2), r.Snapshot().Version)
	requireResolves(t, r, map[string]int32{"acme": 0, "globex": 1}, acmeSpec, globexSpec)
}

// TestRegistry_StaleCacheEntry: an account cached for one tenant moves to
// another; after the reload the LRU entry of the old version is not served.
func TestRegistry_StaleCacheEntry(t *testing.T) {
	secret := newSecret(t, 32)
	moving := "17841405822304914"
	a := tenantSpec{ID: "a", Accounts: []string{"1", moving}}
	b := tenantSpec{ID: "b", Accounts: []string{"2"}}
	r := newTestRegistry(t, tenantsYAML(secret, a, b), nil)
	require.NoError(t, r.reload(t))
	for range 2 { // miss, then hit
		require.Equal(t, "a", r.Lookup([]byte(moving)).ID)
	}
	require.Nil(t, r.Lookup([]byte("3")))
	require.Equal(t, counts{hit: 1, miss: 2, ok: 1}, r.counts())

	a.Accounts, b.Accounts = []string{"1"}, []string{"2", moving, "3"}
	writeFile(t, r.file, tenantsYAML(secret, a, b))
	require.NoError(t, r.reload(t))

	tn := r.Lookup([]byte(moving))
	require.NotNil(t, tn)
	require.Equal(t, "b", tn.ID)
	require.Equal(t, int32(1), tn.Partition)
	require.Equal(t, "b", r.Lookup([]byte("3")).ID, "a cached 'unknown' is stale too")
	require.Equal(t, counts{hit: 1, miss: 4, ok: 2}, r.counts(), "stale entries count as misses")
	require.Equal(t, "b", r.Lookup([]byte(moving)).ID)
	require.Equal(t, 2.0, r.counts().hit)
}

func TestRegistry_Watch(t *testing.T) {
	secret := newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec), nil)
	require.NoError(t, r.reload(t))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Watch(ctx, 10*time.Millisecond)
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Watch did not return after its context was canceled")
		}
	}
	defer stop()

	// A change is picked up.
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec))
	require.Eventually(t, func() bool { return r.Snapshot().Version == 2 }, 10*time.Second, 5*time.Millisecond)
	requireResolves(t, r, map[string]int32{"acme": 0, "globex": 1}, acmeSpec, globexSpec)

	// A broken file is refused once, and the tenants stay.
	writeFile(t, r.file, "tenants: [\n")
	require.Eventually(t, func() bool { return r.counts().failed == 1 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, uint64(2), r.Snapshot().Version)

	// The next change is picked up again.
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec, hooliSpec))
	require.Eventually(t, func() bool { return r.Snapshot().Version == 3 }, 10*time.Second, 5*time.Millisecond)
	requireResolves(t, r, map[string]int32{"acme": 0, "globex": 1, "hooli": 2}, acmeSpec, globexSpec, hooliSpec)

	stop()
}

// TestRegistry_WatchRetriesFailedSwap: a reload that fails for a reason
// other than the file (the producer not seeing new partitions yet, Kafka
// unreachable) is retried by Watch although the file does not change.
func TestRegistry_WatchRetriesFailedSwap(t *testing.T) {
	secret := newSecret(t, 32)
	var failures atomic.Int32
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec), func(c *RegistryConfig) {
		c.BeforeSwap = func(ctx context.Context, s *Snapshot) error {
			if s.Tenant("globex") != nil && failures.Add(1) <= 2 {
				return errors.New("producer does not see the partitions yet")
			}
			return nil
		}
	})
	require.NoError(t, r.reload(t))

	watch(t, r)

	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec))
	require.Eventually(t, func() bool { return r.Snapshot().Version == 2 }, 10*time.Second, 5*time.Millisecond,
		"the reload was not retried")
	require.Equal(t, 2.0, r.counts().failed)
	requireResolves(t, r, map[string]int32{"acme": 0, "globex": 1}, acmeSpec, globexSpec)
}

// TestRegistry_WatchReportsAMissingFile: a tenants file deleted while the
// relay runs is refused like a broken one: counted as a failed reload
// (which the alert on a refused tenants file watches), tried again every
// RetryRefused but logged once, the previous tenants staying in force.
// Once the file is back it is loaded at the next check, not only at the
// next retry.
func TestRegistry_WatchReportsAMissingFile(t *testing.T) {
	tests := []struct {
		name         string
		retryRefused time.Duration
		failed       float64 // failed reloads to wait for while the file is missing
	}{
		{name: "reported once", retryRefused: time.Hour, failed: 1},
		{name: "tried again, logged once", retryRefused: 50 * time.Millisecond, failed: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret := newSecret(t, 32)
			var log lockedBuffer
			r := newTestRegistry(t, tenantsYAML(secret, acmeSpec), func(c *RegistryConfig) {
				c.RetryRefused = tt.retryRefused
				c.Logger = slog.New(slog.NewTextHandler(&log, nil))
			})
			require.NoError(t, r.reload(t))
			watch(t, r)

			require.NoError(t, os.Remove(r.file))
			require.Eventually(t, func() bool { return r.counts().failed >= tt.failed }, 10*time.Second, 5*time.Millisecond,
				"a missing file is counted as a failed reload")
			errorLines := func() []string {
				var lines []string
				for l := range strings.Lines(log.String()) {
					if strings.Contains(l, "level=ERROR") {
						lines = append(lines, l)
					}
				}
				return lines
			}
			// Reload counts the failure before it logs it.
			require.Eventually(t, func() bool { return len(errorLines()) >= 1 }, 10*time.Second, 5*time.Millisecond)
			lines := errorLines()
			require.Len(t, lines, 1, "logged once:\n%s", log.String())
			require.Contains(t, lines[0], "tenants reload refused; previous tenants stay in force")
			require.Contains(t, lines[0], "open "+r.file, "the error names the file")
			require.Equal(t, uint64(1), r.Snapshot().Version)
			requireResolves(t, r, map[string]int32{"acme": 0}, acmeSpec)

			// The file comes back, unchanged: it is loaded, and no longer
			// refused.
			writeFile(t, r.file, tenantsYAML(secret, acmeSpec))
			// The snapshot is swapped in before Reload clears failedAt and
			// counts the success: wait for all three.
			require.Eventually(t, func() bool {
				r.mu.Lock()
				failedAt := r.failedAt
				r.mu.Unlock()
				return r.Snapshot().Version == 2 && failedAt.IsZero() && r.counts().ok == 2
			}, 10*time.Second, 5*time.Millisecond, "the file is loaded again and no longer tried as refused")
			if tt.failed == 1 {
				require.Equal(t, 1.0, r.counts().failed, "counted once, not at every check")
			}
		})
	}
}

// TestRegistry_WatchWaitsOutAMomentarilyMissingFile: a tool that replaces
// the tenants file by deleting it and writing the new one leaves no file
// for a moment. A check that falls in that moment reports nothing: only a
// file still missing at the next check is refused.
func TestRegistry_WatchWaitsOutAMomentarilyMissingFile(t *testing.T) {
	secret := newSecret(t, 32)
	var log lockedBuffer
	var file string
	var replaced atomic.Bool
	writeErr := make(chan error, 1)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec), func(c *RegistryConfig) {
		file = c.File
		// The new file is written as soon as a check has found none:
		// before the next check, however slow the machine.
		c.Logger = slog.New(hookHandler{
			Handler: slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}),
			msg:     "tenants file unreadable; refused if it still is at the next check",
			fn: func() {
				if !replaced.Swap(true) {
					writeErr <- os.WriteFile(file, []byte(tenantsYAML(secret, acmeSpec, globexSpec)), 0o600)
				}
			},
		})
	})
	require.NoError(t, r.reload(t))
	watch(t, r)

	require.NoError(t, os.Remove(r.file))
	require.Eventually(t, func() bool { return r.Snapshot().Version == 2 }, 10*time.Second, 5*time.Millisecond)
	require.True(t, replaced.Load(), "a check found no file")
	require.NoError(t, <-writeErr)
	requireResolves(t, r, map[string]int32{"acme": 0, "globex": 1}, acmeSpec, globexSpec)
	require.Equal(t, 0.0, r.counts().failed)
	require.NotContains(t, log.String(), "level=ERROR")
}

// hookHandler runs fn inside the logging call of each record whose message
// is msg, so a test can act at that point of the code that logs.
type hookHandler struct {
	slog.Handler
	msg string
	fn  func()
}

func (h hookHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == h.msg {
		h.fn()
	}
	return h.Handler.Handle(ctx, rec)
}

// lockedBuffer is a logger's output, safe to read while it writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestRegistry_LookupDuringReloads looks accounts up from many goroutines
// while the tenants change: every answer belongs to some loaded version.
func TestRegistry_LookupDuringReloads(t *testing.T) {
	secret := newSecret(t, 32)
	a := tenantSpec{ID: "a", Accounts: []string{"1", "2"}}
	b := tenantSpec{ID: "b", Accounts: []string{"3"}}
	r := newTestRegistry(t, tenantsYAML(secret, a, b), func(c *RegistryConfig) { c.CacheSize = 2 })
	require.NoError(t, r.reload(t))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var bad atomic.Value
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				for _, acct := range []string{"1", "2", "3", "4"} {
					tn := r.Lookup([]byte(acct))
					switch {
					case acct == "1" && (tn == nil || tn.ID != "a"),
						acct == "3" && (tn == nil || tn.ID != "b"),
						acct == "4" && tn != nil,
						acct == "2" && tn != nil && tn.ID != "a" && tn.ID != "b":
						bad.Store(fmt.Sprintf("account %s → %v", acct, tn))
					}
				}
			}
		})
	}
	for i := range 6 {
		if i%2 == 0 {
			a.Accounts, b.Accounts = []string{"1"}, []string{"3", "2"}
		} else {
			a.Accounts, b.Accounts = []string{"1", "2"}, []string{"3"}
		}
		writeFile(t, r.file, tenantsYAML(secret, a, b))
		require.NoError(t, r.reload(t))
	}
	cancel()
	wg.Wait()
	require.Nil(t, bad.Load())
	require.Equal(t, "a", r.Lookup([]byte("2")).ID)
}

func TestNewRegistry_Metrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := NewRegistry(RegistryConfig{File: "x", Registerer: reg})
	require.NoError(t, err)
	n, err := testutil.GatherAndCount(reg, "relay_tenant_reloads_total", "relay_tenant_tenants")
	require.NoError(t, err)
	require.Equal(t, 3, n, "reloads by result (ok, failed) and the tenant gauge")
}

func BenchmarkLookup(b *testing.B) {
	accounts := make([][]byte, 1000)
	specs := make([]tenantSpec, 100)
	for i := range specs {
		specs[i] = tenantSpec{ID: fmt.Sprintf("t%03d", i)}
		for j := range 10 {
			a := fmt.Sprintf("1%014d", i*10+j)
			specs[i].Accounts = append(specs[i].Accounts, a)
			accounts[i*10+j] = []byte(a)
		}
	}
	r := newTestRegistry(b, tenantsYAML(newSecret(b, 32), specs...), func(c *RegistryConfig) { c.CacheSize = len(accounts) })
	require.NoError(b, r.reload(b))
	for _, a := range accounts {
		require.NotNil(b, r.Lookup(a)) // warm the LRU
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if r.Lookup(accounts[i%len(accounts)]) == nil {
			b.Fatal("miss")
		}
		i++
	}
	b.StopTimer()
	require.Zero(b, testutil.ToFloat64(r.miss)-float64(len(accounts)), "every benchmarked lookup was an LRU hit")
}

// relay_tenant_info maps tenants to their partitions, for an SRE to join
// partition-labelled series (consumer lag) to tenants; it follows reloads.
func TestTenantInfoMapsTenantsToPartitions(t *testing.T) {
	reg := prometheus.NewRegistry()
	secret := newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec, globexSpec), func(c *RegistryConfig) { c.Registerer = reg })
	require.NoError(t, r.reload(t))
	info := func() map[string]string {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		out := map[string]string{}
		for _, mf := range mfs {
			if mf.GetName() != "relay_tenant_info" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				out[l["tenant"]] = l["partition"]
			}
		}
		return out
	}
	snap := r.Snapshot()
	require.Equal(t, map[string]string{
		"acme":   strconv.Itoa(int(snap.Tenant("acme").Partition)),
		"globex": strconv.Itoa(int(snap.Tenant("globex").Partition)),
	}, info())

	writeFile(t, r.file, tenantsYAML(secret, acmeSpec))
	require.NoError(t, r.reload(t))
	require.Equal(t, []string{"acme"}, slices.Collect(maps.Keys(info())), "a removed tenant's series goes")
}

// Regression (found in review): each reload reset relay_tenant_info and
// set it again, so a scrape meanwhile missed tenants, and an alert joined
// on it lost its pending time. Tenants that stay keep their series.
func TestTenantInfoStaysWholeAcrossReloads(t *testing.T) {
	reg := prometheus.NewRegistry()
	secret := newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec, globexSpec), func(c *RegistryConfig) { c.Registerer = reg })
	require.NoError(t, r.reload(t))
	var stop atomic.Bool
	var partial atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			n, err := testutil.GatherAndCount(reg, "relay_tenant_info")
			if err != nil || n != 2 {
				partial.Add(1)
			}
		}
	})
	for range 100 {
		require.NoError(t, r.reload(t))
	}
	stop.Store(true)
	wg.Wait()
	require.Zero(t, partial.Load(), "scrapes that saw fewer than the 2 tenants in force")
}

// TestRegistry_LoadsThousandsOfNewTenantsAtOnce: a tenants file that adds
// thousands of tenants at once (the first start of a large install) loads
// on a cluster whose relay.tenants takes Kafka's default max.message.bytes,
// 1 MiB: their claims, over 1 MiB together, are written in several
// requests, in order.
func TestRegistry_LoadsThousandsOfNewTenantsAtOnce(t *testing.T) {
	const n = 6000
	secret := newSecret(t, 24)
	specs := make([]tenantSpec, n)
	for i := range specs {
		id := fmt.Sprintf("tenant-%05d-", i)
		id += strings.Repeat("x", 64-len(id)) // the longest ids allowed
		specs[i] = tenantSpec{ID: id, Accounts: []string{strconv.Itoa(100000000000000 + i)}}
	}
	r := newTestRegistry(t, tenantsYAML(secret, specs...), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.cluster.admin().EnsureTopics(ctx, TopicSpec{
		Name: testTenantsTopic, Configs: map[string]string{"max.message.bytes": "1048588"}, Enforce: true,
	}))

	require.NoError(t, r.reload(t))
	require.Len(t, r.Snapshot().Tenants, n)
	recs := r.cluster.records()
	require.Len(t, recs, n)
	for i, rec := range recs {
		c, ok := rec.claim()
		require.True(t, ok)
		require.Equal(t, specs[i].ID, c.Tenant, "claims are written in id order")
		require.Equal(t, int32(i), c.Partition)
		require.Equal(t, int32(i), r.Snapshot().Tenant(c.Tenant).Partition)
	}
	require.Equal(t, n, r.cluster.eventsPartitions())
}

// watch runs r.Watch, checking every 10 ms, until the test ends.
func watch(t *testing.T, r *testRegistry) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Watch(ctx, 10*time.Millisecond) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

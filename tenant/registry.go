package tenant

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is one consistent, immutable view of the tenants.
type Snapshot struct {
	// Version increases with every successful load.
	Version uint64
	// Tenants in id order.
	Tenants   []*Tenant
	LoadedAt  time.Time
	byID      map[string]*Tenant
	byAccount map[string]*Tenant
}

// Tenant returns the tenant with the given id, or nil.
func (s *Snapshot) Tenant(id string) *Tenant { return s.byID[id] }

// Partitions is how many partitions of the events topic the tenants need.
func (s *Snapshot) Partitions() int {
	n := 0
	for _, t := range s.Tenants {
		n = max(n, int(t.Partition)+1)
	}
	return n
}

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	// File is the tenants file.
	File string
	// Assigner gives tenants their partitions.
	Assigner *Assigner
	// CacheSize is the account → tenant LRU's size (default 65536).
	CacheSize int
	// BeforeSwap, when set, runs after partitions are assigned and before
	// the new tenants take effect: the ingress uses it to wait until its
	// producer sees the new partitions.
	BeforeSwap func(ctx context.Context, s *Snapshot) error
	// RetryRefused is how often Watch tries a refused file again, unchanged
	// (default 30s): what it refers to may have appeared since.
	RetryRefused time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Registry holds the current tenants and answers account → tenant lookups
// through an LRU in front of the current snapshot's index. Reload replaces
// the snapshot as a whole; a file that fails to load or validate leaves the
// previous one in force.
type Registry struct {
	cfg   RegistryConfig
	cur   atomic.Pointer[Snapshot]
	cache *lru.Cache[string, cached]

	reloading chan struct{} // holds a token while a reload runs: one at a time

	mu          sync.Mutex        // guards what Watch reads:
	lastSum     [sha256.Size]byte // of the file the latest reload settled on, and its secret files
	secretFiles []string          // the *_secret_file paths of the latest tenants loaded
	failedAt    time.Time         // of the latest reload, if it failed
	lastFailure string            // its error, logged once however often it repeats

	reloads     *prometheus.CounterVec
	tenantCount prometheus.Gauge
	tenantInfo  *prometheus.GaugeVec
	lookups     *prometheus.CounterVec
	hit, miss   prometheus.Counter
}

type cached struct {
	t       *Tenant // nil: no tenant owns the account
	version uint64
}

// NewRegistry returns a registry with no tenants loaded; call Reload.
func NewRegistry(cfg RegistryConfig) (*Registry, error) {
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 1 << 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.RetryRefused <= 0 {
		cfg.RetryRefused = 30 * time.Second
	}
	c, err := lru.New[string, cached](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	r := &Registry{cfg: cfg, cache: c, reloading: make(chan struct{}, 1)}
	r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_tenant_reloads_total",
		Help: "Tenants file loads, by result: ok, or failed (the previous tenants stay in force).",
	}, []string{"result"})
	r.tenantCount = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "relay_tenant_tenants",
		Help: "Tenants currently in force.",
	})
	r.tenantInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_tenant_info",
		Help: "1 per tenant in force, labelled with its partition of the events topic: join partition-labelled series (consumer lag) to tenants.",
	}, []string{"tenant", "partition"})
	r.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_tenant_cache_lookups_total",
		Help: "Account → tenant lookups, by LRU result.",
	}, []string{"result"})
	r.hit, r.miss = r.lookups.WithLabelValues("hit"), r.lookups.WithLabelValues("miss")
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("failed")
	cfg.Registerer.MustRegister(r.reloads, r.tenantCount, r.tenantInfo, r.lookups)
	return r, nil
}

// Snapshot returns the tenants in force, or nil before the first load.
func (r *Registry) Snapshot() *Snapshot { return r.cur.Load() }

// Resolve returns the id and partition of the tenant owning account.
func (r *Registry) Resolve(account []byte) (id string, partition int32, ok bool) {
	t := r.Lookup(account)
	if t == nil {
		return "", 0, false
	}
	return t.ID, t.Partition, true
}

// Lookup returns the tenant owning account, or nil.
func (r *Registry) Lookup(account []byte) *Tenant {
	s := r.cur.Load()
	if s == nil || len(account) == 0 {
		return nil
	}
	// The key only lives for the lookup, so it may alias account.
	if c, ok := r.cache.Get(unsafe.String(unsafe.SliceData(account), len(account))); ok && c.version == s.Version {
		r.hit.Inc()
		return c.t
	}
	r.miss.Inc()
	t := s.byAccount[string(account)]
	r.cache.Add(string(account), cached{t: t, version: s.Version})
	return t
}

// Reload loads the tenants file, assigns partitions to new tenants and
// swaps the new tenants in. On any error the previous tenants stay in
// force and the error is logged and returned.
//
// One reload runs at a time; a call that finds one under way waits for it
// as long as ctx allows, so that a reload stuck on an unreachable Kafka
// never holds up its caller (SIGHUP in serve's main loop) for longer.
func (r *Registry) Reload(ctx context.Context) error {
	select {
	case r.reloading <- struct{}{}:
	case <-ctx.Done():
		err := fmt.Errorf("tenants reload: another reload is under way: %w", ctx.Err())
		r.reloads.WithLabelValues("failed").Inc()
		r.cfg.Logger.Error("tenants reload not done; previous tenants stay in force", "file", r.cfg.File, "err", err)
		return err
	}
	defer func() { <-r.reloading }()
	err := r.reload(ctx)
	r.mu.Lock()
	repeated := err != nil && err.Error() == r.lastFailure
	if err != nil {
		r.failedAt, r.lastFailure = time.Now(), err.Error()
	} else {
		r.failedAt, r.lastFailure = time.Time{}, ""
	}
	r.mu.Unlock()
	if err != nil {
		r.reloads.WithLabelValues("failed").Inc()
		log := r.cfg.Logger.Error
		if repeated {
			log = r.cfg.Logger.Debug // the same refusal, tried again (RetryRefused): said once
		}
		log("tenants reload refused; previous tenants stay in force", "file", r.cfg.File, "err", err)
		return err
	}
	r.reloads.WithLabelValues("ok").Inc()
	return nil
}

func (r *Registry) reload(ctx context.Context) error {
	data, err := os.ReadFile(r.cfg.File)
	if err != nil {
		r.mu.Lock()
		r.lastSum = [sha256.Size]byte{} // Watch reloads as soon as the file can be read again
		r.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrInvalidFile, err)
	}
	// The checksum is of the secret files' content as parsed, not read
	// again: a file replaced in between would otherwise be in the sum but
	// not in the tenants, and Watch would never load it.
	read := map[string][]byte{}
	tenants, err := parseReading(data, filepath.Dir(r.cfg.File), os.Getenv, func(path string) ([]byte, error) {
		b, err := os.ReadFile(path)
		if err == nil {
			read[path] = b
		}
		return b, err
	})
	if err != nil {
		r.mu.Lock()
		r.lastSum = contentSum(data, r.secretFiles, os.ReadFile) // Watch waits for a change (or RetryRefused)
		r.mu.Unlock()
		return err
	}
	secretFiles := slices.Sorted(maps.Keys(read)) // every one the parse named: it read them all
	sum := contentSum(data, secretFiles, func(path string) ([]byte, error) { return read[path], nil })
	ids := make([]string, len(tenants))
	for i, t := range tenants {
		ids[i] = t.ID
	}
	parts, err := r.cfg.Assigner.Assign(ctx, ids)
	if err != nil {
		return fmt.Errorf("assign partitions: %w", err)
	}
	prev := r.cur.Load()
	s := &Snapshot{
		LoadedAt:  time.Now(),
		byID:      make(map[string]*Tenant, len(tenants)),
		byAccount: make(map[string]*Tenant),
	}
	if prev != nil {
		s.Version = prev.Version
	}
	s.Version++
	for _, t := range tenants {
		t.Partition = parts[t.ID]
		s.byID[t.ID] = t
		for _, a := range t.Accounts {
			s.byAccount[a] = t
		}
	}
	s.Tenants = slices.Clone(tenants)
	slices.SortFunc(s.Tenants, func(a, b *Tenant) int { return strings.Compare(a.ID, b.ID) })
	if r.cfg.BeforeSwap != nil {
		if err := r.cfg.BeforeSwap(ctx, s); err != nil {
			return err
		}
	}
	r.cur.Store(s)
	// Only now: Watch retries a reload that failed for another reason
	// than the file (assignment, BeforeSwap).
	r.mu.Lock()
	r.lastSum, r.secretFiles = sum, secretFiles
	r.mu.Unlock()
	r.tenantCount.Set(float64(len(s.Tenants)))
	// Series of tenants that stay are kept, not dropped and set again: a
	// scrape meanwhile would miss them, and an alert joined on them reset.
	for _, t := range s.Tenants {
		r.tenantInfo.WithLabelValues(t.ID, strconv.Itoa(int(t.Partition))).Set(1)
	}
	if prev != nil {
		for _, t := range prev.Tenants {
			if cur := s.byID[t.ID]; cur == nil || cur.Partition != t.Partition {
				r.tenantInfo.DeleteLabelValues(t.ID, strconv.Itoa(int(t.Partition)))
			}
		}
	}
	added, removed := diff(prev, s)
	r.cfg.Logger.Info("tenants loaded", "file", r.cfg.File, "tenants", len(s.Tenants), "version", s.Version,
		"added", len(added), "removed", len(removed), "added_ids", head(added, 20), "removed_ids", head(removed, 20))
	return nil
}

// Watch reloads when the file's content changes, checking every interval,
// until ctx is done. Editors that replace the file and Kubernetes'
// ConfigMap symlink swaps are both seen, since it compares content.
//
// A file that was refused is also tried again every RetryRefused, unchanged:
// what it refers to may have appeared since (a signing_secret_file mounted
// after the tenants file). Each reload has watchReloadTimeout to finish.
//
// A file that cannot be read (deleted, its permissions changed) is refused
// the same way, by a reload that fails, so it is logged and counted, and
// tried again every RetryRefused until it can be read and loads. Only from
// the second check in a row that cannot read it: a rename over the file
// never leaves it missing, but a tool that deletes it and then writes the
// new one does, for a moment.
func (r *Registry) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	reload := func() {
		rctx, cancel := context.WithTimeout(ctx, watchReloadTimeout)
		defer cancel()
		_ = r.Reload(rctx) // logged and counted by Reload
	}
	unreadable := 0 // checks in a row that could not read the file
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(r.cfg.File)
		if err != nil {
			unreadable++
			if unreadable == 1 {
				r.cfg.Logger.Debug("tenants file unreadable; refused if it still is at the next check", "file", r.cfg.File, "err", err)
				continue
			}
			r.mu.Lock()
			due := unreadable == 2 || time.Since(r.failedAt) >= r.cfg.RetryRefused
			r.mu.Unlock()
			if due {
				reload()
			}
			continue
		}
		unreadable = 0
		r.mu.Lock()
		files := r.secretFiles
		r.mu.Unlock()
		sum := contentSum(data, files, os.ReadFile)
		r.mu.Lock()
		due := sum != r.lastSum || !r.failedAt.IsZero() && time.Since(r.failedAt) >= r.cfg.RetryRefused
		r.mu.Unlock()
		if due {
			reload()
		}
	}
}

// watchReloadTimeout is how long one of Watch's reloads may take.
const watchReloadTimeout = time.Minute

// contentSum hashes the tenants file and the secret files it names, so
// that Watch also sees a secret file replaced (a rotation, a Kubernetes
// Secret updated) while the tenants file stays the same.
func contentSum(data []byte, secretFiles []string, readFile func(string) ([]byte, error)) [sha256.Size]byte {
	h := sha256.New()
	h.Write(data)
	for _, f := range secretFiles {
		fmt.Fprintf(h, "\x00%s\x00", f)
		if b, err := readFile(f); err == nil {
			h.Write(b)
		} else {
			h.Write([]byte("\x00unreadable"))
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func diff(prev, cur *Snapshot) (added, removed []string) {
	for _, t := range cur.Tenants {
		if prev == nil || prev.byID[t.ID] == nil {
			added = append(added, t.ID)
		}
	}
	if prev != nil {
		for _, t := range prev.Tenants {
			if cur.byID[t.ID] == nil {
				removed = append(removed, t.ID)
			}
		}
	}
	return added, removed
}

// head keeps log lines short when a thousand tenants change at once.
func head(ids []string, n int) []string {
	if len(ids) > n {
		return append(ids[:n:n], fmt.Sprintf("… %d more", len(ids)-n))
	}
	return ids
}

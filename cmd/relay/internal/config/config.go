// Package config is relay serve's configuration: the YAML file, its
// defaults, the RELAY_… environment overrides, --set flags, secrets from
// files, and the validation that refuses bad settings at start.
//
// Precedence, lowest first: defaults, the file, the environment, flags.
// Every key has a default; a zero or missing value means the default.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/relaymw/relay/relay"
)

// MaxBodyBytes bounds ingress.max_body_bytes: the relay's topics take
// records of that size and 1 MiB more, and Kafka's max.message.bytes is a
// 32-bit number.
const MaxBodyBytes = 1 << 30

// MaxInFlight bounds kafka.max_in_flight.
const MaxInFlight = 256

// Config is the whole configuration of relay serve.
type Config struct {
	Ingress  Ingress  `yaml:"ingress"`
	Admin    Admin    `yaml:"admin"`
	Meta     Meta     `yaml:"meta"`
	Kafka    Kafka    `yaml:"kafka"`
	Tenants  Tenants  `yaml:"tenants"`
	Delivery Delivery `yaml:"delivery"`
	Log      Log      `yaml:"log"`
	Shutdown Shutdown `yaml:"shutdown"`

	// dir is the config file's folder; relative paths are taken from it.
	dir string
	// problems found while reading the file (unknown keys, values of the
	// wrong type); Validate reports them with the rest.
	problems []error
}

// Ingress is the HTTP(S) listener Meta posts to.
type Ingress struct {
	Listen       string `yaml:"listen"`         // default 127.0.0.1:8080
	Path         string `yaml:"path"`           // default /webhooks/meta
	MaxBodyBytes int    `yaml:"max_body_bytes"` // default 8388608 (8 MiB); larger bodies get 413
	TLS          TLS    `yaml:"tls"`            // when set, the ingress serves HTTPS
	// ReadTimeout and WriteTimeout bound reading a request and writing an
	// answer; IdleTimeout closes idle keep-alive connections.
	ReadTimeout  time.Duration `yaml:"read_timeout"`  // default 30s
	WriteTimeout time.Duration `yaml:"write_timeout"` // default 30s
	IdleTimeout  time.Duration `yaml:"idle_timeout"`  // default 120s
	// MaxConcurrency bounds the connections served at once; a connection
	// past it gets a 503 with Retry-After and is closed.
	MaxConcurrency int `yaml:"max_concurrency"` // default 16384
	// DedupeSize is how many recent event ids are remembered to drop Meta's
	// redeliveries.
	DedupeSize int `yaml:"dedupe_size"` // default 200000
	// RetryAfter is sent with every 503.
	RetryAfter time.Duration `yaml:"retry_after"` // default 5s
}

// TLS names a certificate and key in PEM files.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Admin is the operations listener: /metrics, /healthz, /readyz.
type Admin struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:9090
	// Pprof serves Go's profiler under /debug/pprof/ on this listener.
	Pprof bool `yaml:"pprof"`
}

// Meta holds what Meta's webhooks are checked against. Secrets may also
// come from the *_file keys (one per line) or RELAY_META_APP_SECRETS /
// RELAY_META_VERIFY_TOKENS (comma-separated).
type Meta struct {
	VerifyTokens     []string `yaml:"verify_tokens"`
	VerifyTokensFile string   `yaml:"verify_tokens_file"`
	AppSecrets       []string `yaml:"app_secrets"`
	AppSecretsFile   string   `yaml:"app_secrets_file"`
}

// Kafka is where events are written.
type Kafka struct {
	// Brokers of a Kafka cluster; empty runs the embedded broker.
	Brokers  []string `yaml:"brokers"`
	Embedded Embedded `yaml:"embedded"`
	Topics   Topics   `yaml:"topics"`
	// ProduceTimeout bounds the wait for acks=all; past it the ingress
	// answers 503.
	ProduceTimeout time.Duration `yaml:"produce_timeout"` // default 5s
	// MaxInFlight is how many produce requests may be outstanding; while
	// they are, new events gather into the next one (group commit).
	MaxInFlight int `yaml:"max_in_flight"` // default 2
	// FlushInterval is the least time between two produce requests of one
	// of the max_in_flight senders, unless flush_bytes wait sooner; events
	// arriving meanwhile join the next request. An event that finds a
	// sender idle goes at once. Fewer, larger requests cost the broker
	// less per event.
	FlushInterval time.Duration `yaml:"flush_interval"` // default 2ms, at most 1s
	// FlushBytes ends a sender's flush_interval early once this many bytes
	// of events wait: under load requests go out when full enough instead
	// of holding their clients. At or above max_pending_bytes it is never
	// reached (off in effect).
	FlushBytes int `yaml:"flush_bytes"` // default 65536
	// MaxBatchBytes bounds one partition's batch in one produce request.
	MaxBatchBytes int `yaml:"max_batch_bytes"` // default 1048576
	// MaxPendingBytes bounds events waiting for a produce request; past it
	// the ingress answers 503 at once.
	MaxPendingBytes int `yaml:"max_pending_bytes"` // default 67108864
	// ReplicationFactor for topics the relay creates; 0 takes the
	// broker's default (1 for the embedded broker).
	ReplicationFactor int    `yaml:"replication_factor"`
	ClientID          string `yaml:"client_id"` // default relay
}

// Embedded is the single-node Kafka-protocol broker run in-process when no
// brokers are configured: for development and small installs.
type Embedded struct {
	Listen  string `yaml:"listen"`   // default 127.0.0.1:9092
	DataDir string `yaml:"data_dir"` // default ./data/kafka
	// SyncWrites fsyncs every batch before acknowledging it. Without it,
	// acknowledged events survive a crash of the relay process (they are in
	// the operating system's page cache) but not of the machine.
	SyncWrites bool `yaml:"sync_writes"`
	// Retention is how long the embedded broker keeps events. It keeps an
	// index entry per record batch in memory, so retention bounds its
	// memory as well as its disk. Applied hourly.
	Retention time.Duration `yaml:"retention"` // default 168h
}

// Topics names the relay's topics.
type Topics struct {
	Events   string `yaml:"events"`   // default relay.events
	Unrouted string `yaml:"unrouted"` // default relay.unrouted
	DLQ      string `yaml:"dlq"`      // default relay.dlq
	Tenants  string `yaml:"tenants"`  // default relay.tenants (partition assignments, compacted)
}

// Tenants is where the tenants file is and how it is watched.
type Tenants struct {
	File string `yaml:"file"` // default tenants.yaml
	// ReloadInterval is how often the file is checked for changes (SIGHUP
	// reloads at once).
	ReloadInterval time.Duration `yaml:"reload_interval"` // default 2s
	// CacheSize is the account → tenant LRU's size.
	CacheSize int `yaml:"cache_size"` // default 65536
}

// Log configures log/slog output on stderr.
type Log struct {
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // json (default) or text
}

// Shutdown bounds the graceful stop on SIGINT/SIGTERM.
type Shutdown struct {
	GracePeriod time.Duration `yaml:"grace_period"` // default 25s
}

// Default returns the configuration with every default filled in.
func Default() *Config {
	c := &Config{}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	defDur := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Ingress.Listen, "127.0.0.1:8080")
	def(&c.Ingress.Path, "/webhooks/meta")
	defInt(&c.Ingress.MaxBodyBytes, 8<<20)
	defDur(&c.Ingress.ReadTimeout, 30*time.Second)
	defDur(&c.Ingress.WriteTimeout, 30*time.Second)
	defDur(&c.Ingress.IdleTimeout, 120*time.Second)
	defInt(&c.Ingress.MaxConcurrency, 16384)
	defInt(&c.Ingress.DedupeSize, 200000)
	defDur(&c.Ingress.RetryAfter, 5*time.Second)
	def(&c.Admin.Listen, "127.0.0.1:9090")
	def(&c.Kafka.Embedded.Listen, "127.0.0.1:9092")
	def(&c.Kafka.Embedded.DataDir, "./data/kafka")
	defDur(&c.Kafka.Embedded.Retention, 7*24*time.Hour)
	def(&c.Kafka.Topics.Events, "relay.events")
	def(&c.Kafka.Topics.Unrouted, "relay.unrouted")
	def(&c.Kafka.Topics.DLQ, "relay.dlq")
	def(&c.Kafka.Topics.Tenants, "relay.tenants")
	defDur(&c.Kafka.ProduceTimeout, 5*time.Second)
	defInt(&c.Kafka.MaxInFlight, 2)
	defDur(&c.Kafka.FlushInterval, 2*time.Millisecond)
	defInt(&c.Kafka.FlushBytes, 64<<10)
	defInt(&c.Kafka.MaxBatchBytes, 1<<20)
	defInt(&c.Kafka.MaxPendingBytes, 64<<20)
	def(&c.Kafka.ClientID, "relay")
	def(&c.Tenants.File, "tenants.yaml")
	defDur(&c.Tenants.ReloadInterval, 2*time.Second)
	defInt(&c.Tenants.CacheSize, 1<<16)
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "json")
	defDur(&c.Shutdown.GracePeriod, 25*time.Second)
	c.Delivery.setDefaults()
}

// Load reads the configuration: path (may be empty: defaults only), then
// the environment (getenv, normally os.Getenv), then sets ("key=value",
// from --set flags). It resolves secrets files and relative paths; it does
// not validate: call Validate.
func Load(path string, getenv func(string) string, sets []string) (*Config, error) {
	c := &Config{dir: "."}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		if len(doc.Content) > 0 {
			unknown, wrongType := keyProblems(doc.Content[0], reflect.TypeOf(*c), "")
			c.problems = append(unknown, wrongType...)
			var te *yaml.TypeError
			if err := doc.Content[0].Decode(c); errors.As(err, &te) {
				if len(wrongType) == 0 { // not found by key: yaml's words, with the file
					for _, e := range te.Errors {
						c.problems = append(c.problems, fmt.Errorf("%s: %s", path, e))
					}
				}
			} else if err != nil {
				return nil, fmt.Errorf("config %s: %w", path, err)
			}
		}
		c.dir = filepath.Dir(path)
	}
	// Every bad override is reported at once, with the file's own
	// problems, which Validate would report had the overrides been good.
	var overrideErrs []error
	if err := applyEnv(c, getenv); err != nil {
		overrideErrs = append(overrideErrs, err)
	}
	for _, s := range sets {
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			overrideErrs = append(overrideErrs, fmt.Errorf("--set %q: want key=value, e.g. ingress.listen=127.0.0.1:8081", s))
		} else if err := set(c, key, value); err != nil {
			overrideErrs = append(overrideErrs, fmt.Errorf("--set %s: %w", key, err))
		}
	}
	if len(overrideErrs) > 0 {
		return nil, errors.Join(append(slices.Clone(c.problems), overrideErrs...)...)
	}
	c.setDefaults()
	if err := c.resolveSecrets(); err != nil {
		return nil, err
	}
	c.resolvePaths()
	return c, nil
}

// resolveSecrets reads the *_file keys.
func (c *Config) resolveSecrets() error {
	read := func(field, path string, into *[]string) error {
		if path == "" {
			return nil
		}
		data, err := os.ReadFile(c.abs(path))
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				*into = append(*into, line)
			}
		}
		return nil
	}
	if err := read("meta.app_secrets_file", c.Meta.AppSecretsFile, &c.Meta.AppSecrets); err != nil {
		return err
	}
	return read("meta.verify_tokens_file", c.Meta.VerifyTokensFile, &c.Meta.VerifyTokens)
}

func (c *Config) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// resolvePaths makes every file path relative to the config file's folder.
func (c *Config) resolvePaths() {
	for _, p := range []*string{
		&c.Ingress.TLS.CertFile, &c.Ingress.TLS.KeyFile,
		&c.Kafka.Embedded.DataDir, &c.Tenants.File,
		&c.Delivery.ClientCertFile, &c.Delivery.ClientKeyFile,
	} {
		*p = c.abs(*p)
	}
}

// Warnings lists settings that are valid but work against each other;
// check-config prints them and serve logs them at start.
func (c *Config) Warnings() []string {
	var w []string
	if c.Delivery.On() {
		if d, g := c.Delivery.Timeout, c.Shutdown.GracePeriod; 2*d > g {
			w = append(w, fmt.Sprintf("delivery.timeout (%s) is over half of shutdown.grace_period (%s), the time delivery has to drain at a shutdown: an attempt under way then may be cut, and its event delivered again after the restart", d, g))
		}
	}
	return w
}

// Validate reports every problem, one error per problem, each naming its
// field.
func (c *Config) Validate() []error {
	errs := append([]error(nil), c.problems...)
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	hostPort := func(field, v string) {
		_, port, err := net.SplitHostPort(v)
		if err != nil || port == "" {
			bad(field, "%q is not host:port", v)
			return
		}
		if n, numeric := portNumber(port); numeric && (n < 0 || n > 65535) {
			bad(field, "%q: port %s is out of range (0 to 65535)", v, port)
		}
	}
	hostPort("ingress.listen", c.Ingress.Listen)
	hostPort("admin.listen", c.Admin.Listen)
	// Listeners of this process on one address: the second fails to bind.
	listens := []struct{ field, addr string }{{"ingress.listen", c.Ingress.Listen}, {"admin.listen", c.Admin.Listen}}
	if c.EmbeddedBroker() {
		listens = append(listens, struct{ field, addr string }{"kafka.embedded.listen", c.Kafka.Embedded.Listen})
	}
	for i, a := range listens {
		for _, b := range listens[:i] {
			switch {
			case !sameListen(a.addr, b.addr):
			case a.addr == b.addr:
				bad(a.field, "%q is also %s", a.addr, b.field)
			default:
				bad(a.field, "%q takes the port of %s %q: both cannot be bound", a.addr, b.field, b.addr)
			}
		}
	}
	if !strings.HasPrefix(c.Ingress.Path, "/") {
		bad("ingress.path", "%q must start with /", c.Ingress.Path)
	}
	if c.Ingress.MaxBodyBytes < 1024 {
		bad("ingress.max_body_bytes", "%d is under the least allowed, 1024 (Meta's bodies reach 3 MB: keep the default 8 MiB)", c.Ingress.MaxBodyBytes)
	}
	if c.Ingress.MaxBodyBytes > MaxBodyBytes {
		bad("ingress.max_body_bytes", "%d is over the most allowed, %d (Meta's bodies reach 3 MB: keep the default 8 MiB)", c.Ingress.MaxBodyBytes, MaxBodyBytes)
	}
	if (c.Ingress.TLS.CertFile == "") != (c.Ingress.TLS.KeyFile == "") {
		bad("ingress.tls", "set both cert_file and key_file, or neither")
	}
	for _, f := range []struct{ name, path string }{
		{"ingress.tls.cert_file", c.Ingress.TLS.CertFile}, {"ingress.tls.key_file", c.Ingress.TLS.KeyFile},
	} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				bad(f.name, "%v", err)
			}
		}
	}
	positive := map[string]time.Duration{
		"ingress.read_timeout": c.Ingress.ReadTimeout, "ingress.write_timeout": c.Ingress.WriteTimeout,
		"ingress.idle_timeout": c.Ingress.IdleTimeout, "ingress.retry_after": c.Ingress.RetryAfter,
		"kafka.produce_timeout": c.Kafka.ProduceTimeout, "tenants.reload_interval": c.Tenants.ReloadInterval,
		"kafka.embedded.retention": c.Kafka.Embedded.Retention, "kafka.flush_interval": c.Kafka.FlushInterval,
		"shutdown.grace_period": c.Shutdown.GracePeriod,
	}
	for _, name := range sortedKeys(positive) {
		if positive[name] < 0 {
			bad(name, "must be positive")
		}
	}
	counts := map[string]int{
		"ingress.max_concurrency": c.Ingress.MaxConcurrency, "ingress.dedupe_size": c.Ingress.DedupeSize,
		"kafka.max_in_flight": c.Kafka.MaxInFlight, "kafka.max_batch_bytes": c.Kafka.MaxBatchBytes,
		"kafka.max_pending_bytes": c.Kafka.MaxPendingBytes, "tenants.cache_size": c.Tenants.CacheSize,
		"kafka.flush_bytes": c.Kafka.FlushBytes,
	}
	for _, name := range sortedKeys(counts) {
		if counts[name] < 0 {
			bad(name, "must be positive")
		}
	}
	if c.Kafka.FlushInterval > time.Second {
		bad("kafka.flush_interval", "%s is more than 1s: every event could wait that long", c.Kafka.FlushInterval)
	}
	if c.Ingress.DedupeSize > relay.MaxDedupeSize {
		bad("ingress.dedupe_size", "at most %d", relay.MaxDedupeSize)
	}
	// An empty item is a mistake (a template's unset slot): an empty
	// verify token would let a handshake without one through, and the
	// signature check refuses an empty secret. The environment and _file
	// forms drop empty items, which are only separators there.
	for _, l := range []struct {
		field string
		items []string
	}{{"meta.app_secrets", c.Meta.AppSecrets}, {"meta.verify_tokens", c.Meta.VerifyTokens}} {
		if len(nonEmpty(l.items)) == 0 {
			continue // the "at least one" rule below says it
		}
		for i, s := range l.items {
			if s == "" {
				bad(fmt.Sprintf("%s[%d]", l.field, i), "empty; remove it")
			}
		}
	}
	if len(nonEmpty(c.Meta.AppSecrets)) == 0 {
		bad("meta.app_secrets", "at least one Meta app secret is required (or meta.app_secrets_file, or RELAY_META_APP_SECRETS)")
	}
	if len(nonEmpty(c.Meta.VerifyTokens)) == 0 {
		bad("meta.verify_tokens", "at least one verify token is required for Meta's subscription handshake (or meta.verify_tokens_file, or RELAY_META_VERIFY_TOKENS)")
	}
	for i, b := range c.Kafka.Brokers {
		hostPort(fmt.Sprintf("kafka.brokers[%d]", i), b)
	}
	if len(c.Kafka.Brokers) == 0 {
		hostPort("kafka.embedded.listen", c.Kafka.Embedded.Listen)
	}
	if c.Kafka.ReplicationFactor < 0 {
		bad("kafka.replication_factor", "must be 0 (broker default) or more")
	}
	if c.Kafka.MaxInFlight > MaxInFlight {
		// Each is a goroutine started at once; past a few, requests only queue.
		bad("kafka.max_in_flight", "%d is over the most allowed, %d (the default 2 is enough for group commit)", c.Kafka.MaxInFlight, MaxInFlight)
	}
	if c.EmbeddedBroker() && c.Kafka.ReplicationFactor > 1 {
		bad("kafka.replication_factor", "%d, but the embedded broker is one node: leave it 0 (or set kafka.brokers)", c.Kafka.ReplicationFactor)
	}
	if c.Kafka.MaxBatchBytes > 0 && c.Kafka.MaxBatchBytes < 1024 {
		bad("kafka.max_batch_bytes", "%d is too small", c.Kafka.MaxBatchBytes)
	}
	seen := map[string]string{}
	for _, t := range []struct{ field, name string }{
		{"kafka.topics.events", c.Kafka.Topics.Events}, {"kafka.topics.unrouted", c.Kafka.Topics.Unrouted},
		{"kafka.topics.dlq", c.Kafka.Topics.DLQ}, {"kafka.topics.tenants", c.Kafka.Topics.Tenants},
	} {
		if other, dup := seen[t.name]; dup {
			bad(t.field, "%q is also %s", t.name, other)
		}
		seen[t.name] = t.field
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "%q must be json or text", c.Log.Format)
	}
	errs = append(errs, c.Delivery.validate()...)
	return errs
}

// Embedded reports whether relay serve runs the embedded broker.
func (c *Config) EmbeddedBroker() bool { return len(c.Kafka.Brokers) == 0 }

// BrokerAddrs are the addresses clients connect to.
func (c *Config) BrokerAddrs() []string {
	if c.EmbeddedBroker() {
		return []string{c.Kafka.Embedded.Listen}
	}
	return c.Kafka.Brokers
}

// portNumber reads a port as net.Listen does: a decimal number with an
// optional sign and leading zeros ("08080" and "+8080" are 8080); numeric
// is false for a service name. A number past int64 reads as -1.
func portNumber(s string) (n int64, numeric bool) {
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1, true
	}
	return n, true
}

// sameListen reports whether listeners on a and b cannot both be bound:
// one port (not 0), and hosts that overlap. A wildcard host ("", 0.0.0.0,
// ::) takes the port on every address; localhost is 127.0.0.1 (net.Listen
// binds a name's first IPv4 address); an IP is compared by value, and
// without its zone unless link-local (::1, 0::1 and ::1%lo are one;
// fe80::1%a and fe80::1%b are not); other names as written. A port may be
// a service name (http is 80).
func sameListen(a, b string) bool {
	ha, pa, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, pb, err := net.SplitHostPort(b)
	if err != nil {
		return false
	}
	port := func(p string) (int64, bool) {
		if n, numeric := portNumber(p); numeric {
			return n, true
		}
		n, err := net.LookupPort("tcp", p) // a service name, from /etc/services
		return int64(n), err == nil
	}
	na, ok := port(pa)
	if nb, okb := port(pb); !ok || !okb || na != nb || na <= 0 {
		return false
	}
	addrs := func(h string) (ips []netip.Addr, wildcard bool) {
		if h == "" {
			return nil, true
		}
		if strings.EqualFold(h, "localhost") {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, false
		}
		ip, err := netip.ParseAddr(h)
		if err != nil {
			return nil, false // a name: compared as written below
		}
		ip = ip.Unmap()
		if !ip.IsLinkLocalUnicast() {
			// [::1%lo] is [::1]; only a link-local address is bound to
			// the interface its zone names, so fe80::1%a and %b differ.
			ip = ip.WithZone("")
		}
		return []netip.Addr{ip}, ip.IsUnspecified()
	}
	ia, wa := addrs(ha)
	ib, wb := addrs(hb)
	if wa || wb || strings.EqualFold(ha, hb) {
		return true
	}
	for _, x := range ia {
		if slices.Contains(ib, x) {
			return true
		}
	}
	return false
}

func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// keyProblems walks the mapping n alongside t (a struct), following
// aliases. It lists the keys t has no field for ("path.key: unknown key
// (line N)"), and the values that do not decode into their field, under
// their key's path and line: yaml's own type errors name only a line, and
// for an alias the anchor's.
func keyProblems(n *yaml.Node, t reflect.Type, prefix string) (unknown, wrongType []error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := prefix + k.Value
		f, ok := fieldByTag(t, k.Value)
		if !ok {
			unknown = append(unknown, fmt.Errorf("%s: unknown key (line %d)", path, k.Line))
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			u, w := keyProblems(v, f.Type, path+".")
			unknown, wrongType = append(unknown, u...), append(wrongType, w...)
			continue
		}
		var te *yaml.TypeError
		if err := v.Decode(reflect.New(f.Type).Interface()); errors.As(err, &te) {
			for _, e := range te.Errors {
				msg := typeErrorLine.ReplaceAllString(e, "")
				if f.Type == durationType {
					msg += " (a duration needs a unit, e.g. 30s)"
				}
				wrongType = append(wrongType, fmt.Errorf("%s: %s (line %d)", path, msg, k.Line))
			}
		}
	}
	return unknown, wrongType
}

var typeErrorLine = regexp.MustCompile(`^line \d+: `)

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); tag == name && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func write(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(data), 0o600))
	return p
}

func noEnv(string) string { return "" }

func TestDefaults(t *testing.T) {
	c, err := Load("", noEnv, nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", c.Ingress.Listen)
	require.Equal(t, "/webhooks/meta", c.Ingress.Path)
	require.Equal(t, 8<<20, c.Ingress.MaxBodyBytes)
	require.Equal(t, "127.0.0.1:9090", c.Admin.Listen)
	require.Equal(t, "relay.events", c.Kafka.Topics.Events)
	require.Equal(t, "relay.unrouted", c.Kafka.Topics.Unrouted)
	require.Equal(t, "relay.dlq", c.Kafka.Topics.DLQ)
	require.Equal(t, 5*time.Second, c.Kafka.ProduceTimeout)
	require.Equal(t, 2*time.Millisecond, c.Kafka.FlushInterval)
	require.Equal(t, 64<<10, c.Kafka.FlushBytes)
	require.True(t, c.EmbeddedBroker())
	require.Equal(t, []string{"127.0.0.1:9092"}, c.BrokerAddrs())
	require.Equal(t, 15, c.Delivery.MaxAttempts)
	require.Equal(t, 72*time.Hour, c.Delivery.MaxAge)
	require.Equal(t, 1, c.Delivery.MaxInFlightPerTenant)
	require.True(t, c.Delivery.On())
	// Without secrets the defaults are not enough to serve.
	errs := c.Validate()
	require.Len(t, errs, 2)
	require.Contains(t, errs[0].Error(), "meta.app_secrets")
	require.Contains(t, errs[1].Error(), "meta.verify_tokens")
}

func TestFileEnvFlagsPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "relay.yaml", `
ingress: {listen: "127.0.0.1:1111", max_body_bytes: 4096}
meta: {verify_tokens: [tok], app_secrets: [s1]}
kafka: {brokers: ["k1:9092"], produce_timeout: 2s}
tenants: {file: t.yaml}
delivery: {enabled: false}
`)
	env := map[string]string{
		"RELAY_INGRESS_LISTEN":        "127.0.0.1:2222",
		"RELAY_KAFKA_BROKERS":         "k1:9092, k2:9092",
		"RELAY_META_APP_SECRETS":      "s2,s3",
		"RELAY_DELIVERY_ENABLED":      "true",
		"RELAY_KAFKA_PRODUCE_TIMEOUT": "3s",
	}
	c, err := Load(path, func(k string) string { return env[k] }, []string{"ingress.listen=127.0.0.1:3333", "delivery.max_attempts=4"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:3333", c.Ingress.Listen, "flag beats env beats file")
	require.Equal(t, 4096, c.Ingress.MaxBodyBytes, "file beats default")
	require.Equal(t, []string{"k1:9092", "k2:9092"}, c.Kafka.Brokers)
	require.Equal(t, []string{"s2", "s3"}, c.Meta.AppSecrets)
	require.Equal(t, 3*time.Second, c.Kafka.ProduceTimeout)
	require.True(t, c.Delivery.On())
	require.Equal(t, 4, c.Delivery.MaxAttempts)
	require.Equal(t, filepath.Join(dir, "t.yaml"), c.Tenants.File, "relative to the config file")
	require.Empty(t, c.Validate())
}

func TestSecretsFromFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "secrets", "# app secrets\nsecret-one\n\n  secret-two  \n")
	write(t, dir, "tokens", "tok\n")
	path := write(t, dir, "relay.yaml", "meta: {app_secrets_file: secrets, verify_tokens_file: tokens}\n")
	c, err := Load(path, noEnv, nil)
	require.NoError(t, err)
	require.Equal(t, []string{"secret-one", "secret-two"}, c.Meta.AppSecrets)
	require.Equal(t, []string{"tok"}, c.Meta.VerifyTokens)

	_, err = Load(write(t, dir, "bad.yaml", "meta: {app_secrets_file: nope}\n"), noEnv, nil)
	require.ErrorContains(t, err, "meta.app_secrets_file")
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		sets       []string
		env        map[string]string
		want       string
	}{
		{name: "bad yaml", yaml: "ingress: [\n", want: "relay.yaml"},
		{name: "bad set", sets: []string{"ingress.listen"}, want: "key=value"},
		{name: "unknown set key", sets: []string{"nope=1"}, want: "nope"},
		{name: "bad env", env: map[string]string{"RELAY_INGRESS_MAX_BODY_BYTES": "lots"}, want: "RELAY_INGRESS_MAX_BODY_BYTES"},
		// A blank broker list quietly switched a node to the embedded broker.
		{name: "blank list env", yaml: "kafka: {brokers: [k1:9092]}\n", env: map[string]string{"RELAY_KAFKA_BROKERS": " , "}, want: "RELAY_KAFKA_BROKERS"},
		{name: "blank list set", yaml: "kafka: {brokers: [k1:9092]}\n", sets: []string{"kafka.brokers="}, want: "kafka.brokers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(t, dir, "relay.yaml", tc.yaml)
			_, err := Load(path, func(k string) string { return tc.env[k] }, tc.sets)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestValidateNamesEveryField(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "relay.yaml", `
ingress: {listen: "nope", path: "webhooks", max_body_bytes: 10, tls: {cert_file: x.pem}, dedupe_size: 100000000}
admin: {listen: ":"}
kafka: {brokers: ["k1"], produce_timeout: -1s, flush_interval: 2s, flush_bytes: -1, max_in_flight: 100000, topics: {dlq: relay.events}}
delivery: {client_cert_file: c.pem, retry_initial: 1h, retry_max: 1m}
log: {level: loud, format: xml}
`)
	all := problemsOf(t, path)
	for _, field := range []string{
		"ingress.listen", "ingress.path", "ingress.max_body_bytes", "ingress.tls", "ingress.dedupe_size: at most 67108864", "admin.listen",
		"kafka.brokers[0]", "kafka.produce_timeout", "kafka.flush_interval: 2s is more than 1s", "kafka.flush_bytes: must be positive", "kafka.max_in_flight: 100000 is over the most allowed, 256", "kafka.topics.dlq", "meta.app_secrets", "meta.verify_tokens",
		"delivery: set both", "delivery.retry_initial", "log.level", "log.format",
	} {
		require.Contains(t, all, field)
	}
	require.Equal(t, all, problemsOf(t, path), "deterministic order, one line per problem")
}

// problemsOf loads the file at path and returns its problems, a line each.
func problemsOf(t *testing.T, path string) string {
	t.Helper()
	c, err := Load(path, noEnv, nil)
	require.NoError(t, err)
	var lines []string
	for _, e := range c.Validate() {
		lines = append(lines, e.Error())
	}
	return strings.Join(lines, "\n")
}

func TestFileProblemsAreReportedWithTheRest(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "relay.yaml", "ingress: {listne: x, listen: nope}\nkafka: {produce_timeout: soon, embedded: {dta_dir: x}}\nbogus: 1\n")
	all := problemsOf(t, path)
	require.Contains(t, all, "ingress.listne: unknown key (line 1)")
	require.Contains(t, all, "kafka.embedded.dta_dir: unknown key (line 2)")
	require.Contains(t, all, "bogus: unknown key (line 3)")
	require.Contains(t, all, "kafka.produce_timeout: cannot unmarshal !!str `soon` into time.Duration (a duration needs a unit, e.g. 30s) (line 2)")
	require.Contains(t, all, "ingress.listen", "the other problems are still reported")
	require.Contains(t, all, "meta.app_secrets")
}

// A value of the wrong type is reported under its key, as check-config's
// one line per problem promises, not only by its line.
func TestTypeProblemsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "relay.yaml", "ingress:\n  read_timeout: 30\n  max_body_bytes: abc\nmeta: {app_secrets: [[x]], verify_tokens: [a, b]}\n")
	all := problemsOf(t, path)
	require.Contains(t, all, "ingress.read_timeout: cannot unmarshal !!int `30` into time.Duration (a duration needs a unit, e.g. 30s) (line 2)")
	require.Contains(t, all, "ingress.max_body_bytes: cannot unmarshal !!str `abc` into int (line 3)")
	require.Contains(t, all, "meta.app_secrets: cannot unmarshal !!seq into string (line 4)")

	// Through an alias yaml names the anchor's line; the key at fault is
	// the one using it. A long value (yaml shortens it) is named too.
	path = write(t, dir, "alias.yaml", "ingress:\n  max_body_bytes: &n 30000\n  read_timeout: eight-seconds-or-so\nkafka:\n  produce_timeout: *n\n  client_id: &c abc\n  max_batch_bytes: *c\n")
	all = problemsOf(t, path)
	require.Contains(t, all, "kafka.produce_timeout: cannot unmarshal !!int `30000` into time.Duration (a duration needs a unit, e.g. 30s) (line 5)")
	require.Contains(t, all, "kafka.max_batch_bytes: cannot unmarshal !!str `abc` into int (line 7)")
	require.Contains(t, all, "ingress.read_timeout: cannot unmarshal !!str `eight-s...` into time.Duration")
	require.NotContains(t, all, "ingress.max_body_bytes:", "the anchor's key is fine")
	require.NotContains(t, all, "kafka.client_id:")
}

func TestKeysHaveEnvNames(t *testing.T) {
	keys := Keys()
	require.Contains(t, keys, [2]string{"kafka.embedded.data_dir", "RELAY_KAFKA_EMBEDDED_DATA_DIR"})
	require.Contains(t, keys, [2]string{"delivery.breaker.open_for", "RELAY_DELIVERY_BREAKER_OPEN_FOR"})
}

// A delivery timeout over half the grace period is valid but works
// against a clean shutdown (delivery drains for half of it): a warning,
// not an error; not with delivery off, nor with the defaults.
func TestWarnings(t *testing.T) {
	c, err := Load("", noEnv, nil)
	require.NoError(t, err)
	require.Empty(t, c.Warnings(), "the defaults")

	c, err = Load("", noEnv, []string{"delivery.timeout=20s", "shutdown.grace_period=30s"})
	require.NoError(t, err)
	w := c.Warnings()
	require.Len(t, w, 1)
	require.Contains(t, w[0], "delivery.timeout (20s) is over half of shutdown.grace_period (30s)")

	c, err = Load("", noEnv, []string{"delivery.timeout=20s", "shutdown.grace_period=30s", "delivery.enabled=false"})
	require.NoError(t, err)
	require.Empty(t, c.Warnings(), "delivery off")
}

// An empty item in a YAML list of secrets or tokens is refused by name: an
// empty verify token would complete a handshake that names none, and serve
// refused an empty secret only after check-config had said ok.
func TestEmptySecretOrTokenIsRefused(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "relay.yaml", "meta: {app_secrets: [s1, \"\"], verify_tokens: [\"\", tok]}\n")
	c, err := Load(path, noEnv, nil)
	require.NoError(t, err)
	var msgs []string
	for _, e := range c.Validate() {
		msgs = append(msgs, e.Error())
	}
	require.Equal(t, []string{"meta.app_secrets[1]: empty; remove it", "meta.verify_tokens[0]: empty; remove it"}, msgs)

	// The environment's form drops empty items: there they separate.
	c, err = Load("", func(k string) string {
		return map[string]string{"RELAY_META_APP_SECRETS": "s1,,", "RELAY_META_VERIFY_TOKENS": ",tok"}[k]
	}, nil)
	require.NoError(t, err)
	require.Empty(t, c.Validate())
	require.Equal(t, []string{"s1"}, c.Meta.AppSecrets)
	require.Equal(t, []string{"tok"}, c.Meta.VerifyTokens)
}

// Settings serve could never start with are refused by name, where they
// used to pass: a port out of range or taken by another of the relay's own
// listeners failed to bind, a body limit past Kafka's 32-bit message size
// overflowed the topics' limit, and a replication factor over 1 on the
// one-node embedded broker was retried for ever.
func TestValidateRefusesWhatCannotStart(t *testing.T) {
	dir := t.TempDir()
	path := write(t, dir, "relay.yaml", `
ingress: {listen: "127.0.0.1:99999", max_body_bytes: 9223372036854775807}
admin: {listen: "127.0.0.1:9092"}
kafka: {replication_factor: 3}
meta: {verify_tokens: [tok], app_secrets: [s1]}
`)
	require.Equal(t, strings.Join([]string{
		`ingress.listen: "127.0.0.1:99999": port 99999 is out of range (0 to 65535)`,
		`kafka.embedded.listen: "127.0.0.1:9092" is also admin.listen`,
		`ingress.max_body_bytes: 9223372036854775807 is over the most allowed, 1073741824 (Meta's bodies reach 3 MB: keep the default 8 MiB)`,
		`kafka.replication_factor: 3, but the embedded broker is one node: leave it 0 (or set kafka.brokers)`,
	}, "\n"), problemsOf(t, path))

	// Port 0 twice is two ports; with kafka.brokers the embedded broker's
	// address is not ours, and any replication factor is the cluster's.
	path = write(t, dir, "ok.yaml", `
ingress: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
kafka: {brokers: ["127.0.0.1:9090"], replication_factor: 3, embedded: {listen: "127.0.0.1:9090"}}
meta: {verify_tokens: [tok], app_secrets: [s1]}
`)
	require.Empty(t, problemsOf(t, path))

	// Forms of one address, and a wildcard over a specific one, cannot both
	// be bound either; a port too long for any integer is out of range.
	for _, tc := range []struct{ ingress, admin, want string }{
		{":8080", "0.0.0.0:8080", `admin.listen: "0.0.0.0:8080" takes the port of ingress.listen ":8080": both cannot be bound`},
		{"0.0.0.0:8080", "127.0.0.1:8080", `admin.listen: "127.0.0.1:8080" takes the port of ingress.listen "0.0.0.0:8080"`},
		{"localhost:8080", "127.0.0.1:8080", `admin.listen: "127.0.0.1:8080" takes the port of ingress.listen "localhost:8080"`},
		{"[::1]:8080", "[0::1]:8080", `admin.listen: "[0::1]:8080" takes the port of ingress.listen "[::1]:8080"`},
		{"127.0.0.1:8080", "127.0.0.1:99999999999999999999", `admin.listen: "127.0.0.1:99999999999999999999": port 99999999999999999999 is out of range`},
		{"127.0.0.1:8080", "127.0.0.1:08080", `admin.listen: "127.0.0.1:08080" takes the port of ingress.listen "127.0.0.1:8080"`},
		{"127.0.0.1:8080", "127.0.0.1:+8080", `admin.listen: "127.0.0.1:+8080" takes the port of ingress.listen "127.0.0.1:8080"`},
		{"127.0.0.1:8080", "127.0.0.1:-1", `admin.listen: "127.0.0.1:-1": port -1 is out of range`},
		{"127.0.0.1:80", "127.0.0.1:http", `admin.listen: "127.0.0.1:http" takes the port of ingress.listen "127.0.0.1:80"`},
		{"127.0.0.1:http", "127.0.0.1:http", `admin.listen: "127.0.0.1:http" is also ingress.listen`},
		{"[::1]:8080", "[::1%lo]:8080", `admin.listen: "[::1%lo]:8080" takes the port of ingress.listen "[::1]:8080"`},
		{"[fe80::1%a]:8080", "[fe80::1%b]:8080", ""}, // link-local: one per interface
		{"127.0.0.1:8080", "127.0.0.2:8080", ""},
		{"127.0.0.1:8080", "[::1]:8080", ""},
		{"localhost:8080", "[::1]:8080", ""}, // localhost binds 127.0.0.1 only
	} {
		path = write(t, dir, "listen.yaml", fmt.Sprintf(`
ingress: {listen: %q}
admin: {listen: %q}
meta: {verify_tokens: [tok], app_secrets: [s1]}
`, tc.ingress, tc.admin))
		if tc.want == "" {
			require.Empty(t, problemsOf(t, path), "%s and %s", tc.ingress, tc.admin)
		} else {
			require.Contains(t, problemsOf(t, path), tc.want)
		}
	}
}

// Every bad --set and RELAY_ variable is reported at once, not only the
// first: an operator fixing a command line learnt of one mistake per try.
func TestEveryBadOverrideIsReported(t *testing.T) {
	_, err := Load("", noEnv, []string{"ingress.listne=:8081", "kafka.flush_interval=soon", "delivery.enabled=false", "oops"})
	require.Error(t, err)
	msg := err.Error()
	require.Contains(t, msg, "--set ingress.listne: no such key")
	require.Contains(t, msg, "--set kafka.flush_interval:")
	require.Contains(t, msg, `--set "oops": want key=value`)
	require.NotContains(t, msg, "delivery.enabled")

	_, err = Load("", func(k string) string {
		return map[string]string{"RELAY_INGRESS_MAX_BODY_BYTES": "lots", "RELAY_DELIVERY_TIMEOUT": "1 minute"}[k]
	}, nil)
	require.Error(t, err)
	require.Contains(t, err.Error(), "RELAY_INGRESS_MAX_BODY_BYTES (ingress.max_body_bytes)")
	require.Contains(t, err.Error(), "RELAY_DELIVERY_TIMEOUT (delivery.timeout)")

	// Variables, flags and the file's own problems, all at once.
	path := write(t, t.TempDir(), "relay.yaml", "ingress: {listne: \":8081\"}\n")
	_, err = Load(path, func(k string) string {
		return map[string]string{"RELAY_INGRESS_MAX_BODY_BYTES": "lots"}[k]
	}, []string{"bogus=1"})
	require.Error(t, err)
	require.Contains(t, err.Error(), "RELAY_INGRESS_MAX_BODY_BYTES")
	require.Contains(t, err.Error(), "--set bogus: no such key")
	require.Contains(t, err.Error(), "ingress.listne: unknown key (line 1)")
}

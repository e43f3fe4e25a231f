package delivery

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/relaymw/relay/tenant"
	"github.com/relaymw/relay/tlsconf"
)

const (
	testEventsTopic  = "relay.events"
	testDLQTopic     = "relay.dlq"
	testTenantsTopic = "relay.tenants"

	// waitFor bounds every wait on a condition; tick is how often it is
	// checked.
	waitFor = 30 * time.Second
	tick    = 5 * time.Millisecond

	// testReceivedAtLayout is the ingress's relay-received-at layout
	// (relay.ReceivedAtLayout).
	testReceivedAtLayout = "2006-01-02T15:04:05.000000Z"
)

// testEnv is one relay's surroundings: a single-broker Kafka on loopback
// persisting into a temp dir, with relay.events, relay.dlq and
// relay.tenants; a development CA with the relay's client certificate; a
// tenants file and a real tenant.Registry over it.
type testEnv struct {
	t      *testing.T
	addr   string
	client *kafka.Client
	dir    string

	ca        *tlsconf.CA
	caFile    string // the CA instances' certificates and the relay's are issued by
	relayCert string
	relayKey  string
	tlsClient *tlsconf.Client

	tenantsFile string
	reg         *tenant.Registry
	dlq         *DLQ
}

func newTestEnv(t *testing.T, partitions int) *testEnv {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(t.TempDir()))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	e := &testEnv{t: t, addr: c.ListenAddrs()[0], dir: t.TempDir()}
	e.client = e.newClient()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: testEventsTopic, NumPartitions: partitions, ReplicationFactor: 1},
		{Topic: testDLQTopic, NumPartitions: 1, ReplicationFactor: 1},
		{Topic: testTenantsTopic, NumPartitions: 1, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}}},
	}})
	require.NoError(t, err)
	for name, err := range res.Errors {
		require.NoError(t, err, "create topic %s", name)
	}

	e.ca, err = tlsconf.NewCA("relay test CA")
	require.NoError(t, err)
	e.caFile = filepath.Join(e.dir, "ca.pem")
	require.NoError(t, os.WriteFile(e.caFile, e.ca.CertPEM(), 0o644))
	e.relayCert, e.relayKey = filepath.Join(e.dir, "relay-client.pem"), filepath.Join(e.dir, "relay-client-key.pem")
	e.writeRelayCert("relay")
	// Check the files at every handshake, so that a replaced certificate
	// is used by the very next connection.
	e.tlsClient, err = tlsconf.NewClient(e.relayCert, e.relayKey, tlsconf.CheckInterval(0), tlsconf.HandshakeTimeout(5*time.Second))
	require.NoError(t, err)

	e.tenantsFile = filepath.Join(e.dir, "tenants.yaml")
	e.dlq = &DLQ{Client: e.client, Topic: testDLQTopic, Events: testEventsTopic}
	return e
}

// newClient returns a kafka-go client with its own transport.
func (e *testEnv) newClient() *kafka.Client {
	tr := &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: time.Second}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &kafka.Client{Addr: kafka.TCP(e.addr), Transport: tr, Timeout: 10 * time.Second}
}

// writeRelayCert issues a client certificate with common name cn and
// writes it over the relay's client certificate files.
func (e *testEnv) writeRelayCert(cn string) {
	e.t.Helper()
	c, err := e.ca.IssueClient(cn)
	require.NoError(e.t, err)
	require.NoError(e.t, c.WriteFiles(e.relayCert, e.relayKey))
}

// tenantConf is one tenant of the tenants file.
type tenantConf struct {
	ID          string
	Account     string
	URL         string
	CAFile      string
	Secret      string
	MaxInFlight int
	// PreviousSecret, when set, is the tenant's previous_signing_secret.
	PreviousSecret string
}

// newSecret returns a signing secret: "whsec_" and the base64 of 32 random
// bytes.
func newSecret(t testing.TB) string {
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// setTenants writes the tenants file (atomically, as editors do) and
// reloads the registry, creating it on first use.
func (e *testEnv) setTenants(ts ...tenantConf) {
	e.t.Helper()
	var b strings.Builder
	b.WriteString("tenants:\n")
	for _, tc := range ts {
		fmt.Fprintf(&b, "  - id: %s\n    accounts: [%q]\n    instance:\n      mode: push\n      url: %q\n      ca_file: %q\n      signing_secret: %q\n      max_in_flight: %d\n",
			tc.ID, tc.Account, tc.URL, tc.CAFile, tc.Secret, tc.MaxInFlight)
		if tc.PreviousSecret != "" {
			fmt.Fprintf(&b, "      previous_signing_secret: %q\n", tc.PreviousSecret)
		}
	}
	tmp := e.tenantsFile + ".tmp"
	require.NoError(e.t, os.WriteFile(tmp, []byte(b.String()), 0o600))
	require.NoError(e.t, os.Rename(tmp, e.tenantsFile))
	if e.reg == nil {
		admin := &tenant.Admin{Client: e.newClient(), Brokers: []string{e.addr}, ReplicationFactor: 1}
		reg, err := tenant.NewRegistry(tenant.RegistryConfig{
			File:     e.tenantsFile,
			Assigner: &tenant.Assigner{Admin: admin, Topic: testTenantsTopic, Events: testEventsTopic},
		})
		require.NoError(e.t, err)
		e.reg = reg
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(e.t, e.reg.Reload(ctx))
}

// partition is the tenant's partition of relay.events.
// acmeInstance starts an instance answering with respond and makes it the
// only tenant's: "acme", account "1".
func (e *testEnv) acmeInstance(respond responder) *testInstance {
	e.t.Helper()
	inst := newInstance(e.t, e.ca, e.caFile, respond)
	e.setTenants(tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: newSecret(e.t)})
	return inst
}

func (e *testEnv) partition(id string) int {
	e.t.Helper()
	tn := e.reg.Snapshot().Tenant(id)
	require.NotNil(e.t, tn, "tenant %s", id)
	return int(tn.Partition)
}

// testEvent is one record the ingress would write into relay.events.
type testEvent struct {
	Tenant     string
	ID         string
	Account    string
	Object     string
	Value      []byte
	ReceivedAt time.Time // zero: now
}

func (ev testEvent) headers() []kafka.Header {
	at := ev.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	obj := ev.Object
	if obj == "" {
		obj = "page"
	}
	return []kafka.Header{
		{Key: HeaderTenant, Value: []byte(ev.Tenant)},
		{Key: HeaderObject, Value: []byte(obj)},
		{Key: HeaderAccount, Value: []byte(ev.Account)},
		{Key: HeaderEventID, Value: []byte(ev.ID)},
		{Key: HeaderReceivedAt, Value: []byte(at.UTC().Format(testReceivedAtLayout))},
	}
}

// simpleEvents returns n small events of tenant, ids "<prefix>-<i>".
func simpleEvents(tenantID, account, prefix string, n int) []testEvent {
	evs := make([]testEvent, n)
	for i := range evs {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		evs[i] = testEvent{
			Tenant: tenantID, ID: id, Account: account,
			Value: fmt.Appendf(nil, `{"object":"page","entry":[{"id":%q,"time":%d,"messaging":[{"message":{"mid":%q,"text":"n%d"}}]}]}`, account, 1718035200000+i, id, i),
		}
	}
	return evs
}

// produce writes evs into the partition of relay.events, in order, with
// acks=all; key = tenant id.
func (e *testEnv) produce(partition int, evs ...testEvent) {
	e.t.Helper()
	for start := 0; start < len(evs); start += 500 {
		chunk := evs[start:min(start+500, len(evs))]
		recs := make([]kafka.Record, len(chunk))
		for i, ev := range chunk {
			recs[i] = kafka.Record{Key: kafka.NewBytes([]byte(ev.Tenant)), Value: kafka.NewBytes(ev.Value), Headers: ev.headers(), Time: time.Now()}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := e.client.Produce(ctx, &kafka.ProduceRequest{
			Topic: testEventsTopic, Partition: partition, RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(recs...),
		})
		cancel()
		require.NoError(e.t, err)
		require.NoError(e.t, res.Error)
	}
}

// rawRecord is one record as stored.
type rawRecord struct {
	Offset  int64
	Key     []byte
	Value   []byte
	Headers []kafka.Header
}

func (r rawRecord) header(name string) string {
	for _, h := range r.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// records reads a partition of topic from its start to its high watermark.
func (e *testEnv) records(topic string, partition int) []rawRecord {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []rawRecord
	offset := int64(0)
	for {
		res, err := e.client.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: partition, Offset: offset, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 50 * time.Millisecond,
		})
		require.NoError(e.t, err)
		require.NoError(e.t, res.Error)
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(e.t, err)
			if r.Offset < offset {
				continue
			}
			rr := rawRecord{Offset: r.Offset, Headers: r.Headers}
			if r.Key != nil {
				rr.Key, _ = io.ReadAll(r.Key)
			}
			if r.Value != nil {
				rr.Value, _ = io.ReadAll(r.Value)
			}
			out = append(out, rr)
			offset = r.Offset + 1
		}
		if offset >= res.HighWatermark {
			return out
		}
	}
}

// committed is the group's committed offset of a relay.events partition
// (-1: none).
func (e *testEnv) committed(group string, partition int) int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{testEventsTopic: {partition}}})
	require.NoError(e.t, err)
	require.NoError(e.t, res.Error)
	for _, p := range res.Topics[testEventsTopic] {
		if p.Partition == partition {
			require.NoError(e.t, p.Error)
			return p.CommittedOffset
		}
	}
	return -1
}

// deadLetters lists tenant's dead letters not yet redriven.
func (e *testEnv) deadLetters(tenantID string) []DeadLetter {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dls, err := e.dlq.List(ctx, tenantID)
	require.NoError(e.t, err)
	return dls
}

// hit is one request an instance received.
type hit struct {
	At     time.Time // when it arrived
	ID     string    // webhook-id
	Method string
	Body   []byte
	Header http.Header
	CN     string // the client certificate's common name
	TLS    uint16 // TLS version
	Status int    // what the instance answered
}

// responder decides an instance's answer; it may set headers on w and
// block (watching r.Context() and the instance's closing channel).
type responder func(w http.ResponseWriter, r *http.Request, h *hit) int

func answer(status int) responder {
	return func(http.ResponseWriter, *http.Request, *hit) int { return status }
}

// testInstance is a tenant's instance: an HTTPS server on 127.0.0.1 that
// requires a client certificate and records what it receives.
type testInstance struct {
	t       *testing.T
	srv     *httptest.Server
	URL     string
	closing chan struct{} // closed by close: blocked responders return
	once    sync.Once

	mu      sync.Mutex
	respond responder
	hits    []hit
	light   bool // record only At, ID and Status (throughput runs)
}

// newInstance starts an instance whose server certificate is issued by
// serverCA and that accepts client certificates issued by the CAs in
// clientCAFile.
func newInstance(t *testing.T, serverCA *tlsconf.CA, clientCAFile string, respond responder) *testInstance {
	t.Helper()
	return startInstance(t, nil, serverCA, clientCAFile, respond)
}

// startInstance is newInstance on a given listener (nil: a new one on
// 127.0.0.1:0).
func startInstance(t *testing.T, ln net.Listener, serverCA *tlsconf.CA, clientCAFile string, respond responder) *testInstance {
	t.Helper()
	dir := t.TempDir()
	cert, err := serverCA.IssueServer("127.0.0.1")
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, "instance.pem"), filepath.Join(dir, "instance-key.pem")
	require.NoError(t, cert.WriteFiles(certFile, keyFile))
	server, err := tlsconf.NewServer(certFile, keyFile, tlsconf.RequireClientCert(clientCAFile))
	require.NoError(t, err)

	in := &testInstance{t: t, respond: respond, closing: make(chan struct{})}
	in.srv = httptest.NewUnstartedServer(http.HandlerFunc(in.serve))
	if ln != nil {
		in.srv.Listener.Close()
		in.srv.Listener = ln
	}
	in.srv.TLS = server.Config()
	in.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected in some tests
	in.srv.StartTLS()
	in.URL = in.srv.URL + "/hooks/meta"
	t.Cleanup(in.close)
	return in
}

// close stops the instance: blocked responders return, the listener and
// every connection are closed.
func (in *testInstance) close() {
	in.once.Do(func() {
		close(in.closing)
		in.srv.Close()
	})
}

// reset forgets the requests received so far.
func (in *testInstance) reset() {
	in.mu.Lock()
	in.hits = nil
	in.mu.Unlock()
}

func (in *testInstance) serve(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	light := in.light
	in.mu.Unlock()
	h := hit{At: time.Now(), ID: r.Header.Get("webhook-id"), Method: r.Method}
	if light {
		_, _ = io.Copy(io.Discard, r.Body)
	} else {
		h.Header = r.Header.Clone()
		h.Body, _ = io.ReadAll(r.Body)
	}
	if r.TLS != nil {
		h.TLS = r.TLS.Version
		if len(r.TLS.PeerCertificates) > 0 {
			h.CN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
	}
	in.mu.Lock()
	respond := in.respond
	in.mu.Unlock()
	h.Status = respond(w, r, &h)
	in.mu.Lock()
	in.hits = append(in.hits, h)
	in.mu.Unlock()
	w.WriteHeader(h.Status)
}

// setLight makes the instance record only At, ID and Status of requests.
func (in *testInstance) setLight() {
	in.mu.Lock()
	in.light = true
	in.mu.Unlock()
}

func (in *testInstance) setRespond(r responder) {
	in.mu.Lock()
	in.respond = r
	in.mu.Unlock()
}

// allHits returns every request received, in order of their answers.
func (in *testInstance) allHits() []hit {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.hits)
}

// delivered returns the ids of the events the instance answered 2xx for,
// in the order of their first 2xx.
func (in *testInstance) delivered() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	seen := map[string]bool{}
	var ids []string
	for _, h := range in.hits {
		if h.Status >= 200 && h.Status < 300 && !seen[h.ID] {
			seen[h.ID] = true
			ids = append(ids, h.ID)
		}
	}
	return ids
}

// attemptsOf returns the requests carrying event id.
func (in *testInstance) attemptsOf(id string) []hit {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []hit
	for _, h := range in.hits {
		if h.ID == id {
			out = append(out, h)
		}
	}
	return out
}

func (in *testInstance) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.hits)
}

// waitDelivered waits until the instance answered 2xx for n events.
func (in *testInstance) waitDelivered(n int) {
	in.t.Helper()
	require.Eventually(in.t, func() bool { return len(in.delivered()) >= n }, waitFor, tick,
		"instance %s: want %d events delivered", in.URL, n)
}

// runner is a running consumer runtime with the instance sink.
type runner struct {
	t       *testing.T
	sink    *Sink
	metrics *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
	err     error
	stopped time.Duration
}

// testSinkConfig is the sink configuration of the tests: short delays.
func (e *testEnv) testSinkConfig(reg prometheus.Registerer) SinkConfig {
	return SinkConfig{
		Tenants:           e.reg,
		TLS:               e.tlsClient,
		DeadLetters:       e.dlq,
		Timeout:           2 * time.Second,
		MaxAttempts:       15,
		RetryInitial:      20 * time.Millisecond,
		RetryMax:          200 * time.Millisecond,
		Breaker:           BreakerConfig{Failures: 5, OpenFor: 300 * time.Millisecond},
		ConfigPoll:        50 * time.Millisecond,
		UnknownTenantWait: 300 * time.Millisecond,
		Metrics:           NewSinkMetrics(reg),
		Logger:            testLogger(),
	}
}

// testLogger discards, unless DELIVERY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("DELIVERY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs the runtime with an instance sink in group until stop (or the
// end of the test). sinkCfg and rtCfg may adjust the configurations.
func (e *testEnv) start(group string, sinkCfg func(*SinkConfig), rtCfg func(*RuntimeConfig)) *runner {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	sc := e.testSinkConfig(reg)
	if sinkCfg != nil {
		sinkCfg(&sc)
	}
	sink, err := NewSink(sc)
	require.NoError(e.t, err)
	rc := RuntimeConfig{
		Brokers:        []string{e.addr},
		Group:          group,
		Topic:          testEventsTopic,
		Module:         sink,
		CommitInterval: 100 * time.Millisecond,
		FetchMaxWait:   200 * time.Millisecond,
		Drain:          5 * time.Second,
		Metrics:        NewRuntimeMetrics(reg),
		Logger:         testLogger(),
	}
	if rtCfg != nil {
		rtCfg(&rc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{t: e.t, sink: sink, metrics: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, rc) }()
	e.t.Cleanup(func() { r.stop() })
	return r
}

// stop cancels the runtime and waits for Run to return; it returns Run's
// error. Calling it again returns the same.
func (r *runner) stop() error {
	r.once.Do(func() {
		start := time.Now()
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = errors.New("runtime did not stop within 30s")
		}
		r.stopped = time.Since(start)
		r.sink.Close()
	})
	return r.err
}

// gauge returns the value of the metric name whose labels include labels.
func (r *runner) gauge(name string, labels ...string) float64 {
	r.t.Helper()
	return metricValue(r.t, r.metrics, name, labels...)
}

func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, err := gatherValue(g, name, labels...)
	require.NoError(t, err)
	return v
}

// gatherValue returns the value of the metric name whose labels include
// labels (name, value, name, value…), 0 if there is none.
func gatherValue(g prometheus.Gatherer, name string, labels ...string) (float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), nil
			case m.Counter != nil:
				return m.Counter.GetValue(), nil
			}
		}
	}
	return 0, nil
}

// fixture is one Meta webhook entry, as the ingress writes it into a
// record: {"object":<object>,"entry":[<entry>]}.
type fixture struct {
	Name    string
	Object  string
	Account string
	Value   []byte
}

// metaFixtures splits testdata/meta/*.json into one record value per entry.
func metaFixtures(t *testing.T) []fixture {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "meta", "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out []fixture
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		var body struct {
			Object json.RawMessage   `json:"object"`
			Entry  []json.RawMessage `json:"entry"`
		}
		require.NoError(t, json.Unmarshal(data, &body), f)
		var object string
		require.NoError(t, json.Unmarshal(body.Object, &object))
		for i, entry := range body.Entry {
			var id struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(entry, &id)
			var v bytes.Buffer
			v.WriteString(`{"object":`)
			v.Write(body.Object)
			v.WriteString(`,"entry":[`)
			v.Write(entry)
			v.WriteString(`]}`)
			out = append(out, fixture{Name: fmt.Sprintf("%s#%d", filepath.Base(f), i), Object: object, Account: id.ID, Value: v.Bytes()})
		}
	}
	return out
}

// bareCluster is a one-broker kfake cluster with one topic, for tests of
// the runtime with a module of their own (no sink, no instances).
type bareCluster struct {
	t       *testing.T
	c       *kfake.Cluster
	client  *kafka.Client
	topic   string
	metrics *prometheus.Registry // the latest run's
}

func newBareCluster(t *testing.T, topic string, partitions int32) *bareCluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	tr := &kafka.Transport{MetadataTTL: 200 * time.Millisecond}
	t.Cleanup(tr.CloseIdleConnections)
	return &bareCluster{t: t, c: c, topic: topic, client: &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Timeout: 10 * time.Second, Transport: tr}}
}

// produce writes values to partition p, in order.
func (b *bareCluster) produce(p int, values ...string) {
	b.t.Helper()
	recs := make([]kafka.Record, len(values))
	for i, v := range values {
		recs[i] = kafka.Record{Value: kafka.NewBytes([]byte(v))}
	}
	res, err := b.client.Produce(context.Background(), &kafka.ProduceRequest{
		Topic: b.topic, Partition: p, RequiredAcks: kafka.RequireAll, Records: kafka.NewRecordReader(recs...),
	})
	require.NoError(b.t, err)
	require.NoError(b.t, res.Error)
}

// run runs the runtime with mod in group until stop (or the test's end).
func (b *bareCluster) run(group string, mod Module) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.metrics = prometheus.NewRegistry()
	metrics := NewRuntimeMetrics(b.metrics)
	go func() {
		done <- Run(ctx, RuntimeConfig{
			Brokers: b.c.ListenAddrs(), Group: group, Topic: b.topic, Module: mod,
			CommitInterval: 50 * time.Millisecond, Drain: time.Second,
			Metrics: metrics, Logger: testLogger(),
		})
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	b.t.Cleanup(stop)
	return stop
}

// committed returns group's committed offset of partition p, -1 if none.
func (b *bareCluster) committed(group string, p int) int64 {
	res, err := b.client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{b.topic: {p}}})
	require.NoError(b.t, err)
	for _, po := range res.Topics[b.topic] {
		if po.Partition == p {
			return po.CommittedOffset
		}
	}
	return -1
}

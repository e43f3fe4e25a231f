package main

// Helpers for the process-level end-to-end tests of relay serve: the relay
// binary is built once in TestMain, and each test runs it as a child process
// on loopback ports of its own, posts to it over HTTP and reads Kafka back
// with kafka-go (or kcat).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/relaymw/relay/tlsconf"
)

// testAppSecret is the Meta app secret the fixtures are signed with.
const testAppSecret = "test_app_secret"

// testVerifyToken is the verify token of the test configurations.
const testVerifyToken = "e2e-verify-token"

// relayBin is the relay binary built by TestMain.
var relayBin string

func TestMain(m *testing.M) {
	os.Exit(runTestMain(m))
}

func runTestMain(m *testing.M) int {
	if os.Getenv(signalChildEnv) != "" {
		return m.Run() // a child process of a signal test: no relay needed
	}
	dir, err := os.MkdirTemp("", "relay-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	relayBin = filepath.Join(dir, "relay")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: loopback:", err)
		return 1
	}
	deadPort = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := []string{"build", "-o", relayBin}
	if raceEnabled {
		// The tests run with -race: so does the relay under test, so that
		// a data race in the server fails the test that triggered it.
		args = append(args, "-race")
	}
	args = append(args, ".")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build of the relay failed:", err)
		return 1
	}
	return m.Run()
}

// fixturesDir is the repository's Meta fixtures folder.
var fixturesDir = filepath.Join("..", "..", "testdata", "meta")

// readFixture returns a fixture's exact bytes.
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixturesDir, name))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

// sign returns the X-Hub-Signature-256 value of body under secret.
func sign(body []byte, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// eventID is what relay-event-id must be for a record value: the first 16
// bytes of its SHA-256, in hex.
func eventID(value []byte) string {
	sum := sha256.Sum256(value)
	return hex.EncodeToString(sum[:16])
}

// ---- tenants ----

// testTenant is one tenant of a test's tenants file.
type testTenant struct {
	ID       string
	Accounts []string
	// URL, CAFile and Secret are the tenant's instance settings; empty
	// means instanceURL(ID), no ca_file (system roots) and the default
	// development secret.
	URL, CAFile, Secret string
}

// The tenants of the example tenants.yaml, which the fixtures route to.
var (
	tenantAcme   = testTenant{ID: "acme", Accounts: []string{"104857392810345", "17841405822304914", "106540352242922"}}
	tenantGlobex = testTenant{ID: "globex", Accounts: []string{"209384756102938"}}
)

// deadPort is a loopback port nothing listens on (it was free when the
// tests started): tenants' instances are there, so that delivery, which
// is not under test here, fails fast and stays on this machine.
var deadPort int

// instanceURL is a tenant's instance URL in the test tenants files.
func instanceURL(id string) string {
	return fmt.Sprintf("https://127.0.0.1:%d/%s", deadPort, id)
}

// tenantsYAML renders a valid tenants file.
func tenantsYAML(tenants ...testTenant) string {
	var b strings.Builder
	b.WriteString("tenants:\n")
	for _, t := range tenants {
		fmt.Fprintf(&b, "  - id: %s\n    accounts: [", t.ID)
		for j, a := range t.Accounts {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%q", a)
		}
		url, secret, ca := instanceURL(t.ID), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", ""
		if t.URL != "" {
			url = t.URL
		}
		if t.Secret != "" {
			secret = t.Secret
		}
		if t.CAFile != "" {
			ca = fmt.Sprintf(", ca_file: %q", t.CAFile)
		}
		fmt.Fprintf(&b, "]\n    instance: {mode: push, url: %q%s, signing_secret: %q}\n", url, ca, secret)
	}
	return b.String()
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path, as an operator or a config management tool would.
func writeFileAtomic(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
}

// ---- the relay process ----

// relayOptions are what a test sets in its relay.yaml; zero values mean
// the test default.
type relayOptions struct {
	Tenants        []testTenant  // default acme and globex
	MaxBodyBytes   int           // default 8 MiB
	GracePeriod    time.Duration // default 10s
	ReloadInterval time.Duration // default 2s
	ProduceTimeout time.Duration // default 5s
	RetryAfter     time.Duration // default 5s (the relay's default)
	// Brokers, when set, makes the relay use that Kafka instead of its
	// embedded broker.
	Brokers []string
	// IngressTLS, when set, is the ingress's certificate and key files.
	IngressTLS *tlsconf.FilePair
	// Delivery, when set, is the delivery section as a YAML flow mapping,
	// e.g. `{client_cert_file: /x/relay-client.pem, retry_initial: 50ms}`;
	// empty leaves every delivery key at its default.
	Delivery string
}

// relayEnv is one relay installation: a folder holding relay.yaml,
// tenants.yaml and the embedded broker's data, and the loopback addresses
// it listens on. It outlives the processes started on it, so that a test
// can restart the relay on the same data.
type relayEnv struct {
	t                     *testing.T
	opts                  relayOptions
	Dir                   string
	ConfigPath            string
	TenantsPath           string
	DataDir               string
	Ingress, Admin, Kafka string // host:port

	procs []*relayProc
}

// newRelayEnv writes a configuration into a fresh temporary folder.
func newRelayEnv(t *testing.T, opts relayOptions) *relayEnv {
	t.Helper()
	if opts.Tenants == nil {
		opts.Tenants = []testTenant{tenantAcme, tenantGlobex}
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.GracePeriod == 0 {
		opts.GracePeriod = 10 * time.Second
	}
	if opts.ReloadInterval == 0 {
		opts.ReloadInterval = 2 * time.Second
	}
	if opts.ProduceTimeout == 0 {
		opts.ProduceTimeout = 5 * time.Second
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = 5 * time.Second
	}
	dir := t.TempDir()
	e := &relayEnv{
		t: t, opts: opts, Dir: dir,
		ConfigPath:  filepath.Join(dir, "relay.yaml"),
		TenantsPath: filepath.Join(dir, "tenants.yaml"),
		DataDir:     filepath.Join(dir, "data", "kafka"),
	}
	e.pickPorts()
	if err := os.WriteFile(e.TenantsPath, []byte(tenantsYAML(opts.Tenants...)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range e.procs {
			p.stop()
		}
		for i, p := range e.procs {
			// The relay is built with -race when the tests are.
			if strings.Contains(p.Stderr(), "WARNING: DATA RACE") {
				t.Errorf("relay process %d (pid %d) reported a data race", i+1, p.pid())
			}
		}
		if t.Failed() {
			for i, p := range e.procs {
				t.Logf("---- relay process %d (pid %d) stderr ----\n%s", i+1, p.pid(), p.Stderr())
			}
		}
	})
	return e
}

// pickPorts takes three free loopback ports and writes relay.yaml.
func (e *relayEnv) pickPorts() {
	e.Ingress, e.Admin = freeAddr(e.t), freeAddr(e.t)
	if len(e.opts.Brokers) == 0 {
		e.Kafka = freeAddr(e.t)
	} else {
		e.Kafka = e.opts.Brokers[0]
	}
	e.writeConfig()
}

func (e *relayEnv) writeConfig() {
	o := e.opts
	ingressTLS := ""
	if o.IngressTLS != nil {
		ingressTLS = fmt.Sprintf("\n  tls: {cert_file: %q, key_file: %q}", o.IngressTLS.Cert, o.IngressTLS.Key)
	}
	brokers := "[]"
	if len(o.Brokers) > 0 {
		brokers = `["` + strings.Join(o.Brokers, `", "`) + `"]`
	}
	cfg := fmt.Sprintf(`# written by the e2e tests
ingress:
  listen: %s
  path: /webhooks/meta
  max_body_bytes: %d
  retry_after: %s%s
admin:
  listen: %s
meta:
  verify_tokens: [%q]
  app_secrets: [%q]
kafka:
  brokers: %s
  embedded: {listen: %s, data_dir: ./data/kafka}
  topics: {events: relay.events, unrouted: relay.unrouted, dlq: relay.dlq, tenants: relay.tenants}
  produce_timeout: %s
tenants:
  file: tenants.yaml
  reload_interval: %s
log:
  format: text
  level: info
shutdown:
  grace_period: %s
`, e.Ingress, o.MaxBodyBytes, o.RetryAfter, ingressTLS, e.Admin, testVerifyToken, testAppSecret, brokers, e.Kafka,
		o.ProduceTimeout, o.ReloadInterval, o.GracePeriod)
	if o.Delivery != "" {
		cfg += "delivery: " + o.Delivery + "\n"
	}
	if err := os.WriteFile(e.ConfigPath, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// URL is the webhook endpoint.
func (e *relayEnv) URL() string { return "http://" + e.Ingress + "/webhooks/meta" }

// relayProc is one running relay serve process.
type relayProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when the process was waited for
	state  *os.ProcessState
}

// start runs relay serve on e and waits until /readyz answers 200. When a
// port was taken in the meantime (the relay exits at once saying so), it
// takes new ports and tries again, but only on a first start: a restart
// keeps its addresses.
func (e *relayEnv) start() *relayProc {
	e.t.Helper()
	for attempt := 1; ; attempt++ {
		p := e.spawn()
		err := p.waitReady(e.Admin, 20*time.Second)
		if err == nil {
			return p
		}
		if attempt < 3 && len(e.procs) == 1 && p.exited() && strings.Contains(p.Stderr(), "address already in use") {
			e.t.Logf("relay could not bind (%v); retrying on other ports", err)
			e.procs = e.procs[:0]
			e.pickPorts()
			continue
		}
		e.t.Fatalf("relay did not become ready: %v", err)
	}
}

// spawn starts relay serve without waiting for it.
func (e *relayEnv) spawn(extraArgs ...string) *relayProc {
	e.t.Helper()
	args := append([]string{"serve", "--config", e.ConfigPath}, extraArgs...)
	cmd := exec.Command(relayBin, args...)
	cmd.Dir = e.Dir
	cmd.Env = cleanEnv()
	p := &relayProc{t: e.t, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.stderr
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start relay: %v", err)
	}
	e.procs = append(e.procs, p)
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p
}

// cleanEnv is the test's environment without RELAY_* variables, so that a
// developer's shell does not change what the tests run.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RELAY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func (p *relayProc) pid() int {
	if p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stderr is everything the process logged so far.
func (p *relayProc) Stderr() string { return p.stderr.String() }

func (p *relayProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls GET /readyz until it answers 200.
func (p *relayProc) waitReady(admin string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 3 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("relay exited before it was ready (%v)", p.state)
		}
		resp, err := c.Get("http://" + admin + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no 200 from /readyz within %v (last: %s)", timeout, last)
}

// signal sends sig to the process.
func (p *relayProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		p.t.Fatalf("signal %v to relay: %v", sig, err)
	}
}

// kill SIGKILLs the process and waits for it.
func (p *relayProc) kill() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("relay did not die of SIGKILL within 10s")
	}
}

// wait waits for the process to exit, up to timeout; it reports whether it
// did.
func (p *relayProc) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop ends the process if it still runs: SIGTERM, then SIGKILL after 15s.
func (p *relayProc) stop() {
	if p.exited() || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.wait(15 * time.Second) {
		return
	}
	p.t.Errorf("relay (pid %d) ignored SIGTERM for 15s; killing it", p.pid())
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// waitLog waits until the process's log holds substr.
func (p *relayProc) waitLog(substr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Stderr(), substr) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Contains(p.Stderr(), substr)
}

// syncBuffer is a bytes.Buffer safe for the process's writers and the
// test's readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ---- HTTP ----

// httpClient talks to the relay's ingress; no proxies (loopback only).
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 32,
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		},
	}
}

// postResult is one POST's outcome.
type postResult struct {
	Status int
	Header http.Header
	Body   string
}

// post sends body to url with the given X-Hub-Signature-256 (none when
// empty).
func post(c *http.Client, url string, body []byte, signature string) (postResult, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return postResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("X-Hub-Signature-256", signature)
	}
	resp, err := c.Do(req)
	if err != nil {
		return postResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return postResult{}, err
	}
	return postResult{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, nil
}

// mustPost posts a body signed with the test app secret and requires want.
func mustPost(t testing.TB, c *http.Client, url string, body []byte, want int) postResult {
	t.Helper()
	r, err := post(c, url, body, sign(body, testAppSecret))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	if r.Status != want {
		t.Fatalf("POST: status %d (%q), want %d", r.Status, r.Body, want)
	}
	return r
}

// isConnRefused reports whether err is a refused TCP connection.
func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// ---- Kafka ----

// kRecord is one record read back from Kafka.
type kRecord struct {
	Topic     string
	Partition int
	Offset    int64
	Key       string
	Value     []byte
	Headers   map[string]string
	// HeaderKeys lists the header keys in order, repeats included.
	HeaderKeys []string
}

// kafkaClient returns a kafka-go client with its own transport, so that no
// metadata is cached across calls; close it with the returned func.
func kafkaClient(addr string) (*kafka.Client, func()) {
	tr := &kafka.Transport{DialTimeout: 3 * time.Second, MetadataTTL: 100 * time.Millisecond}
	return &kafka.Client{Addr: kafka.TCP(addr), Transport: tr, Timeout: 10 * time.Second}, tr.CloseIdleConnections
}

// partitionCount reads how many partitions topic has (0: no such topic).
func partitionCount(t testing.TB, addr, topic string) int {
	t.Helper()
	c, done := kafkaClient(addr)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	for _, tp := range md.Topics {
		if tp.Name == topic {
			if tp.Error != nil {
				if errors.Is(tp.Error, kafka.UnknownTopicOrPartition) {
					return 0
				}
				t.Fatalf("metadata of %s: %v", topic, tp.Error)
			}
			return len(tp.Partitions)
		}
	}
	return 0
}

// offsets returns each partition's first offset and high watermark.
func offsets(t testing.TB, addr, topic string) (first, high []int64) {
	t.Helper()
	n := partitionCount(t, addr, topic)
	if n == 0 {
		return nil, nil
	}
	c, done := kafkaClient(addr)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reqs []kafka.OffsetRequest
	for p := range n {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("list offsets of %s: %v", topic, err)
	}
	first, high = make([]int64, n), make([]int64, n)
	seen := 0
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("list offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		if po.Partition < 0 || po.Partition >= n {
			continue
		}
		first[po.Partition], high[po.Partition] = po.FirstOffset, po.LastOffset
		seen++
	}
	if seen != n {
		t.Fatalf("list offsets of %s: %d partitions answered, want %d", topic, seen, n)
	}
	return first, high
}

// readTopic reads every record of every partition of topic, from the
// first offset up to the high watermark.
func readTopic(t testing.TB, addr, topic string) []kRecord {
	t.Helper()
	first, high := offsets(t, addr, topic)
	var out []kRecord
	for p := range first {
		if high[p] > first[p] {
			out = append(out, readPartition(t, addr, topic, p)...)
		}
	}
	return out
}

func readPartition(t testing.TB, addr, topic string, partition int) []kRecord {
	t.Helper()
	c, done := kafkaClient(addr)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kRecord
	offset := kafka.FirstOffset
	for {
		res, err := c.Fetch(ctx, &kafka.FetchRequest{
			Topic: topic, Partition: partition, Offset: offset,
			MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("fetch %s/%d at %d: %v", topic, partition, offset, err)
		}
		if res.Error != nil {
			t.Fatalf("fetch %s/%d at %d: %v", topic, partition, offset, res.Error)
		}
		if offset < 0 {
			offset = res.LogStartOffset
		}
		got := 0
		for {
			r, err := res.Records.ReadRecord()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read %s/%d: %v", topic, partition, err)
			}
			if r.Offset < offset {
				continue
			}
			rec := kRecord{Topic: topic, Partition: partition, Offset: r.Offset, Headers: map[string]string{}}
			if r.Key != nil {
				k, _ := io.ReadAll(r.Key)
				rec.Key = string(k)
			}
			if r.Value != nil {
				rec.Value, _ = io.ReadAll(r.Value)
			}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = string(h.Value)
				rec.HeaderKeys = append(rec.HeaderKeys, h.Key)
			}
			out = append(out, rec)
			offset = r.Offset + 1
			got++
		}
		if cl, ok := res.Records.(io.Closer); ok {
			cl.Close()
		}
		if offset >= res.HighWatermark {
			return out
		}
		if got == 0 {
			t.Fatalf("fetch %s/%d at %d: no records below the high watermark %d", topic, partition, offset, res.HighWatermark)
		}
	}
}

// topicCounts is the number of records in each of the relay's two output
// topics.
func topicCounts(t testing.TB, addr string) (events, unrouted int) {
	t.Helper()
	sum := func(topic string) int {
		first, high := offsets(t, addr, topic)
		n := 0
		for p := range first {
			n += int(high[p] - first[p])
		}
		return n
	}
	return sum("relay.events"), sum("relay.unrouted")
}

// ---- entries ----

// webhookEntries splits a fixture independently of the relay: the object's
// raw JSON token and each entry's exact bytes.
func webhookEntries(t testing.TB, body []byte) (object json.RawMessage, entries []json.RawMessage) {
	t.Helper()
	var w struct {
		Object json.RawMessage   `json:"object"`
		Entry  []json.RawMessage `json:"entry"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		t.Fatalf("fixture is not a webhook: %v", err)
	}
	return w.Object, w.Entry
}

// expectedValue is the record value the contract promises for one entry.
func expectedValue(object, entry []byte) []byte {
	v := []byte(`{"object":`)
	v = append(v, object...)
	v = append(v, `,"entry":[`...)
	v = append(v, entry...)
	return append(v, `]}`...)
}

// midOf returns the first messaging[].message.mid of a record value.
func midOf(value []byte) string {
	var v struct {
		Entry []struct {
			Messaging []struct {
				Message struct {
					Mid string `json:"mid"`
				} `json:"message"`
			} `json:"messaging"`
		} `json:"entry"`
	}
	if json.Unmarshal(value, &v) != nil {
		return ""
	}
	for _, e := range v.Entry {
		for _, m := range e.Messaging {
			if m.Message.Mid != "" {
				return m.Message.Mid
			}
		}
	}
	return ""
}

// messengerBody is a Messenger message webhook to page (a Page id) whose
// message id is mid: messenger_message.json with those two changed.
func messengerBody(t testing.TB, page, mid string) []byte {
	t.Helper()
	b := readFixture(t, "messenger_message.json")
	b = bytes.ReplaceAll(b, []byte("104857392810345"), []byte(page))
	b = bytes.Replace(b, []byte("m_Ae3kXq1b9Lz0mVq7dRk2sTqZb8nW4yPc"), []byte(mid), 1)
	return b
}

// ---- metrics ----

// metric returns the value of the sample named series (e.g.
// `relay_tenant_reloads_total{result="failed"}`) on /metrics, or -1 when
// it is absent.
func metric(t testing.TB, admin, series string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[len(series):]), 64)
			if err != nil {
				t.Fatalf("metric %s: %q: %v", series, line, err)
			}
			return v
		}
	}
	return -1
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/valyala/fasthttp"
)

const (
	testSecret   = "test_app_secret"
	testEvents   = "relay.events"
	testUnrouted = "relay.unrouted"
)

// fixture is one Meta body from testdata/meta with its signature.
type fixture struct {
	name      string
	body      []byte
	signature string
}

// loadFixtures reads the Meta fixtures and their signatures from
// SIGNATURES.txt.
func loadFixtures(t testing.TB) []fixture {
	t.Helper()
	dir := filepath.Join("..", "testdata", "meta")
	f, err := os.Open(filepath.Join(dir, "SIGNATURES.txt"))
	require.NoError(t, err)
	defer f.Close()
	var out []fixture
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || !strings.HasPrefix(fields[2], "sha256=") {
			continue
		}
		body, err := os.ReadFile(filepath.Join(dir, fields[0]))
		require.NoError(t, err)
		out = append(out, fixture{name: fields[0], body: body, signature: fields[2]})
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, out)
	return out
}

func fixtureByName(t testing.TB, name string) fixture {
	for _, f := range loadFixtures(t) {
		if f.name == name {
			return f
		}
	}
	t.Fatalf("no fixture %s", name)
	return fixture{}
}

// mapResolver is a fixed account → tenant table.
type mapResolver map[string]struct {
	tenant    string
	partition int32
}

func (m mapResolver) Resolve(account []byte) (string, int32, bool) {
	r, ok := m[string(account)]
	return r.tenant, r.partition, ok
}

// testTenants: acme owns the fixtures' Page, Instagram and WhatsApp phone
// accounts, globex the second Page of batch_two_pages.json.
var testTenants = mapResolver{
	"104857392810345":   {"acme", 0},
	"17841405822304914": {"acme", 0},
	"106540352242922":   {"acme", 0},
	"209384756102938":   {"globex", 1},
}

// broker is a kfake cluster persisting into a temp dir, restartable on the
// same port and data.
type broker struct {
	t    testing.TB
	dir  string
	port int
	c    *kfake.Cluster
}

func startBroker(t testing.TB) *broker {
	t.Helper()
	b := &broker{t: t, dir: t.TempDir()}
	b.start()
	t.Cleanup(b.stop)
	admin, done := b.client()
	defer done()
	res, err := admin.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: testEvents, NumPartitions: 2, ReplicationFactor: 1},
		{Topic: testUnrouted, NumPartitions: 1, ReplicationFactor: 1},
	}})
	require.NoError(t, err)
	for _, err := range res.Errors {
		require.NoError(t, err)
	}
	return b
}

func (b *broker) start() {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(b.dir)}
	if b.port != 0 {
		opts = append(opts, kfake.Ports(b.port))
	}
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.c, err = kfake.NewCluster(opts...)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the old listener's port may linger briefly
	}
	require.NoError(b.t, err)
	_, port, _ := net.SplitHostPort(b.c.ListenAddrs()[0])
	b.port = atoiT(b.t, port)
}

func (b *broker) stop() {
	if b.c != nil {
		b.c.Close()
		b.c = nil
	}
}

func (b *broker) addr() string { return b.c.ListenAddrs()[0] }

// client returns a kafka-go client of b with a transport of its own, and
// the function that closes its connections. Not kafka-go's default
// transport: that one keeps each address's metadata for 6 s, and a broker
// that got the port of an earlier test's cluster (closed, its port free)
// was sent to that cluster's controller, on a port nobody listens on any
// more: "connection refused".
func (b *broker) client() (*kafka.Client, func()) {
	tr := &kafka.Transport{}
	return &kafka.Client{Addr: kafka.TCP(b.addr()), Timeout: 10 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

// setMaxMessageBytes sets topic's max.message.bytes, the largest record
// batch the broker accepts for it.
func (b *broker) setMaxMessageBytes(topic string, n int) {
	b.t.Helper()
	admin, done := b.client()
	defer done()
	res, err := admin.IncrementalAlterConfigs(context.Background(), &kafka.IncrementalAlterConfigsRequest{
		Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: "max.message.bytes", Value: strconv.Itoa(n), ConfigOperation: kafka.ConfigOperationSet}},
		}},
	})
	require.NoError(b.t, err)
	for _, r := range res.Resources {
		require.NoError(b.t, r.Error)
	}
}

func atoiT(t testing.TB, s string) int {
	n := 0
	for _, c := range s {
		require.True(t, c >= '0' && c <= '9', "not a port: %s", s)
		n = n*10 + int(c-'0')
	}
	return n
}

// harness is an ingress served over real loopback HTTP, writing into a
// real broker.
type harness struct {
	t        testing.TB
	broker   *broker
	producer *Producer
	ingress  *Ingress
	url      string
	reg      *prometheus.Registry
	client   *fasthttp.Client
}

// brokerProducer starts a producer writing to b, with cfg's settings (its
// transport and address filled in); it is closed when the test ends.
func brokerProducer(t testing.TB, b *broker, cfg ProducerConfig) *Producer {
	t.Helper()
	transport := &kafka.Transport{MetadataTTL: time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	cfg.Transport, cfg.Addr = transport, kafka.TCP(b.addr())
	p, err := NewProducer(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func newHarness(t testing.TB, mutate func(*IngressConfig)) *harness {
	t.Helper()
	h := &harness{t: t, broker: startBroker(t), reg: prometheus.NewRegistry(), client: &fasthttp.Client{}}
	p := brokerProducer(t, h.broker, ProducerConfig{AckTimeout: 2 * time.Second, Metrics: NewProducerMetrics(h.reg)})
	h.producer = p
	v, err := NewVerifier([]string{"other_app_secret", testSecret})
	require.NoError(t, err)
	d, err := NewDedupe(1000)
	require.NoError(t, err)
	cfg := IngressConfig{
		Path:           "/webhooks/meta",
		VerifyTokens:   []string{"tok"},
		Verifier:       v,
		Resolver:       testTenants,
		Writer:         p,
		Dedupe:         d,
		EventsTopic:    testEvents,
		UnroutedTopic:  testUnrouted,
		ProduceTimeout: 3 * time.Second,
		Metrics:        NewMetrics(h.reg),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	in, err := NewIngress(cfg)
	require.NoError(t, err)
	h.ingress = in
	srv := in.NewServer(ServerConfig{MaxBodyBytes: 64 << 10, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	h.url = "http://" + ln.Addr().String() + "/webhooks/meta"
	return h
}

// post sends body with the given signature header ("" for none) and
// returns the status and answer.
func (h *harness) post(body []byte, signature string) (int, string) {
	h.t.Helper()
	req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.SetRequestURI(h.url)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	if signature != "" {
		req.Header.Set("X-Hub-Signature-256", signature)
	}
	req.SetBody(body)
	require.NoError(h.t, h.client.DoTimeout(req, res, 10*time.Second))
	return res.StatusCode(), string(res.Body())
}

// record is a fetched record with its bytes read out.
type record struct {
	partition int
	offset    int64
	key       string
	value     []byte
	headers   map[string]string
}

// records returns every record of the topic's first partitions, up to each
// one's high watermark, read back with kafka-go.
func records(t testing.TB, addr, topic string, partitions int) []record {
	t.Helper()
	transport := &kafka.Transport{} // fresh: no connection from before a broker restart
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second, Transport: transport}
	var out []record
	for p := range partitions {
		offset := int64(0)
		for {
			res, err := client.Fetch(context.Background(), &kafka.FetchRequest{
				Topic: topic, Partition: p, Offset: offset, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 100 * time.Millisecond,
			})
			require.NoError(t, err)
			require.NoError(t, res.Error)
			for {
				r, err := res.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				require.NoError(t, err)
				rec := record{partition: p, offset: r.Offset, headers: map[string]string{}}
				if r.Key != nil {
					key, err := io.ReadAll(r.Key)
					require.NoError(t, err)
					rec.key = string(key)
				}
				if r.Value != nil {
					rec.value, err = io.ReadAll(r.Value)
					require.NoError(t, err)
				}
				for _, h := range r.Headers {
					rec.headers[h.Key] = string(h.Value)
				}
				out = append(out, rec)
				offset = r.Offset + 1
			}
			if offset >= res.HighWatermark {
				break
			}
		}
	}
	return out
}

// produceAnswer answers a produce request itself: for each partition it
// names, one entry per code, in order (a broker names each once; several
// codes stage a misbehaving one).
func produceAnswer(req kmsg.Request, codes ...int16) *kmsg.ProduceResponse {
	r := req.(*kmsg.ProduceRequest)
	resp := r.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range r.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			for _, code := range codes {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, code
				st.Partitions = append(st.Partitions, sp)
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// startCluster starts a kfake cluster of n brokers holding topic, its
// leaders spread over them, as a real cluster's are.
func startCluster(t *testing.T, n int, partitions int32, topic string) *broker {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(n), kfake.DataDir(t.TempDir()), kfake.SeedTopics(partitions, topic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &broker{t: t, c: c}
}

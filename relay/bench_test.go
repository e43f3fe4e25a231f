package relay

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
)

// countingWriter acknowledges at once: it isolates the handler path, from
// raw request to the produce call, from Kafka.
type countingWriter struct{ records atomic.Int64 }

func (w *countingWriter) Produce(_ context.Context, b *Batch) error {
	w.records.Add(int64(len(b.Records)))
	return nil
}

// oneKB is a Messenger body of about 1 KB, as the load tool sends.
func oneKB(i int) []byte {
	text := strings.Repeat("lorem ipsum ", 60)
	return []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"104857392810345","time":%d,"messaging":[{"sender":{"id":"7391048572910384"},"recipient":{"id":"104857392810345"},"timestamp":1718035199871,"message":{"mid":"m_%016d","text":"%s"}}]}]}`, i, i, text))
}

func benchIngress(b *testing.B, w Writer, dedupe bool) (*Ingress, *fasthttp.RequestCtx) {
	v, err := NewVerifier([]string{testSecret})
	if err != nil {
		b.Fatal(err)
	}
	cfg := IngressConfig{
		Path: "/webhooks/meta", Verifier: v, Resolver: testTenants, Writer: w,
		EventsTopic: testEvents, UnroutedTopic: testUnrouted, Metrics: NewMetrics(prometheus.NewRegistry()),
	}
	if dedupe {
		cfg.Dedupe, _ = NewDedupe(1 << 16)
	}
	in, err := NewIngress(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return in, new(fasthttp.RequestCtx)
}

// BenchmarkIngressHandler is the handler path from a raw request to the
// produce call: signature, split, tenant lookup, record building.
func BenchmarkIngressHandler(b *testing.B) {
	for _, name := range []string{"messenger_message.json", "batch_two_pages.json", "whatsapp_message_and_status.json"} {
		b.Run(name, func(b *testing.B) {
			f := fixtureByName(b, name)
			in, ctx := benchIngress(b, &countingWriter{}, false)
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI("/webhooks/meta")
			ctx.Request.Header.Set("X-Hub-Signature-256", f.signature)
			ctx.Request.SetBody(f.body)
			b.SetBytes(int64(len(f.body)))
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				in.Handle(ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatal(ctx.Response.StatusCode())
				}
			}
		})
	}
	b.Run("1KB-unique", func(b *testing.B) {
		in, ctx := benchIngress(b, &countingWriter{}, false)
		bodies := make([][]byte, 4096)
		sigs := make([]string, len(bodies))
		for i := range bodies {
			bodies[i] = oneKB(i)
			sigs[i] = sign(testSecret, bodies[i])
		}
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/webhooks/meta")
		b.SetBytes(int64(len(bodies[0])))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			ctx.Request.Header.Set("X-Hub-Signature-256", sigs[i%len(bodies)])
			ctx.Request.SetBody(bodies[i%len(bodies)])
			ctx.Response.Reset()
			in.Handle(ctx)
		}
	})
}

// BenchmarkIngressKafka is the whole path in one process: parallel 1 KB
// requests through the handler into the embedded-style broker with acks=all.
func BenchmarkIngressKafka(b *testing.B) {
	br := startBroker(b)
	transport := &kafka.Transport{MetadataTTL: time.Second}
	defer transport.CloseIdleConnections()
	p, err := NewProducer(ProducerConfig{Transport: transport, Addr: kafka.TCP(br.addr())})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	in, _ := benchIngress(b, p, false)
	var n atomic.Int64
	b.SetBytes(int64(len(oneKB(0))))
	b.ReportAllocs()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		ctx := new(fasthttp.RequestCtx)
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/webhooks/meta")
		for pb.Next() {
			body := oneKB(int(n.Add(1)))
			ctx.Request.Header.Set("X-Hub-Signature-256", sign(testSecret, body))
			ctx.Request.SetBody(body)
			ctx.Response.Reset()
			in.Handle(ctx)
			if ctx.Response.StatusCode() != 200 {
				b.Error(ctx.Response.StatusCode())
				return
			}
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	body := oneKB(1)
	header := []byte(sign(testSecret, body))
	v, _ := NewVerifier([]string{testSecret})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(header, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSplitBody(b *testing.B) {
	body := oneKB(1)
	var bd Body
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := SplitBody(body, &bd); err != nil {
			b.Fatal(err)
		}
	}
}

// TestIngressHandlerAllocatesNothing: the handler path, from a raw request
// to the produce call, allocates nothing once its pooled state is warm.
func TestIngressHandlerAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are checked without -race: .ci/run runs this test again without it")
	}
	f := fixtureByName(t, "batch_two_pages.json")
	v, err := NewVerifier([]string{testSecret})
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewIngress(IngressConfig{
		Path: "/webhooks/meta", Verifier: v, Resolver: testTenants, Writer: &countingWriter{},
		EventsTopic: testEvents, UnroutedTopic: testUnrouted, Metrics: NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := new(fasthttp.RequestCtx)
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/webhooks/meta")
	ctx.Request.Header.Set("X-Hub-Signature-256", f.signature)
	ctx.Request.SetBody(f.body)
	in.Handle(ctx) // warm the pool
	allocs := testing.AllocsPerRun(200, func() {
		ctx.Response.Reset()
		in.Handle(ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatal(ctx.Response.StatusCode())
		}
	})
	if allocs != 0 {
		t.Fatalf("handler path allocates %.1f objects per request", allocs)
	}
}

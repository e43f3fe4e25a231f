package relay

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
)

// Resolver maps a Meta account id to the tenant that owns it.
type Resolver interface {
	Resolve(account []byte) (tenant string, partition int32, ok bool)
}

// Writer writes a batch durably; *Producer is the production one.
type Writer interface {
	Produce(ctx context.Context, b *Batch) error
}

// Record header names: part of the Kafka records contract.
const (
	HeaderTenant     = "relay-tenant"
	HeaderObject     = "relay-object"
	HeaderAccount    = "relay-account"
	HeaderEventID    = "relay-event-id"
	HeaderReceivedAt = "relay-received-at"
)

// ReceivedAtLayout is relay-received-at's format: RFC 3339 in UTC with
// microseconds, so end-to-end latency can be measured from it.
const ReceivedAtLayout = "2006-01-02T15:04:05.000000Z"

// IngressConfig configures an Ingress.
type IngressConfig struct {
	// Path is where Meta posts (and sends the GET handshake).
	Path string
	// VerifyTokens are accepted in the GET handshake's hub.verify_token.
	VerifyTokens []string
	// Verifier checks X-Hub-Signature-256.
	Verifier *Verifier
	// Resolver maps accounts to tenants; Ready reports whether it holds
	// tenants yet (until then every POST is answered 503, so that nothing
	// is written as unrouted only because the tenants were not loaded).
	Resolver Resolver
	Ready    func() bool
	// Writer writes the records.
	Writer Writer
	// Dedupe drops redeliveries; nil disables it.
	Dedupe *Dedupe
	// EventsTopic and UnroutedTopic are where routed and unrouted events go.
	EventsTopic   string
	UnroutedTopic string
	// ProduceTimeout bounds the wait for Kafka; past it the answer is 503.
	ProduceTimeout time.Duration
	// MaxRecordBytes, when set, is the largest record (with its batch's
	// header) the topics accept: their smallest max.message.bytes, when
	// that is below what max_body_bytes allows. A body with a larger entry
	// is refused whole (413) before anything is written: the broker would
	// refuse that record and take the body's other entries, again at every
	// retry.
	MaxRecordBytes int
	// RetryAfter is sent with every 503 (whole seconds, at least 1;
	// default 5s).
	RetryAfter time.Duration
	Metrics    *Metrics
	Logger     *slog.Logger
}

// Ingress is the webhook HTTP handler: the Meta handshake on GET, and on
// POST the signature check, the split into events, the tenant lookup and
// the durable write, answering 200 only after Kafka acknowledged every
// event of the body.
type Ingress struct {
	cfg        IngressConfig
	retryAfter string
	states     sync.Pool
}

// NewIngress returns an Ingress; Verifier, Resolver, Writer and Metrics are
// required.
func NewIngress(cfg IngressConfig) (*Ingress, error) {
	if cfg.Verifier == nil || cfg.Resolver == nil || cfg.Writer == nil || cfg.Metrics == nil {
		return nil, errors.New("ingress: verifier, resolver, writer and metrics are required")
	}
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	if cfg.ProduceTimeout <= 0 {
		cfg.ProduceTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	ra := int(cfg.RetryAfter / time.Second)
	return &Ingress{cfg: cfg, retryAfter: strconv.Itoa(max(ra, 1))}, nil
}

// Handle is the fasthttp handler.
func (in *Ingress) Handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	var code int
	switch {
	case string(ctx.Path()) != in.cfg.Path:
		code = fasthttp.StatusNotFound
		ctx.SetBodyString("not found\n")
	case ctx.IsPost():
		code = in.post(ctx, start)
	case ctx.IsGet():
		code = in.handshake(ctx)
	default:
		code = fasthttp.StatusMethodNotAllowed
		ctx.Response.Header.Set("Allow", "GET, POST")
		ctx.SetBodyString("method not allowed\n")
	}
	ctx.SetStatusCode(code)
	in.cfg.Metrics.observeRequest(code, time.Since(start))
}

// handshake answers Meta's subscription check: hub.challenge echoed when
// hub.verify_token is one of ours.
func (in *Ingress) handshake(ctx *fasthttp.RequestCtx) int {
	args := ctx.QueryArgs()
	token := args.Peek("hub.verify_token")
	ok := 0
	for _, t := range in.cfg.VerifyTokens {
		if t == "" {
			continue // never a token: it would match a handshake without one
		}
		ok |= subtle.ConstantTimeCompare(token, []byte(t))
	}
	if string(args.Peek("hub.mode")) != "subscribe" || ok != 1 {
		ctx.SetBodyString("forbidden\n")
		return fasthttp.StatusForbidden
	}
	ctx.SetContentType("text/plain")
	ctx.SetBody(args.Peek("hub.challenge"))
	return fasthttp.StatusOK
}

// reqState is one POST's working memory, pooled. Every byte a record points
// to lives in arena, never in fasthttp's buffers, so that a request that
// gave up waiting can leave its records to the producer safely.
type reqState struct {
	body    Body
	routes  []route
	arena   []byte
	headers []kafka.Header
	ids     []EventID
	batch   Batch
}

type route struct {
	tenant    string
	partition int32
	account   []byte
	routed    bool
}

func (in *Ingress) post(ctx *fasthttp.RequestCtx, start time.Time) int {
	body := ctx.PostBody()
	in.cfg.Metrics.bodyBytes.Observe(float64(len(body)))
	if err := in.cfg.Verifier.Verify(ctx.Request.Header.Peek("X-Hub-Signature-256"), body); err != nil {
		in.cfg.Metrics.signatureFailure(err)
		ctx.SetBodyString("invalid signature\n")
		return fasthttp.StatusUnauthorized
	}
	if !in.cfg.Ready() {
		return in.unavailable(ctx, "tenants not loaded yet\n")
	}

	st, _ := in.states.Get().(*reqState)
	if st == nil {
		st = new(reqState)
	}
	if err := SplitBody(body, &st.body); err != nil {
		in.release(st)
		ctx.SetBodyString(err.Error() + "\n")
		return fasthttp.StatusBadRequest
	}
	dups := in.build(st, start)
	if dups > 0 {
		in.cfg.Metrics.duplicates.Add(float64(dups))
	}
	if limit := in.cfg.MaxRecordBytes; limit > 0 {
		for i := range st.batch.Records {
			if n := batchHeaderLen + recordSize(&st.batch.Records[i]); n > limit {
				in.release(st)
				ctx.SetBodyString(fmt.Sprintf("an event of %d bytes is larger than the topics accept (%d)\n", n, limit))
				return fasthttp.StatusRequestEntityTooLarge
			}
		}
	}

	if len(st.batch.Records) > 0 {
		st.batch.Timeout = in.cfg.ProduceTimeout
		err := in.cfg.Writer.Produce(context.Background(), &st.batch)
		if err != nil {
			if errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				// The producer may still read st: leave it to the garbage collector.
				in.cfg.Logger.Warn("kafka did not acknowledge", "err", err, "timeout", in.cfg.ProduceTimeout, "events", len(st.batch.Records))
				return in.unavailable(ctx, "kafka too slow\n")
			}
			in.release(st)
			if errors.Is(err, ErrRecordTooLarge) {
				ctx.SetBodyString("event larger than the broker accepts\n")
				return fasthttp.StatusRequestEntityTooLarge
			}
			return in.unavailable(ctx, "kafka unavailable\n")
		}
		routed := 0
		for i := range st.batch.Records {
			if st.batch.Records[i].Topic == in.cfg.EventsTopic {
				routed++
			}
		}
		in.cfg.Metrics.written.Add(float64(routed))
		in.cfg.Metrics.unrouted.Add(float64(len(st.batch.Records) - routed))
		if in.cfg.Dedupe != nil {
			for _, id := range st.ids {
				in.cfg.Dedupe.Add(id)
			}
		}
	}
	in.release(st)
	ctx.SetBodyString("EVENT_RECEIVED")
	return fasthttp.StatusOK
}

func (in *Ingress) unavailable(ctx *fasthttp.RequestCtx, msg string) int {
	ctx.Response.Header.Set("Retry-After", in.retryAfter)
	ctx.SetBodyString(msg)
	return fasthttp.StatusServiceUnavailable
}

func (in *Ingress) release(st *reqState) {
	st.body.Reset()
	clear(st.routes)
	st.routes = st.routes[:0]
	st.arena = st.arena[:0]
	clear(st.headers)
	st.headers = st.headers[:0]
	st.ids = st.ids[:0]
	clear(st.batch.Records)
	st.batch.Records = st.batch.Records[:0]
	in.states.Put(st)
}

// Fixed parts of a record value: {"object":<object>,"entry":[<entry>]}.
const (
	valueHead = `{"object":`
	valueMid  = `,"entry":[`
	valueTail = `]}`
)

// build turns st.body's entries into records in st.batch, skipping those
// already written (returned as dups).
func (in *Ingress) build(st *reqState, received time.Time) (dups int) {
	b := &st.body
	// Pass 1: routes, and the arena size, so that the arena never moves
	// while records point into it.
	size := len(ReceivedAtLayout) + len(b.Object)
	for i := range b.Entries {
		e := &b.Entries[i]
		r := route{account: e.PhoneNumberID}
		if len(e.PhoneNumberID) > 0 {
			r.tenant, r.partition, r.routed = in.cfg.Resolver.Resolve(e.PhoneNumberID)
		}
		if !r.routed {
			r.account = e.ID
			r.tenant, r.partition, r.routed = in.cfg.Resolver.Resolve(e.ID)
			if !r.routed && len(e.PhoneNumberID) > 0 {
				r.account = e.PhoneNumberID // WhatsApp: report the number, as it is tried first
			}
		}
		st.routes = append(st.routes, r)
		size += len(valueHead) + len(b.ObjectRaw) + len(valueMid) + len(e.Raw) + len(valueTail) +
			2*len(EventID{}) + len(r.tenant) + len(r.account)
	}
	if cap(st.arena) < size {
		st.arena = make([]byte, 0, size)
	}
	if n := len(b.Entries) * 5; cap(st.headers) < n {
		st.headers = make([]kafka.Header, 0, n)
	}

	a := st.arena
	a = appendReceivedAt(a, received)
	receivedAt := a[0:len(a):len(a)]
	n := len(a)
	a = append(a, b.Object...)
	object := a[n:len(a):len(a)]

	for i := range b.Entries {
		e, r := &b.Entries[i], &st.routes[i]
		n = len(a)
		a = append(a, valueHead...)
		a = append(a, b.ObjectRaw...)
		a = append(a, valueMid...)
		a = append(a, e.Raw...)
		a = append(a, valueTail...)
		value := a[n:len(a):len(a)]
		id := NewEventID(value)
		if in.cfg.Dedupe != nil && in.cfg.Dedupe.Seen(id) {
			a = a[:n] // not needed after all
			dups++
			continue
		}
		n = len(a)
		a = id.AppendHex(a)
		idHex := a[n:len(a):len(a)]
		n = len(a)
		a = append(a, r.account...)
		account := a[n:len(a):len(a)]

		h := len(st.headers)
		rec := Record{Value: value, Time: received}
		if r.routed {
			n = len(a)
			a = append(a, r.tenant...)
			tenant := a[n:len(a):len(a)]
			rec.Topic, rec.Partition, rec.Key = in.cfg.EventsTopic, r.partition, tenant
			st.headers = append(st.headers, kafka.Header{Key: HeaderTenant, Value: tenant})
		} else {
			rec.Topic, rec.Partition, rec.Key = in.cfg.UnroutedTopic, 0, account
		}
		st.headers = append(st.headers,
			kafka.Header{Key: HeaderObject, Value: object},
			kafka.Header{Key: HeaderAccount, Value: account},
			kafka.Header{Key: HeaderEventID, Value: idHex},
			kafka.Header{Key: HeaderReceivedAt, Value: receivedAt},
		)
		rec.Headers = st.headers[h:len(st.headers):len(st.headers)]
		st.batch.Records = append(st.batch.Records, rec)
		st.ids = append(st.ids, id)
	}
	st.arena = a
	return dups
}

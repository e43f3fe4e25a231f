package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	produceapi "github.com/segmentio/kafka-go/protocol/produce"
	"github.com/segmentio/kafka-go/protocol/rawproduce"
)

// Record is one Kafka record to write. Its slices are read by the producer
// until Produce returns.
type Record struct {
	Topic     string
	Partition int32
	Key       []byte
	Value     []byte
	Headers   []kafka.Header
	Time      time.Time
}

// Batch is what one caller hands the producer: the records of one webhook.
// It is acknowledged as a whole: Produce returns nil only when Kafka
// acknowledged every record with acks=all.
//
// A Batch may be reused after Produce returned nil or a Kafka error. After
// Produce returned a context error the producer may still be reading it:
// drop it (and the buffers its records point into) instead of reusing it.
type Batch struct {
	Records []Record
	// Timeout, when positive, bounds the wait for Kafka like a context
	// deadline would (ErrTimeout), with a timer the Batch keeps and reuses:
	// the ingress's per-request path allocates no context for it.
	Timeout time.Duration

	w     *waiter
	bytes int
}

// waiter is how a Produce call waits for its batch. The flusher's answer,
// the timeout and the caller's context race to finish it, and the first
// one wins: later ones find it finished and do nothing. Produce then
// blocks on one channel receive instead of a select over a timer channel
// (which puts the timer on the heap and takes it off again per call): at
// maximum ingest that select was 4 % of the relay's CPU.
type waiter struct {
	finished atomic.Bool
	done     chan error  // buffered: the winner never blocks
	timer    *time.Timer // time.AfterFunc: finish(ErrTimeout); nil until a Timeout is used
}

// finish answers the waiting caller with err, unless it was answered.
func (w *waiter) finish(err error) {
	if w.finished.CompareAndSwap(false, true) {
		w.done <- err
	}
}

// cancel finishes w without an answer (its caller stopped waiting); it
// reports whether it did.
func (w *waiter) cancel() bool { return w.finished.CompareAndSwap(false, true) }

// ProducerConfig configures a Producer. The zero value of every field but
// Transport and Addr means its default.
type ProducerConfig struct {
	// Transport is the kafka-go transport the produce requests go through.
	Transport *kafka.Transport
	// Addr is the bootstrap address, e.g. kafka.TCP("127.0.0.1:9092").
	Addr net.Addr
	// MaxInFlight bounds concurrent produce requests (default 2). While
	// they are all busy, new records wait and go out together in the next
	// request: group commit.
	MaxInFlight int
	// FlushInterval is the least time between the starts of two flushes of
	// one flusher unless FlushBytes are queued sooner (there are
	// MaxInFlight flushers; a flush is one produce request per leader
	// broker); records that arrive meanwhile go out together in the next
	// flush. A record that finds a flusher idle for longer is sent at once.
	// Zero or negative: no interval, a flusher sends as soon as it is free.
	// A broker's cost is mostly per request and per partition batch, so
	// fewer, larger requests cost less per record (docs/DESIGN.md, "Group
	// commit").
	FlushInterval time.Duration
	// FlushBytes ends a pause early: once this many bytes are queued (keys,
	// values and headers, as MaxPendingBytes counts them), a pausing
	// flusher sends them at once. Under load a flush then carries about
	// FlushBytes and clients stop waiting out the interval; at lower rates
	// the interval still gathers. Zero or negative: a pause always lasts
	// until FlushInterval.
	FlushBytes int
	// MaxBatchBytes bounds one partition's record batch in one request
	// (default 1 MiB, under Kafka's default message.max.bytes).
	MaxBatchBytes int
	// MaxRequestBytes bounds one produce request (default 16 MiB).
	MaxRequestBytes int
	// MaxPendingBytes bounds the records waiting for a request; past it
	// Produce fails at once with ErrOverloaded (default 64 MiB).
	MaxPendingBytes int
	// AckTimeout is how long the broker may take to acknowledge a request
	// (default 5s).
	AckTimeout time.Duration
	// Logger receives the producer's logs (default: discarded).
	Logger *slog.Logger
	// Metrics, when set, receives produce latency, batch sizes and errors.
	Metrics *ProducerMetrics
}

func (c *ProducerConfig) setDefaults() {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 16 << 20
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = 64 << 20
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Producer writes batches of records to Kafka with acks=all and group
// commit: a fixed set of flusher goroutines each take everything queued,
// send it as one multi-partition produce request per leader broker, and
// acknowledge each batch when its records are acknowledged. With no load a
// batch is sent as soon as it arrives; under load batches grow while the
// previous requests are in flight and while a flusher waits out its
// FlushInterval, or until FlushBytes are queued.
type Producer struct {
	cfg    ProducerConfig
	client *kafka.Client

	mu           sync.Mutex
	cond         *sync.Cond
	queue        []*Batch
	pendingBytes int
	closed       bool
	stop         chan struct{} // closed by Close: flushers pause no more
	// full gets a token when the queue grows past FlushBytes: it wakes a
	// pausing flusher, which checks the queue again (a token may be stale).
	full chan struct{}

	leaders leaderCache
	wg      sync.WaitGroup

	failures failureLog
	// maxBatch bounds one partition's batch: baseBatch (MaxBatchBytes, or
	// less: LimitBatchBytes), or less until restoreAt (unix ns, 0: not
	// lowered) after the broker refused a batch as too large.
	maxBatch, baseBatch, restoreAt atomic.Int64
	boundMu                        sync.Mutex // serializes changes to the three
}

// LimitBatchBytes lowers the bound of one partition's batch to n when the
// topics accept no more (their max.message.bytes): a batch is refused
// whole, so records that each fit must not be batched past it.
func (p *Producer) LimitBatchBytes(n int) {
	p.boundMu.Lock()
	defer p.boundMu.Unlock()
	if n > 0 && int64(n) < p.baseBatch.Load() {
		p.baseBatch.Store(int64(n))
		p.maxBatch.Store(min(p.maxBatch.Load(), int64(n)))
	}
}

// batchBoundHold is how long a batch bound lowered after a refusal holds:
// a topic's limit lowered for a moment, or a refusal that was not about
// size, must not keep batches small for good.
const batchBoundHold = time.Minute

// lowerBatchBound lowers the batch bound to n for batchBoundHold.
func (p *Producer) lowerBatchBound(n int) {
	p.boundMu.Lock()
	defer p.boundMu.Unlock()
	if n > 0 && int64(n) < p.maxBatch.Load() {
		p.maxBatch.Store(int64(n))
	}
	p.restoreAt.Store(time.Now().Add(batchBoundHold).UnixNano())
}

// batchBound returns the bound of one partition's batch for a flush
// starting now, back at baseBatch once a lowered bound's hold ended.
func (p *Producer) batchBound(now time.Time) int {
	if at := p.restoreAt.Load(); at != 0 && now.UnixNano() > at {
		p.boundMu.Lock()
		if at := p.restoreAt.Load(); at != 0 && now.UnixNano() > at { // not renewed meanwhile
			p.restoreAt.Store(0)
			p.maxBatch.Store(p.baseBatch.Load())
		}
		p.boundMu.Unlock()
	}
	return int(p.maxBatch.Load())
}

var _ Writer = (*Producer)(nil)

// NewProducer starts a producer's flushers. Close stops them.
func NewProducer(cfg ProducerConfig) (*Producer, error) {
	if cfg.Transport == nil || cfg.Addr == nil {
		return nil, errors.New("producer: transport and address are required")
	}
	cfg.setDefaults()
	p := &Producer{
		cfg:    cfg,
		client: &kafka.Client{Addr: cfg.Addr, Transport: cfg.Transport},
		stop:   make(chan struct{}),
		full:   make(chan struct{}, 1),
	}
	p.maxBatch.Store(int64(cfg.MaxBatchBytes))
	p.baseBatch.Store(int64(cfg.MaxBatchBytes))
	p.cond = sync.NewCond(&p.mu)
	p.leaders.client = p.client
	p.wg.Add(cfg.MaxInFlight)
	for range cfg.MaxInFlight {
		go p.flushLoop()
	}
	return p, nil
}

// Produce queues b and waits until Kafka acknowledged all its records, the
// write failed, b.Timeout passed (ErrTimeout), or ctx is done. It never answers success for a record
// Kafka did not acknowledge.
func (p *Producer) Produce(ctx context.Context, b *Batch) error {
	if len(b.Records) == 0 {
		return nil
	}
	w := b.w
	if w == nil {
		w = &waiter{done: make(chan error, 1)}
		b.w = w
	}
	w.finished.Store(false)
	b.bytes = 0
	for i := range b.Records {
		b.bytes += recordSize(&b.Records[i])
	}
	if b.Timeout > 0 {
		if w.timer == nil {
			w.timer = time.AfterFunc(b.Timeout, func() { w.finish(ErrTimeout) })
		} else {
			w.timer.Reset(b.Timeout)
		}
	}

	p.mu.Lock()
	var err error
	switch {
	case p.closed:
		err = ErrClosed
	case p.pendingBytes > 0 && p.pendingBytes+b.bytes > p.cfg.MaxPendingBytes:
		err = ErrOverloaded
	}
	if err != nil {
		p.mu.Unlock()
		b.release(true) // no flusher holds b
		return err
	}
	p.queue = append(p.queue, b)
	p.pendingBytes += b.bytes
	if p.overFlushBytes() && p.pendingBytes-b.bytes < p.cfg.FlushBytes {
		p.signalFull() // this batch took the queue across FlushBytes
	}
	p.cond.Signal()
	p.mu.Unlock()

	if ctxDone := ctx.Done(); ctxDone == nil {
		err = <-w.done
	} else {
		select {
		case err = <-w.done:
		case <-ctxDone:
			if !w.cancel() {
				err = <-w.done // answered just now
				break
			}
			// The flusher may still hold b: the caller drops it.
			if w.timer != nil {
				w.timer.Stop()
			}
			return fmt.Errorf("produce: %w", ctx.Err())
		}
	}
	// After ErrTimeout the flusher may still hold b and reach its waiter:
	// leave both alone (the caller drops b). Otherwise the flusher is done
	// with b.
	b.release(err != ErrTimeout)
	return err
}

// release stops b's timer once its Produce call is answered. A timer that
// fired or is firing may still run its function on b's waiter, which is
// then dropped if reuse allows (b gets a new one next time).
func (b *Batch) release(reuse bool) {
	if t := b.w.timer; t != nil && !t.Stop() && reuse {
		b.w = nil
	}
}

// WaitPartitions waits until the producer's view of the cluster shows at
// least n partitions of topic, so that records for a newly added partition
// are not refused.
func (p *Producer) WaitPartitions(ctx context.Context, topic string, n int) error {
	for {
		if got, err := p.leaders.partitions(ctx, topic); err == nil && got >= n {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for %d partitions of %s: %w", n, topic, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops accepting batches, lets the flushers send what is queued, and
// waits for them until ctx is done.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	if !p.closed {
		close(p.stop)
	}
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		select {
		case <-done: // finished just as time ran out
			return nil
		default:
		}
		return fmt.Errorf("producer close: %w", ctx.Err())
	}
}

// pauseFor is how long a flusher whose last flush began at started waits
// before the next.
func (p *Producer) pauseFor(started time.Time) time.Duration {
	if started.IsZero() { // also keeps a negative interval from overflowing
		return 0
	}
	return p.cfg.FlushInterval - time.Since(started)
}

// signalFull wakes a pausing flusher to check whether FlushBytes are
// queued.
func (p *Producer) signalFull() {
	select {
	case p.full <- struct{}{}:
	default: // a token is already waiting
	}
}

// overFlushBytes reports whether FlushBytes or more are queued: reason
// enough to end a pause. p.mu is held.
func (p *Producer) overFlushBytes() bool {
	return p.cfg.FlushBytes > 0 && p.pendingBytes >= p.cfg.FlushBytes
}

// queueFull is overFlushBytes for a caller not holding p.mu.
func (p *Producer) queueFull() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.overFlushBytes()
}

// pause waits until wait has passed, Close is called or a token says
// FlushBytes may be queued, and reports whether it was the last (the caller
// checks the queue: the token may be stale). t is the flusher's timer, made
// on first use.
func (p *Producer) pause(t **time.Timer, wait time.Duration) (full bool) {
	if *t == nil {
		*t = time.NewTimer(wait)
	} else {
		(*t).Reset(wait)
	}
	select {
	case <-(*t).C:
		return false
	case <-p.stop:
		return false
	case <-p.full:
		return true
	}
}

// flushLoop is one flusher: take what is queued, send it, acknowledge it;
// then pause until FlushInterval has passed since the send began, or until
// FlushBytes are queued.
func (p *Producer) flushLoop() {
	defer p.wg.Done()
	var (
		f flush
		// started is when this flusher's last flush began, or zero when
		// there is nothing to pause for: no flush yet, a full one (more
		// is waiting), or one that sent nothing.
		started time.Time
		pause   *time.Timer
	)
	for {
		cut := false // the pause ended on a FlushBytes token
		if wait := p.pauseFor(started); wait > 0 && !p.queueFull() {
			cut = p.pause(&pause, wait)
		}
		p.mu.Lock()
		if cut && !p.overFlushBytes() && !p.closed {
			// The token was stale (the queue filled while no flusher
			// paused and was taken since), or another flusher took the
			// queue first: pause for the rest of the interval.
			p.mu.Unlock()
			continue
		}
		for len(p.queue) == 0 && !p.closed {
			p.cond.Wait()
		}
		if len(p.queue) == 0 {
			p.mu.Unlock()
			return
		}
		f.take(p)
		started = time.Time{}
		if len(p.queue) == 0 && len(f.batches) > 0 {
			started = time.Now()
		}
		if p.overFlushBytes() {
			p.signalFull() // what this flush could not take may end another's pause
		}
		p.mu.Unlock()
		if len(f.batches) > 0 {
			p.send(&f)
		}
	}
}

// maxKeptBuf bounds the encoded batches' buffer a flusher keeps between
// flushes: a flush under load is about FlushBytes, one that drains a
// backlog up to MaxRequestBytes.
const maxKeptBuf = 1 << 20

// flush is one flusher's scratch space, reused from request to request.
type flush struct {
	// abandoned: a request of this flush was given up on while kafka-go
	// may still be reading it (set from concurrent round trips).
	abandonedMu sync.Mutex
	abandoned   bool

	batches  []*Batch
	parts    []part
	index    map[partKey]int // (topic, partition, round) → parts index
	last     map[partKey]int // (topic, partition) → its latest round
	byLeader map[int32][]*part
	recs     []wireRecord
	buf      []byte // the parts' encoded record batches, one flush's worth
	// refused holds the callers (indexes in batches) refused as too large
	// in an earlier round: their records of later rounds are not sent.
	refused map[int]error
}

type partKey struct {
	topic     string
	partition int32
	round     int
}

// part is the records of one partition in one request.
type part struct {
	partKey
	bytes int
	recs  []*wireRecord
	// batch is the part's record batch, encoded into flush.buf[start:end]
	// just before its request is sent; kafka-go copies it from there.
	start, end int
	batch      bytes.Reader
	err        error
}

// wireRecord is one record of a flush and the part that carries it.
type wireRecord struct {
	src   *Record
	part  int
	batch int // its caller's: the index of its Batch in flush.batches
	// resolved: the record was sent again apart from its part
	// (resolveTooLarge), and err, not its part's, is its outcome.
	resolved bool
	err      error
}

// take moves queued batches into f, up to one request's worth. p.mu is held.
func (f *flush) take(p *Producer) {
	f.batches = f.batches[:0]
	n, bytes := 0, 0
	for _, b := range p.queue {
		if len(f.batches) > 0 && bytes+b.bytes > p.cfg.MaxRequestBytes {
			break
		}
		n++
		p.pendingBytes -= b.bytes
		if b.w.finished.Load() {
			continue // its caller gave up; do not write what we answered 503 for
		}
		bytes += b.bytes
		f.batches = append(f.batches, b)
	}
	rest := copy(p.queue, p.queue[n:])
	clear(p.queue[rest:])
	p.queue = p.queue[:rest]
}

// send writes f's batches and acknowledges each one.
func (p *Producer) send(f *flush) {
	start := time.Now()
	f.group(p.batchBound(start))
	f.buf = f.buf[:0]

	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckTimeout+time.Second)
	defer cancel()
	maxRound := 0
	for i := range f.parts {
		maxRound = max(maxRound, f.parts[i].round)
	}
	var failed error
	for round := 0; round <= maxRound; round++ {
		// A partition whose earlier round failed sends nothing more in
		// this flush: its later records must not land before the earlier
		// ones (the caller gets an error and Meta retries the whole body).
		// Past the deadline, nothing more is sent at all.
		for i := range f.parts {
			pt := &f.parts[i]
			if pt.round != round {
				continue
			}
			if err := ctx.Err(); err != nil {
				pt.err = fmt.Errorf("produce: %w", err)
			} else if err := f.failedBefore(pt); err != nil {
				pt.err = err
			} else if len(f.refused) > 0 {
				f.dropRefused(pt)
			}
		}
		p.sendRound(ctx, f, round)
		err := p.resolveTooLarge(ctx, f, round)
		if err == nil {
			err = f.roundErr(round)
		}
		if err != nil && failed == nil {
			failed = err
		}
	}
	p.failures.report(p.cfg.Logger, failed, len(f.recs))
	if m := p.cfg.Metrics; m != nil {
		m.observe(time.Since(start), len(f.recs), failed)
	}

	// Acknowledge: a batch fails if any partition holding one of its
	// records failed. The records were copied into f.buf before any request
	// went out, so the batches are free once answered. If a request was
	// handed to kafka-go and then given up on, kafka-go may still be copying
	// it from f.buf: f's scratch is then dropped, not reused.
	ri := 0
	for _, b := range f.batches {
		var err error
		for range b.Records {
			w := &f.recs[ri]
			e := f.parts[w.part].err
			if w.resolved {
				e = w.err
			}
			// A record too large for good decides: retrying the body
			// cannot help, whatever else failed with it.
			if e != nil && (err == nil || errors.Is(e, ErrRecordTooLarge)) {
				err = e
			}
			ri++
		}
		b.w.finish(err)
	}
	if f.abandoned {
		*f = flush{}
		return
	}
	if cap(f.buf) > maxKeptBuf {
		f.buf = nil // a backlog's flush: do not hold its size for good
	}
	clear(f.batches)
	clear(f.refused)
	for i := range f.recs {
		f.recs[i] = wireRecord{}
	}
	for i := range f.parts {
		clear(f.parts[i].recs)
	}
}

func (f *flush) markAbandoned() {
	f.abandonedMu.Lock()
	f.abandoned = true
	f.abandonedMu.Unlock()
}

// resolveTooLarge settles the parts of round the broker refused as too
// large, and returns the first error their records got. A refused batch of
// several callers' records does not say whose is too large, if any
// (records that each fit may be batched past a topic's limit that serve
// could not read, or that was lowered since). The callers' records are
// sent again, in order, split only between callers: in batches of at most
// half the refused size, halved again at each refusal, down to one
// caller's. Only a caller whose records the broker refuses on their own
// gets ErrRecordTooLarge (413, retrying cannot help), with none of them
// written, so that Meta's retry of its body writes nothing twice; the
// others are written. A refused caller's records never land, so the
// partition's later records go on past them; any other failure stops
// them, to keep the order. The batch bound is then lowered for a while.
func (p *Producer) resolveTooLarge(ctx context.Context, f *flush, round int) (failed error) {
	for i := range f.parts {
		pt := &f.parts[i]
		if pt.round != round || !errors.Is(pt.err, ErrRecordTooLarge) {
			continue
		}
		if err := p.resolvePart(ctx, f, pt); failed == nil {
			failed = err
		}
	}
	return failed
}

// resolvePart settles one refused part (see resolveTooLarge) and returns
// the first error its records got.
func (p *Producer) resolvePart(ctx context.Context, f *flush, pt *part) error {
	r := resolver{p: p, f: f, pt: pt}
	refused := pt.end - pt.start - 4 // less the batch's size field
	groups := callerGroups(pt.recs)
	if len(groups) == 1 {
		r.settle(pt.recs, pt.err)
		r.refusedAlone = true
	} else {
		r.resend(ctx, groups, refused/2)
	}
	pt.err = r.stop
	if len(groups) > 1 && r.minRefused == 0 {
		r.minRefused = refused // no smaller batch of several callers was refused
	}
	if r.minRefused == 0 || r.stop != nil {
		return r.failed
	}
	if r.refusedAlone {
		// A caller too large alone may have been in every refused
		// batch: only their size is known to be too much.
		p.lowerBatchBound(r.minRefused - 1)
		return r.failed
	}
	// The limit lies between the largest batch written and the smallest
	// refused, at most twice apart: batches as large as the largest
	// written go through without a refusal.
	p.lowerBatchBound(max(r.largest, (r.minRefused-1)/2))
	p.cfg.Logger.Warn("the broker refused a batch of records that fit in smaller batches as too large: batches are kept smaller for a while (raise the topic's max.message.bytes, or lower kafka.max_batch_bytes)",
		"topic", pt.topic, "batch_bytes", refused)
	return r.failed
}

// resolver sends a refused part's records again, callers' groups at a time.
type resolver struct {
	p            *Producer
	f            *flush
	pt           *part
	stop         error // a failure other than too large: the rest is not sent
	refusedAlone bool  // some caller's records were refused on their own
	largest      int   // the largest batch written, in bytes
	minRefused   int   // the smallest batch of several callers refused, in bytes (0: none)
	failed       error // the first error settled
}

// resend writes groups' records in order, in batches of at most size
// bytes (estimated; at least one group each), halving size at each
// refusal of a batch of several groups.
func (r *resolver) resend(ctx context.Context, groups [][]*wireRecord, size int) {
	// A caller refused in another partition of this round is answered 413:
	// none of its records here may be written.
	kept := groups[:0]
	for _, g := range groups {
		if err, ok := r.f.refused[g[0].batch]; ok {
			r.settle(g, err)
			continue
		}
		kept = append(kept, g)
	}
	groups = kept
	for len(groups) > 0 {
		if r.stop == nil && ctx.Err() != nil {
			r.stop = fmt.Errorf("produce: %w", ctx.Err())
		}
		if r.stop != nil {
			for _, g := range groups {
				r.settle(g, r.stop)
			}
			return
		}
		n, bytes := 0, batchHeaderLen
		for ; n < len(groups); n++ {
			gs := 0
			for _, w := range groups[n] {
				gs += recordSize(w.src)
			}
			if n > 0 && bytes+gs > size {
				break
			}
			bytes += gs
		}
		var recs []*wireRecord
		for _, g := range groups[:n] {
			recs = append(recs, g...)
		}
		sub := &part{partKey: r.pt.partKey, recs: recs}
		sub.start = len(r.f.buf)
		r.f.buf = appendRecordBatch(r.f.buf, recs, time.Now().UnixMilli())
		sub.end = len(r.f.buf)
		r.p.roundTrip(ctx, r.f, []*part{sub})
		switch {
		case sub.err == nil:
			r.settle(recs, nil)
			r.largest = max(r.largest, sub.end-sub.start-4)
		case errors.Is(sub.err, ErrRecordTooLarge) && n > 1:
			if b := sub.end - sub.start - 4; r.minRefused == 0 || b < r.minRefused {
				r.minRefused = b
			}
			size = bytes / 2 // the same groups again, fewer at a time
			continue
		case errors.Is(sub.err, ErrRecordTooLarge):
			r.settle(recs, sub.err)
			r.refusedAlone = true
		default:
			r.stop = sub.err
			r.settle(recs, sub.err)
		}
		groups = groups[n:]
	}
}

// settle sets the outcome of records sent on their own; a caller refused
// as too large is remembered, so that none of its records is written.
func (r *resolver) settle(recs []*wireRecord, err error) {
	if r.failed == nil {
		r.failed = err
	}
	for _, w := range recs {
		w.resolved, w.err = true, err
		if errors.Is(err, ErrRecordTooLarge) {
			if r.f.refused == nil {
				r.f.refused = make(map[int]error)
			}
			r.f.refused[w.batch] = err
		}
	}
}

// dropRefused takes out of pt the records of callers refused as too large
// in an earlier round (a caller's records of a partition spill into later
// rounds): a caller answered 413 has none of its records written.
func (f *flush) dropRefused(pt *part) {
	kept := pt.recs[:0]
	for _, w := range pt.recs {
		if err, ok := f.refused[w.batch]; ok {
			w.resolved, w.err = true, err
			continue
		}
		kept = append(kept, w)
	}
	clear(pt.recs[len(kept):])
	pt.recs = kept
}

// callerGroups splits a part's records into runs of one caller's batch;
// a caller's records of a part are consecutive.
func callerGroups(recs []*wireRecord) [][]*wireRecord {
	var groups [][]*wireRecord
	for i, w := range recs {
		if i == 0 || w.batch != recs[i-1].batch {
			groups = append(groups, nil)
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], w)
	}
	return groups
}

// roundErr returns the first error of round's parts, nil if all were
// written (records resolveTooLarge settled have their own).
func (f *flush) roundErr(round int) error {
	for i := range f.parts {
		if pt := &f.parts[i]; pt.round == round && pt.err != nil {
			return pt.err
		}
	}
	return nil
}

// failedBefore returns the error of pt's partition in an earlier round of
// this flush, if it failed.
func (f *flush) failedBefore(pt *part) error {
	for r := pt.round - 1; r >= 0; r-- {
		if i, ok := f.index[partKey{topic: pt.topic, partition: pt.partition, round: r}]; ok && f.parts[i].err != nil {
			return f.parts[i].err
		}
	}
	return nil
}

// group lays out f's records by topic, partition and round: a partition
// whose records exceed maxBatch spills into later rounds, which are sent
// one after another so that the partition's order holds.
func (f *flush) group(maxBatch int) {
	n := 0
	for _, b := range f.batches {
		n += len(b.Records)
	}
	if cap(f.recs) < n {
		f.recs = make([]wireRecord, n)
	}
	f.recs = f.recs[:n]
	if f.index == nil {
		f.index, f.last, f.byLeader = make(map[partKey]int), make(map[partKey]int), make(map[int32][]*part)
	}
	clear(f.index)
	clear(f.last)
	f.parts = f.parts[:0]
	last := f.last
	i := 0
	for bi, b := range f.batches {
		for j := range b.Records {
			r := &b.Records[j]
			size := recordSize(r)
			k := partKey{topic: r.Topic, partition: r.Partition}
			k.round = last[k]
			pi, ok := f.index[k]
			// The batch's header counts too: Kafka's default
			// max.message.bytes (1 MiB + 12) leaves no room for it over
			// 1 MiB of records.
			if ok && f.parts[pi].bytes > 0 && batchHeaderLen+f.parts[pi].bytes+size > maxBatch {
				k.round++
				last[partKey{topic: r.Topic, partition: r.Partition}] = k.round
				ok = false
			}
			if !ok {
				if len(f.parts) < cap(f.parts) {
					f.parts = f.parts[:len(f.parts)+1] // keep the slot's recs capacity
				} else {
					f.parts = append(f.parts, part{})
				}
				pi = len(f.parts) - 1
				pt := &f.parts[pi]
				pt.partKey, pt.bytes, pt.err = k, 0, nil
				pt.recs = pt.recs[:0]
				f.index[k] = pi
			}
			w := &f.recs[i]
			w.src, w.part, w.batch = r, pi, bi
			f.parts[pi].recs = append(f.parts[pi].recs, w)
			f.parts[pi].bytes += size
			i++
		}
	}
}

// sendRound sends the parts of one round, one request per leader broker,
// concurrently, and records each part's outcome.
//
// kafka-go routes a produce request by its own cached metadata and refuses
// one whose partitions it sees led by different brokers, before sending
// anything. After a leader moved, its metadata and the leader cache may
// disagree for a moment: the parts of such a request are sent once more,
// grouped by the refreshed cache, rather than failing every partition
// that shared the request with the one that moved.
func (p *Producer) sendRound(ctx context.Context, f *flush, round int) {
	p.route(ctx, f, func(pt *part) bool { return pt.round == round && pt.err == nil && len(pt.recs) > 0 })
	// Encode every part of the round before any request goes out: the
	// requests read f.buf concurrently, so it must not grow under them.
	// A part sent once more keeps its bytes.
	now := time.Now().UnixMilli()
	for _, parts := range f.byLeader {
		for _, pt := range parts {
			pt.start = len(f.buf)
			f.buf = appendRecordBatch(f.buf, pt.recs, now)
			pt.end = len(f.buf)
		}
	}
	p.sendToLeaders(ctx, f)

	misrouted := func(pt *part) bool { return pt.round == round && errors.Is(pt.err, errMisrouted) }
	for i := range f.parts {
		if misrouted(&f.parts[i]) { // roundTrip invalidated the leader cache
			p.route(ctx, f, func(pt *part) bool {
				if !misrouted(pt) {
					return false
				}
				pt.err = nil
				return true
			})
			p.sendToLeaders(ctx, f)
			break
		}
	}
}

// route lays out the parts pick selects by leader broker in f.byLeader; a
// part whose leader is unknown gets the error.
func (p *Producer) route(ctx context.Context, f *flush, pick func(*part) bool) {
	for k, v := range f.byLeader {
		f.byLeader[k] = v[:0]
	}
	for i := range f.parts {
		pt := &f.parts[i]
		if !pick(pt) {
			continue
		}
		leader, err := p.leaders.leader(ctx, pt.topic, pt.partition)
		if err != nil {
			pt.err = err
			continue
		}
		f.byLeader[leader] = append(f.byLeader[leader], pt)
	}
}

// sendToLeaders sends f.byLeader's parts, one request per leader,
// concurrently when there are several.
func (p *Producer) sendToLeaders(ctx context.Context, f *flush) {
	var wg sync.WaitGroup
	var first []*part // sent on this goroutine: usually the only request
	for _, parts := range f.byLeader {
		switch {
		case len(parts) == 0:
		case first == nil:
			first = parts
		default:
			wg.Go(func() { p.roundTrip(ctx, f, parts) })
		}
	}
	if first != nil {
		p.roundTrip(ctx, f, first)
	}
	wg.Wait()
}

// roundTrip sends one produce request holding parts (all led by one
// broker) and sets each part's err.
func (p *Producer) roundTrip(ctx context.Context, f *flush, parts []*part) {
	req := &rawproduce.Request{
		Acks:    int16(kafka.RequireAll),
		Timeout: int32(p.cfg.AckTimeout / time.Millisecond),
	}
	for _, pt := range parts {
		pt.batch.Reset(f.buf[pt.start:pt.end])
		rp := rawproduce.RequestPartition{
			Partition: pt.partition,
			RecordSet: protocol.RawRecordSet{Reader: &pt.batch},
		}
		if n := len(req.Topics); n > 0 && req.Topics[n-1].Topic == pt.topic {
			req.Topics[n-1].Partitions = append(req.Topics[n-1].Partitions, rp)
		} else {
			req.Topics = append(req.Topics, rawproduce.RequestTopic{Topic: pt.topic, Partitions: []rawproduce.RequestPartition{rp}})
		}
	}
	m, err := p.cfg.Transport.RoundTrip(ctx, p.cfg.Addr, req)
	if err != nil {
		if refused := (*rawproduce.Error)(nil); errors.As(err, &refused) {
			// kafka-go would not route it (see sendRound): nothing was sent.
			err = fmt.Errorf("produce: %w: %w", errMisrouted, err)
		} else {
			// kafka-go may have handed the request to a connection that
			// is still writing it: see send.
			f.markAbandoned()
			err = fmt.Errorf("produce: %w", err)
		}
		for _, pt := range parts {
			pt.err = err
		}
		p.leaders.invalidate()
		return
	}
	res, ok := m.(*produceapi.Response)
	if !ok {
		err = fmt.Errorf("produce: unexpected response %T", m)
		for _, pt := range parts {
			pt.err = err
		}
		return
	}
	// Mark every part unanswered, then set the outcome of each the broker
	// answered for. Answers usually come in request order; a map is built
	// only if they do not.
	for _, pt := range parts {
		pt.err = errUnanswered
	}
	failed := false
	var byKey map[partKey]*part
	i := 0
	for _, t := range res.Topics {
		for _, rp := range t.Partitions {
			var pt *part
			if i < len(parts) && parts[i].topic == t.Topic && parts[i].partition == rp.Partition {
				pt = parts[i]
			} else {
				if byKey == nil {
					byKey = make(map[partKey]*part, len(parts))
					for _, p := range parts {
						byKey[partKey{topic: p.topic, partition: p.partition}] = p
					}
				}
				pt = byKey[partKey{topic: t.Topic, partition: rp.Partition}]
			}
			i++
			switch {
			case pt == nil:
			case rp.ErrorCode != 0:
				// Even after a success for the same partition: an answer
				// naming a partition twice is not to be trusted.
				pt.err = produceError(t.Topic, rp.Partition, kafka.Error(rp.ErrorCode))
				failed = true
			case pt.err == errUnanswered:
				pt.err = nil
			}
		}
	}
	for _, pt := range parts {
		if pt.err == errUnanswered {
			pt.err = fmt.Errorf("produce %s/%d: no answer for the partition", pt.topic, pt.partition)
			failed = true
		}
	}
	if failed {
		p.leaders.invalidate()
	}
}

var (
	// errUnanswered marks a part the broker's answer did not mention.
	errUnanswered = errors.New("no answer for the partition")
	// errMisrouted marks a part of a request kafka-go refused to route.
	errMisrouted = errors.New("leaders moved")
)

// produceError wraps a partition's error code; a record too large for the
// broker also matches ErrRecordTooLarge, since retrying cannot help it.
func produceError(topic string, partition int32, code kafka.Error) error {
	switch code {
	case kafka.MessageSizeTooLarge, kafka.RecordListTooLarge, kafka.InvalidRecord:
		return fmt.Errorf("produce %s/%d: %w: %w", topic, partition, ErrRecordTooLarge, code)
	}
	return fmt.Errorf("produce %s/%d: %w", topic, partition, code)
}

// recordSize estimates a record's size in a batch.
func recordSize(r *Record) int {
	n := len(r.Key) + len(r.Value) + 24
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	return n
}

// leaderCache maps topic partitions to their leader broker, from the
// transport's cached metadata.
type leaderCache struct {
	client *kafka.Client

	mu      sync.Mutex
	leaders map[string][]int32
	fetched time.Time
}

const leaderCacheTTL = 2 * time.Second

func (c *leaderCache) invalidate() {
	c.mu.Lock()
	c.fetched = time.Time{}
	c.mu.Unlock()
}

// leader returns the broker leading topic/partition.
func (c *leaderCache) leader(ctx context.Context, topic string, partition int32) (int32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps := c.leaders[topic]
	if int(partition) >= len(ps) || time.Since(c.fetched) > leaderCacheTTL {
		if err := c.refresh(ctx); err != nil {
			return 0, err
		}
		ps = c.leaders[topic]
	}
	if partition < 0 || int(partition) >= len(ps) || ps[partition] < 0 {
		return 0, fmt.Errorf("produce %s/%d: %w", topic, partition, kafka.UnknownTopicOrPartition)
	}
	return ps[partition], nil
}

// partitions returns how many partitions of topic the transport knows of.
func (c *leaderCache) partitions(ctx context.Context, topic string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refresh(ctx); err != nil {
		return 0, err
	}
	return len(c.leaders[topic]), nil
}

// refresh reads the metadata; c.mu is held.
func (c *leaderCache) refresh(ctx context.Context) error {
	md, err := c.client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return fmt.Errorf("produce: metadata: %w", err)
	}
	leaders := make(map[string][]int32, len(md.Topics))
	for _, t := range md.Topics {
		if t.Error != nil {
			continue
		}
		ps := make([]int32, len(t.Partitions))
		for i := range ps {
			ps[i] = -1
		}
		for _, pm := range t.Partitions {
			if pm.ID >= 0 && pm.ID < len(ps) && pm.Error == nil {
				ps[pm.ID] = int32(pm.Leader.ID)
			}
		}
		leaders[t.Name] = ps
	}
	c.leaders, c.fetched = leaders, time.Now()
	return nil
}

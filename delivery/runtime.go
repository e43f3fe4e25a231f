package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	fetchapi "github.com/segmentio/kafka-go/protocol/fetch"
)

// RuntimeConfig configures a consumer runtime for one module.
type RuntimeConfig struct {
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Group is the consumer group id; one per module.
	Group string
	// Topic is read (relay.events).
	Topic string
	// Module handles the events.
	Module Module
	// Transport carries the fetches (a kafka-go transport of its own is
	// made when nil); Dialer connects the consumer group (kafka-go's
	// default when nil).
	Transport *kafka.Transport
	Dialer    *kafka.Dialer
	// CommitInterval is how often handled offsets are committed (default
	// 1s); they are also committed when a worker stops.
	CommitInterval time.Duration
	// FetchMaxBytes and FetchMaxWait shape the fetches: one request per
	// leader broker covers every assigned partition with room in its queue
	// (defaults 8 MiB and 100ms: a long poll, answered as soon as any of
	// them has a record, so idle costs ten requests a second).
	FetchMaxBytes int
	FetchMaxWait  time.Duration
	// QueueEvents bounds each partition's fetched events waiting for its
	// worker (default 64); a partition whose queue is more than half full
	// is left out of fetches, so a paused tenant is not fetched.
	QueueEvents int
	// Drain bounds how long shutdown waits for in-flight events (default 15s).
	Drain   time.Duration
	Metrics *RuntimeMetrics
	Logger  *slog.Logger
}

func (c *RuntimeConfig) setDefaults() {
	if c.CommitInterval <= 0 {
		c.CommitInterval = time.Second
	}
	if c.FetchMaxBytes <= 0 {
		c.FetchMaxBytes = 8 << 20
	}
	if c.FetchMaxWait <= 0 {
		c.FetchMaxWait = 100 * time.Millisecond
	}
	if c.QueueEvents <= 0 {
		c.QueueEvents = 64
	}
	if c.Drain <= 0 {
		c.Drain = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Transport == nil {
		c.Transport = &kafka.Transport{}
	}
}

// Run consumes Topic as a member of Group until ctx is done, handing each
// assigned partition's events, in order, to the module. Offsets are
// committed only past events the module finished. On ctx done it stops
// fetching, waits up to Drain for events in flight, commits, and leaves the
// group. It returns nil after a clean stop.
func Run(ctx context.Context, cfg RuntimeConfig) error {
	cfg.setDefaults()
	if cfg.Module == nil || cfg.Group == "" || cfg.Topic == "" || len(cfg.Brokers) == 0 {
		return errors.New("delivery: runtime needs brokers, a group, a topic and a module")
	}
	log := cfg.Logger.With("module", cfg.Module.Name(), "group", cfg.Group)
	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                     cfg.Group,
		Brokers:                cfg.Brokers,
		Topics:                 []string{cfg.Topic},
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 2 * time.Second,
		StartOffset:            kafka.FirstOffset,
		HeartbeatInterval:      time.Second,
		SessionTimeout:         10 * time.Second,
		RebalanceTimeout:       10 * time.Second,
		JoinGroupBackoff:       time.Second,
		Dialer:                 cfg.Dialer,
		ErrorLogger:            kafka.LoggerFunc(func(msg string, args ...any) { log.Debug(fmt.Sprintf(msg, args...)) }),
	})
	if err != nil {
		return fmt.Errorf("delivery: consumer group: %w", err)
	}
	client := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport}
	var last *genRun
	cfg.Metrics.setJoined(cfg.Module.Name(), false)
	for {
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			log.Warn("consumer group: waiting for the next generation", "err", err)
			continue
		}
		parts := gen.Assignments[cfg.Topic]
		ids := make([]int, len(parts))
		for i, a := range parts {
			ids[i] = a.ID
		}
		slices.Sort(ids)
		log.Info("consumer group generation", "generation", gen.ID, "partitions", len(parts), "partition_ids", ids)
		// The previous generation is over (kafka-go starts the next one
		// only then): what moved to another member is not reported here.
		if a, ok := cfg.Module.(Assignee); ok {
			a.Assigned(ids)
		}
		last = newGenRun(&cfg, client, gen, log)
		last.start(ctx, parts)
	}
	if last != nil {
		last.waitFinalCommit(cfg.Drain + cfg.Drain/2)
	}
	if err := group.Close(); err != nil && !errors.Is(err, kafka.ErrGroupClosed) {
		log.Warn("leaving consumer group", "err", err)
	}
	return nil
}

// genRun is one generation: its partition workers and its committer.
type genRun struct {
	cfg    *RuntimeConfig
	client *kafka.Client
	gen    *kafka.Generation
	log    *slog.Logger

	mu      sync.Mutex
	pending map[int]int64 // partition → next offset to commit

	lagMu   sync.Mutex // orders lag series creation and the generation's end
	ended   bool       // no more lag series: the generation is over
	drained sync.WaitGroup
	final   chan struct{} // closed after the last commit
}

func newGenRun(cfg *RuntimeConfig, client *kafka.Client, gen *kafka.Generation, log *slog.Logger) *genRun {
	return &genRun{cfg: cfg, client: client, gen: gen, log: log, pending: map[int]int64{}, final: make(chan struct{})}
}

// start launches one worker per partition, one fetcher per leader broker
// and the committer. Workers never return before the generation ends
// (kafka-go ends a generation when any of its functions returns), so a
// drained worker waits on gctx. A fetcher that finds leadership moved
// returns, which ends the generation: the next one regroups.
func (g *genRun) start(stop context.Context, parts []kafka.PartitionAssignment) {
	leaders := g.leaders(stop, parts)
	groups := map[int32][]*partState{}
	for _, a := range parts {
		ps := &partState{id: a.ID, next: a.Offset, queue: make(chan *Event, g.cfg.QueueEvents)}
		groups[leaders[a.ID]] = append(groups[leaders[a.ID]], ps)
		g.drained.Add(1)
		w := &worker{run: g, ps: ps}
		g.gen.Start(func(gctx context.Context) {
			w.loop(gctx, stop)
			g.drained.Done()
			<-gctx.Done()
		})
	}
	for _, ps := range groups {
		f := &fetcher{run: g, parts: ps, room: make(chan struct{}, 1)}
		for _, p := range ps {
			p.room = f.room
		}
		g.gen.Start(func(gctx context.Context) {
			f.loop(gctx, stop)
			if gctx.Err() == nil && stop.Err() == nil {
				return // leadership moved or the topic changed: end the generation
			}
			<-gctx.Done()
		})
	}
	g.gen.Start(func(gctx context.Context) { g.commitLoop(gctx, stop) })
	// Until the generation ends: then nothing of it is delivered until the
	// next one, here or elsewhere, and its partitions' lag is unknown.
	m, module := g.cfg.Metrics, g.cfg.Module.Name()
	m.setJoined(module, true)
	g.gen.Start(func(gctx context.Context) {
		<-gctx.Done()
		g.lagMu.Lock()
		g.ended = true
		g.lagMu.Unlock()
		for _, a := range parts {
			m.forgetPartition(module, strconv.Itoa(a.ID))
		}
		m.setJoined(module, false)
	})
}

// setFetchedLag reports ps's lag as its fetcher sees it: from the next
// offset to fetch to the high watermark, plus what waits in its queue, plus
// what its worker took and has not finished.
func (g *genRun) setFetchedLag(ps *partState) {
	g.setLag(ps, max(ps.hw.Load()-ps.next, 0)+int64(len(ps.queue))+ps.taken.Load())
}

// setLag reports ps's lag, creating its series at the first report: until
// a fetch or a high-watermark listing, the lag is not known, and no series
// says 0. Once the generation is over no series is created.
func (g *genRun) setLag(ps *partState, lag int64) {
	gauge := ps.lag.Load()
	if gauge == nil {
		g.lagMu.Lock()
		if g.ended {
			g.lagMu.Unlock()
			return
		}
		if gauge = ps.lag.Load(); gauge == nil {
			gg := g.cfg.Metrics.lagFor(g.cfg.Module.Name(), strconv.Itoa(ps.id))
			gauge = &gg
			ps.lag.Store(gauge)
		}
		g.lagMu.Unlock()
	}
	(*gauge).Set(float64(max(lag, 0)))
}

// leaders maps each partition to its leader broker; all -1 (one fetcher)
// if the metadata cannot be read.
func (g *genRun) leaders(ctx context.Context, parts []kafka.PartitionAssignment) map[int]int32 {
	out := make(map[int]int32, len(parts))
	for _, a := range parts {
		out[a.ID] = -1
	}
	md, err := g.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{g.cfg.Topic}})
	if err != nil {
		return out
	}
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			if _, ok := out[p.ID]; ok && t.Name == g.cfg.Topic {
				out[p.ID] = int32(p.Leader.ID)
			}
		}
	}
	return out
}

// mark records that everything before next is done in partition; the
// partition's tracker calls it, in order.
func (g *genRun) mark(partition int, next int64) {
	g.mu.Lock()
	g.pending[partition] = next
	g.mu.Unlock()
}

func (g *genRun) commit() {
	g.mu.Lock()
	if len(g.pending) == 0 {
		g.mu.Unlock()
		return
	}
	offsets := make(map[int]int64, len(g.pending))
	for p, o := range g.pending {
		offsets[p] = o
	}
	clear(g.pending)
	g.mu.Unlock()
	if err := g.gen.CommitOffsets(map[string]map[int]int64{g.cfg.Topic: offsets}); err != nil {
		// Keep them for the next try, unless something newer came.
		g.mu.Lock()
		for p, o := range offsets {
			if _, newer := g.pending[p]; !newer {
				g.pending[p] = o
			}
		}
		g.mu.Unlock()
		g.log.Warn("committing offsets failed; events since the last commit may be delivered again", "err", err)
		return
	}
	if m := g.cfg.Metrics; m != nil {
		m.commits.Inc()
	}
}

// commitLoop commits every interval; at shutdown it waits for the workers
// to drain, then commits once more.
func (g *genRun) commitLoop(gctx, stop context.Context) {
	defer close(g.final)
	t := time.NewTicker(g.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.commit()
		case <-gctx.Done():
			// Rebalance: attempts under way get the sink's short grace and
			// are then cut. Wait for the workers, so that what they finish
			// in the grace is committed (best effort) rather than handled
			// again by the next owner.
			g.waitDrained(nil, rebalanceGrace+time.Second)
			g.commit()
			return
		case <-stop.Done():
			// Wait up to Drain; a rebalance meanwhile (a rolling deploy)
			// leaves the workers the sink's grace, as above.
			rebalanced := make(chan struct{})
			defer context.AfterFunc(gctx, func() {
				time.AfterFunc(rebalanceGrace+time.Second, func() { close(rebalanced) })
			})()
			if !g.waitDrained(rebalanced, g.cfg.Drain) {
				g.log.Warn("shutdown: events still in flight after the drain period; they will be handled again")
			}
			g.commit()
			return
		}
	}
}

// generationKey is the context key of the generation's own context, which
// ends at a rebalance even after a shutdown has begun.
type generationKey struct{}

// generationEnded returns the end of the generation ctx belongs to, nil
// outside a worker.
func generationEnded(ctx context.Context) <-chan struct{} {
	if g, ok := ctx.Value(generationKey{}).(context.Context); ok {
		return g.Done()
	}
	return nil
}

// waitDrained waits up to d for every worker to return, or until abort
// is closed; false if d passed first.
func (g *genRun) waitDrained(abort <-chan struct{}, d time.Duration) bool {
	done := make(chan struct{})
	go func() { g.drained.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-abort:
	case <-t.C:
		return false
	}
	return true
}

func (g *genRun) waitFinalCommit(d time.Duration) {
	select {
	case <-g.final:
	case <-time.After(d):
	}
}

// partState is one assigned partition: what its fetcher fetches next,
// and the queue between the fetcher and the partition's worker.
type partState struct {
	id    int
	next  int64 // fetch offset; FirstOffset/LastOffset until resolved (fetcher-owned)
	queue chan *Event
	room  chan struct{}                    // the fetcher's: signalled when the queue drains
	lag   atomic.Pointer[prometheus.Gauge] // created at the first report (genRun.setLag)
	hw    atomic.Int64                     // high watermark at the last fetch
	taken atomic.Int64                     // events the worker took from queue and has not finished
}

// worker hands one partition's events, in order, to the module.
type worker struct {
	run *genRun
	ps  *partState
}

// loop handles queued events until the generation ends or stop is done.
func (w *worker) loop(gctx, stop context.Context) {
	// Handling ends with the generation (the partition may move to
	// another member) and at shutdown, when the cause is ErrShuttingDown
	// and a module may let an attempt already under way finish.
	ctx, cancel := context.WithCancelCause(gctx)
	defer cancel(nil)
	defer context.AfterFunc(stop, func() { cancel(ErrShuttingDown) })()
	// The generation stays reachable: a rebalance during a shutdown's drain
	// must still cut what is under way (see Sink.attempt).
	ctx = context.WithValue(ctx, generationKey{}, gctx)
	win := newWindow()
	defer win.wait()
	var tr *tracker
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.ps.queue:
			if len(w.ps.queue) <= cap(w.ps.queue)/2 {
				select {
				case w.ps.room <- struct{}{}:
				default:
				}
			}
			if tr == nil {
				tr = newTracker(ev.Offset)
			}
			// Lag counts what is taken and not finished: a tenant stuck on
			// one event (its breaker open) showed a lag of 0.
			taken := w.ps.taken.Add(1)
			w.run.setLag(w.ps, w.ps.hw.Load()-ev.Offset-1+taken)
			if !w.dispatch(ctx, win, tr, ev) {
				return
			}
		}
	}
}

// fetcher fetches its partitions (all led by one broker) in one request
// per round and fills their queues.
type fetcher struct {
	run   *genRun
	parts []*partState
	room  chan struct{}
}

// loop fetches until ctx ends; it returns early (ending the generation)
// when a partition's leader moved.
func (f *fetcher) loop(gctx, stop context.Context) {
	ctx, cancel := context.WithCancel(gctx)
	defer cancel()
	defer context.AfterFunc(stop, cancel)()
	cfg := f.run.cfg
	failures := 0
	backoff := func() bool {
		failures++
		return sleep(ctx, retryDelay(failures))
	}
	// A partition whose start offset cannot be listed yet is left out of
	// the fetches, and tried again with a backoff, while the others go on;
	// relay_delivery_unresolved_partitions counts it meanwhile.
	var resolveFailures int
	var resolveAt time.Time // when to try the unresolved partitions again
	var busy []*partState   // left out of this round's fetch
	var lagAt time.Time     // when to refresh their lag next
	gauge, counted := cfg.Metrics.unresolvedFor(cfg.Module.Name()), 0
	defer func() { gauge.Sub(float64(counted)) }()
	for ctx.Err() == nil {
		if !time.Now().Before(resolveAt) {
			if err := f.resolveOffsets(ctx); err != nil {
				resolveFailures++
				resolveAt = time.Now().Add(retryDelay(resolveFailures))
				f.run.log.Warn("resolving start offsets; those partitions wait, the others are fetched", "err", err)
			} else {
				resolveFailures = 0
			}
			n := 0
			for _, ps := range f.parts {
				if ps.next < 0 {
					n++
				}
			}
			gauge.Add(float64(n - counted))
			counted = n
		}
		req := &fetchapi.Request{
			ReplicaID: -1, MaxWaitTime: int32(cfg.FetchMaxWait / time.Millisecond), MinBytes: 1,
			MaxBytes: int32(cfg.FetchMaxBytes), SessionID: -1, SessionEpoch: -1,
		}
		topic := fetchapi.RequestTopic{Topic: cfg.Topic}
		busy = busy[:0]
		for _, ps := range f.parts {
			if ps.next < 0 {
				continue // start offset unknown yet
			}
			if len(ps.queue) > cap(ps.queue)/2 {
				busy = append(busy, ps) // its worker is busy, or its tenant paused
				continue
			}
			topic.Partitions = append(topic.Partitions, fetchapi.RequestPartition{
				Partition: int32(ps.id), CurrentLeaderEpoch: -1, FetchOffset: ps.next,
				LogStartOffset: -1, PartitionMaxBytes: int32(partitionMaxBytes),
			})
		}
		// A partition left out of the fetches still has its lag kept
		// current, so that a paused tenant's backlog shows as it grows.
		if len(busy) > 0 && !time.Now().Before(lagAt) {
			f.refreshLag(ctx, busy)
			lagAt = time.Now().Add(lagRefresh)
		}
		if len(topic.Partitions) == 0 {
			wake := time.Time{}
			if resolveFailures > 0 {
				wake = resolveAt
			}
			if len(busy) > 0 && (wake.IsZero() || lagAt.Before(wake)) {
				wake = lagAt
			}
			if !f.waitRoom(ctx, wake) {
				return
			}
			continue
		}
		req.Topics = []fetchapi.RequestTopic{topic}
		m, err := cfg.Transport.RoundTrip(ctx, f.run.client.Addr, req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// kafka-go routes a fetch by its cached metadata: if this
			// group's partitions are no longer led by one broker it fails
			// here, before asking anyone. Regroup (end the generation) on
			// that, and after repeated failures of any kind.
			var routing *fetchapi.Error
			if errors.As(err, &routing) || failures >= maxFetchFailures {
				f.run.log.Info("fetch keeps failing or its partitions' leaders moved; rejoining to regroup", "err", err)
				return
			}
			f.run.log.Warn("fetch failed", "err", err)
			if !backoff() {
				return
			}
			continue
		}
		res, ok := m.(*fetchapi.Response)
		if !ok {
			f.run.log.Error("fetch: unexpected response", "type", fmt.Sprintf("%T", m))
			if !backoff() {
				return
			}
			continue
		}
		failures = 0
		if !f.take(res) {
			return
		}
	}
}

// waitRoom waits, with nothing to fetch, until a queue has room again or
// wake (zero: no time) has come; false when ctx ended.
func (f *fetcher) waitRoom(ctx context.Context, wake time.Time) bool {
	var due <-chan time.Time
	if !wake.IsZero() {
		t := time.NewTimer(time.Until(wake))
		defer t.Stop()
		due = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-f.room:
	case <-due:
	}
	return true
}

// lagRefresh is how often the lag of partitions left out of the fetches
// (busy or paused) is brought up to date from their high watermarks.
const lagRefresh = 5 * time.Second

// refreshLag lists the high watermarks of parts, which are not fetched
// meanwhile, and sets their lag; a failure leaves it for the next time.
func (f *fetcher) refreshLag(ctx context.Context, parts []*partState) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, ps := range parts {
		reqs[i] = kafka.LastOffsetOf(ps.id)
	}
	topic := f.run.cfg.Topic
	res, err := f.run.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		f.run.log.Debug("listing high watermarks for the lag", "err", err)
		return
	}
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			continue
		}
		if ps := f.part(po.Partition); ps != nil {
			ps.hw.Store(po.LastOffset)
			f.run.setFetchedLag(ps)
		}
	}
}

// maxFetchFailures is how many fetches in a row may fail before the
// fetcher ends the generation to regroup its partitions.
const maxFetchFailures = 5

// partitionMaxBytes bounds one partition's share of a fetch, about the
// room a queue has when it is fetched (a larger single record still comes).
const partitionMaxBytes = 64 << 10

// take queues the fetched records; false when leadership moved.
func (f *fetcher) take(res *fetchapi.Response) bool {
	for _, t := range res.Topics {
		for i := range t.Partitions {
			rp := &t.Partitions[i]
			ps := f.part(int(rp.Partition))
			if ps == nil {
				continue
			}
			if rp.ErrorCode != 0 {
				switch err := kafka.Error(rp.ErrorCode); err {
				case kafka.OffsetOutOfRange:
					f.run.log.Error("offset out of range: retention removed events not yet handled; resuming at the earliest", "partition", ps.id, "offset", ps.next)
					ps.next = kafka.FirstOffset
				case kafka.NotLeaderForPartition, kafka.UnknownTopicOrPartition, kafka.LeaderNotAvailable, kafka.FencedLeaderEpoch:
					f.run.log.Info("partition leadership changed; rejoining", "partition", ps.id, "err", err)
					return false
				default:
					f.run.log.Warn("fetch", "partition", ps.id, "err", err)
				}
				continue
			}
			ps.hw.Store(rp.HighWatermark)
			if rp.RecordSet.Records == nil {
				f.run.setFetchedLag(ps)
				continue
			}
			full := false
			for !full {
				r, err := rp.RecordSet.Records.ReadRecord()
				if err != nil {
					if !errors.Is(err, io.EOF) {
						f.run.log.Warn("reading fetched records", "partition", ps.id, "err", err)
					}
					break
				}
				if r.Offset < ps.next {
					continue // a fetch may start at the batch before the offset asked for
				}
				ev, err := toEvent(f.run.cfg.Topic, ps.id, r)
				if err != nil {
					f.run.log.Warn("unreadable record", "partition", ps.id, "offset", r.Offset, "err", err)
				}
				select {
				case ps.queue <- ev:
					ps.next = r.Offset + 1
				default:
					full = true // the rest comes in a later fetch, in order
				}
			}
			f.run.setFetchedLag(ps)
		}
	}
	return true
}

func (f *fetcher) part(id int) *partState {
	for _, ps := range f.parts {
		if ps.id == id {
			return ps
		}
	}
	return nil
}

// resolveOffsets turns FirstOffset or LastOffset into offsets, for every
// partition whose offsets the broker lists; it reports the others.
func (f *fetcher) resolveOffsets(ctx context.Context) error {
	var reqs []kafka.OffsetRequest
	for _, ps := range f.parts {
		if ps.next < 0 {
			reqs = append(reqs, kafka.OffsetRequest{Partition: ps.id, Timestamp: ps.next})
		}
	}
	if len(reqs) == 0 {
		return nil
	}
	topic := f.run.cfg.Topic
	res, err := f.run.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range res.Topics[topic] {
		ps := f.part(p.Partition)
		if ps == nil || ps.next >= 0 {
			continue
		}
		if p.Error != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p.Partition, p.Error))
			continue
		}
		if ps.next == kafka.LastOffset {
			ps.next = p.LastOffset
		} else {
			ps.next = p.FirstOffset
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, ps := range f.parts {
		if ps.next < 0 {
			return fmt.Errorf("no offsets for partition %d", ps.id)
		}
	}
	return nil
}

// dispatch hands ev to the module, within the tenant's in-flight window;
// it returns false when the worker must stop.
func (w *worker) dispatch(ctx context.Context, win *window, tr *tracker, ev *Event) bool {
	size := 1
	if c, ok := w.run.cfg.Module.(Concurrent); ok {
		size = max(c.InFlight(ev.Tenant), 1)
	}
	if !win.acquire(ctx, size) {
		w.ps.taken.Add(-1)
		return false
	}
	tr.add(ev.Offset)
	handle := func() {
		defer w.ps.taken.Add(-1)
		defer win.release()
		for failures := 1; ; failures++ {
			start := time.Now()
			err := w.run.cfg.Module.Handle(ctx, ev)
			w.run.cfg.Metrics.handled(w.run.cfg.Module.Name(), err, time.Since(start))
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return // not done: not committed, handled again by the next owner
			}
			// The module could not finish, yet the partition is still
			// ours: hand it the same event again. Moving on would handle
			// later events first and hold the commit point here for good.
			w.run.log.Warn("module could not finish an event; handing it again", "partition", w.ps.id, "offset", ev.Offset, "err", err)
			if !sleep(ctx, retryDelay(failures)) {
				return
			}
		}
		tr.done(ev.Offset, func(next int64) { w.run.mark(w.ps.id, next) })
	}
	if size == 1 {
		handle()
		return ctx.Err() == nil
	}
	win.wg.Go(handle)
	return true
}

// toEvent copies a fetched record into an Event.
func toEvent(topic string, partition int, r *kafka.Record) (*Event, error) {
	ev := &Event{Topic: topic, Partition: partition, Offset: r.Offset, Time: r.Time, Headers: r.Headers}
	var err error
	if ev.Key, err = readBytes(r.Key); err != nil {
		return ev, err
	}
	if ev.Value, err = readBytes(r.Value); err != nil {
		return ev, err
	}
	ev.fill()
	return ev, nil
}

// readBytes copies a record's key or value out and closes it: kafka-go
// hands the 64 KiB pages a fetch was decoded into back to its pool only
// once every record's bytes are closed, and allocates new ones otherwise.
func readBytes(b kafka.Bytes) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	defer b.Close()
	out := make([]byte, b.Len())
	_, err := io.ReadFull(b, out)
	return out, err
}

// window bounds the events of one partition in flight. Its size may
// change from event to event (a tenant's setting can be reloaded).
type window struct {
	mu    sync.Mutex
	n     int
	freed chan struct{}
	wg    sync.WaitGroup
}

func newWindow() *window { return &window{freed: make(chan struct{}, 1)} }

// acquire waits for one of size slots; false if ctx ended first.
func (w *window) acquire(ctx context.Context, size int) bool {
	for {
		w.mu.Lock()
		if w.n < size {
			w.n++
			w.mu.Unlock()
			return true
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-w.freed:
		}
	}
}

func (w *window) release() {
	w.mu.Lock()
	w.n--
	w.mu.Unlock()
	select {
	case w.freed <- struct{}{}:
	default:
	}
}

func (w *window) wait() { w.wg.Wait() }

// tracker finds the commit point when events finish out of order: the
// offset after the longest finished prefix.
type tracker struct {
	mu       sync.Mutex
	next     int64   // commit point: every offset before it is done
	pending  []int64 // offsets in flight, in order
	finished map[int64]bool
}

func newTracker(start int64) *tracker { return &tracker{next: start, finished: map[int64]bool{}} }

func (t *tracker) add(offset int64) {
	t.mu.Lock()
	t.pending = append(t.pending, offset)
	t.mu.Unlock()
}

// done marks offset finished and, if the commit point moved, calls moved
// with it while still holding the lock: handlers finishing at once then
// report their commit points in order.
func (t *tracker) done(offset int64, moved func(next int64)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished[offset] = true
	advanced := false
	for len(t.pending) > 0 && t.finished[t.pending[0]] {
		delete(t.finished, t.pending[0])
		t.next = t.pending[0] + 1
		t.pending = t.pending[1:]
		advanced = true
	}
	if advanced {
		moved(t.next)
	}
}

// retryDelay is the wait before the runtime's nth retry of something that
// failed: 200 ms more per failure, at most 5 s.
func retryDelay(n int) time.Duration {
	return min(time.Duration(n)*200*time.Millisecond, 5*time.Second)
}

// sleep waits d or until ctx is done; false if ctx ended it.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

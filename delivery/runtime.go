package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
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
	// FetchMaxBytes and FetchMaxWait shape each partition's fetches
	// (defaults 1 MiB and 500ms: a long poll, woken by new records).
	FetchMaxBytes int
	FetchMaxWait  time.Duration
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
		c.FetchMaxBytes = 1 << 20
	}
	if c.FetchMaxWait <= 0 {
		c.FetchMaxWait = 500 * time.Millisecond
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
		log.Info("consumer group generation", "generation", gen.ID, "partitions", len(parts))
		last = newGenRun(&cfg, client, gen, log)
		last.start(ctx, parts)
	}
	if last != nil {
		last.waitFinalCommit(cfg.Drain + 5*time.Second)
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
	drained sync.WaitGroup
	final   chan struct{} // closed after the last commit
}

func newGenRun(cfg *RuntimeConfig, client *kafka.Client, gen *kafka.Generation, log *slog.Logger) *genRun {
	return &genRun{cfg: cfg, client: client, gen: gen, log: log, pending: map[int]int64{}, final: make(chan struct{})}
}

// start launches one worker per partition and the committer. Workers never
// return before the generation ends (kafka-go ends a generation when any
// of its functions returns), so a drained worker waits on gctx.
func (g *genRun) start(stop context.Context, parts []kafka.PartitionAssignment) {
	for _, a := range parts {
		g.drained.Add(1)
		w := &worker{run: g, partition: a.ID, offset: a.Offset}
		g.gen.Start(func(gctx context.Context) {
			w.loop(gctx, stop)
			g.drained.Done()
			<-gctx.Done()
		})
	}
	g.gen.Start(func(gctx context.Context) { g.commitLoop(gctx, stop) })
}

// mark records that everything before next is done in partition.
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
			g.commit() // rebalance: best effort
			return
		case <-stop.Done():
			done := make(chan struct{})
			go func() { g.drained.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(g.cfg.Drain):
				g.log.Warn("shutdown: events still in flight after the drain period; they will be handled again")
			case <-gctx.Done():
			}
			g.commit()
			return
		}
	}
}

func (g *genRun) waitFinalCommit(d time.Duration) {
	select {
	case <-g.final:
	case <-time.After(d):
	}
}

// worker reads one partition and hands its events to the module.
type worker struct {
	run       *genRun
	partition int
	offset    int64
}

// loop fetches and handles until the generation ends or stop is done.
func (w *worker) loop(gctx, stop context.Context) {
	cfg := w.run.cfg
	// One context for fetching and handling: it ends with the generation
	// (the partition may move to another member) and at shutdown. The
	// module lets an attempt already under way finish.
	ctx, cancel := context.WithCancel(gctx)
	defer cancel()
	defer context.AfterFunc(stop, cancel)()

	part := strconv.Itoa(w.partition)
	lag := cfg.Metrics.lagFor(cfg.Module.Name(), part)
	win := newWindow()
	defer win.wait()
	failures := 0
	var tr *tracker
	for ctx.Err() == nil {
		if w.offset < 0 {
			if err := w.resolveOffset(ctx); err != nil {
				failures++
				w.run.log.Warn("resolving the start offset", "partition", w.partition, "err", err)
				if !sleep(ctx, min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)) {
					return
				}
				continue
			}
			tr = newTracker(w.offset)
		}
		if tr == nil {
			tr = newTracker(w.offset)
		}
		res, err := w.run.client.Fetch(ctx, &kafka.FetchRequest{
			Topic: cfg.Topic, Partition: w.partition, Offset: w.offset,
			MinBytes: 1, MaxBytes: int64(cfg.FetchMaxBytes), MaxWait: cfg.FetchMaxWait,
		})
		if err == nil && res.Error != nil {
			err = res.Error
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, kafka.OffsetOutOfRange) {
				w.run.log.Error("offset out of range: retention removed events not yet handled; resuming at the earliest", "partition", w.partition, "offset", w.offset)
				w.offset = kafka.FirstOffset
				continue
			}
			failures++
			if !sleep(ctx, min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)) {
				return
			}
			continue
		}
		failures = 0
		for {
			r, err := res.Records.ReadRecord()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					w.run.log.Warn("reading fetched records", "partition", w.partition, "err", err)
				}
				break
			}
			if r.Offset < w.offset {
				continue // a fetch may start before the offset asked for
			}
			ev, err := toEvent(cfg.Topic, w.partition, r)
			if err != nil {
				w.run.log.Warn("unreadable record", "partition", w.partition, "offset", r.Offset, "err", err)
			}
			w.offset = r.Offset + 1
			lag.Set(float64(max(res.HighWatermark-w.offset, 0)))
			if !w.dispatch(ctx, win, tr, ev) {
				return
			}
		}
		lag.Set(float64(max(res.HighWatermark-w.offset, 0)))
	}
}

// resolveOffset turns FirstOffset or LastOffset into an offset.
func (w *worker) resolveOffset(ctx context.Context) error {
	res, err := w.run.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{w.run.cfg.Topic: {{Partition: w.partition, Timestamp: w.offset}}},
	})
	if err != nil {
		return err
	}
	for _, p := range res.Topics[w.run.cfg.Topic] {
		if p.Partition != w.partition {
			continue
		}
		if p.Error != nil {
			return p.Error
		}
		if w.offset == kafka.LastOffset {
			w.offset = p.LastOffset
		} else {
			w.offset = p.FirstOffset
		}
		return nil
	}
	return fmt.Errorf("no offsets for partition %d", w.partition)
}

// dispatch hands ev to the module, within the tenant's in-flight window;
// it returns false when the worker must stop.
func (w *worker) dispatch(ctx context.Context, win *window, tr *tracker, ev *Event) bool {
	size := 1
	if c, ok := w.run.cfg.Module.(Concurrent); ok {
		size = max(c.InFlight(ev.Tenant), 1)
	}
	if !win.acquire(ctx, size) {
		return false
	}
	tr.add(ev.Offset)
	handle := func() {
		defer win.release()
		start := time.Now()
		err := w.run.cfg.Module.Handle(ctx, ev)
		w.run.cfg.Metrics.handled(w.run.cfg.Module.Name(), err, time.Since(start))
		if err != nil {
			return // not done: not committed, handled again later
		}
		if next, ok := tr.done(ev.Offset); ok {
			w.run.mark(w.partition, next)
		}
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
	if r.Key != nil {
		if ev.Key, err = io.ReadAll(r.Key); err != nil {
			return ev, err
		}
	}
	if r.Value != nil {
		if ev.Value, err = io.ReadAll(r.Value); err != nil {
			return ev, err
		}
	}
	ev.fill()
	return ev, nil
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

// done marks offset finished and returns the new commit point if it moved.
func (t *tracker) done(offset int64) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished[offset] = true
	moved := false
	for len(t.pending) > 0 && t.finished[t.pending[0]] {
		delete(t.finished, t.pending[0])
		t.next = t.pending[0] + 1
		t.pending = t.pending[1:]
		moved = true
	}
	return t.next, moved
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

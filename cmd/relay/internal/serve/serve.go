// Package serve assembles relay serve from the configuration: the embedded
// broker or a cluster, the topics, the tenants, the producer, the ingress,
// the admin listener; and takes them down again in order.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/segmentio/kafka-go"

	"github.com/relaymw/relay/cmd/relay/internal/config"
	"github.com/relaymw/relay/delivery"
	"github.com/relaymw/relay/relay"
	"github.com/relaymw/relay/tenant"
	"github.com/relaymw/relay/tlsconf"
)

// The tenant registry is what both the ingress and delivery look tenants up in.
var (
	_ relay.Resolver   = (*tenant.Registry)(nil)
	_ delivery.Tenants = (*tenant.Registry)(nil)
)

// Options are what Run needs besides the configuration.
type Options struct {
	Logger *slog.Logger
	// Reload receives a value for every SIGHUP: reload the tenants file.
	Reload <-chan struct{}
	// Version is reported in the relay_build_info metric.
	Version string
}

// Run serves until ctx is done, then shuts down gracefully within the
// configured grace period. It returns nil after a clean shutdown.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	logger := opts.Logger
	s := &server{cfg: cfg, logger: logger, reg: prometheus.NewRegistry(), version: opts.Version}
	s.tlsGauges = newTLSGauges(s.reg)
	s.reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			// How long runnable goroutines wait for a CPU, and GC pauses:
			// the usual suspects when tail latency grows.
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$|^/gc/pauses:seconds$`)},
		)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "relay_build_info", Help: "Always 1; the version label says which relay runs."}, []string{"version"})
	build.WithLabelValues(opts.Version).Set(1)
	s.reg.MustRegister(build)

	defer s.closeAll()
	if err := s.start(ctx); err != nil {
		return err
	}
	if err := s.setup(ctx); err != nil {
		if ctx.Err() != nil {
			return s.shutdown()
		}
		return err
	}
	s.ready.Store(true)
	logger.Info("relay serving", "ingress", s.ingressAddr, "path", cfg.Ingress.Path, "admin", s.adminAddr)

	for {
		select {
		case <-ctx.Done():
			return s.shutdown()
		case <-opts.Reload:
			logger.Info("SIGHUP: reloading tenants")
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_ = s.registry.Reload(rctx) // a failure is logged; the previous tenants stay
			cancel()
		case err := <-s.serveErr:
			s.shutdown()
			return err
		}
	}
}

// server holds what Run started, in start order.
type server struct {
	cfg    *config.Config
	logger *slog.Logger
	reg    *prometheus.Registry
	// tlsGauges are relay_tls_reload_failing and
	// relay_tls_cert_not_after_seconds (watchTLSFiles).
	tlsGauges tlsGauges
	version   string

	broker    *embeddedBroker
	transport *kafka.Transport
	admin     *tenant.Admin
	registry  *tenant.Registry
	producer  *relay.Producer
	ingress   *relay.Server
	adminSrv  *adminServer

	// dial connects this process's Kafka clients; with the embedded
	// broker it serves the broker in memory. nil: kafka-go's default.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	ingressAddr, adminAddr string
	ready                  atomic.Bool
	draining               atomic.Bool
	serveErr               chan error
	bg                     sync.WaitGroup
	bgCancel               context.CancelFunc
	// delivery runs until deliveryCancel; deliveryDone is closed when it
	// has drained, committed and left its consumer group.
	deliveryCancel context.CancelFunc
	deliveryDone   chan struct{}
}

// start brings up what does not depend on Kafka: the broker, the admin
// listener, the Kafka clients.
func (s *server) start(ctx context.Context) error {
	s.serveErr = make(chan error, 2)
	if s.cfg.EmbeddedBroker() {
		b, ml, err := startEmbedded(s.cfg, s.logger)
		if err != nil {
			return err
		}
		s.broker = b
		s.dial = ml.dial((&net.Dialer{Timeout: 5 * time.Second}).DialContext)
	} else {
		s.logger.Info("using Kafka cluster", "brokers", s.cfg.Kafka.Brokers)
	}
	brokers := s.cfg.BrokerAddrs()
	s.transport = &kafka.Transport{
		Dial:        s.dial,
		ClientID:    s.cfg.Kafka.ClientID,
		DialTimeout: 5 * time.Second,
		MetadataTTL: time.Second,
	}
	rf := s.cfg.Kafka.ReplicationFactor
	if rf == 0 {
		rf = -1
		if s.broker != nil {
			rf = 1
		}
	}
	s.admin = &tenant.Admin{
		Client:            &kafka.Client{Addr: kafka.TCP(brokers...), Transport: s.transport, Timeout: 10 * time.Second},
		Brokers:           brokers,
		ReplicationFactor: rf,
	}
	// A taken ingress port fails the start now, not after setup has waited
	// for Kafka (for ever, were Kafka away). The port is bound for real once
	// the ingress can answer: until then a client is refused at once rather
	// than left waiting in the listen queue.
	probe, err := net.Listen("tcp", s.cfg.Ingress.Listen)
	if err != nil {
		return fmt.Errorf("ingress.listen: %w", err)
	}
	probe.Close()
	s.adminSrv = newAdminServer(s.reg, s.readiness, s.cfg.Admin.Pprof)
	ln, err := net.Listen("tcp", s.cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin.listen: %w", err)
	}
	s.adminAddr = ln.Addr().String()
	go func() {
		if err := s.adminSrv.Serve(ln); err != nil {
			s.serveErr <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	return nil
}

// producerConfig is what the producer takes from cfg's kafka section.
func producerConfig(cfg *config.Config) relay.ProducerConfig {
	return relay.ProducerConfig{
		Addr:            kafka.TCP(cfg.BrokerAddrs()...),
		MaxInFlight:     cfg.Kafka.MaxInFlight,
		FlushInterval:   cfg.Kafka.FlushInterval,
		FlushBytes:      cfg.Kafka.FlushBytes,
		MaxBatchBytes:   cfg.Kafka.MaxBatchBytes,
		MaxPendingBytes: cfg.Kafka.MaxPendingBytes,
		AckTimeout:      cfg.Kafka.ProduceTimeout,
	}
}

// setup waits for Kafka (retrying, not ready meanwhile), creates the
// topics, loads the tenants and starts the ingress.
func (s *server) setup(ctx context.Context) error {
	cfg := s.cfg
	pm := relay.NewProducerMetrics(s.reg)
	pc := producerConfig(cfg)
	pc.Transport = s.transport
	pc.Logger = s.logger.With("component", "producer")
	pc.Metrics = pm
	p, err := relay.NewProducer(pc)
	if err != nil {
		return err
	}
	s.producer = p

	assigner := &tenant.Assigner{Admin: s.admin, Topic: cfg.Kafka.Topics.Tenants, Events: cfg.Kafka.Topics.Events}
	reg, err := tenant.NewRegistry(tenant.RegistryConfig{
		File:       cfg.Tenants.File,
		Assigner:   assigner,
		CacheSize:  cfg.Tenants.CacheSize,
		Logger:     s.logger.With("component", "tenants"),
		Registerer: s.reg,
		BeforeSwap: func(ctx context.Context, snap *tenant.Snapshot) error {
			return p.WaitPartitions(ctx, cfg.Kafka.Topics.Events, snap.Partitions())
		},
	})
	if err != nil {
		return err
	}
	s.registry = reg

	// The tenants file must be valid at start: refuse to run on a broken one.
	if _, err := tenant.LoadFile(cfg.Tenants.File); err != nil {
		return err
	}
	topicConfigs := map[string]string{"max.message.bytes": strconv.Itoa(cfg.Ingress.MaxBodyBytes + 1<<20)}
	if s.broker != nil {
		topicConfigs["retention.ms"] = strconv.FormatInt(cfg.Kafka.Embedded.Retention.Milliseconds(), 10)
	}
	// The embedded broker's topics are the relay's own: a changed retention
	// or body limit reaches them too.
	enforce := s.broker != nil
	if err := retry(ctx, s.logger, "create topics", func(ctx context.Context) error {
		return assigner.EnsureTopics(ctx, tenant.TopicSpec{Name: cfg.Kafka.Topics.Events, Partitions: 1, Configs: topicConfigs, Enforce: enforce})
	}); err != nil {
		return err
	}
	if err := retry(ctx, s.logger, "create topics", func(ctx context.Context) error {
		return s.admin.EnsureTopics(ctx,
			tenant.TopicSpec{Name: cfg.Kafka.Topics.Unrouted, Partitions: 1, Configs: topicConfigs, Enforce: enforce},
			tenant.TopicSpec{Name: cfg.Kafka.Topics.DLQ, Partitions: 1, Configs: topicConfigs, Enforce: enforce},
		)
	}); err != nil {
		return err
	}
	maxRecord := 0 // no check: the topics take what max_body_bytes lets in
	if !enforce {
		maxRecord = s.checkRecordLimits(ctx, cfg)
		p.LimitBatchBytes(maxRecord)
	}
	if err := retry(ctx, s.logger, "load tenants", reg.Reload); err != nil {
		return err
	}

	verifier, err := relay.NewVerifier(cfg.Meta.AppSecrets)
	if err != nil {
		return err
	}
	dedupe, err := relay.NewDedupe(cfg.Ingress.DedupeSize)
	if err != nil {
		return err
	}
	ing, err := relay.NewIngress(relay.IngressConfig{
		Path:           cfg.Ingress.Path,
		VerifyTokens:   cfg.Meta.VerifyTokens,
		Verifier:       verifier,
		Resolver:       reg,
		Ready:          func() bool { return reg.Snapshot() != nil },
		Writer:         p,
		Dedupe:         dedupe,
		EventsTopic:    cfg.Kafka.Topics.Events,
		UnroutedTopic:  cfg.Kafka.Topics.Unrouted,
		ProduceTimeout: cfg.Kafka.ProduceTimeout,
		MaxRecordBytes: maxRecord,
		RetryAfter:     cfg.Ingress.RetryAfter,
		Metrics:        relay.NewMetrics(s.reg),
		Logger:         s.logger.With("component", "ingress"),
	})
	if err != nil {
		return err
	}
	s.ingress = ing.NewServer(relay.ServerConfig{
		MaxBodyBytes:   cfg.Ingress.MaxBodyBytes,
		ReadTimeout:    cfg.Ingress.ReadTimeout,
		WriteTimeout:   cfg.Ingress.WriteTimeout,
		IdleTimeout:    cfg.Ingress.IdleTimeout,
		MaxConcurrency: cfg.Ingress.MaxConcurrency,
	})
	ln, err := net.Listen("tcp", cfg.Ingress.Listen)
	if err != nil {
		return fmt.Errorf("ingress.listen: %w", err)
	}
	var ingressTLS *tlsconf.Server
	if cfg.Ingress.TLS.CertFile != "" {
		ingressTLS, err = tlsconf.NewServer(cfg.Ingress.TLS.CertFile, cfg.Ingress.TLS.KeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("ingress.tls: %w", err)
		}
		if at := ingressTLS.NotAfter(); time.Now().After(at) {
			s.logger.Error("the ingress certificate has expired; serving it all the same (a load balancer that does not verify it gets through, Meta does not): install a renewed one",
				"cert_file", cfg.Ingress.TLS.CertFile, "not_after", at.UTC().Format(time.RFC3339))
		}
		ln = tls.NewListener(ln, ingressTLS.Config())
	}
	s.ingressAddr = ln.Addr().String()
	go func() {
		if err := s.ingress.Serve(ln); err != nil {
			s.serveErr <- fmt.Errorf("ingress listener: %w", err)
		}
	}()

	bgCtx, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel
	s.bg.Go(func() { reg.Watch(bgCtx, cfg.Tenants.ReloadInterval) })
	if ingressTLS != nil {
		s.bg.Go(func() { watchTLSFiles(bgCtx, s.logger, s.tlsGauges, "ingress", ingressTLS) })
	}
	if cfg.Delivery.On() {
		dctx, dcancel := context.WithCancel(context.Background())
		s.deliveryCancel, s.deliveryDone = dcancel, make(chan struct{})
		go func() {
			defer close(s.deliveryDone)
			s.runDelivery(dctx)
		}()
	} else {
		s.logger.Info("delivery is off on this node (delivery.enabled: false)")
	}
	return nil
}

// checkRecordLimits warns about a real cluster's topics that refuse
// records as large as the relay may write: topics made before the relay
// (or by hand) keep their operators' max.message.bytes, Kafka's default
// being 1 MiB. It returns the smallest such limit of the topics the
// ingress writes, less delivery.DeadLetterOverhead for the DLQ (0 if none
// is too small), for the ingress to refuse a body with a larger entry
// before writing any of it (413): an event whose dead letter the DLQ
// refused would hold its tenant's partition until the topic is changed.
func (s *server) checkRecordLimits(ctx context.Context, cfg *config.Config) (maxRecord int) {
	// A body's record: its value, a little larger than the body, its
	// headers and its batch's header fit in 4 KiB more.
	need := max(cfg.Ingress.MaxBodyBytes+4<<10, cfg.Kafka.MaxBatchBytes)
	for _, topic := range []string{cfg.Kafka.Topics.Events, cfg.Kafka.Topics.Unrouted, cfg.Kafka.Topics.DLQ} {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		v, err := s.admin.TopicConfig(cctx, topic, "max.message.bytes")
		cancel()
		if err != nil {
			s.logger.Warn("could not check the topic's record size limit", "topic", topic, "err", err)
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			continue
		}
		record, needed := n, need // the largest event record the topic takes, and what it should take
		if topic == cfg.Kafka.Topics.DLQ {
			// A dead letter is its event's record and a little more.
			record, needed = n-delivery.DeadLetterOverhead, need+delivery.DeadLetterOverhead
		}
		if n < needed {
			if maxRecord == 0 || record < maxRecord {
				maxRecord = max(record, 1)
			}
			s.logger.Warn("the topic refuses records as large as the relay may write: raise its max.message.bytes, or lower ingress.max_body_bytes (and kafka.max_batch_bytes)",
				"topic", topic, "max.message.bytes", n, "needed", needed,
				"ingress.max_body_bytes", cfg.Ingress.MaxBodyBytes, "kafka.max_batch_bytes", cfg.Kafka.MaxBatchBytes)
		}
	}
	return maxRecord
}

// readiness is /readyz: tenants loaded, Kafka reachable, not draining.
func (s *server) readiness(ctx context.Context) error {
	switch {
	case s.draining.Load():
		return errors.New("shutting down")
	case !s.ready.Load() || s.registry == nil || s.registry.Snapshot() == nil:
		return errors.New("starting: waiting for Kafka and the tenants")
	}
	if _, err := s.admin.Partitions(ctx, s.cfg.Kafka.Topics.Events); err != nil {
		return fmt.Errorf("kafka unreachable: %w", err)
	}
	return nil
}

// shutdown stops accepting, finishes in-flight requests, flushes the
// producer, drains delivery and commits its offsets, and closes, all within
// the grace period. Requests get the grace period less a reserve for the
// flush. A client still sending when that runs out is not cut off: fasthttp
// leaves its connection open until the process exits, and whatever it
// completes then is answered 503 (the producer is closed), so nothing
// acknowledged is lost and the shutdown goes on.
func (s *server) shutdown() error {
	s.draining.Store(true)
	grace := s.cfg.Shutdown.GracePeriod
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	s.logger.Info("shutting down", "grace_period", grace)
	var errs []error
	// Delivery drains alongside the ingress: it does not depend on it, and
	// its final commit must land within the grace period.
	if s.deliveryCancel != nil {
		s.deliveryCancel()
	}
	if s.ingress != nil {
		ictx, icancel := context.WithTimeout(ctx, grace-min(grace/3, 5*time.Second))
		if err := s.ingress.ShutdownWithContext(ictx); err != nil {
			s.logger.Warn("requests still unfinished at the end of the grace period; none had been answered, and any that completes now gets 503", "err", err)
		}
		icancel()
	}
	if s.producer != nil {
		if err := s.producer.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.bgCancel != nil {
		s.bgCancel()
	}
	s.bg.Wait()
	if s.deliveryDone != nil {
		select {
		case <-s.deliveryDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("delivery: did not drain within the grace period; events since its last commit will be delivered again"))
		}
	}
	if s.adminSrv != nil {
		if err := s.adminSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin: %w", err))
		}
	}
	s.closeAll()
	if len(errs) > 0 {
		return fmt.Errorf("shutdown: %w", errors.Join(errs...))
	}
	s.logger.Info("shut down cleanly")
	return nil
}

// closeAll releases the Kafka clients and the broker; safe to call twice.
func (s *server) closeAll() {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
	if s.broker != nil {
		s.broker.Close()
		s.broker = nil
	}
}

// retry calls fn until it succeeds, with backoff up to 10s, logging each
// failure; it gives up only when ctx is done or fn's error is permanent
// (an invalid tenants file).
func retry(ctx context.Context, logger *slog.Logger, what string, fn func(context.Context) error) error {
	delay := 200 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, tenant.ErrInvalidFile) {
			return err
		}
		logger.Warn(what+" failed; retrying", "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w (last error: %w)", what, ctx.Err(), err)
		case <-t.C:
		}
		delay = min(delay*2, 10*time.Second)
	}
}

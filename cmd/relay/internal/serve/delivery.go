package serve

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/relaymw/relay/delivery"
	"github.com/relaymw/relay/tlsconf"
)

// runDelivery runs the instance sink in its consumer group until ctx is
// done. If the relay's client certificate is configured but not there yet,
// it waits for it, saying so, rather than failing the whole relay.
func (s *server) runDelivery(ctx context.Context) {
	cfg := s.cfg
	log := s.logger.With("component", "delivery")
	// The metrics exist from the start, so that dashboards and alerts see
	// zeros and the wait below rather than no data.
	sinkMetrics, runtimeMetrics := delivery.NewSinkMetrics(s.reg), delivery.NewRuntimeMetrics(s.reg)
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "relay_delivery_waiting_for_client_cert",
		Help: "1 while delivery waits for the relay's client certificate files to exist and load, or for a renewal of one that expired in use.",
	})
	s.reg.MustRegister(waiting)
	waiting.Set(1)
	tlsClient, err := s.waitClientCert(ctx, log)
	waiting.Set(0)
	if err != nil {
		return
	}
	watching, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go watchTLSFiles(watching, log, s.tlsGauges, "delivery_client", tlsClient)
	transport := &kafka.Transport{Dial: s.dial, ClientID: cfg.Kafka.ClientID + "-delivery", DialTimeout: 5 * time.Second, MetadataTTL: 2 * time.Second}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerAddrs()...), Transport: transport, Timeout: 10 * time.Second}
	sink, err := delivery.NewSink(delivery.SinkConfig{
		Tenants:      s.registry,
		TLS:          tlsClient,
		DeadLetters:  &delivery.DLQ{Client: client, Topic: cfg.Kafka.Topics.DLQ, Events: cfg.Kafka.Topics.Events},
		Timeout:      cfg.Delivery.Timeout,
		MaxAttempts:  cfg.Delivery.MaxAttempts,
		MaxAge:       cfg.Delivery.MaxAge,
		MaxInFlight:  cfg.Delivery.MaxInFlightPerTenant,
		RetryInitial: cfg.Delivery.RetryInitial,
		RetryMax:     cfg.Delivery.RetryMax,
		Breaker:      delivery.BreakerConfig{Failures: cfg.Delivery.Breaker.Failures, OpenFor: cfg.Delivery.Breaker.OpenFor},
		UserAgent:    "relay/" + s.version,
		CertExpired: func(expired bool) {
			if expired {
				waiting.Set(1)
			} else {
				waiting.Set(0)
			}
		},
		Metrics: sinkMetrics,
		Logger:  log,
	})
	if err != nil {
		log.Error("delivery not started", "err", err)
		return
	}
	defer sink.Close()
	go sink.WatchCAFiles(watching, tlsFileCheck)
	err = delivery.Run(ctx, delivery.RuntimeConfig{
		Brokers:        cfg.BrokerAddrs(),
		Group:          cfg.Delivery.Group + "." + sink.Name(),
		Topic:          cfg.Kafka.Topics.Events,
		Module:         sink,
		Transport:      transport,
		Dialer:         &kafka.Dialer{ClientID: cfg.Kafka.ClientID + "-delivery", Timeout: 10 * time.Second, DialFunc: s.dial},
		CommitInterval: cfg.Delivery.CommitInterval,
		// The whole shutdown must fit the grace period: drain, commit, leave.
		Drain:   max(cfg.Shutdown.GracePeriod/2, time.Second),
		Metrics: runtimeMetrics,
		Logger:  log,
	})
	if err != nil {
		log.Error("delivery stopped", "err", err)
	}
}

// waitClientCert loads the relay's client certificate, waiting while its
// files do not exist or do not load.
func (s *server) waitClientCert(ctx context.Context, log interface {
	Warn(string, ...any)
	Error(string, ...any)
}) (*tlsconf.Client, error) {
	cert, key := s.cfg.Delivery.ClientCertFile, s.cfg.Delivery.ClientKeyFile
	if cert == "" {
		log.Warn("delivery.client_cert_file is not set: instances get plain TLS without a client certificate; those that require mutual TLS will refuse the relay")
	}
	// Files missing, or there but not loading (garbage, a pair that does
	// not match, a file caught half written): wait for them either way,
	// saying so once per kind of problem. Giving up would leave delivery
	// stopped for good while the ingress answers 200.
	last := ""
	for {
		c, err := tlsconf.NewClient(cert, key)
		if err == nil {
			return c, nil
		}
		if msg := err.Error(); msg != last {
			last = msg
			if errors.Is(err, os.ErrNotExist) {
				log.Warn("delivery waits for the relay's client certificate (relay certs init --dir DIR writes DIR/relay-client.pem and DIR/relay-client-key.pem)", "cert_file", cert, "key_file", key)
			} else {
				log.Error("delivery waits: the relay's client certificate does not load", "cert_file", cert, "key_file", key, "err", err)
			}
		}
		if !sleepCtx(ctx, 2*time.Second) {
			return nil, ctx.Err()
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

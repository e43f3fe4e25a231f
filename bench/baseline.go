package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/segmentio/kafka-go"
)

// BaselineBatchTimeout is the kafka-go Writer linger of the baseline server.
const BaselineBatchTimeout = 5 * time.Millisecond

// BaselineHandler returns the webhook handler a team writes in an
// afternoon: it reads the body, checks X-Hub-Signature-256 against secret
// (403 when wrong), decodes it with encoding/json (400 when invalid), writes
// one Kafka message per entry[] element keyed by the entry id with a single
// synchronous WriteMessages, and answers 200 once the write returned, 503 if
// it failed.
func BaselineHandler(w *kafka.Writer, secret string) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(rw, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, MaxBodySize))
		if err != nil {
			http.Error(rw, "bad body", http.StatusBadRequest)
			return
		}
		if !VerifySignature(secret, body, r.Header.Get(SignatureHeader)) {
			http.Error(rw, "bad signature", http.StatusForbidden)
			return
		}
		var payload struct {
			Object string            `json:"object"`
			Entry  []json.RawMessage `json:"entry"`
		}
		if err := json.Unmarshal(body, &payload); err != nil {
			http.Error(rw, "bad json", http.StatusBadRequest)
			return
		}
		msgs := make([]kafka.Message, 0, len(payload.Entry))
		for _, raw := range payload.Entry {
			var e struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				http.Error(rw, "bad entry", http.StatusBadRequest)
				return
			}
			msgs = append(msgs, kafka.Message{Key: []byte(e.ID), Value: raw})
		}
		if len(msgs) > 0 {
			if err := w.WriteMessages(r.Context(), msgs...); err != nil {
				http.Error(rw, "kafka write failed", http.StatusServiceUnavailable)
				return
			}
		}
		rw.WriteHeader(http.StatusOK)
	})
}

// NewBaselineWriter returns the baseline's kafka-go Writer: hash balancer on
// the key, acks=all, 5 ms batch timeout. Its Transport is its own: after
// Close, close that one's idle connections too.
func NewBaselineWriter(brokers []string, topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(brokers...),
		// A transport of its own, not kafka-go's shared default: that one
		// keeps each address's metadata for 6 s, which the tests' brokers,
		// started and stopped on reused ports, would be taken for. It
		// costs the same.
		Transport:    &kafka.Transport{},
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: BaselineBatchTimeout,
		WriteTimeout: DefaultTimeout,
	}
}

// ServeBaseline serves BaselineHandler on listenAddr, writing to topic on
// brokers, until ctx ends; then it shuts down gracefully, closes the writer
// and returns nil.
func ServeBaseline(ctx context.Context, listenAddr string, brokers []string, topic, secret string) error {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return err
	}
	return ServeBaselineListener(ctx, ln, brokers, topic, secret)
}

// ServeBaselineListener is ServeBaseline on a listener the caller opened
// (for port 0); it closes ln.
func ServeBaselineListener(ctx context.Context, ln net.Listener, brokers []string, topic, secret string) error {
	if len(brokers) == 0 || topic == "" {
		ln.Close()
		return errors.New("bench: baseline needs brokers and a topic")
	}
	kw := NewBaselineWriter(brokers, topic)
	srv := &http.Server{
		Handler:           BaselineHandler(kw, secret),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	err := serveUntilDone(ctx, func() error { return nil }, func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, srv.Shutdown)
	err = errors.Join(err, kw.Close())
	if tr, ok := kw.Transport.(*kafka.Transport); ok {
		tr.CloseIdleConnections()
	}
	return err
}

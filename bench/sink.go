package bench

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relaymw/relay/tlsconf"
)

// SinkConfig configures a fake tenant instance: an HTTPS server that
// receives the relay's deliveries, checks both signatures, and reports
// each event.
type SinkConfig struct {
	// CertFile and KeyFile are the instance's server certificate.
	CertFile, KeyFile string
	// ClientCAFile, when set, requires a client certificate signed by it
	// (mutual TLS), as a production instance would.
	ClientCAFile string
	// Secret is the tenant's signing secret ("whsec_…"); when set, both
	// X-Hub-Signature-256 and webhook-signature are verified, and so is
	// webhook-timestamp's distance from now (TimestampTolerance); a
	// delivery failing any is answered 401.
	Secret string
	// Out, when set, gets one JSON line per delivery.
	Out io.Writer
	// PrintBody adds the body to each line.
	PrintBody bool
	// MaxBody bounds the bodies taken (0: SinkMaxBody); larger ones get 413.
	MaxBody int
	// OnReceive, when set, is called for every verified delivery.
	OnReceive func(Receipt)
}

// Receipt is one delivery as the instance saw it.
type Receipt struct {
	ID         string    `json:"webhook_id"`
	At         time.Time `json:"received_at"`
	Timestamp  int64     `json:"webhook_timestamp"`
	Bytes      int       `json:"bytes"`
	MetaOK     bool      `json:"x_hub_signature_256_ok"`
	StandardOK bool      `json:"webhook_signature_ok"`
	// TimestampOK: webhook-timestamp is within TimestampTolerance of the
	// receipt, as Standard Webhooks verifiers require against replays.
	TimestampOK bool   `json:"webhook_timestamp_ok"`
	ClientCert  string `json:"client_cert,omitempty"`
	// With PrintBody, the signature headers as received and the body, to
	// check with other tools.
	Signature     string `json:"webhook_signature,omitempty"`
	MetaSignature string `json:"x_hub_signature_256,omitempty"`
	Body          string `json:"body,omitempty"`
}

// SinkMaxBody bounds the bodies a Sink takes; larger ones get 413.
const SinkMaxBody = 64 << 20

// TimestampTolerance is how far webhook-timestamp may be from the receipt
// (the Standard Webhooks libraries' default).
const TimestampTolerance = 5 * time.Minute

// Sink is a running fake instance.
type Sink struct {
	cfg  SinkConfig
	srv  *http.Server
	ln   net.Listener
	key  []byte
	mu   sync.Mutex
	done chan error
}

// StartSink listens on addr ("127.0.0.1:0" for any port) and serves.
func StartSink(addr string, cfg SinkConfig) (*Sink, error) {
	var opts []tlsconf.Option
	if cfg.ClientCAFile != "" {
		opts = append(opts, tlsconf.RequireClientCert(cfg.ClientCAFile))
	}
	ts, err := tlsconf.NewServer(cfg.CertFile, cfg.KeyFile, opts...)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s := &Sink{cfg: cfg, done: make(chan error, 1)}
	if cfg.Secret != "" {
		s.key, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(cfg.Secret, "whsec_"))
		if err != nil || !strings.HasPrefix(cfg.Secret, "whsec_") {
			return nil, errors.New(`sink: the secret must be "whsec_" and base64`)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	s.ln = tls.NewListener(ln, ts.Config())
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { s.done <- s.srv.Serve(s.ln) }()
	return s, nil
}

// Addr is where the sink listens.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// URL is the address to configure as the tenant's instance url.
func (s *Sink) URL() string { return "https://" + s.Addr() + "/meta" }

// Close stops the sink.
func (s *Sink) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if e := <-s.done; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	limit := cmp.Or(s.cfg.MaxBody, SinkMaxBody)
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		http.Error(w, "read error", http.StatusBadRequest)
		return
	}
	if len(body) > limit {
		// Not a signature mismatch: checking a cut body would say so.
		http.Error(w, fmt.Sprintf("body over %d bytes", limit), http.StatusRequestEntityTooLarge)
		return
	}
	rc := Receipt{ID: r.Header.Get("webhook-id"), At: time.Now().UTC(), Bytes: len(body)}
	ts, tsErr := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
	rc.Timestamp = ts
	rc.TimestampOK = tsErr == nil && rc.At.Sub(time.Unix(ts, 0)).Abs() <= TimestampTolerance
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		rc.ClientCert = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if s.cfg.Secret != "" {
		rc.MetaOK = hmac.Equal([]byte(r.Header.Get("X-Hub-Signature-256")), []byte(metaSignature(s.cfg.Secret, body)))
		rc.StandardOK = standardOK(s.key, rc.ID, r.Header.Get("webhook-timestamp"), body, r.Header.Get("webhook-signature"))
	}
	if s.cfg.PrintBody {
		rc.Signature, rc.MetaSignature = r.Header.Get("webhook-signature"), r.Header.Get("X-Hub-Signature-256")
		rc.Body = string(body)
	}
	if s.cfg.Out != nil {
		line, _ := json.Marshal(rc)
		s.mu.Lock()
		_, _ = s.cfg.Out.Write(append(line, '\n'))
		s.mu.Unlock()
	}
	if s.cfg.Secret != "" && (!rc.MetaOK || !rc.StandardOK) {
		http.Error(w, "signature mismatch", http.StatusUnauthorized)
		return
	}
	if s.cfg.Secret != "" && !rc.TimestampOK {
		http.Error(w, "webhook-timestamp outside the tolerance", http.StatusUnauthorized)
		return
	}
	if s.cfg.OnReceive != nil {
		s.cfg.OnReceive(rc)
	}
	w.WriteHeader(http.StatusNoContent)
}

func metaSignature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// standardOK checks a Standard Webhooks signature header, which may carry
// several space-separated "v1,<base64>" signatures.
func standardOK(key []byte, id, timestamp string, body []byte, header string) bool {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + timestamp + "."))
	m.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, sig := range strings.Fields(header) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

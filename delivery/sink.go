package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/sony/gobreaker/v2"

	"github.com/relaymw/relay/delivery/internal/backoff"
	"github.com/relaymw/relay/tenant"
	"github.com/relaymw/relay/tlsconf"
)

// Tenants gives the tenants currently in force; *tenant.Registry is one.
type Tenants interface {
	Snapshot() *tenant.Snapshot
}

// DeadLetters takes the events delivery gave up on.
type DeadLetters interface {
	DeadLetter(ctx context.Context, ev *Event, reason string, attempts int, firstAttempt time.Time) error
}

// BreakerConfig shapes each tenant's circuit breaker.
type BreakerConfig struct {
	// Failures is how many consecutive failed attempts open it (default 5).
	Failures int
	// OpenFor is how long it stays open before a half-open probe (default 30s).
	OpenFor time.Duration
}

// SinkConfig configures the instance sink.
type SinkConfig struct {
	Tenants Tenants
	// TLS presents the relay's client certificate (mutual TLS).
	TLS *tlsconf.Client
	// CertExpired, if set, is told when delivery pauses because the
	// client certificate expired (true) and when it resumes (false).
	CertExpired func(expired bool)
	// DeadLetters receives what delivery gives up on.
	DeadLetters DeadLetters
	// Timeout bounds one attempt (default 10s).
	Timeout time.Duration
	// MaxAttempts and MaxAge bound retries of one event (defaults 15, 72h).
	MaxAttempts int
	MaxAge      time.Duration
	// MaxInFlight is the default window per tenant (default 1: in order).
	MaxInFlight int
	// RetryInitial and RetryMax space retries: retry n waits a random time
	// up to min(RetryMax, RetryInitial·2^(n-1)) (full jitter), or the
	// instance's Retry-After (defaults 1s and 30m).
	RetryInitial time.Duration
	RetryMax     time.Duration
	Breaker      BreakerConfig
	// ConfigPoll is how often a paused tenant's configuration is checked
	// for a change (default 1s).
	ConfigPoll time.Duration
	// UnknownTenantWait is how long an event of a tenant this node does not
	// know waits for it to appear before it is dead-lettered (default 30s):
	// another relay node may have loaded a newer tenants file first.
	UnknownTenantWait time.Duration
	UserAgent         string
	Metrics           *SinkMetrics
	Logger            *slog.Logger
}

func (c *SinkConfig) setDefaults() {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 15
	}
	if c.MaxAge <= 0 {
		c.MaxAge = 72 * time.Hour
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 30 * time.Minute
	}
	if c.Breaker.Failures <= 0 {
		c.Breaker.Failures = 5
	}
	if c.Breaker.OpenFor <= 0 {
		c.Breaker.OpenFor = 30 * time.Second
	}
	if c.ConfigPoll <= 0 {
		c.ConfigPoll = time.Second
	}
	if c.UnknownTenantWait <= 0 {
		c.UnknownTenantWait = 30 * time.Second
	}
	if c.UserAgent == "" {
		c.UserAgent = "relay"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Sink is the instance sink: the module that POSTs each event to its
// tenant's instance over mutual TLS, per the delivery contract.
type Sink struct {
	cfg     SinkConfig
	backoff backoff.Policy

	mu      sync.Mutex
	tenants map[string]*instance
	pruned  *tenant.Snapshot // the tenants file the map was last pruned to

	unknownSince   map[string]time.Time // tenant → first seen unknown (under pausedMu)
	unknowns       atomic.Int32         // len(unknownSince)
	unknownPruneAt int                  // len(unknownSince) that prunes it (under pausedMu)

	pausedMu sync.Mutex
	pausedBy map[int]int // partition → handlers of it paused now

	certExpired atomic.Bool // the relay's client certificate has expired (logged once)
	certMu      sync.Mutex  // orders certExpired's changes and their reports
}

var (
	_ Module     = (*Sink)(nil)
	_ Concurrent = (*Sink)(nil)
)

// NewSink returns the instance sink.
func NewSink(cfg SinkConfig) (*Sink, error) {
	if cfg.Tenants == nil || cfg.DeadLetters == nil || cfg.TLS == nil {
		return nil, errors.New("delivery: the sink needs tenants, a dead-letter writer and a TLS client")
	}
	cfg.setDefaults()
	return &Sink{cfg: cfg, backoff: backoff.Policy{Initial: cfg.RetryInitial, Max: cfg.RetryMax}, tenants: map[string]*instance{}, pausedBy: map[int]int{}, unknownSince: map[string]time.Time{}}, nil
}

// Name implements Module.
func (s *Sink) Name() string { return "instance" }

// InFlight implements Concurrent: the tenant's max_in_flight, else the default.
func (s *Sink) InFlight(tenantID string) int {
	if snap := s.cfg.Tenants.Snapshot(); snap != nil {
		if t := snap.Tenant(tenantID); t != nil && t.Instance.MaxInFlight > 0 {
			return t.Instance.MaxInFlight
		}
	}
	return s.cfg.MaxInFlight
}

// instance is one tenant's delivery state: its HTTP client (keep-alive
// connections over mTLS), breaker and suspension. It is rebuilt when the
// tenant's settings change.
type instance struct {
	id          string
	fingerprint string
	url         string
	secret      string
	key         []byte
	previousKey []byte // during a rotation; else nil
	client      *http.Client
	transport   *http.Transport
	dialer      *tlsconf.Dialer
	breaker     *gobreaker.CircuitBreaker[struct{}]

	// lastFailure is the last attempt that counted against the breaker,
	// for the log line saying it opened.
	lastFailure atomic.Pointer[string]

	mu        sync.Mutex
	suspended bool
	retired   bool // replaced or removed: its breaker no longer reports
	away      bool // its partition is another node's now: not reported here
}

// retire closes in's idle connections and stops its breaker from
// reporting: a Handle still holding in may move it on, and must not
// overwrite its successor's series or bring back a removed tenant's.
func (in *instance) retire() {
	in.mu.Lock()
	in.retired = true
	in.mu.Unlock()
	in.transport.CloseIdleConnections()
}

// instanceFor returns t's delivery state, rebuilding it if t changed.
func (s *Sink) instanceFor(t *tenant.Tenant) (*instance, error) {
	fp := t.Fingerprint()
	s.mu.Lock()
	defer s.mu.Unlock()
	// Read under s.mu, so that no one prunes to an older snapshot.
	snap := s.cfg.Tenants.Snapshot()
	if snap != s.pruned {
		s.pruneLocked(snap)
	}
	if cur := tenantIn(snap, t.ID); snap != nil && (cur == nil || cur != t && cur.Fingerprint() != fp) {
		// t is from an older snapshot, and removed or changed since: do not
		// bring its state back, nor build one from its old settings over
		// the current one's. (The same pointer needs no hashing.)
		return nil, fmt.Errorf("tenant %s: %w", t.ID, errTenantStale)
	}
	if in := s.tenants[t.ID]; in != nil && in.fingerprint == fp {
		// Delivering it: this node handles its partition, whatever the
		// last generation's start said (a tenant removed and restored).
		s.setAwayLocked(t.ID, in, false)
		return in, nil
	}
	key, err := t.SigningKey()
	if err != nil {
		return nil, fmt.Errorf("tenant %s: signing secret: %w", t.ID, err)
	}
	previousKey, err := t.PreviousSigningKey()
	if err != nil {
		return nil, fmt.Errorf("tenant %s: previous signing secret: %w", t.ID, err)
	}
	dialer, err := s.cfg.TLS.Dialer(t.Instance.CAFile)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", t.ID, err)
	}
	conns := max(t.Instance.MaxInFlight, s.cfg.MaxInFlight)
	tr := &http.Transport{
		DialTLSContext:        dialer.DialTLSContext,
		MaxIdleConnsPerHost:   conns,
		MaxConnsPerHost:       conns + 1,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: s.cfg.Timeout,
		DisableCompression:    true,
	}
	if old := s.tenants[t.ID]; old != nil {
		old.retire()
		s.cfg.Logger.Info("tenant settings changed; delivery resumes with them", "tenant", t.ID)
	}
	in := &instance{
		id: t.ID, fingerprint: fp, url: t.Instance.URL, secret: t.Instance.SigningSecret, key: key, previousKey: previousKey,
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is an answer, not a new destination
		}},
		transport: tr,
		dialer:    dialer,
	}
	in.breaker = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        t.ID,
		MaxRequests: 1,
		Timeout:     s.cfg.Breaker.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(s.cfg.Breaker.Failures) },
		IsSuccessful: func(err error) bool {
			// Only a failure of the instance counts: a 4xx or 410 means it is up.
			return err == nil || Classify(err) != Retry
		},
		// An attempt cut short by a rebalance says nothing of the instance:
		// it counts neither way (a cut probe must not close the breaker).
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			in.mu.Lock()
			defer in.mu.Unlock()
			if in.retired || in.away {
				return // replaced, removed or handled elsewhere: its series is another's, or gone
			}
			args := []any{"tenant", name, "from", from.String(), "to", to.String()}
			if last := in.lastFailure.Load(); last != nil && to == gobreaker.StateOpen {
				args = append(args, "last_error", *last)
			}
			s.cfg.Logger.Warn("circuit breaker", args...)
			if m := s.cfg.Metrics; m != nil {
				m.breaker.WithLabelValues(name).Set(float64(to))
			}
		},
	})
	if m := s.cfg.Metrics; m != nil {
		m.breaker.WithLabelValues(t.ID).Set(0)
	}
	s.tenants[t.ID] = in
	s.countSuspendedLocked() // the replaced state may have been suspended
	return in, nil
}

// pruneLocked forgets the tenants snap no longer has: their idle
// connections, breakers and breaker series. s.mu is held.
func (s *Sink) pruneLocked(snap *tenant.Snapshot) {
	s.pruned = snap
	s.pruneUnknown(snap)
	if snap == nil {
		return
	}
	for id, in := range s.tenants {
		if snap.Tenant(id) == nil {
			s.forgetLocked(id, in)
		}
	}
	s.countSuspendedLocked()
}

// forgetLocked drops a tenant's delivery state and series. s.mu is held.
func (s *Sink) forgetLocked(id string, in *instance) {
	in.retire()
	delete(s.tenants, id)
	if m := s.cfg.Metrics; m != nil {
		m.breaker.DeleteLabelValues(id)
		m.caFailing.DeleteLabelValues(id)
	}
}

var _ Assignee = (*Sink)(nil)

// Assigned stops reporting the tenants whose partitions this node no
// longer handles (another node reports them now): their breaker series go,
// and their idle connections are closed. Their state stays (the previous
// CA of a ca_file that no longer loads, a 410 suspension, the breaker), in
// case their partition comes back: then they are reported again. Tenants
// gone from the tenants file are forgotten.
func (s *Sink) Assigned(partitions []int) {
	mine := make(map[int32]bool, len(partitions))
	for _, p := range partitions {
		mine[int32(p)] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.cfg.Tenants.Snapshot()
	for id, in := range s.tenants {
		switch t := tenantIn(snap, id); {
		case t == nil:
			s.forgetLocked(id, in) // removed from the tenants file
		default:
			s.setAwayLocked(id, in, !mine[t.Partition])
		}
	}
	s.countSuspendedLocked()
}

// setAwayLocked marks a tenant handled elsewhere (away) or here again,
// dropping or restoring its breaker series. s.mu is held.
func (s *Sink) setAwayLocked(id string, in *instance, away bool) {
	in.mu.Lock()
	was := in.away
	in.away = away
	in.mu.Unlock()
	if away == was {
		return
	}
	m := s.cfg.Metrics
	if away {
		in.transport.CloseIdleConnections()
		if m != nil {
			m.breaker.DeleteLabelValues(id)
		}
		return
	}
	if m != nil {
		m.breaker.WithLabelValues(id).Set(float64(in.breaker.State()))
	}
	s.countSuspendedLocked()
}

// WatchCAFiles re-reads every known tenant's ca_file every interval until
// ctx ends. One replaced by a file that does not load leaves the previous
// CA in use for new connections (tlsconf); this makes it seen: logged when
// it starts and stops, and relay_delivery_ca_reload_failing{tenant} is 1
// meanwhile.
func (s *Sink) WatchCAFiles(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := map[string]string{} // tenant → error text
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if snap := s.cfg.Tenants.Snapshot(); snap != s.pruned {
			s.pruneLocked(snap) // a removed tenant's CA is not watched, nor its breaker reported
		} else if s.unknowns.Load() > 0 {
			s.pruneUnknown(snap) // tenants unknown for long
		}
		ins := make([]*instance, 0, len(s.tenants))
		for _, in := range s.tenants {
			ins = append(ins, in)
		}
		s.mu.Unlock()
		seen := map[string]bool{}
		for _, in := range ins {
			seen[in.id] = true
			msg := ""
			if err := in.dialer.Reload(); err != nil {
				msg = err.Error()
			}
			if msg == failing[in.id] {
				continue
			}
			s.mu.Lock()
			if s.tenants[in.id] != in {
				s.mu.Unlock()
				continue // replaced or removed meanwhile: not its series any more
			}
			v := 0.0
			if msg != "" {
				v = 1
				failing[in.id] = msg
				s.cfg.Logger.Error("tenant's ca_file replaced but it does not load; the previous CA stays in use", "tenant", in.id, "err", msg)
			} else {
				delete(failing, in.id)
				s.cfg.Logger.Info("tenant's ca_file loads again", "tenant", in.id)
			}
			if m := s.cfg.Metrics; m != nil {
				m.caFailing.WithLabelValues(in.id).Set(v)
			}
			s.mu.Unlock()
		}
		for id := range failing {
			if !seen[id] {
				delete(failing, id) // removed: its series went with it
			}
		}
	}
}

// tenantIn is snap's tenant id, nil for none or no snapshot.
func tenantIn(snap *tenant.Snapshot, id string) *tenant.Tenant {
	if snap == nil {
		return nil
	}
	return snap.Tenant(id)
}

// errTenantStale: the tenant was looked up in an older tenants file; it
// has changed or gone since.
var errTenantStale = errors.New("changed or removed since it was looked up")

// Handle implements Module: deliver ev, retrying, pausing while the
// tenant's breaker is open or the tenant is suspended, dead-lettering
// when delivery must give up. It returns nil when ev is done with.
func (s *Sink) Handle(ctx context.Context, ev *Event) error {
	var (
		attempts        int
		first           time.Time
		lastErr         error
		waitedForTenant bool
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		snap := s.cfg.Tenants.Snapshot()
		if snap == nil {
			// No tenants loaded yet: that says nothing of this event's
			// tenant. Wait for them rather than dead-letter it.
			if !s.pause(ctx, ev.Partition, func() bool { return s.cfg.Tenants.Snapshot() != nil }) {
				return ctx.Err()
			}
			continue
		}
		t := snap.Tenant(ev.Tenant)
		if t != nil {
			s.knownAgain(ev.Tenant)
		} else {
			if !waitedForTenant {
				waitedForTenant = true
				deadline := s.unknownDeadline(ev.Tenant)
				if !s.pause(ctx, ev.Partition, func() bool {
					snap := s.cfg.Tenants.Snapshot()
					return time.Now().After(deadline) || (snap != nil && snap.Tenant(ev.Tenant) != nil)
				}) {
					return ctx.Err()
				}
				continue
			}
			return s.deadLetter(ctx, ev, "unknown_tenant", "unknown tenant "+strconv.Quote(ev.Tenant), attempts, first)
		}
		if t.Instance.Mode != tenant.ModePush {
			// Not ours to push; wait for the tenant's settings to change.
			if !s.pause(ctx, ev.Partition, func() bool { return s.changed(t) }) {
				return ctx.Err()
			}
			continue
		}
		in, err := s.instanceFor(t)
		if errors.Is(err, errTenantStale) {
			continue // changed or removed since t was looked up: look again
		}
		if err != nil {
			// A CA file not there yet, say: retry it, and follow setting changes.
			s.cfg.Logger.Error("tenant cannot be delivered to; retrying", "tenant", t.ID, "err", err)
			if !s.pause(ctx, ev.Partition, func() bool {
				_, err := s.instanceFor(t)
				return err == nil || s.changed(t)
			}) {
				return ctx.Err()
			}
			continue
		}
		if in.isSuspended() {
			if !s.pause(ctx, ev.Partition, func() bool { return s.changed(t) }) {
				return ctx.Err()
			}
			continue
		}
		if born := ev.ageOrigin(); !born.IsZero() && time.Since(born) > s.cfg.MaxAge {
			return s.deadLetter(ctx, ev, "max_age", fmt.Sprintf("older than max_age %s; last: %s", s.cfg.MaxAge, describe(lastErr)), attempts, first)
		}
		if s.clientCertExpired() {
			// Every instance would refuse the handshake: wait for a
			// renewed certificate rather than spend attempts and
			// dead-letter events, as delivery waits for one at start.
			if !s.pause(ctx, ev.Partition, func() bool { return !s.clientCertExpired() }) {
				return ctx.Err()
			}
			continue
		}
		if in.breaker.State() == gobreaker.StateOpen {
			// Paused: no attempts, no fetching, until the breaker lets a probe through.
			if !s.pause(ctx, ev.Partition, func() bool { return in.breaker.State() != gobreaker.StateOpen }) {
				return ctx.Err()
			}
			continue
		}

		if first.IsZero() {
			first = time.Now()
		}
		_, err = in.breaker.Execute(func() (struct{}, error) {
			err := s.attempt(ctx, in, ev)
			if err != nil && Classify(err) == Retry && !errors.Is(err, context.Canceled) {
				msg := failureText(err)
				in.lastFailure.Store(&msg)
			}
			return struct{}{}, err
		})
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return ctx.Err() // cut short by a rebalance: not an outcome
		}
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			// Another event's probe is under way, or the breaker just opened.
			if !sleep(ctx, 50*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		attempts++
		verdict := Classify(err)
		s.count(verdict)
		switch verdict {
		case Delivered:
			if m := s.cfg.Metrics; m != nil && !ev.ReceivedAt.IsZero() {
				m.endToEnd.Observe(time.Since(ev.ReceivedAt).Seconds())
			}
			return nil
		case Gone:
			in.suspend()
			s.countSuspended()
			s.cfg.Logger.Error("instance answered 410 Gone: delivery to the tenant suspended until its settings change", "tenant", t.ID)
			continue
		case Permanent:
			return s.deadLetter(ctx, ev, "permanent", reason(err), attempts, first)
		}
		lastErr = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempts >= s.cfg.MaxAttempts {
			return s.deadLetter(ctx, ev, "max_attempts", fmt.Sprintf("%d attempts; last: %s", attempts, reason(err)), attempts, first)
		}
		delay := s.backoff.Delay(attempts, nil)
		var de *DeliveryError
		if errors.As(err, &de) && de.RetryAfter > 0 {
			// The instance said when to come back: honour it, even past
			// RetryMax (which bounds only our own backoff).
			delay = de.RetryAfter
		}
		retry := true // false: the event reaches max_age first, and goes to the DLQ instead
		if born := ev.ageOrigin(); !born.IsZero() {
			// Never past max_age: the event is dead-lettered then, not
			// held for as long as an instance asks.
			left := max(s.cfg.MaxAge-time.Since(born), 0)
			retry = delay < left
			delay = min(delay, left)
		}
		if m := s.cfg.Metrics; m != nil && retry {
			m.retries.Inc()
		}
		s.cfg.Logger.Debug("delivery failed; retrying", "tenant", t.ID, "event", ev.ID, "attempt", attempts, "reason", reason(err), "in", delay)
		if !s.backoffWait(ctx, t, delay) {
			return ctx.Err()
		}
	}
}

// backoffWait sleeps d, ending early when t's settings change or t is
// removed (the next loop then uses the new settings); false if ctx ended.
func (s *Sink) backoffWait(ctx context.Context, t *tenant.Tenant, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	poll := time.NewTicker(s.cfg.ConfigPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-poll.C:
			if s.changed(t) {
				return true
			}
		}
	}
}

// rebalanceGrace is how long an attempt under way at a rebalance may go on
// before it is cut: enough for an instance that answers, far below the
// group's 10 s rebalance timeout.
const rebalanceGrace = 2 * time.Second

// attempt POSTs ev to the instance once, within Timeout. An attempt under
// way at a shutdown finishes, so that an instance answering in time is not
// sent the event again. At a rebalance it is cut after rebalanceGrace:
// kafka-go holds every partition of this node until each worker returned,
// and a hanging instance would stall every tenant here for up to Timeout.
// A cut event is not committed, and its next owner sends it again (same
// webhook-id).
func (s *Sink) attempt(ctx context.Context, in *instance, ev *Event) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	defer context.AfterFunc(ctx, func() {
		if !errors.Is(context.Cause(ctx), ErrShuttingDown) {
			time.AfterFunc(rebalanceGrace, cancel)
			return
		}
		// Shutting down: let it finish, unless a rebalance comes during the
		// drain (a rolling deploy), which holds every node as above.
		if ended := generationEnded(ctx); ended != nil {
			go func() {
				select {
				case <-ended:
					time.AfterFunc(rebalanceGrace, cancel)
				case <-actx.Done():
				}
			}()
		}
	})()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, in.url, bytes.NewReader(ev.Value))
	if err != nil {
		return &DeliveryError{Err: err}
	}
	now := time.Now()
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", s.cfg.UserAgent)
	h.Set("X-Hub-Signature-256", MetaSignature(in.secret, ev.Value))
	h.Set("webhook-id", ev.ID)
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	sig := StandardSignature(in.key, ev.ID, now.Unix(), ev.Value)
	if in.previousKey != nil {
		// A rotation: one signature per secret, space-separated, as
		// Standard Webhooks has it; the instance's verifier takes either.
		sig += " " + StandardSignature(in.previousKey, ev.ID, now.Unix(), ev.Value)
	}
	h.Set("webhook-signature", sig)
	res, err := in.client.Do(req)
	if m := s.cfg.Metrics; m != nil {
		m.attempt.Observe(time.Since(now).Seconds())
	}
	if err != nil {
		return &DeliveryError{Err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // so the connection is reused
	res.Body.Close()
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return nil
	}
	return &DeliveryError{Status: res.StatusCode, RetryAfter: backoff.RetryAfter(res.Header.Get("Retry-After"), now)}
}

func (s *Sink) count(v Verdict) {
	if m := s.cfg.Metrics; m != nil {
		m.deliveries.WithLabelValues(v.String()).Inc()
	}
}

// deadLetter writes ev to the DLQ, retrying until it is written or ctx
// ends: an event is committed only once it is delivered or dead-lettered.
func (s *Sink) deadLetter(ctx context.Context, ev *Event, kind, why string, attempts int, first time.Time) error {
	if first.IsZero() {
		first = time.Now()
	}
	s.cfg.Logger.Warn("dead-lettering event", "tenant", ev.Tenant, "event", ev.ID, "offset", ev.Offset, "reason", why, "attempts", attempts)
	m := s.cfg.Metrics
	for n := 1; ; n++ {
		err := s.cfg.DeadLetters.DeadLetter(ctx, ev, why, attempts, first)
		if err == nil {
			if m != nil {
				m.dlq.WithLabelValues(kind).Inc()
			}
			return nil
		}
		if n == 1 {
			// The tenant's partition waits for this write: nothing is
			// committed past an event neither delivered nor dead-lettered.
			// Say so where an SRE looks.
			defer s.pausing(ev.Partition)()
			if m != nil {
				m.dlqFailing.Inc()
				defer m.dlqFailing.Dec()
			}
		}
		msg := "writing to the dead-letter topic failed; retrying, and the tenant's deliveries wait for it"
		if errors.Is(err, kafka.MessageSizeTooLarge) {
			msg = "the dead-letter topic refuses this dead letter as too large: raise its max.message.bytes; retrying, and the tenant's deliveries wait for it"
		}
		s.cfg.Logger.Error(msg, "tenant", ev.Tenant, "event", ev.ID, "bytes", len(ev.Value), "err", err)
		if !sleep(ctx, min(time.Duration(n)*time.Second, 30*time.Second)) {
			return ctx.Err()
		}
	}
}

// unknownDeadline is when an event of the unknown tenant id stops waiting
// for it: UnknownTenantWait after the first of its events found it
// unknown, not after each one (a removed tenant's backlog would go to the
// DLQ at one event per wait).
func (s *Sink) unknownDeadline(id string) time.Time {
	s.pausedMu.Lock()
	defer s.pausedMu.Unlock()
	since, ok := s.unknownSince[id]
	if !ok {
		since = time.Now()
		s.unknownSince[id] = since
		if len(s.unknownSince) >= s.unknownPruneAt {
			// Many tenants removed: forget those unknown for long, at
			// a cost that doubling the threshold spreads thin.
			s.pruneUnknownLocked(s.cfg.Tenants.Snapshot())
			s.unknownPruneAt = max(2*len(s.unknownSince), 64)
		}
		s.unknowns.Store(int32(len(s.unknownSince)))
	}
	return since.Add(s.cfg.UnknownTenantWait)
}

// knownAgain forgets that id was unknown: a later removal waits anew. It
// costs an event of a known tenant one atomic load while no tenant is
// unknown.
func (s *Sink) knownAgain(id string) {
	if s.unknowns.Load() == 0 {
		return
	}
	s.pausedMu.Lock()
	delete(s.unknownSince, id)
	s.unknowns.Store(int32(len(s.unknownSince)))
	s.pausedMu.Unlock()
}

// pruneUnknown forgets tenants known in snap, and those unknown for long
// (removed for good: their backlog has long gone to the DLQ; one event
// coming after that waits once more).
func (s *Sink) pruneUnknown(snap *tenant.Snapshot) {
	s.pausedMu.Lock()
	defer s.pausedMu.Unlock()
	s.pruneUnknownLocked(snap)
}

func (s *Sink) pruneUnknownLocked(snap *tenant.Snapshot) {
	old := time.Now().Add(-unknownForgetAfter * s.cfg.UnknownTenantWait)
	for id, since := range s.unknownSince {
		if since.Before(old) || snap != nil && snap.Tenant(id) != nil {
			delete(s.unknownSince, id)
		}
	}
	s.unknowns.Store(int32(len(s.unknownSince)))
}

// unknownForgetAfter is how many UnknownTenantWait an unknown tenant is
// remembered for.
const unknownForgetAfter = 20

// pause waits until resume reports true or ctx ends, counting the
// partition as paused meanwhile; false if ctx ended it.
func (s *Sink) pause(ctx context.Context, partition int, resume func() bool) bool {
	defer s.pausing(partition)()
	t := time.NewTicker(min(s.cfg.ConfigPoll, s.cfg.Breaker.OpenFor/4+time.Millisecond))
	defer t.Stop()
	for !resume() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// clientCertExpired reports whether the relay's client certificate has
// expired; it logs when that starts and ends. The files are re-read at
// most once per tlsconf check interval, so a renewal is seen within it.
func (s *Sink) clientCertExpired() bool {
	expiredAt := func() (time.Time, bool) {
		at := s.cfg.TLS.NotAfter()
		return at, !at.IsZero() && time.Now().After(at)
	}
	at, expired := expiredAt()
	if expired == s.certExpired.Load() {
		return expired
	}
	// A change: report it under certMu, from a fresh look, so that the
	// reports come in the order of the changes and end on the truth (a
	// handler that read before a renewal must not report after it).
	s.certMu.Lock()
	defer s.certMu.Unlock()
	at, expired = expiredAt()
	if expired != s.certExpired.Load() {
		s.certExpired.Store(expired)
		if expired {
			s.cfg.Logger.Error("delivery paused: the relay's client certificate has expired, and every instance would refuse it; install a renewed one", "not_after", at.UTC().Format(time.RFC3339))
		} else {
			s.cfg.Logger.Info("delivery resumed: the relay's client certificate is valid again", "not_after", at.UTC().Format(time.RFC3339))
		}
		if s.cfg.CertExpired != nil {
			s.cfg.CertExpired(expired)
		}
	}
	return expired
}

// pausing counts partition as paused until the returned func is called:
// once, however many handlers of its window wait.
func (s *Sink) pausing(partition int) (done func()) {
	m := s.cfg.Metrics
	if m == nil {
		return func() {}
	}
	s.pausedMu.Lock()
	if s.pausedBy[partition]++; s.pausedBy[partition] == 1 {
		m.paused.Inc()
	}
	s.pausedMu.Unlock()
	return func() {
		s.pausedMu.Lock()
		if s.pausedBy[partition]--; s.pausedBy[partition] == 0 {
			delete(s.pausedBy, partition)
			m.paused.Dec()
		}
		s.pausedMu.Unlock()
	}
}

// changed reports whether t's settings differ from the ones in force.
func (s *Sink) changed(t *tenant.Tenant) bool {
	snap := s.cfg.Tenants.Snapshot()
	if snap == nil {
		return false
	}
	cur := snap.Tenant(t.ID)
	return cur == nil || cur.Fingerprint() != t.Fingerprint()
}

// countSuspended sets the suspended-tenants gauge.
func (s *Sink) countSuspended() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countSuspendedLocked()
}

func (s *Sink) countSuspendedLocked() {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	n := 0
	for _, in := range s.tenants {
		in.mu.Lock()
		if in.suspended && !in.away {
			n++
		}
		in.mu.Unlock()
	}
	m.suspended.Set(float64(n))
}

func (in *instance) suspend() {
	in.mu.Lock()
	in.suspended = true
	in.mu.Unlock()
}

func (in *instance) isSuspended() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.suspended
}

// Close releases idle connections.
func (s *Sink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, in := range s.tenants {
		in.transport.CloseIdleConnections()
	}
}

func describe(err error) string {
	if err == nil {
		return "no attempt failed"
	}
	return reason(err)
}

package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/tenant"
)

// nopModule is a module that does nothing.
type nopModule struct{ name string }

func (m nopModule) Name() string                         { return m.name }
func (m nopModule) Handle(context.Context, *Event) error { return nil }

type staticTenants struct{ s *tenant.Snapshot }

func (st staticTenants) Snapshot() *tenant.Snapshot { return st.s }

// TestModules_Registry: a name is registered once; New builds a registered
// module with the deps given and refuses an unknown name.
func TestModules_Registry(t *testing.T) {
	var m Modules
	require.Empty(t, m.Names())
	var got Deps
	require.NoError(t, m.Register("instance", func(d Deps) (Module, error) {
		got = d
		return nopModule{"instance"}, nil
	}))
	require.NoError(t, m.Register("bot", func(Deps) (Module, error) { return nil, errors.New("bot: not configured") }))

	err := m.Register("instance", func(Deps) (Module, error) { return nopModule{"other"}, nil })
	require.Error(t, err, "a duplicate Register is refused")
	require.Contains(t, err.Error(), "instance")
	require.Equal(t, []string{"bot", "instance"}, m.Names())

	deps := Deps{Tenants: staticTenants{}}
	mod, err := m.New("instance", deps)
	require.NoError(t, err)
	require.Equal(t, "instance", mod.Name(), "the first registration stays")
	require.Equal(t, deps, got)

	_, err = m.New("bot", deps)
	require.EqualError(t, err, "bot: not configured", "a factory's error is returned")

	_, err = m.New("privacy", deps)
	require.Error(t, err, "an unknown name")
	require.Contains(t, err.Error(), `"privacy"`)

	var fresh Modules // a value, not a global: another registry knows nothing
	_, err = fresh.New("instance", deps)
	require.Error(t, err)
}

// TestClassify: every status class to its verdict; no answer is Retry.
func TestClassify(t *testing.T) {
	status := func(s int) error { return &DeliveryError{Status: s} }
	noAnswer := func(err error) error { return &DeliveryError{Err: err} }
	tests := []struct {
		name string
		err  error
		want Verdict
	}{
		{"nil", nil, Delivered},
		{"200", status(200), Delivered},
		{"201", status(201), Delivered},
		{"202", status(202), Delivered},
		{"204", status(204), Delivered},
		{"299", status(299), Delivered},
		{"408 request timeout", status(http.StatusRequestTimeout), Retry},
		{"425 too early", status(http.StatusTooEarly), Retry},
		{"429 too many requests", status(http.StatusTooManyRequests), Retry},
		{"500", status(500), Retry},
		{"502", status(502), Retry},
		{"503", status(503), Retry},
		{"504", status(504), Retry},
		{"599", status(599), Retry},
		{"410 gone", status(http.StatusGone), Gone},
		{"400", status(400), Permanent},
		{"401", status(401), Permanent},
		{"403", status(403), Permanent},
		{"404", status(404), Permanent},
		{"405", status(405), Permanent},
		{"409", status(409), Permanent},
		{"413", status(413), Permanent},
		{"415", status(415), Permanent},
		{"422", status(422), Permanent},
		{"451", status(451), Permanent},
		{"499", status(499), Permanent},
		{"wrapped 503", fmt.Errorf("attempt: %w", status(503)), Retry},
		{"wrapped 400", fmt.Errorf("attempt: %w", status(400)), Permanent},
		{"no answer: connection refused", noAnswer(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), Retry},
		{"no answer: timeout", noAnswer(context.DeadlineExceeded), Retry},
		{"no answer: reset", noAnswer(syscall.ECONNRESET), Retry},
		{"no answer: tls", noAnswer(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), Retry},
		{"no answer: url error", &url.Error{Op: "Post", URL: "https://x", Err: noAnswer(errors.New("EOF"))}, Retry},
		{"not a DeliveryError", errors.New("something"), Retry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, Classify(tt.err))
		})
	}
	require.Equal(t, "delivered", Delivered.String())
	require.Equal(t, "retry", Retry.String())
	require.Equal(t, "permanent", Permanent.String())
	require.Equal(t, "gone", Gone.String())
}

// TestReason names failures for the DLQ without message contents.
func TestReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&DeliveryError{Status: 400}, "status 400"},
		{&DeliveryError{Status: 503}, "status 503"},
		{&DeliveryError{Err: &url.Error{Op: "Post", URL: "https://x", Err: fmt.Errorf("handshake: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}})}}, "tls: instance certificate not trusted"},
		{&DeliveryError{Err: fmt.Errorf("handshake: %w", x509.UnknownAuthorityError{})}, "tls: instance certificate not trusted"},
		{&DeliveryError{Err: &url.Error{Op: "Post", URL: "https://x", Err: context.DeadlineExceeded}}, "timeout"},
		{&DeliveryError{Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connection"},
	} {
		require.Equal(t, tt.want, reason(tt.err), "%v", tt.err)
	}
	require.Equal(t, "instance answered 503", (&DeliveryError{Status: 503}).Error())
	require.Contains(t, (&DeliveryError{Err: errors.New("boom")}).Error(), "no answer: boom")
}

// TestTracker_OutOfOrderCompletion: the commit point is the offset after
// the longest finished prefix, whatever order events finish in.
func TestTracker_OutOfOrderCompletion(t *testing.T) {
	tr := newTracker(10)
	for o := int64(10); o < 16; o++ {
		tr.add(o)
	}
	step := func(done int64, want int64, moved bool) {
		t.Helper()
		reported := int64(-1)
		tr.done(done, func(next int64) { reported = next })
		require.Equal(t, moved, reported >= 0, "done(%d)", done)
		require.Equal(t, want, tr.next, "done(%d)", done)
		if moved {
			require.Equal(t, want, reported, "done(%d)", done)
		}
	}
	step(12, 10, false) // 10 and 11 still in flight
	step(11, 10, false)
	step(14, 10, false)
	step(10, 13, true) // 10, 11, 12 done: commit point 13
	step(15, 13, false)
	step(13, 16, true) // everything done
	require.Empty(t, tr.pending)
	require.Empty(t, tr.finished, "finished offsets are forgotten once committed past")

	// Gaps in offsets (compacted or transactional records) are no holes.
	tr = newTracker(100)
	for _, o := range []int64{100, 103, 107} {
		tr.add(o)
	}
	step(107, 100, false)
	step(103, 100, false)
	step(100, 108, true)

	// An event never finished (handed back at a shutdown) holds the commit
	// point, however many after it finish.
	tr = newTracker(0)
	for o := range int64(5) {
		tr.add(o)
	}
	step(0, 1, true)
	for o := int64(2); o < 5; o++ {
		step(o, 1, false)
	}
}

// TestWindow_BoundsInFlight: acquire takes one of size slots, waits for a
// release when all are taken, gives up when ctx ends; the size may change
// from one acquire to the next.
func TestWindow_BoundsInFlight(t *testing.T) {
	ctx := context.Background()
	w := newWindow()
	require.True(t, w.acquire(ctx, 2))
	require.True(t, w.acquire(ctx, 2))

	got := make(chan bool, 1)
	go func() { got <- w.acquire(ctx, 2) }()
	select {
	case <-got:
		t.Fatal("a third acquire of a window of 2 must wait")
	case <-time.After(50 * time.Millisecond):
	}
	w.release()
	select {
	case ok := <-got:
		require.True(t, ok)
	case <-time.After(5 * time.Second):
		t.Fatal("a release must let the waiting acquire through")
	}

	// Shrunk to 1 with 2 in flight: waits for both to be released.
	cctx, cancel := context.WithCancel(ctx)
	go func() { got <- w.acquire(cctx, 1) }()
	w.release()
	select {
	case <-got:
		t.Fatal("still 1 in flight: the window of 1 is full")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case ok := <-got:
		require.False(t, ok, "ctx ended: acquire gives up")
	case <-time.After(5 * time.Second):
		t.Fatal("acquire must return when ctx ends")
	}
	w.release()
	require.True(t, w.acquire(ctx, 1))
	w.release()

	// wait waits for the handlers started on it.
	done := make(chan struct{})
	release := make(chan struct{})
	w.wg.Go(func() { <-release })
	go func() { w.wait(); close(done) }()
	select {
	case <-done:
		t.Fatal("wait returned with a handler running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-done
}

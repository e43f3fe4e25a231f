package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// scriptedListener returns its errors in turn from Accept, then conn,
// then net.ErrClosed.
type scriptedListener struct {
	net.Listener
	errs []error
	conn net.Conn
}

func (l *scriptedListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	if c := l.conn; c != nil {
		l.conn = nil
		return c, nil
	}
	return nil, net.ErrClosed
}

// Regression: fasthttp stops serving at any accept error but a timeout, so
// running out of file descriptors (a flood of connections past ulimit -n)
// ended the ingress listener and with it the whole relay. Such errors are
// now retried; a closed listener still ends Serve.
func TestAcceptRetriesPassingErrors(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	l := &retryListener{
		Listener: &scriptedListener{errs: []error{emfile, emfile, fmt.Errorf("wrapped: %w", syscall.ENFILE)}, conn: a},
		log:      slog.New(slog.DiscardHandler),
	}
	c, err := l.Accept()
	require.NoError(t, err)
	require.Equal(t, a, c)
	_, err = l.Accept()
	require.True(t, errors.Is(err, net.ErrClosed), "a closed listener ends Serve: %v", err)
}

// The same through the server: an EMFILE from Accept does not end Serve,
// which goes on to the closed listener.
func TestServerServeSurvivesEMFILE(t *testing.T) {
	s := (&Ingress{cfg: IngressConfig{Logger: slog.New(slog.DiscardHandler)}}).NewServer(ServerConfig{})
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	err := s.Serve(&scriptedListener{errs: []error{emfile}})
	require.False(t, errors.Is(err, syscall.EMFILE), "Serve ended on EMFILE: %v", err)
}

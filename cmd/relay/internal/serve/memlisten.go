package serve

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp/fasthttputil"
)

// memListener is the embedded broker's listener: TCP for every other
// client (kcat, relay dlq, other relay nodes), and in-memory connections
// for this process's own Kafka clients, which skip the loopback socket's
// system calls. Both speak the same Kafka protocol to the same broker.
type memListener struct {
	tcp  net.Listener
	mem  chan net.Conn
	tcpc chan acceptResult
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newMemListener(tcp net.Listener) *memListener {
	l := &memListener{tcp: tcp, mem: make(chan net.Conn), tcpc: make(chan acceptResult), done: make(chan struct{})}
	l.wg.Go(func() {
		var delay time.Duration
		for {
			c, err := tcp.Accept()
			if err != nil && !errors.Is(err, net.ErrClosed) {
				// Out of file descriptors, say: the broker must not stop
				// (its in-memory connections need none). Retry, as net/http
				// does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			delay = 0
			select {
			case l.tcpc <- acceptResult{c, err}:
			case <-l.done:
				if c != nil {
					c.Close()
				}
				return
			}
			if err != nil {
				return
			}
		}
	})
	return l
}

func (l *memListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.mem:
		return c, nil
	case r := <-l.tcpc:
		return r.c, r.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *memListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		close(l.done)
		err = l.tcp.Close()
		l.wg.Wait()
	})
	return err
}

func (l *memListener) Addr() net.Addr { return l.tcp.Addr() }

// dial returns a Dial function for kafka-go: the broker's own address is
// served in memory, any other by TCP.
func (l *memListener) dial(next func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	self := l.tcp.Addr().String()
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != self {
			return next(ctx, network, addr)
		}
		pc := fasthttputil.NewPipeConns()
		select {
		case l.mem <- pc.Conn2():
			return pc.Conn1(), nil
		case <-l.done:
			pc.Close()
			return nil, net.ErrClosed
		case <-ctx.Done():
			pc.Close()
			return nil, ctx.Err()
		}
	}
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM to a relay under load, with one request
// caught half-sent: the process must finish that request (200, written),
// exit 0 within the grace period, refuse connections afterwards, and every
// event it answered 200 must be in Kafka (read after a restart on the same
// data, since the embedded broker stops with the process).
func TestGracefulShutdown(t *testing.T) {
	const grace = 10 * time.Second
	e := newRelayEnv(t, relayOptions{GracePeriod: grace})
	p := e.start()
	tenants := []testTenant{tenantAcme, tenantGlobex}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	load := startLoad(ctx, t, e.URL(), "m_term", 8, 5000, tenants...)
	loadStart := time.Now()
	if !waitFor(20*time.Second, func() bool { return load.ackedCount() >= 200 && time.Since(loadStart) >= time.Second }) {
		cancel()
		load.wait(t, 30*time.Second)
		t.Fatalf("the load did not get going: %s", load.summary())
	}

	// A request in flight: headers and half its body sent.
	slowBody := messengerBody(t, tenantAcme.Accounts[0], "m_term_inflight")
	conn, err := net.DialTimeout("tcp", e.Ingress, 3*time.Second)
	if err != nil {
		t.Fatalf("dial ingress: %v", err)
	}
	defer conn.Close()
	head := fmt.Sprintf("POST /webhooks/meta HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n",
		e.Ingress, sign(slowBody, testAppSecret), len(slowBody))
	half := len(slowBody) / 2
	if _, err := io.WriteString(conn, head+string(slowBody[:half])); err != nil {
		t.Fatalf("write half a request: %v", err)
	}

	// In flight means the relay took the connection and read the request's
	// start, not that it sits in the kernel's accept queue.
	if err := waitServerRead(conn, 10*time.Second); err != nil {
		t.Fatalf("in-flight request: %v", err)
	}

	load.markAfter()
	termAt := time.Now()
	p.signal(syscall.SIGTERM)
	if !p.waitLog("shutting down", 5*time.Second) {
		t.Fatalf("no \"shutting down\" logged within 5s of SIGTERM")
	}

	// The half-sent request completes.
	if _, err := conn.Write(slowBody[half:]); err != nil {
		t.Errorf("in-flight request: writing the rest of the body after SIGTERM: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(grace))
	inflightOK := false
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Errorf("in-flight request: no answer after SIGTERM: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("in-flight request: %d %q after SIGTERM, want 200", resp.StatusCode, b)
		}
		inflightOK = resp.StatusCode == 200
	}

	if !p.wait(grace + 5*time.Second) {
		t.Fatalf("relay still running %v after SIGTERM (grace period %v)", time.Since(termAt).Round(time.Millisecond), grace)
	}
	took := time.Since(termAt)
	if code := p.state.ExitCode(); code != 0 {
		t.Errorf("relay exited with %d (%v) after SIGTERM, want 0", code, p.state)
	}
	if took > grace {
		t.Errorf("relay took %v to exit, more than its grace period %v", took.Round(time.Millisecond), grace)
	}
	if !strings.Contains(p.Stderr(), "shut down cleanly") {
		t.Errorf("no \"shut down cleanly\" in the log")
	}
	load.wait(t, 30*time.Second)
	cancel()
	t.Logf("exited %v after SIGTERM; load: %s; after SIGTERM: statuses %v, errors %v",
		took.Round(time.Millisecond), load.summary(), load.lateStatuses, load.lateErrs)
	for code, n := range load.statuses {
		if code != 200 && code != 503 {
			t.Errorf("%d requests answered %d under load and shutdown; want only 200 (or 503)", n, code)
		}
	}

	// After the exit, connections are refused.
	c := newHTTPClient()
	if _, err := post(c, e.URL(), slowBody, sign(slowBody, testAppSecret)); !isConnRefused(err) {
		t.Errorf("POST after the relay exited: %v, want connection refused", err)
	}
	if _, err := net.DialTimeout("tcp", e.Admin, time.Second); !isConnRefused(err) {
		t.Errorf("admin listener after exit: %v, want connection refused", err)
	}

	// Every 200 is in Kafka: restart on the same data and read it.
	acked := maps.Clone(load.acked)
	if inflightOK {
		acked["m_term_inflight"] = tenantAcme.ID
	}
	e.start()
	partitionOf := map[string]int{}
	for _, r := range readTopic(t, e.Kafka, "relay.events") {
		partitionOf[r.Key] = r.Partition
	}
	dups := checkAcked(t, e.Kafka, acked, partitionOf)
	if dups > 0 {
		t.Logf("%d events written more than once", dups)
	}
	if len(partitionOf) != 2 {
		t.Errorf("relay.events keys %v: want acme and globex each in a partition of its own", partitionOf)
	}
	t.Logf("%d events answered 200 (%d of them after SIGTERM), all in relay.events", len(acked), len(load.lateOK))
}

// waitServerRead waits until the server's end of conn (a loopback TCP
// connection) has no unread bytes: the server accepted the connection and
// read what was sent. It reads Linux's /proc/net/tcp.
func waitServerRead(conn net.Conn, timeout time.Duration) error {
	client := conn.LocalAddr().(*net.TCPAddr)
	server := conn.RemoteAddr().(*net.TCPAddr)
	local := fmt.Sprintf(":%04X", server.Port)
	remote := fmt.Sprintf(":%04X", client.Port)
	deadline := time.Now().Add(timeout)
	last := "not found"
	for time.Now().Before(deadline) {
		data, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			return fmt.Errorf("read /proc/net/tcp: %w", err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 5 || !strings.HasSuffix(f[1], local) || !strings.HasSuffix(f[2], remote) {
				continue
			}
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseUint(rx, 16, 64)
			if err != nil {
				return fmt.Errorf("/proc/net/tcp: %q: %w", line, err)
			}
			if f[3] == "01" && n == 0 { // ESTABLISHED, nothing left unread
				return nil
			}
			last = fmt.Sprintf("state %s, %d bytes unread", f[3], n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("the relay did not read the request's start within %v (%s)", timeout, last)
}

// waitAccepted waits until the listening socket on addr (loopback) has no
// connection waiting in its accept queue: the server took them all. It
// reads Linux's /proc/net/tcp, where a listener's rx_queue is its backlog.
func waitAccepted(addr string, timeout time.Duration) error {
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf(":%04X", p)
	deadline := time.Now().Add(timeout)
	last := "listener not found"
	for time.Now().Before(deadline) {
		data, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			return fmt.Errorf("read /proc/net/tcp: %w", err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 5 || f[3] != "0A" || !strings.HasSuffix(f[1], local) { // 0A: LISTEN
				continue
			}
			_, rx, _ := strings.Cut(f[4], ":")
			n, err := strconv.ParseUint(rx, 16, 64)
			if err != nil {
				return fmt.Errorf("/proc/net/tcp: %q: %w", line, err)
			}
			if n == 0 {
				return nil
			}
			last = fmt.Sprintf("%d connections not accepted", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("%s within %v", last, timeout)
}

// TestGracefulShutdownIdleConnections sends SIGTERM while clients hold
// connections that carry no request: one just opened (as HTTP clients and
// load balancers pre-connect) and one kept alive after a request. Neither is
// in flight, so the relay must close them and exit 0 within its grace
// period, here 3s.
func TestGracefulShutdownIdleConnections(t *testing.T) {
	const grace = 3 * time.Second
	e := newRelayEnv(t, relayOptions{GracePeriod: grace})
	p := e.start()

	// A keep-alive connection, idle after one request.
	c := newHTTPClient()
	mustPost(t, c, e.URL(), messengerBody(t, tenantAcme.Accounts[0], "m_idle_keepalive"), 200)

	// A connection that has sent nothing yet.
	conn, err := net.DialTimeout("tcp", e.Ingress, 3*time.Second)
	if err != nil {
		t.Fatalf("dial ingress: %v", err)
	}
	defer conn.Close()
	if err := waitAccepted(e.Ingress, 10*time.Second); err != nil {
		t.Fatalf("the relay did not accept the connection: %v", err)
	}

	termAt := time.Now()
	p.signal(syscall.SIGTERM)
	if !p.wait(grace + 10*time.Second) {
		t.Fatalf("relay still running %v after SIGTERM (grace period %v)", time.Since(termAt).Round(time.Millisecond), grace)
	}
	took := time.Since(termAt)
	t.Logf("exited %v after SIGTERM with %v", took.Round(time.Millisecond), p.state)
	if code := p.state.ExitCode(); code != 0 {
		t.Errorf("relay exited with %d after SIGTERM with an idle connection open, want 0", code)
	}
	if took >= grace {
		t.Errorf("relay took %v to exit (grace period %v): it waited for a connection that carried no request", took.Round(time.Millisecond), grace)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Errorf("the idle connection got data instead of being closed")
	}
}

// TestGracefulShutdownSIGINT: Ctrl-C stops the relay like SIGTERM: exit 0
// within the grace period, what was answered 200 is kept.
func TestGracefulShutdownSIGINT(t *testing.T) {
	const grace = 10 * time.Second
	e := newRelayEnv(t, relayOptions{GracePeriod: grace})
	p := e.start()
	c := newHTTPClient()
	mustPost(t, c, e.URL(), messengerBody(t, tenantGlobex.Accounts[0], "m_before_sigint"), 200)
	c.CloseIdleConnections()
	at := time.Now()
	p.signal(os.Interrupt)
	if !p.wait(grace + 5*time.Second) {
		t.Fatalf("relay still running %v after SIGINT", time.Since(at).Round(time.Millisecond))
	}
	if took := time.Since(at); p.state.ExitCode() != 0 || took > grace {
		t.Errorf("after SIGINT: %v after %v, want exit 0 within %v", p.state, took.Round(time.Millisecond), grace)
	}
	e.start()
	checkAcked(t, e.Kafka, map[string]string{"m_before_sigint": tenantGlobex.ID}, nil)
}

// Ctrl-C twice: a second SIGTERM while the relay waits out its grace
// period for a client still sending ends it at once, as an operator
// expects; the first alone would wait the whole grace period.
func TestSecondSignalEndsServeAtOnce(t *testing.T) {
	const grace = 30 * time.Second
	e := newRelayEnv(t, relayOptions{GracePeriod: grace})
	p := e.start()

	body := messengerBody(t, tenantAcme.Accounts[0], "m_second_signal")
	conn, err := net.DialTimeout("tcp", e.Ingress, 3*time.Second)
	if err != nil {
		t.Fatalf("dial ingress: %v", err)
	}
	defer conn.Close()
	head := fmt.Sprintf("POST /webhooks/meta HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n",
		e.Ingress, sign(body, testAppSecret), len(body))
	if _, err := io.WriteString(conn, head+string(body[:len(body)/2])); err != nil {
		t.Fatalf("write half a request: %v", err)
	}
	if err := waitServerRead(conn, 10*time.Second); err != nil {
		t.Fatalf("in-flight request: %v", err)
	}

	p.signal(syscall.SIGTERM)
	if !p.waitLog("shutting down", 5*time.Second) {
		t.Fatalf("no \"shutting down\" logged within 5s of SIGTERM")
	}
	if p.wait(500 * time.Millisecond) {
		t.Fatalf("relay exited with a client still sending: %v", p.state)
	}
	second := time.Now()
	p.signal(syscall.SIGTERM)
	if !p.wait(5 * time.Second) {
		t.Fatalf("relay still running 5s after a second SIGTERM (grace period %v)", grace)
	}
	t.Logf("exited %v after the second SIGTERM: %v", time.Since(second).Round(time.Millisecond), p.state)
	if p.state.Success() {
		t.Errorf("relay exited 0 after a second SIGTERM cut its shutdown short")
	}
}

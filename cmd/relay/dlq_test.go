package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/relaymw/relay/delivery"
)

// dlqInstance is an mTLS instance whose answer the test sets: 400 sends
// events to the dead-letter topic, 204 accepts them. It records the
// message ids it accepted, in order.
type dlqInstance struct {
	status atomic.Int32
	mu     sync.Mutex
	mids   []string
	url    string
}

func dlqStartInstance(t *testing.T, certFile, keyFile, caFile string) *dlqInstance {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	in := &dlqInstance{}
	in.status.Store(http.StatusBadRequest)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			status := int(in.status.Load())
			if status/100 == 2 {
				in.mu.Lock()
				in.mids = append(in.mids, midOf(body))
				in.mu.Unlock()
			}
			w.WriteHeader(status)
		}),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(tls.NewListener(ln, &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		}))
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	in.url = "https://" + ln.Addr().String() + "/acme/meta"
	return in
}

func (in *dlqInstance) accepted() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.mids...)
}

// dlqRun runs a relay dlq subcommand of the built binary.
func dlqRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(relayBin, append([]string{"dlq"}, args...)...)
	cmd.Env = cleanEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// TestDLQListAndRedrive: an instance answering 400 sends a tenant's events
// to relay.dlq; relay dlq list shows them, oldest first, with the reason;
// once the instance is fixed, relay dlq redrive puts them back into the
// tenant's partition and they are delivered in their original order; a
// second list shows none left.
func TestDLQListAndRedrive(t *testing.T) {
	files := dlvDevCA(t, "acme")
	in := dlqStartInstance(t, files.Tenants["acme"].Cert, files.Tenants["acme"].Key, files.CA.Cert)
	acme := tenantAcme
	acme.URL, acme.CAFile, acme.Secret = in.url, files.CA.Cert, dlvSecretAcme
	e := newRelayEnv(t, relayOptions{Tenants: []testTenant{acme, tenantGlobex}, Delivery: dlvDelivery(files, "")})
	e.start()
	c := newHTTPClient()

	mids := []string{"m_dlq_first", "m_dlq_second", "m_dlq_third"}
	for _, mid := range mids {
		mustPost(t, c, e.URL(), messengerBody(t, "104857392810345", mid), http.StatusOK)
	}

	type row struct {
		EventID  string `json:"event_id"`
		Reason   string `json:"reason"`
		Attempts int    `json:"attempts"`
		Value    json.RawMessage
	}
	list := func() []row {
		out, errOut, code := dlqRun(t, "list", "--tenant", "acme", "--config", e.ConfigPath, "--json", "--values")
		if code != 0 {
			t.Fatalf("relay dlq list: exit %d: %s", code, errOut)
		}
		var rows []row
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var r row
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("relay dlq list: %q: %v", line, err)
			}
			rows = append(rows, r)
		}
		return rows
	}
	var rows []row
	if !waitFor(30*time.Second, func() bool { rows = list(); return len(rows) == len(mids) }) {
		t.Fatalf("dead letters: %d, want %d", len(rows), len(mids))
	}
	for i, r := range rows {
		if r.Reason != "status 400" || r.Attempts != 1 {
			t.Errorf("dead letter %d: reason %q after %d attempts, want status 400 after 1", i, r.Reason, r.Attempts)
		}
		if got := midOf(r.Value); got != mids[i] {
			t.Errorf("dead letter %d is %s, want %s: oldest first", i, got, mids[i])
		}
		if r.EventID != eventID(r.Value) {
			t.Errorf("dead letter %d: event id %s, want %s", i, r.EventID, eventID(r.Value))
		}
	}
	if got := in.accepted(); len(got) != 0 {
		t.Fatalf("the instance accepted %v while answering 400", got)
	}
	// The table form names the reason too.
	out, _, code := dlqRun(t, "list", "--tenant", "acme", "--config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, "status 400") || !strings.Contains(out, "3 dead letters") {
		t.Fatalf("relay dlq list (table): exit %d:\n%s", code, out)
	}

	in.status.Store(http.StatusNoContent)
	out, errOut, code := dlqRun(t, "redrive", "--tenant", "acme", "--config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, "redrove 3 of tenant acme's dead letters") {
		t.Fatalf("relay dlq redrive: exit %d: %s%s", code, out, errOut)
	}
	if !waitFor(30*time.Second, func() bool { return len(in.accepted()) >= len(mids) }) {
		t.Fatalf("redriven events delivered: %v, want %v", in.accepted(), mids)
	}
	if got := in.accepted(); strings.Join(got, ",") != strings.Join(mids, ",") {
		t.Fatalf("redriven events arrived as %v, want %v in their original order", got, mids)
	}
	if rows := list(); len(rows) != 0 {
		t.Fatalf("after the redrive: %d dead letters still listed", len(rows))
	}
	out, _, code = dlqRun(t, "redrive", "--tenant", "acme", "--config", e.ConfigPath)
	if code != 0 || !strings.Contains(out, "redrove 0 of tenant") {
		t.Fatalf("a second redrive: exit %d: %s", code, out)
	}

	// Mistakes get a clear error.
	if _, errOut, code := dlqRun(t, "redrive", "--tenant", "nobody", "--config", e.ConfigPath); code != 1 || !strings.Contains(errOut, `tenant "nobody" is not in`) {
		t.Fatalf("redrive of an unknown tenant: exit %d: %s", code, errOut)
	}
	if _, _, code := dlqRun(t, "list", "--config", e.ConfigPath); code != 2 {
		t.Fatalf("list without --tenant: exit %d, want 2", code)
	}
}

// The table is printed as the dead letters are read, aligned in blocks
// (a tenant may have millions): every row is there once, in order, with
// the count at the end; one cut short has no count.
func TestDeadLetterPrinterStreamsTheTable(t *testing.T) {
	var out bytes.Buffer
	p := newDeadLetterPrinter(&out, false, false)
	const n = 2*tableBlock + 500
	for i := range n {
		if err := p.print(delivery.DeadLetter{Offset: int64(i), EventID: fmt.Sprintf("evt-%d", i), Reason: "status 400"}); err != nil {
			t.Fatal(err)
		}
		if i == tableBlock && !strings.Contains(out.String(), fmt.Sprintf("evt-%d ", tableBlock-1)) {
			t.Fatalf("nothing printed after %d rows", tableBlock)
		}
	}
	p.done(true)
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != n+2 || !strings.HasPrefix(lines[0], "OFFSET") || lines[n+1] != fmt.Sprintf("%d dead letters", n) {
		t.Fatalf("got %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	for i, l := range lines[1 : n+1] {
		if f := strings.Fields(l); len(f) < 2 || f[0] != fmt.Sprint(i) || f[1] != fmt.Sprintf("evt-%d", i) {
			t.Fatalf("row %d: %q", i, l)
		}
	}

	out.Reset()
	p = newDeadLetterPrinter(&out, false, false)
	_ = p.print(delivery.DeadLetter{EventID: "evt-0"})
	p.done(false)
	if strings.Contains(out.String(), "dead letters") || !strings.Contains(out.String(), "evt-0") {
		t.Fatalf("a list cut short:\n%s", out.String())
	}
}

// With --values the body is the table's last column, so that the other
// columns stay aligned (it used to be a line of its own, which broke the
// alignment of every row after the first).
func TestDeadLetterPrinterValuesColumn(t *testing.T) {
	var out bytes.Buffer
	p := newDeadLetterPrinter(&out, false, true)
	for i, id := range []string{"evt-short", "evt-a-much-longer-id"} {
		_ = p.print(delivery.DeadLetter{Offset: int64(i), EventID: id, Reason: "status 400", Value: []byte(`{"object":"page"}`)})
	}
	p.done(true)
	lines := strings.Split(out.String(), "\n")
	col := strings.Index(lines[0], "REASON")
	for _, l := range lines[1:3] {
		if strings.Index(l, "status 400") != col || !strings.HasSuffix(l, `{"object":"page"}`) {
			t.Fatalf("misaligned:\n%s", out.String())
		}
	}
}

// relay dlq without a subcommand, or with a wrong one, says which and what
// the choices are before the usage.
func TestDLQSubcommandErrors(t *testing.T) {
	for args, want := range map[string]string{"": "missing subcommand: list or redrive", "lst": `unknown subcommand "lst": list or redrive`} {
		var stdout, stderr bytes.Buffer
		a := []string{"dlq"}
		if args != "" {
			a = append(a, args)
		}
		require.Equal(t, 2, run(a, &stdout, &stderr))
		require.Contains(t, stderr.String(), want)
		require.Contains(t, stderr.String(), "usage: relay dlq list")
	}
}

// list with an id the tenants file does not have warns (a misspelt id
// lists nothing), and with Kafka out of reach prints no table header over
// rows it never read.
func TestDLQListWarnsAndPrintsNoHeaderOverNothing(t *testing.T) {
	dir, closed := dlqNoKafka(t)
	cfg := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("kafka: {brokers: [\""+closed+"\"]}\ntenants: {file: tenants.yaml}\n"), 0o600))

	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run([]string{"dlq", "list", "--config", cfg, "--tenant", "acmee", "--timeout", "3s"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), `warning: tenant "acmee" is not in`)
	require.Contains(t, stderr.String(), "nothing was listed")
	require.Empty(t, stdout.String(), "no table header over nothing")

	stdout.Reset()
	stderr.Reset()
	require.Equal(t, 1, run([]string{"dlq", "list", "--config", cfg, "--tenant", "acme", "--timeout", "3s"}, &stdout, &stderr))
	require.NotContains(t, stderr.String(), "warning")
}

// relay dlq takes --set as relay serve does: a relay started with
// --set kafka.embedded.listen=... could not be reached by its dlq commands
// but through an environment variable the README never named for them.
func TestDLQTakesSetLikeServe(t *testing.T) {
	dir, closed := dlqNoKafka(t)
	cfg := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("tenants: {file: tenants.yaml}\n"), 0o600))

	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, run([]string{"dlq", "list", "--config", cfg, "--set", "kafka.embedded.listen=" + closed, "--tenant", "acme", "--timeout", "3s"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "is Kafka at ["+closed+"] reachable?", "the --set address is the one tried")
	require.Contains(t, stderr.String(), "the same --config, RELAY_ variables and --set")
}

// dlqNoKafka writes a tenants file listing acme into a new folder, and
// returns the folder and an address nothing listens on.
func dlqNoKafka(t *testing.T) (dir, closed string) {
	t.Helper()
	dir = t.TempDir()
	tenants := filepath.Join(dir, "tenants.yaml")
	require.NoError(t, os.WriteFile(tenants, []byte("tenants:\n  - id: acme\n    accounts: [\"1\"]\n    instance: {mode: push, url: \"https://127.0.0.1:9/\", signing_secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"}\n"), 0o600))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed = ln.Addr().String()
	require.NoError(t, ln.Close())
	return dir, closed
}

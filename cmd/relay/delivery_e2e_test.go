package main

// Process-level end-to-end tests of delivery: relay serve (the binary, with
// its embedded broker) delivering to tenant instances that are real HTTPS
// servers on loopback requiring the relay's client certificate (mutual
// TLS), checked against the delivery contract of README.md ("For the
// engineer of a tenant instance").

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/relaymw/relay/tlsconf"
)

// The tenants' signing secrets in the delivery tests (acme's and globex's
// are those of the example tenants.yaml).
const (
	dlvSecretAcme   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	dlvSecretGlobex = "whsec_dGhpcyBpcyBnbG9iZXgncyBkZXYga2V5IQ=="
)

// dlvSecretInitech is the third tenant's secret: 32 bytes, base64.
var dlvSecretInitech = "whsec_" + base64.StdEncoding.EncodeToString([]byte("initech's delivery e2e signing k"))

// dlvReceipt is one request a tenant instance received.
type dlvReceipt struct {
	Seq    int // order of arrival at this instance, from 0
	At     time.Time
	Method string
	Path   string
	Header http.Header
	Body   []byte
	CN     string // common name of the client certificate presented
}

// dlvInstance is a tenant's instance: an HTTPS server on 127.0.0.1 that
// requires a client certificate verifying against a CA file, answers 204
// and records every request.
type dlvInstance struct {
	name   string
	addr   string
	srv    *http.Server
	served chan struct{} // closed when Serve returned
	hellos atomic.Int64  // TLS ClientHellos, handshakes that failed included

	mu       sync.Mutex
	receipts []dlvReceipt
	conns    map[net.Conn]struct{}
}

// dlvStartInstance starts an instance serving certFile/keyFile and
// requiring client certificates from clientCAFile. It is closed when the
// test ends.
func dlvStartInstance(t *testing.T, name, certFile, keyFile, clientCAFile string) *dlvInstance {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("instance %s: %v", name, err)
	}
	caPEM, err := os.ReadFile(clientCAFile)
	if err != nil {
		t.Fatalf("instance %s: %v", name, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("instance %s: no certificate in %s", name, clientCAFile)
	}
	in := &dlvInstance{name: name, served: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			in.hellos.Add(1)
			return nil, nil // the config above
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("instance %s: %v", name, err)
	}
	in.addr = ln.Addr().String()
	in.srv = &http.Server{
		Handler:           in,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState:         in.connState,
		// Failed handshakes (the wrong-CA instance) are expected.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(in.served)
		_ = in.srv.Serve(tls.NewListener(ln, cfg))
	}()
	t.Cleanup(func() {
		_ = in.srv.Close()
		<-in.served
	})
	return in
}

// URL is the instance URL to configure for tenant.
func (in *dlvInstance) URL(tenant string) string {
	return "https://" + in.addr + "/" + tenant + "/meta"
}

func (in *dlvInstance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		// A sender that died mid-request: nothing was received.
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc := dlvReceipt{At: time.Now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		rc.CN = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	in.mu.Lock()
	rc.Seq = len(in.receipts)
	in.receipts = append(in.receipts, rc)
	in.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (in *dlvInstance) connState(c net.Conn, s http.ConnState) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch s {
	case http.StateNew:
		in.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(in.conns, c)
	}
}

// closeConns closes every connection the instance has open, so that the
// relay's next delivery dials (and handshakes) anew.
func (in *dlvInstance) closeConns() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	for c := range in.conns {
		_ = c.Close()
	}
	return len(in.conns)
}

// snapshot returns a copy of the receipts so far.
func (in *dlvInstance) snapshot() []dlvReceipt {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.receipts)
}

func (in *dlvInstance) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.receipts)
}

// ids returns the distinct webhook-ids received, in order of first
// receipt, and how many receipts repeated an earlier id.
func (in *dlvInstance) ids() (distinct []string, dups int) {
	seen := map[string]bool{}
	for _, rc := range in.snapshot() {
		id := rc.Header.Get("webhook-id")
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		distinct = append(distinct, id)
	}
	return distinct, dups
}

// dlvDelivery is the delivery section of the tests' relay.yaml: the dev
// CA's relay client certificate and short retry settings; extra is added
// to the mapping (", key: value…").
func dlvDelivery(files *tlsconf.DevFiles, extra string) string {
	return fmt.Sprintf("{client_cert_file: %q, client_key_file: %q, timeout: 5s, retry_initial: 50ms, retry_max: 500ms, breaker: {failures: 5, open_for: 1s}, commit_interval: 200ms%s}",
		files.RelayClient.Cert, files.RelayClient.Key, extra)
}

// dlvCheckReceipt returns what is wrong with one delivery under the
// contract: POST, Content-Type, X-Hub-Signature-256 keyed with the secret
// string, webhook-id the event id of the body, the Standard Webhooks
// signature verified by the reference library, and the client certificate.
func dlvCheckReceipt(rc dlvReceipt, secret, wantCN string) []string {
	var bad []string
	if rc.Method != http.MethodPost {
		bad = append(bad, "method "+rc.Method)
	}
	if ct := rc.Header.Get("Content-Type"); ct != "application/json" {
		bad = append(bad, fmt.Sprintf("Content-Type %q", ct))
	}
	if got, want := rc.Header.Get("X-Hub-Signature-256"), sign(rc.Body, secret); got != want {
		bad = append(bad, fmt.Sprintf("X-Hub-Signature-256 %q, want %q", got, want))
	}
	if got, want := rc.Header.Get("webhook-id"), eventID(rc.Body); got != want {
		bad = append(bad, fmt.Sprintf("webhook-id %q, want sha256(body)[:16] %q", got, want))
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		bad = append(bad, "reference library refuses the secret: "+err.Error())
	} else if err := wh.Verify(rc.Body, rc.Header); err != nil {
		bad = append(bad, "Standard Webhooks reference library: "+err.Error())
	}
	if ts, err := strconv.ParseInt(rc.Header.Get("webhook-timestamp"), 10, 64); err != nil {
		bad = append(bad, fmt.Sprintf("webhook-timestamp %q", rc.Header.Get("webhook-timestamp")))
	} else if d := rc.At.Unix() - ts; d < -5 || d > 5 {
		bad = append(bad, fmt.Sprintf("webhook-timestamp %d is %ds off the time of receipt", ts, d))
	}
	if rc.CN != wantCN {
		bad = append(bad, fmt.Sprintf("client certificate CN %q, want %q", rc.CN, wantCN))
	}
	return bad
}

// dlvReportBad reports the problems of many receipts without flooding the
// log: the first few, and how many in all.
func dlvReportBad(t *testing.T, what string, problems []string) {
	t.Helper()
	if len(problems) == 0 {
		return
	}
	shown := problems[:min(len(problems), 10)]
	t.Errorf("%s: %d problems, first ones:\n  %s", what, len(problems), strings.Join(shown, "\n  "))
}

// dlvAccountOf is the account an entry routes by: its first
// changes[].value.metadata.phone_number_id, else its id.
func dlvAccountOf(t *testing.T, entry []byte) string {
	t.Helper()
	var e struct {
		ID      string `json:"id"`
		Changes []struct {
			Value struct {
				Metadata struct {
					PhoneNumberID string `json:"phone_number_id"`
				} `json:"metadata"`
			} `json:"value"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(entry, &e); err != nil {
		t.Fatalf("entry %s: %v", entry, err)
	}
	for _, c := range e.Changes {
		if c.Value.Metadata.PhoneNumberID != "" {
			return c.Value.Metadata.PhoneNumberID
		}
	}
	return e.ID
}

// dlvDevCA makes the development CA and its certificates in a temporary
// folder.
func dlvDevCA(t *testing.T, tenants ...string) *tlsconf.DevFiles {
	t.Helper()
	files, err := tlsconf.InitDevCA(filepath.Join(t.TempDir(), "certs"), tenants, false)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// dlvLoadCA reads back a CA InitDevCA wrote, to issue more certificates
// from it.
func dlvLoadCA(t *testing.T, fp tlsconf.FilePair) *tlsconf.CA {
	t.Helper()
	certPEM, err := os.ReadFile(fp.Cert)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(fp.Key)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatalf("CA files %s, %s: no PEM", fp.Cert, fp.Key)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("CA key is a %T, want ECDSA", key)
	}
	return &tlsconf.CA{Cert: tlsconf.Cert{Cert: cert, Key: ec}}
}

// dlvExpected is one event the test expects at an instance.
type dlvExpected struct {
	Fixture string
	Value   []byte
	ID      string
}

// TestDeliveryEndToEnd posts every Meta fixture to a running relay and
// checks what three tenants' instances (mutual TLS, requiring the relay's
// client certificate) receive: every routed entry at its tenant's instance
// only, as {"object":…,"entry":[<entry bytes as sent>]}, byte for byte, in
// partition order, with both signatures (the Standard Webhooks one checked
// by the reference library), webhook-id = sha256(body)[:16] and the relay's
// client certificate; the unrouted entry nowhere; and nothing at all at an
// instance whose certificate is not from its tenant's CA.
func TestDeliveryEndToEnd(t *testing.T) {
	t.Parallel()
	files := dlvDevCA(t, "acme", "globex")

	// initech's instance has a certificate from another CA than the one
	// its tenant settings name.
	otherCA, err := tlsconf.NewCA("not initech's CA")
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := otherCA.IssueServer("localhost", "127.0.0.1", "::1")
	if err != nil {
		t.Fatal(err)
	}
	otherFiles := tlsconf.FilePair{Cert: filepath.Join(t.TempDir(), "initech.pem")}
	otherFiles.Key = filepath.Join(filepath.Dir(otherFiles.Cert), "initech-key.pem")
	if err := otherCert.WriteFiles(otherFiles.Cert, otherFiles.Key); err != nil {
		t.Fatal(err)
	}

	initech := testTenant{ID: "initech", Accounts: []string{"300000000000003"}}
	secrets := map[string]string{"acme": dlvSecretAcme, "globex": dlvSecretGlobex, "initech": dlvSecretInitech}
	inst := map[string]*dlvInstance{
		"acme":    dlvStartInstance(t, "acme", files.Tenants["acme"].Cert, files.Tenants["acme"].Key, files.CA.Cert),
		"globex":  dlvStartInstance(t, "globex", files.Tenants["globex"].Cert, files.Tenants["globex"].Key, files.CA.Cert),
		"initech": dlvStartInstance(t, "initech", otherFiles.Cert, otherFiles.Key, files.CA.Cert),
	}
	var tenants []testTenant
	tenantOf := map[string]string{} // account → tenant
	for _, tn := range []testTenant{tenantAcme, tenantGlobex, initech} {
		tn.URL, tn.CAFile, tn.Secret = inst[tn.ID].URL(tn.ID), files.CA.Cert, secrets[tn.ID]
		tenants = append(tenants, tn)
		for _, a := range tn.Accounts {
			tenantOf[a] = tn.ID
		}
	}
	e := newRelayEnv(t, relayOptions{Tenants: tenants, Delivery: dlvDelivery(files, ", max_attempts: 4")})
	e.start()
	c := newHTTPClient()

	// Every fixture, in name order, one POST at a time: each tenant's
	// partition then holds its entries in this order.
	names, err := filepath.Glob(filepath.Join(fixturesDir, "*.json"))
	if err != nil || len(names) == 0 {
		t.Fatalf("fixtures: %v %v", names, err)
	}
	names = append(names, filepath.Join(fixturesDir, "signature_vector_escaped.raw"))
	slices.Sort(names)
	want := map[string][]dlvExpected{} // tenant → events in order
	var unrouted []dlvExpected
	for _, path := range names {
		name := filepath.Base(path)
		body := readFixture(t, name)
		object, entries := webhookEntries(t, body)
		for _, entry := range entries {
			v := expectedValue(object, entry)
			ex := dlvExpected{Fixture: name, Value: v, ID: eventID(v)}
			if tn, ok := tenantOf[dlvAccountOf(t, entry)]; ok {
				want[tn] = append(want[tn], ex)
			} else {
				unrouted = append(unrouted, ex)
			}
		}
		mustPost(t, c, e.URL(), body, http.StatusOK)
	}
	if len(want["acme"]) != 8 || len(want["globex"]) != 1 || len(unrouted) != 1 || unrouted[0].Fixture != "permissions_revoked.json" {
		t.Fatalf("test bug: fixtures route %d entries to acme, %d to globex, %d unrouted; want 8, 1 and permissions_revoked.json's",
			len(want["acme"]), len(want["globex"]), len(unrouted))
	}
	// initech's one event: a Messenger message to its Page.
	iv := messengerBody(t, initech.Accounts[0], "m_dlv_wrong_ca")
	mustPost(t, c, e.URL(), iv, http.StatusOK)
	iobj, ientries := webhookEntries(t, iv)
	want["initech"] = []dlvExpected{{Fixture: "messenger_message.json (initech)", Value: expectedValue(iobj, ientries[0]), ID: eventID(expectedValue(iobj, ientries[0]))}}

	// Wait for acme's and globex's events, and for initech's to be given
	// up on: dead-lettered after max_attempts failed handshakes.
	deadline := 30 * time.Second
	if !waitFor(deadline, func() bool {
		a, _ := inst["acme"].ids()
		g, _ := inst["globex"].ids()
		return len(a) >= len(want["acme"]) && len(g) >= len(want["globex"])
	}) {
		a, _ := inst["acme"].ids()
		g, _ := inst["globex"].ids()
		t.Fatalf("within %v acme's instance got %d of %d events, globex's %d of %d", deadline, len(a), len(want["acme"]), len(g), len(want["globex"]))
	}
	var dead []kRecord
	if !waitFor(deadline, func() bool {
		dead = nil
		for _, r := range readTopic(t, e.Kafka, "relay.dlq") {
			if r.Key == "initech" {
				dead = append(dead, r)
			}
		}
		return len(dead) > 0
	}) {
		t.Fatalf("initech's event was not dead-lettered within %v (ClientHellos at its instance: %d)", deadline, inst["initech"].hellos.Load())
	}

	for _, tn := range []string{"acme", "globex"} {
		in := inst[tn]
		ids, dups := in.ids()
		var wantIDs []string
		for _, ex := range want[tn] {
			wantIDs = append(wantIDs, ex.ID)
		}
		if !slices.Equal(ids, wantIDs) {
			t.Errorf("%s: webhook-ids in order of receipt %v, want its events in partition order %v", tn, ids, wantIDs)
		}
		if dups > 0 {
			t.Logf("%s: %d redeliveries (allowed: at least once)", tn, dups)
		}
		byID := map[string]dlvExpected{}
		for _, ex := range want[tn] {
			byID[ex.ID] = ex
		}
		var problems []string
		for _, rc := range in.snapshot() {
			id := rc.Header.Get("webhook-id")
			ex, ok := byID[id]
			if !ok {
				problems = append(problems, fmt.Sprintf("receipt %d: webhook-id %q is none of %s's events; body %s", rc.Seq, id, tn, rc.Body))
				continue
			}
			if string(rc.Body) != string(ex.Value) {
				problems = append(problems, fmt.Sprintf("receipt %d (%s): body\n    %s\n  want {\"object\":…,\"entry\":[<entry bytes as sent>]}\n    %s", rc.Seq, ex.Fixture, rc.Body, ex.Value))
			}
			if rc.Path != "/"+tn+"/meta" {
				problems = append(problems, fmt.Sprintf("receipt %d: path %q", rc.Seq, rc.Path))
			}
			for _, p := range dlvCheckReceipt(rc, secrets[tn], "relay") {
				problems = append(problems, fmt.Sprintf("receipt %d (%s): %s", rc.Seq, ex.Fixture, p))
			}
			// Keyed with this tenant's secret, not another's.
			other := map[string]string{"acme": dlvSecretGlobex, "globex": dlvSecretAcme}[tn]
			if wh, _ := standardwebhooks.NewWebhook(other); wh.Verify(rc.Body, rc.Header) == nil {
				problems = append(problems, fmt.Sprintf("receipt %d: webhook-signature verifies with another tenant's secret", rc.Seq))
			}
		}
		dlvReportBad(t, tn+"'s instance", problems)
	}

	// The unrouted entry arrives nowhere, and is in relay.unrouted.
	for tn, in := range inst {
		for _, rc := range in.snapshot() {
			if rc.Header.Get("webhook-id") == unrouted[0].ID || string(rc.Body) == string(unrouted[0].Value) {
				t.Errorf("the unrouted entry of %s arrived at %s's instance", unrouted[0].Fixture, tn)
			}
		}
	}
	foundUnrouted := false
	for _, r := range readTopic(t, e.Kafka, "relay.unrouted") {
		foundUnrouted = foundUnrouted || string(r.Value) == string(unrouted[0].Value)
	}
	if !foundUnrouted {
		t.Errorf("the entry of %s is not in relay.unrouted", unrouted[0].Fixture)
	}

	// initech: the relay tried (TLS handshakes reached the instance), gave
	// up (dead letter), and its handler was never called.
	if n := inst["initech"].count(); n != 0 {
		t.Errorf("the instance whose certificate is not from initech's CA received %d requests, want none", n)
	}
	if h := inst["initech"].hellos.Load(); h == 0 {
		t.Errorf("no TLS handshake reached initech's instance: the relay never tried it")
	}
	if len(dead) != 1 || string(dead[0].Value) != string(want["initech"][0].Value) {
		t.Errorf("relay.dlq holds %d records for initech, want its one event", len(dead))
	} else {
		reason := dead[0].Headers["relay-dlq-reason"]
		t.Logf("initech: %d TLS handshakes refused, then dead-lettered: %s", inst["initech"].hellos.Load(), reason)
		if !strings.Contains(reason, "certificate") {
			t.Errorf("initech's dead letter reason %q does not name the certificate problem", reason)
		}
	}
}

// TestDeliveryCertReload replaces the relay's client certificate files
// (a new certificate from the same CA, another common name, each file
// renamed over the old one) while the relay serves: connections already
// open keep the old certificate, and new connections present the new one,
// without restarting the relay.
func TestDeliveryCertReload(t *testing.T) {
	t.Parallel()
	files := dlvDevCA(t, "acme")
	in := dlvStartInstance(t, "acme", files.Tenants["acme"].Cert, files.Tenants["acme"].Key, files.CA.Cert)
	acme := tenantAcme
	acme.URL, acme.CAFile, acme.Secret = in.URL("acme"), files.CA.Cert, dlvSecretAcme
	e := newRelayEnv(t, relayOptions{Tenants: []testTenant{acme}, Delivery: dlvDelivery(files, "")})
	p := e.start()
	c := newHTTPClient()

	n := 0
	// deliver posts one event and returns its receipt at the instance.
	deliver := func() dlvReceipt {
		t.Helper()
		n++
		body := messengerBody(t, acme.Accounts[0], fmt.Sprintf("m_dlv_reload_%d", n))
		mustPost(t, c, e.URL(), body, http.StatusOK)
		obj, entries := webhookEntries(t, body)
		id := eventID(expectedValue(obj, entries[0]))
		var got dlvReceipt
		if !waitFor(20*time.Second, func() bool {
			for _, rc := range in.snapshot() {
				if rc.Header.Get("webhook-id") == id {
					got = rc
					return true
				}
			}
			return false
		}) {
			t.Fatalf("event %d was not delivered within 20s", n)
		}
		dlvReportBad(t, fmt.Sprintf("event %d", n), dlvCheckReceipt(got, dlvSecretAcme, got.CN))
		return got
	}

	if rc := deliver(); rc.CN != "relay" {
		t.Fatalf("first delivery presented CN %q, want relay (the dev client certificate)", rc.CN)
	}
	in.closeConns()
	if rc := deliver(); rc.CN != "relay" {
		t.Fatalf("delivery on a new connection before the replacement presented CN %q, want relay", rc.CN)
	}

	// A new client certificate from the same CA, written over the files.
	newCert, err := dlvLoadCA(t, files.CA).IssueClient("relay-rotated")
	if err != nil {
		t.Fatal(err)
	}
	if err := newCert.WriteFiles(files.RelayClient.Cert, files.RelayClient.Key); err != nil {
		t.Fatal(err)
	}

	// The connection already open stays as it is.
	if rc := deliver(); rc.CN != "relay" {
		t.Errorf("delivery on the connection opened before the replacement presented CN %q, want relay (open connections stay)", rc.CN)
	}
	// New connections pick the new certificate up (the files are compared
	// at most once a second, and the two renames are not one step: wait
	// for it, forcing a new connection for each delivery).
	start := time.Now()
	var last dlvReceipt
	for last.CN != "relay-rotated" {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("15s after the client certificate files were replaced, new connections still present CN %q", last.CN)
		}
		in.closeConns()
		last = deliver()
		if last.CN != "relay" && last.CN != "relay-rotated" {
			t.Fatalf("delivery presented CN %q", last.CN)
		}
	}
	t.Logf("new certificate seen %v after the replacement", time.Since(start).Round(time.Millisecond))
	for range 2 {
		in.closeConns()
		if rc := deliver(); rc.CN != "relay-rotated" {
			t.Errorf("after the new certificate was in use, a new connection presented CN %q", rc.CN)
		}
	}
	if p.exited() || len(e.procs) != 1 {
		t.Errorf("the relay was restarted or exited (%d processes, exited %v)", len(e.procs), p.exited())
	}
}

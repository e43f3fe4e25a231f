package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The targets of compare and e2e, each a child process of the bench binary
// (Exe): `relay bench serve-ceiling`, `relay bench serve-baseline` and
// `relay serve`.

// DefaultReadyTimeout bounds the wait for a target to get ready.
const DefaultReadyTimeout = 2 * time.Minute

// IngressPath is the path the relay targets serve webhooks on.
const IngressPath = "/webhooks/meta"

// BaselineTopic is the topic the baseline target writes to.
const BaselineTopic = "baseline.events"

// Target is a running target process.
type Target struct {
	*Child
	URL   string // where to POST webhooks
	Admin string // relay only: the admin listener, host:port
	Dir   string // relay only: its configuration and data folder
}

// targets starts targets as children of exe, in folders under dir.
type targets struct {
	exe          string
	procs        *Procs
	dir          string
	readyTimeout time.Duration
	seq          atomic.Int64
}

// folder makes a new folder under t.dir for one target.
func (t *targets) folder(name string) (string, error) {
	d := filepath.Join(t.dir, fmt.Sprintf("%02d-%s", t.seq.Add(1), name))
	return d, os.MkdirAll(d, 0o700)
}

// clear removes every target's folder under t.dir: their logs and the
// data their brokers wrote. compare clears after each target, so that one
// target's gigabytes neither fill the disk nor burden the page cache while
// the next one is measured.
func (t *targets) clear() error {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(t.dir, e.Name())))
	}
	return errors.Join(errs...)
}

// startListening starts a child that takes --listen 127.0.0.1:0 and --json
// FILE (the hidden serve-* subcommands) and waits until it listens.
func (t *targets) startListening(ctx context.Context, name string, args ...string) (*Target, error) {
	d, err := t.folder(name)
	if err != nil {
		return nil, err
	}
	ready := filepath.Join(d, "ready.json")
	args = append(args, "--listen", "127.0.0.1:0", "--json", ready)
	c, err := t.procs.Start(name, t.exe, args...)
	if err != nil {
		return nil, err
	}
	info, err := WaitReadyFile(ctx, c, ready, t.readyTimeout)
	if err != nil {
		t.procs.Stop(c, DefaultStopGrace)
		return nil, err
	}
	return &Target{Child: c, URL: "http://" + info.Listen + IngressPath, Dir: d}, nil
}

// startCeiling starts `bench serve-ceiling`.
func (t *targets) startCeiling(ctx context.Context) (*Target, error) {
	return t.startListening(ctx, "ceiling", "bench", "serve-ceiling")
}

// startBaseline starts `bench serve-baseline` with its own embedded broker.
func (t *targets) startBaseline(ctx context.Context, secret string, partitions int) (*Target, error) {
	d, err := t.folder("baseline-kafka")
	if err != nil {
		return nil, err
	}
	return t.startListening(ctx, "baseline", "bench", "serve-baseline", "--data-dir", d, "--secret", secret,
		"--partitions", strconv.Itoa(partitions))
}

// RelayOptions configures a relay target.
type RelayOptions struct {
	Name    string   // child name, "relay" when empty
	Tenants []Tenant // written to its tenants file
	// Instance gives each tenant's instance; nil: a placeholder URL (for
	// ingress-only runs).
	Instance func(Tenant) Instance
	Secret   string // the Meta app secret
	// Delivery runs delivery; ClientCert and ClientKey are the relay's
	// client certificate files then.
	Delivery              bool
	ClientCert, ClientKey string
	// Extra is appended to relay.yaml's delivery section (indented lines),
	// for tests.
	Extra string
}

// startRelay writes relay.yaml and tenants.yaml into a new folder, starts
// `relay serve` on free loopback ports and waits for /readyz.
func (t *targets) startRelay(ctx context.Context, o RelayOptions) (*Target, error) {
	if o.Name == "" {
		o.Name = "relay"
	}
	var lastErr error
	for range 3 { // a free port taken between picking and binding: try new ones
		tg, err := t.tryStartRelay(ctx, o)
		if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			return tg, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func (t *targets) tryStartRelay(ctx context.Context, o RelayOptions) (*Target, error) {
	d, err := t.folder(o.Name)
	if err != nil {
		return nil, err
	}
	var addrs [3]string
	for i := range addrs {
		if addrs[i], err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	ingress, admin, kafka := addrs[0], addrs[1], addrs[2]
	instance := o.Instance
	if instance == nil {
		instance = func(tn Tenant) Instance {
			return Instance{URL: "https://127.0.0.1:9/" + url.PathEscape(tn.ID)}
		}
	}
	var tb bytes.Buffer
	if err := WriteTenantsYAML(&tb, o.Tenants, instance); err != nil {
		return nil, err
	}
	tenantsFile := filepath.Join(d, "tenants.yaml")
	if err := os.WriteFile(tenantsFile, tb.Bytes(), 0o600); err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(d, "relay.yaml")
	cfg := RelayConfigYAML(RelayConfig{
		Ingress: ingress, Admin: admin, Kafka: kafka, DataDir: filepath.Join(d, "kafka"),
		TenantsFile: tenantsFile, Secret: o.Secret, Delivery: o.Delivery,
		ClientCert: o.ClientCert, ClientKey: o.ClientKey, Extra: o.Extra,
	})
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	c, err := t.procs.Start(o.Name, t.exe, "serve", "--config", cfgFile)
	if err != nil {
		return nil, err
	}
	if err := WaitHTTP(ctx, c, "http://"+admin+"/readyz", t.readyTimeout); err != nil {
		t.procs.Stop(c, DefaultStopGrace)
		return nil, err
	}
	if t.procs.Log != nil { // to profile it while it is measured
		fmt.Fprintf(t.procs.Log, "bench: %s admin: http://%s/metrics, /debug/pprof/\n", o.Name, admin)
	}
	return &Target{Child: c, URL: "http://" + ingress + IngressPath, Admin: admin, Dir: d}, nil
}

// RelayConfig is what RelayConfigYAML writes.
type RelayConfig struct {
	Ingress, Admin, Kafka string // listen addresses
	DataDir               string // the embedded broker's
	TenantsFile           string
	Secret                string // Meta app secret
	Delivery              bool
	ClientCert, ClientKey string
	Extra                 string // more lines of the delivery section
}

// RelayConfigYAML renders a relay.yaml for a bench target: embedded broker,
// log level warn, delivery on or off.
func RelayConfigYAML(c RelayConfig) string {
	q := func(s string) string {
		var b bytes.Buffer
		writeQuoted(&b, s)
		return b.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# written by relay bench\n")
	fmt.Fprintf(&b, "ingress:\n  listen: %s\n  path: %s\n", q(c.Ingress), q(IngressPath))
	// pprof on loopback, so that a run can be profiled while it goes.
	fmt.Fprintf(&b, "admin:\n  listen: %s\n  pprof: true\n", q(c.Admin))
	fmt.Fprintf(&b, "meta:\n  verify_tokens: [\"relay-bench\"]\n  app_secrets: [%s]\n", q(c.Secret))
	fmt.Fprintf(&b, "kafka:\n  brokers: []\n  embedded: {listen: %s, data_dir: %s}\n", q(c.Kafka), q(c.DataDir))
	fmt.Fprintf(&b, "tenants:\n  file: %s\n", q(c.TenantsFile))
	fmt.Fprintf(&b, "delivery:\n  enabled: %s\n", strconv.FormatBool(c.Delivery))
	if c.ClientCert != "" {
		fmt.Fprintf(&b, "  client_cert_file: %s\n  client_key_file: %s\n", q(c.ClientCert), q(c.ClientKey))
	}
	if c.Extra != "" {
		b.WriteString(strings.TrimRight(c.Extra, "\n") + "\n")
	}
	b.WriteString("log:\n  level: warn\n  format: text\n")
	b.WriteString("shutdown:\n  grace_period: 5s\n")
	return b.String()
}

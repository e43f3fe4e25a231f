package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relaymw/relay/bench"
	"github.com/relaymw/relay/tlsconf"
)

const benchUsage = `usage: relay bench <command> [flags]

Measures the relay: load generation, comparison with a ceiling and a
baseline, and end-to-end delivery.

commands:
  ingest   load a running ingress with signed Meta-shaped webhooks
  compare  measure the ceiling, the relay and a baseline in one run
  e2e      measure ingress to delivery through local mTLS instances
  tenants  write a tenants file with the bench's synthetic tenants

Run "relay bench <command> -h" for a command's flags.
`

// benchCommands are the subcommands of relay bench; serve-ceiling and
// serve-baseline are compare's targets, run as its child processes.
var benchCommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"ingest":         runBenchIngest,
	"compare":        runBenchCompare,
	"e2e":            runBenchE2E,
	"tenants":        runBenchTenants,
	"serve-ceiling":  runBenchServeCeiling,
	"serve-baseline": runBenchServeBaseline,
}

func runBench(args []string, stdout, stderr io.Writer) int {
	return dispatch("relay bench", benchUsage, benchCommands, args, stdout, stderr)
}

// mixFlag collects template names, repeated or comma-separated.
type mixFlag []string

func (m *mixFlag) String() string { return strings.Join(*m, ",") }

func (m *mixFlag) Set(v string) error {
	known := bench.TemplateNames()
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSuffix(strings.TrimSpace(name), ".json")
		if name == "" {
			continue
		}
		if !slices.Contains(known, name) {
			return fmt.Errorf("unknown template %q (have %s)", name, strings.Join(known, ", "))
		}
		if !slices.Contains(*m, name) {
			*m = append(*m, name)
		}
	}
	return nil
}

// intsFlag is a comma-separated list of positive integers.
type intsFlag []int

func (f *intsFlag) String() string {
	s := make([]string, len(*f))
	for i, n := range *f {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (f *intsFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive integer", part)
		}
		if !slices.Contains(*f, n) {
			*f = append(*f, n)
		}
	}
	return nil
}

// benchFlags are the flags the load-generating subcommands share.
type benchFlags struct {
	fs                        *flag.FlagSet
	rate                      float64
	concurrency, connections  int
	duration, warmup, timeout time.Duration
	tenants, size             int
	mix                       mixFlag
	jsonFile, reportFile      string
	cpuProfile                string
	profileFile               *os.File // open while the --cpuprofile profile runs
}

func newBenchFlags(name, usage string, stderr io.Writer, defaultTenants int) *benchFlags {
	f := &benchFlags{fs: flag.NewFlagSet("relay bench "+name, flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(stderr)
	fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, "measured window")
	fs.DurationVar(&f.warmup, "warmup", bench.DefaultWarmup, "load sent before the window, not recorded")
	fs.DurationVar(&f.timeout, "timeout", bench.DefaultTimeout, "per request")
	fs.IntVar(&f.tenants, "tenants", defaultTenants, "tenants the bodies are spread over (bench.Tenants: t0001…)")
	fs.IntVar(&f.size, "size", bench.DefaultBodySize, "body size in bytes (a template larger than it is sent unpadded)")
	fs.Var(&f.mix, "mix", "templates to send, in turn: names, comma-separated or repeated (default all: "+strings.Join(bench.TemplateNames(), ", ")+")")
	fs.StringVar(&f.jsonFile, "json", "", "write the results as JSON to this file")
	fs.StringVar(&f.reportFile, "report", "", "write an HTML report to this file")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write this bench process's own CPU profile to this file (go tool pprof): where the generator's time goes")
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	return f
}

// startCPUProfile starts the --cpuprofile profile, if asked for.
func (f *benchFlags) startCPUProfile() error {
	if f.cpuProfile == "" {
		return nil
	}
	file, err := os.Create(f.cpuProfile)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(file); err != nil {
		file.Close()
		return err
	}
	f.profileFile = file
	return nil
}

// stopCPUProfile writes out the profile startCPUProfile started, if any.
func (f *benchFlags) stopCPUProfile() {
	if f.profileFile != nil {
		pprof.StopCPUProfile()
		f.profileFile.Close()
		f.profileFile = nil
	}
}

// loadFlags adds --rate, --concurrency and --connections.
func (f *benchFlags) loadFlags() {
	f.fs.Float64Var(&f.rate, "rate", 0, "open loop: requests per second, latency measured from each request's scheduled send time")
	f.fs.IntVar(&f.concurrency, "concurrency", 0, fmt.Sprintf("closed loop: requests in flight, each sent when the previous one was answered (default %d when --rate is not set)", bench.DefaultConnections))
	f.fs.IntVar(&f.connections, "connections", 0, fmt.Sprintf("open loop: connections, the most requests in flight (default %d)", bench.DefaultConnections))
}

// parse parses args and starts the --cpuprofile profile (the caller defers
// stopCPUProfile); code is -1 to go on, else the exit code.
func (f *benchFlags) parse(args []string, stderr io.Writer) int {
	if code, ok := parseArgs(f.fs, args, stderr); !ok {
		return code
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "%s: %s\n", f.fs.Name(), fmt.Sprintf(format, a...))
		return 2
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	switch {
	case f.rate > 0 && f.concurrency > 0:
		return bad("set --rate or --concurrency, not both")
	case f.rate < 0 || f.concurrency < 0 || f.connections < 0,
		set["rate"] && !(f.rate > 0), set["concurrency"] && f.concurrency == 0, set["connections"] && f.connections == 0:
		return bad("--rate, --concurrency and --connections must be positive")
	case f.rate > 0 && (f.rate < bench.MinRate || f.rate > bench.MaxRate):
		return bad("--rate must be in [%g, %d]", bench.MinRate, bench.MaxRate)
	case f.concurrency > bench.MaxConnections || f.connections > bench.MaxConnections:
		return bad("--concurrency and --connections must be at most %d", bench.MaxConnections)
	case f.duration <= 0:
		return bad("--duration must be positive")
	case f.warmup < 0 || f.timeout <= 0:
		return bad("--warmup must not be negative, --timeout must be positive")
	case f.timeout > bench.MaxTimeout:
		return bad("--timeout must be at most %s: an open-loop latency (the wait for a connection, then the answer) may reach twice it, and the histogram ends at 60 s", bench.MaxTimeout)
	case f.tenants < 1 || f.tenants > bench.MaxTenants:
		return bad("--tenants must be between 1 and %d", bench.MaxTenants)
	case f.size < 1 || f.size > bench.MaxBodySize:
		return bad("--size must be in [1, %d] (a template larger than it is sent unpadded)", bench.MaxBodySize)
	}
	if f.rate == 0 && f.concurrency == 0 {
		f.concurrency = bench.DefaultConnections
	}
	if err := f.startCPUProfile(); err != nil {
		fmt.Fprintf(stderr, "%s: --cpuprofile: %v\n", f.fs.Name(), err)
		return 1
	}
	return -1
}

// writeReport writes runs to the report file, if one was asked for.
func writeReport(f *benchFlags, title string, args []string, runs []*bench.Result, stderr io.Writer) bool {
	if f.reportFile == "" || len(runs) == 0 {
		return true
	}
	rep := bench.Report{Title: title, Command: "relay " + strings.Join(args, " "), Runs: runs}
	if err := rep.WriteHTMLFile(f.reportFile); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", f.fs.Name(), err)
		return false
	}
	return true
}

// ---- ingest ----

const benchIngestUsage = `usage: relay bench ingest --url URL [--secret S] [--rate R | --concurrency C] [--connections K] [--ca-file F]
         [--duration D] [--warmup W] [--tenants N] [--mix NAME,…] [--size BYTES] [--target-pid PID]
         [--json FILE] [--report FILE.html]

Posts Meta-shaped webhook bodies, rendered from the embedded templates with
ids unique per request and routed to N tenants' accounts, signed with
X-Hub-Signature-256, to a running ingress. The relay under test must know
those tenants: write its tenants file with "relay bench tenants --count N".

--rate runs an open loop (latency from each request's scheduled send time,
so stalls are not hidden); --concurrency a closed loop (the maximum
throughput). Progress once a second on stderr; the summary on stdout.

The summary's cpu line is the CPU this process (the generator) used in the
measured window, per request too; with --target-pid, the target's as well
and their ratio. On a shared machine, target/gen is steadier than
requests/s: to compare two builds, alternate them and compare that ratio.

flags:
`

func runBenchIngest(args []string, stdout, stderr io.Writer) int {
	f := newBenchFlags("ingest", benchIngestUsage, stderr, 10)
	f.loadFlags()
	target := f.fs.String("url", "", "the ingress URL to POST to, e.g. http://127.0.0.1:8080/webhooks/meta (required)")
	secret := f.fs.String("secret", os.Getenv("RELAY_BENCH_SECRET"), "the Meta app secret to sign with (the relay's meta.app_secrets); also RELAY_BENCH_SECRET; empty: unsigned")
	caFile := f.fs.String("ca-file", "", "for an https URL: verify the ingress against this CA (e.g. certs/ca.pem from relay certs init); empty: system roots")
	targetPID := f.fs.Int("target-pid", 0, "the process ID of the server under test (e.g. relay serve's): report the CPU it uses per request (Linux)")
	if code := f.parse(args, stderr); code >= 0 {
		return code
	}
	defer f.stopCPUProfile()
	if *targetPID < 0 {
		fmt.Fprintf(stderr, "relay bench ingest: --target-pid %d: not a process ID\n", *targetPID)
		return 2
	}
	if *targetPID > 0 {
		if _, err := bench.ProcessCPU(*targetPID); err != nil {
			fmt.Fprintf(stderr, "relay bench ingest: --target-pid %d: cannot read its CPU time: %v\n", *targetPID, err)
			return 2
		}
	}
	var tlsCfg *tls.Config
	if *caFile != "" {
		c, err := tlsconf.NewClient("", "")
		if err == nil {
			var d *tlsconf.Dialer
			if d, err = c.Dialer(*caFile); err == nil {
				tlsCfg = d.Config()
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "relay bench ingest: --ca-file:", err)
			return 2
		}
	}
	if *target == "" {
		fmt.Fprintln(stderr, "relay bench ingest: --url is required")
		return 2
	}
	if *secret == "" {
		fmt.Fprintln(stderr, "relay bench ingest: warning: no --secret: the bodies are not signed (a relay answers 401)")
	}
	payloads, err := bench.NewPayloads(bench.PayloadOptions{Tenants: bench.Tenants(f.tenants), Templates: f.mix, Size: f.size})
	if err != nil {
		fmt.Fprintln(stderr, "relay bench ingest:", err)
		return 2
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := bench.Run(ctx, bench.Config{
		URL: *target, Rate: f.rate, Concurrency: f.concurrency, Connections: f.connections,
		Duration: f.duration, Warmup: f.warmup, Timeout: f.timeout,
		Payloads: payloads, AppSecret: *secret, Progress: stderr, Label: "ingest", TLS: tlsCfg,
		TargetPID: *targetPID,
	})
	if res == nil {
		fmt.Fprintln(stderr, "relay bench ingest:", err)
		return 2
	}
	code := 0
	if err != nil {
		fmt.Fprintln(stderr, "relay bench ingest: interrupted:", err)
		code = 1
	}
	_ = res.WriteSummary(stdout)
	if err == nil && res.OKPerSec == 0 {
		fmt.Fprintln(stderr, "relay bench ingest: no request was answered 2xx in the measured window (the status line above says what came back)")
		code = 1
	}
	if f.jsonFile != "" {
		if err := res.WriteJSONFile(f.jsonFile); err != nil {
			fmt.Fprintln(stderr, "relay bench ingest:", err)
			code = 1
		}
	}
	if !writeReport(f, "relay bench ingest", append([]string{"bench", "ingest"}, args...), []*bench.Result{res}, stderr) {
		code = 1
	}
	return code
}

// ---- compare ----

const benchCompareUsage = `usage: relay bench compare [--concurrency C] [--duration D] [--warmup W] [--size BYTES]
         [--tenants N] [--mix NAME,…] [--tenant-counts 10,1000] [--rounds N] [--json FILE] [--report FILE.html]

Measures in one run, with the same generator, payloads and machine, one
target at a time, each a child process of this binary:
  ceiling    a bare fasthttp handler answering 200 (what the machine and
             the generator allow)
  relay      relay serve with its embedded broker, delivery off
  relay@50%  the same relay, open loop at half its closed-loop maximum
             (its p99 and p99.9 at a sustainable load)
  baseline   net/http + kafka-go, acks=all, synchronous write, 5 ms batch
             timeout, on its own embedded broker
and with --tenant-counts the relay once more per count (a fresh relay
knowing that many tenants), then the ratio of the largest count's
throughput to the smallest's (target: within 10%).
With --rounds N all of it is repeated N times (fresh processes, same order
each round) and the figures are medians: each target's median run by
requests/s, the relay@50% run with the median p99, and the median of the
rounds' ratios. Shared machines are the reason: one run of the same
target against another can differ by 15-30%.
Children are stopped when the bench ends, also on an error or SIGINT.

flags:
`

func runBenchCompare(args []string, stdout, stderr io.Writer) int {
	f := newBenchFlags("compare", benchCompareUsage, stderr, bench.DefaultCompareTenants)
	f.fs.IntVar(&f.concurrency, "concurrency", bench.DefaultConnections, "closed loop: connections and requests in flight (the half-rate run uses as many connections)")
	var counts intsFlag
	f.fs.Var(&counts, "tenant-counts", "also measure the relay with each of these tenant counts, e.g. 10,1000")
	readyTimeout := f.fs.Duration("ready-timeout", bench.DefaultReadyTimeout, "how long a target may take to start")
	rounds := f.fs.Int("rounds", 1, "repeat every run this many times and report medians (1-20)")
	if code := f.parse(args, stderr); code >= 0 {
		return code
	}
	defer f.stopCPUProfile()
	if *rounds < 1 || *rounds > 20 {
		fmt.Fprintln(stderr, "relay bench compare: --rounds must be between 1 and 20")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "relay bench compare:", err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := bench.Compare(ctx, bench.CompareConfig{
		Exe: exe, Concurrency: f.concurrency, Duration: f.duration, Warmup: f.warmup, Timeout: f.timeout,
		Size: f.size, Templates: f.mix, Tenants: f.tenants, TenantCounts: counts,
		ReadyTimeout: *readyTimeout, Progress: stderr, Rounds: *rounds,
	})
	code := 0
	if err != nil {
		fmt.Fprintln(stderr, "relay bench compare:", err)
		code = 1
	}
	if res == nil {
		return code
	}
	fmt.Fprintln(stdout)
	_ = res.WriteTable(stdout)
	if f.jsonFile != "" {
		if err := res.WriteJSONFile(f.jsonFile); err != nil {
			fmt.Fprintln(stderr, "relay bench compare:", err)
			code = 1
		}
	}
	if !writeReport(f, "relay bench compare", append([]string{"bench", "compare"}, args...), res.Runs(), stderr) {
		code = 1
	}
	return code
}

// ---- e2e ----

const benchE2EUsage = `usage: relay bench e2e [--tenants N] [--rate R | --concurrency C] [--duration D] [--warmup W]
         [--size BYTES] [--mix NAME,…] [--json FILE] [--report FILE.html]

Measures the relay from ingress to delivery on this machine: a temporary
development CA, N local instances (HTTPS servers requiring the relay's
client certificate and checking both signatures), relay serve as a child
process with its embedded broker and delivery on, and load on its ingress.
Every delivery is matched to its request by webhook-id (the event id is
recomputed from each body sent). After the load it waits for the
deliveries (until all arrived, none came for --drain-idle, or
--drain-timeout), then reports events ingested and delivered per second,
lost (answered 200, never delivered: must be 0; the exit code is 1
otherwise), duplicates, the latency from send to receipt, and the relay's
own end-to-end histogram from /metrics.

flags:
`

func runBenchE2E(args []string, stdout, stderr io.Writer) int {
	f := newBenchFlags("e2e", benchE2EUsage, stderr, bench.DefaultE2ETenants)
	f.loadFlags()
	drainIdle := f.fs.Duration("drain-idle", bench.DefaultDrainIdle, "after the load, stop waiting for deliveries when none came for this long")
	drainTimeout := f.fs.Duration("drain-timeout", bench.DefaultDrainTimeout, "after the load, wait at most this long for deliveries")
	readyTimeout := f.fs.Duration("ready-timeout", bench.DefaultReadyTimeout, "how long the relay may take to start")
	forget := f.fs.Int("forget-every", 0, "self-test of the accounting: the instances answer 2xx but forget about one event in N (chosen by id); they must all be reported lost")
	if code := f.parse(args, stderr); code >= 0 {
		return code
	}
	defer f.stopCPUProfile()
	if *drainIdle < 0 || *drainTimeout < 0 || *readyTimeout < 0 || *forget < 0 {
		fmt.Fprintln(stderr, "relay bench e2e: --drain-idle, --drain-timeout, --ready-timeout and --forget-every must not be negative")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "relay bench e2e:", err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	res, err := bench.E2E(ctx, bench.E2EConfig{
		Exe: exe, Tenants: f.tenants, Rate: f.rate, Concurrency: f.concurrency, Connections: f.connections,
		Duration: f.duration, Warmup: f.warmup, Timeout: f.timeout, Size: f.size, Templates: f.mix,
		DrainIdle: *drainIdle, DrainTimeout: *drainTimeout, ForgetEvery: *forget,
		ReadyTimeout: *readyTimeout, Progress: stderr,
	})
	code := 0
	if err != nil {
		fmt.Fprintln(stderr, "relay bench e2e:", err)
		code = 1
	}
	if res == nil {
		return code
	}
	if res.Delivery == nil {
		// Stopped before the accounting: a summary would be all zeros.
		fmt.Fprintln(stderr, "relay bench e2e: the run ended before the deliveries were counted (the error above says why): no summary")
		return code
	}
	fmt.Fprintln(stdout)
	_ = res.WriteSummary(stdout)
	if res.MeasuredEvents == 0 {
		fmt.Fprintln(stderr, "relay bench e2e: the relay accepted no event of the measured window (answered 200 to none of its requests): nothing was measured")
		code = 1
	}
	if res.Lost > 0 {
		fmt.Fprintf(stderr, "relay bench e2e: %d events answered 200 were never delivered\n", res.Lost)
		code = 1
	}
	if f.jsonFile != "" {
		if err := res.WriteJSONFile(f.jsonFile); err != nil {
			fmt.Fprintln(stderr, "relay bench e2e:", err)
			code = 1
		}
	}
	var runs []*bench.Result
	for _, r := range []*bench.Result{res.Ingest, res.Delivery} {
		if r != nil {
			runs = append(runs, r)
		}
	}
	if !writeReport(f, "relay bench e2e", append([]string{"bench", "e2e"}, args...), runs, stderr) {
		code = 1
	}
	return code
}

// ---- tenants ----

const benchTenantsUsage = `usage: relay bench tenants --count N --out FILE [--instance-url-base URL] [--ca-file FILE] [--json FILE]

Writes a tenants file with the bench's N synthetic tenants t0001… (tenant k
owns Page 104000000000000+k, Instagram account 17841400000000000+k and
WhatsApp phone_number_id 106000000000000+k), for a relay under
"relay bench ingest --tenants N". Tenant t's instance url is
<instance-url-base>/<t>; each gets a random signing secret. --out - writes
to stdout.

flags:
`

// benchTenantsInfo is relay bench tenants' --json output.
type benchTenantsInfo struct {
	Count   int                `json:"count"`
	Out     string             `json:"out"`
	Tenants []benchTenantsItem `json:"tenants"`
}

type benchTenantsItem struct {
	ID       string   `json:"id"`
	Accounts []string `json:"accounts"`
	URL      string   `json:"instance_url"`
}

func runBenchTenants(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay bench tenants", flag.ContinueOnError)
	fs.SetOutput(stderr)
	count := fs.Int("count", 0, "number of tenants (required)")
	out := fs.String("out", "", "the tenants file to write, - for stdout (required)")
	base := fs.String("instance-url-base", "https://127.0.0.1:9443", "instances' URL base: tenant t's url is <base>/<t>")
	caFile := fs.String("ca-file", "", "every instance's ca_file")
	jsonFile := fs.String("json", "", "also write the tenants and their accounts as JSON to this file")
	fs.Usage = func() { fmt.Fprint(fs.Output(), benchTenantsUsage); fs.PrintDefaults() }
	if code, ok := parseArgs(fs, args, stderr); !ok {
		return code
	}
	switch {
	case *count < 1 || *count > bench.MaxTenants:
		fmt.Fprintf(stderr, "relay bench tenants: --count must be between 1 and %d\n", bench.MaxTenants)
		return 2
	case *out == "":
		fmt.Fprintln(stderr, "relay bench tenants: --out is required")
		return 2
	}
	u, err := url.Parse(*base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		fmt.Fprintf(stderr, "relay bench tenants: --instance-url-base %q must be an https:// URL\n", *base)
		return 2
	}
	urlOf := func(t bench.Tenant) string { return strings.TrimRight(*base, "/") + "/" + url.PathEscape(t.ID) }
	tenants := bench.Tenants(*count)
	var b bytes.Buffer
	if err := bench.WriteTenantsYAML(&b, tenants, func(t bench.Tenant) bench.Instance {
		return bench.Instance{URL: urlOf(t), CAFile: *caFile}
	}); err != nil {
		fmt.Fprintln(stderr, "relay bench tenants:", err)
		return 1
	}
	if *out == "-" {
		_, err = stdout.Write(b.Bytes())
	} else {
		err = os.WriteFile(*out, b.Bytes(), 0o600) // it holds signing secrets
	}
	if err != nil {
		fmt.Fprintln(stderr, "relay bench tenants:", err)
		return 1
	}
	if *jsonFile != "" {
		info := benchTenantsInfo{Count: *count, Out: *out}
		for _, t := range tenants {
			info.Tenants = append(info.Tenants, benchTenantsItem{ID: t.ID, Accounts: t.Accounts(), URL: urlOf(t)})
		}
		if err := writeBenchJSON(*jsonFile, info); err != nil {
			fmt.Fprintln(stderr, "relay bench tenants:", err)
			return 1
		}
	}
	if *out != "-" {
		fmt.Fprintf(stderr, "relay bench tenants: wrote %d tenants to %s\n", *count, *out)
	}
	return 0
}

// ---- the targets of compare (hidden) ----

const benchServeCeilingUsage = `usage: relay bench serve-ceiling --listen ADDR [--json FILE]

compare's ceiling target: a bare fasthttp server answering 200 to every
request. --json FILE gets {"listen": <address>, "pid": <pid>} once it
listens (useful with port 0). Runs until SIGINT or SIGTERM.

flags:
`

const benchServeBaselineUsage = `usage: relay bench serve-baseline --listen ADDR --data-dir DIR --secret S [--json FILE]

compare's baseline target: net/http + kafka-go (acks=all, synchronous
write, 5 ms batch timeout) writing to topic baseline.events (--partitions
partitions, keyed by account) of its own
embedded Kafka-protocol broker persisting to --data-dir. --json FILE gets
{"listen": <address>, "pid": <pid>} once it listens. Runs until SIGINT or
SIGTERM.

flags:
`

func runBenchServeCeiling(args []string, _, stderr io.Writer) int {
	return runBenchServer("serve-ceiling", benchServeCeilingUsage, args, stderr, nil,
		func(ctx context.Context, ln net.Listener) error { return bench.ServeCeilingListener(ctx, ln) })
}

func runBenchServeBaseline(args []string, _, stderr io.Writer) int {
	var dataDir, secret string
	var partitions int
	flags := func(fs *flag.FlagSet) {
		fs.IntVar(&partitions, "partitions", 1, "partitions of baseline.events (compare: one per tenant, like the relay)")
		fs.StringVar(&dataDir, "data-dir", "", "the embedded broker's data folder (required)")
		fs.StringVar(&secret, "secret", "", "the Meta app secret to check X-Hub-Signature-256 with (required)")
	}
	return runBenchServer("serve-baseline", benchServeBaselineUsage, args, stderr, flags,
		func(ctx context.Context, ln net.Listener) error {
			if dataDir == "" || secret == "" {
				ln.Close()
				return errors.New("--data-dir and --secret are required")
			}
			return bench.ServeBaselineEmbedded(ctx, ln, dataDir, secret, partitions)
		})
}

// runBenchServer runs a compare target until SIGINT or SIGTERM.
func runBenchServer(name, usage string, args []string, stderr io.Writer, flags func(*flag.FlagSet),
	serve func(context.Context, net.Listener) error) int {
	fs := flag.NewFlagSet("relay bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	jsonFile := fs.String("json", "", `write {"listen": …, "pid": …} to this file once listening`)
	if flags != nil {
		flags(fs)
	}
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	if code, ok := parseArgs(fs, args, stderr); !ok {
		return code
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "relay bench %s: %v\n", name, err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, ln) }()
	if *jsonFile != "" {
		if err := bench.WriteReadyFile(*jsonFile, bench.ReadyInfo{Listen: ln.Addr().String(), PID: os.Getpid()}); err != nil {
			fmt.Fprintf(stderr, "relay bench %s: %v\n", name, err)
			stop()
			<-errc
			return 1
		}
	}
	if err := <-errc; err != nil {
		fmt.Fprintf(stderr, "relay bench %s: %v\n", name, err)
		return 1
	}
	return 0
}

func writeBenchJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}

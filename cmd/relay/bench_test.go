package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/valyala/fasthttp"

	"github.com/relaymw/relay/bench"
	"github.com/relaymw/relay/tenant"
	"github.com/relaymw/relay/tlsconf"
)

// ---- in-process: ingest, tenants, usage ----

// benchServeCeilingRecording serves bench.CeilingHandler on loopback, and
// keeps the bodies it got; it returns the ingress URL.
func benchServeCeilingRecording(t *testing.T) (url string, bodies func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		got = append(got, string(ctx.PostBody()))
		mu.Unlock()
		bench.CeilingHandler(ctx)
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, srv.Shutdown())
		require.NoError(t, <-errc)
	})
	return "http://" + ln.Addr().String() + "/webhooks/meta", func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// benchReadJSON reads a JSON object from a file.
func benchReadJSON(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(name)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m), "%s", b)
	return m
}

// benchRequireIngestKeys checks the ingest JSON contract of a result.
func benchRequireIngestKeys(t *testing.T, m map[string]any) {
	t.Helper()
	require.Contains(t, m, "requests_per_sec")
	require.Contains(t, m, "status")
	benchRequireLatencyKeys(t, m)
}

// benchRequireLatencyKeys checks latency_ms {p50,p90,p99,p999,max}.
func benchRequireLatencyKeys(t *testing.T, m map[string]any) {
	t.Helper()
	lat, ok := m["latency_ms"].(map[string]any)
	require.True(t, ok, "latency_ms: %v", m["latency_ms"])
	for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
		require.Contains(t, lat, k)
	}
}

// The ingest subcommand against a ceiling server in this process, closed
// and open loop: the JSON contract, the summary, and --mix (names,
// repeated and comma-separated) selecting exactly those templates.
func TestBenchIngestCeiling(t *testing.T) {
	for _, load := range [][]string{{"--concurrency", "4"}, {"--rate", "300", "--connections", "8"}} {
		t.Run(load[0][2:], func(t *testing.T) {
			url, bodies := benchServeCeilingRecording(t)
			dir := t.TempDir()
			jsonFile, reportFile := filepath.Join(dir, "ingest.json"), filepath.Join(dir, "ingest.html")
			profFile := filepath.Join(dir, "gen.prof")
			args := append([]string{"bench", "ingest", "--url", url, "--secret", "s3cret", "--duration", "1200ms", "--warmup", "200ms",
				"--tenants", "3", "--mix", "instagram_dm", "--mix", "messenger_message,page_feed_comment",
				"--size", "512", "--json", jsonFile, "--report", reportFile, "--cpuprofile", profFile}, load...)
			if runtime.GOOS == "linux" { // the ceiling runs in this process
				args = append(args, "--target-pid", strconv.Itoa(os.Getpid()))
			}
			var stdout, stderr bytes.Buffer
			require.Equal(t, 0, run(args, &stdout, &stderr), "stderr: %s", stderr.String())

			m := benchReadJSON(t, jsonFile)
			benchRequireIngestKeys(t, m)
			require.Positive(t, m["requests_per_sec"])
			status := m["status"].(map[string]any)
			require.Equal(t, []string{"200"}, benchKeys(status))
			require.Contains(t, stdout.String(), "p99.9")
			require.Contains(t, stdout.String(), "200: ")
			require.Contains(t, stderr.String(), "req/s", "live progress on stderr")
			if runtime.GOOS == "linux" {
				require.Contains(t, stdout.String(), "target/gen")
				cpu := m["cpu"].(map[string]any)
				require.Positive(t, cpu["generator_cores"])
				require.Positive(t, cpu["target_cores"])
			}
			prof, err := os.ReadFile(profFile)
			require.NoError(t, err)
			require.Greater(t, len(prof), 2)
			require.Equal(t, []byte{0x1f, 0x8b}, prof[:2], "a pprof profile is gzipped protobuf")
			html, err := os.ReadFile(reportFile)
			require.NoError(t, err)
			require.Contains(t, string(html), "<svg")

			counts := map[string]int{}
			for _, b := range bodies() {
				switch {
				case strings.Contains(b, "Do you have this in size M?"):
					counts["instagram_dm"]++
				case strings.Contains(b, "Hi, is the blue jacket still available?"):
					counts["messenger_message"]++
				case strings.Contains(b, `"field":"feed"`):
					counts["page_feed_comment"]++
				default:
					counts["other"]++
				}
				routed := false
				for _, tn := range bench.Tenants(3) {
					for _, a := range tn.Accounts() {
						routed = routed || strings.Contains(b, `"`+a+`"`)
					}
				}
				require.True(t, routed, "routed to one of the 3 bench tenants: %s", b)
			}
			require.Zero(t, counts["other"], "%v", counts)
			for _, name := range []string{"instagram_dm", "messenger_message", "page_feed_comment"} {
				require.Positive(t, counts[name], "%v", counts)
			}
		})
	}
}

func benchKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// relay bench tenants writes a file the relay's own loader accepts, with
// the bench's accounts and the instance URLs asked for.
func TestBenchTenantsFile(t *testing.T) {
	dir := t.TempDir()
	out, jsonFile := filepath.Join(dir, "tenants.yaml"), filepath.Join(dir, "tenants.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"bench", "tenants", "--count", "3", "--out", out,
		"--instance-url-base", "https://127.0.0.1:9555/", "--ca-file", "ca.pem", "--json", jsonFile}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	ts, err := tenant.LoadFile(out)
	require.NoError(t, err)
	require.Len(t, ts, 3)
	want := bench.Tenants(3)
	for i, tn := range ts {
		require.Equal(t, want[i].ID, tn.ID)
		require.Equal(t, want[i].Accounts(), tn.Accounts)
		require.Equal(t, "https://127.0.0.1:9555/"+want[i].ID, tn.Instance.URL)
		require.Equal(t, filepath.Join(dir, "ca.pem"), tn.Instance.CAFile)
		require.True(t, strings.HasPrefix(tn.Instance.SigningSecret, "whsec_"))
	}
	m := benchReadJSON(t, jsonFile)
	require.Equal(t, 3.0, m["count"])

	stdout.Reset()
	require.Equal(t, 0, run([]string{"bench", "tenants", "--count", "2", "--out", "-"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "id: t0002")
}

// Usage errors exit 2 before anything runs.
func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "nope"},
		{"bench", "ingest"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--rate", "10", "--concurrency", "2"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--mix", "no_such_template"},
		{"bench", "compare", "--tenant-counts", "10,x"},
		{"bench", "compare", "--rounds", "0"},
		{"bench", "compare", "--rounds", "21"},
		{"bench", "e2e", "--duration", "0s"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--tenants", "1000001"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--timeout", "1m"},
		{"bench", "e2e", "--drain-idle", "-1s"},
		// An explicit 0 is not "the default": it is refused, as are rates
		// the generator cannot schedule, before anything starts.
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--concurrency", "0"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--rate", "0"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--rate", "NaN"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--rate", "10", "--connections", "0"},
		{"bench", "e2e", "--rate", "1e-9"},
		{"bench", "e2e", "--concurrency", "10001"},
		{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--size", "0"},
		{"bench", "tenants", "--count", "1000001", "--out", "-"},
		{"bench", "tenants", "--count", "3"},
		{"bench", "tenants", "--count", "3", "--out", "-", "--instance-url-base", "http://x"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, run(args, &stdout, &stderr), "%v: %s", args, stderr.String())
	}
	// A --target-pid that is no process fails before any load is sent.
	for pid, want := range map[string]string{"-1": "not a process ID", "2147483647": "cannot read its CPU time"} {
		var out, errb bytes.Buffer
		require.Equal(t, 2, run([]string{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--target-pid", pid}, &out, &errb))
		require.Contains(t, errb.String(), "--target-pid "+pid+": "+want)
	}
	// A run in which nothing was answered 2xx is a failure, not a
	// throughput: against a port nobody listens on, ingest exits 1.
	var rout, rerr bytes.Buffer
	require.Equal(t, 1, run([]string{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--concurrency", "2", "--duration", "200ms", "--warmup", "0s"}, &rout, &rerr))
	require.Contains(t, rerr.String(), "no request was answered 2xx")
	require.Contains(t, rout.String(), "answered 0/s, 2xx 0/s")
	require.Contains(t, rout.String(), "latency ms   n/a")
	// An unwritable --cpuprofile fails before any load is sent.
	var pout, perr bytes.Buffer
	require.Equal(t, 1, run([]string{"bench", "ingest", "--url", "http://127.0.0.1:1/", "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "x.prof")}, &pout, &perr))
	require.Contains(t, perr.String(), "--cpuprofile")
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"bench", "-h"}, &stdout, &stderr))
	require.Contains(t, stdout.String(), "compare")
}

// ---- the binary: compare and e2e with their child processes ----

// benchBuild builds the relay binary into dir (without -race: it is the
// system under measurement and the generator's host).
func benchBuild(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "relay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// benchRun runs the binary with a deadline and TMPDIR=tmp, and returns its
// exit code and output. The environment carries no RELAY_* variables.
type benchRunResult struct {
	code           int
	stdout, stderr string
}

func benchRun(t *testing.T, bin string, timeout time.Duration, tmp string, args ...string) benchRunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(benchEnv(), "TMPDIR="+tmp)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", args, err)
	}
	require.NoError(t, ctx.Err(), "relay %v did not finish within %s; stderr:\n%s", args, timeout, stderr.String())
	return benchRunResult{code, stdout.String(), stderr.String()}
}

func benchEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RELAY_") {
			env = append(env, kv)
		}
	}
	return env
}

var benchStartedRe = regexp.MustCompile(`bench: started (\S+) \(pid (\d+)\)`)

// benchChildPIDs returns the children a bench run reported starting, pid →
// name.
func benchChildPIDs(stderr string) map[int]string {
	pids := map[int]string{}
	for _, m := range benchStartedRe.FindAllStringSubmatch(stderr, -1) {
		pid, _ := strconv.Atoi(m[2])
		pids[pid] = m[1]
	}
	return pids
}

// benchRequireGone fails if any of the processes still exists.
func benchRequireGone(t *testing.T, pids map[int]string) {
	t.Helper()
	for pid, name := range pids {
		require.True(t, errors.Is(syscall.Kill(pid, 0), syscall.ESRCH), "child %s (pid %d) survived the bench", name, pid)
	}
}

// benchJSONPIDs returns the children listed in a result's JSON, pid → name.
func benchJSONPIDs(t *testing.T, m map[string]any) map[int]string {
	t.Helper()
	pids := map[int]string{}
	list, ok := m["children"].([]any)
	require.True(t, ok, "children: %v", m["children"])
	for _, c := range list {
		c := c.(map[string]any)
		pids[int(c["pid"].(float64))] = c["name"].(string)
	}
	return pids
}

// compare and e2e run as the real binary, with real children: the relay,
// its embedded broker, the ceiling, the baseline and local mTLS instances.
func TestBenchProcesses(t *testing.T) {
	bin := benchBuild(t, t.TempDir())

	// e2e, a few tenants, a low rate: everything answered 200 arrives.
	t.Run("e2e", func(t *testing.T) {
		t.Parallel()
		dir, tmp := t.TempDir(), t.TempDir()
		jsonFile := filepath.Join(dir, "e2e.json")
		r := benchRun(t, bin, time.Minute, tmp, "bench", "e2e", "--tenants", "3", "--rate", "50", "--duration", "2s",
			"--warmup", "500ms", "--json", jsonFile, "--report", filepath.Join(dir, "e2e.html"))
		require.Equal(t, 0, r.code, "stderr:\n%s", r.stderr)
		m := benchReadJSON(t, jsonFile)
		for _, k := range []string{"ingested_per_sec", "delivered_per_sec", "lost", "duplicates"} {
			require.Contains(t, m, k)
		}
		benchRequireLatencyKeys(t, m)
		require.Zero(t, m["lost"])
		require.Zero(t, m["unexpected"])
		require.Positive(t, m["ingested_per_sec"])
		require.Positive(t, m["delivered_per_sec"])
		require.Equal(t, m["accepted_events"], m["delivered_events"])
		require.Equal(t, "all received", m["drain_end"])
		e2e, ok := m["relay_end_to_end"].(map[string]any)
		require.True(t, ok, "relay_end_to_end: %v", m["relay_end_to_end"])
		require.Positive(t, e2e["count"])
		require.Contains(t, r.stdout, "lost 0")
		require.Contains(t, r.stdout, "relay_delivery_end_to_end_seconds")
		if runtime.GOOS == "linux" {
			require.Positive(t, m["cpu"].(map[string]any)["target_cores"], "the relay's CPU")
		}
		benchRequireGone(t, benchJSONPIDs(t, m))
		benchRequireEmptyDir(t, tmp)
	})

	// SIGINT during e2e's load: exit 1, and no summary or JSON of zeros
	// claiming nothing was lost.
	t.Run("e2e-interrupted", func(t *testing.T) {
		t.Parallel()
		tmp, jsonFile := t.TempDir(), filepath.Join(t.TempDir(), "e2e.json")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "bench", "e2e", "--tenants", "2", "--rate", "50", "--duration", "20s",
			"--warmup", "0s", "--json", jsonFile)
		cmd.Env = append(benchEnv(), "TMPDIR="+tmp)
		var stdout, stderr syncBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Start())
		require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "starting the load") },
			30*time.Second, 10*time.Millisecond, stderr.String())
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		var exit *exec.ExitError
		require.ErrorAs(t, cmd.Wait(), &exit, stderr.String())
		require.Equal(t, 1, exit.ExitCode(), stderr.String())
		require.Contains(t, stderr.String(), "no summary")
		require.NotContains(t, stdout.String(), "lost 0")
		require.NoFileExists(t, jsonFile)
		benchRequireGone(t, benchChildPIDs(stderr.String()))
		benchRequireEmptyDir(t, tmp)
	})

	// e2e with instances that forget about one event in four: exactly
	// those are reported lost, and the exit code says so.
	t.Run("e2e-forgetting-instances", func(t *testing.T) {
		t.Parallel()
		jsonFile := filepath.Join(t.TempDir(), "e2e.json")
		r := benchRun(t, bin, time.Minute, t.TempDir(), "bench", "e2e", "--tenants", "3", "--rate", "50", "--duration", "2s",
			"--warmup", "300ms", "--forget-every", "4", "--drain-idle", "1s", "--json", jsonFile)
		require.Equal(t, 1, r.code, "stderr:\n%s", r.stderr)
		m := benchReadJSON(t, jsonFile)
		require.Positive(t, m["forgotten"])
		require.Equal(t, m["forgotten"], m["lost"])
		require.Zero(t, m["duplicates"])
		require.Equal(t, m["accepted_events"].(float64)-m["lost"].(float64), m["delivered_events"])
		require.Contains(t, r.stderr, "were never delivered")
		benchRequireGone(t, benchJSONPIDs(t, m))
	})

	// compare, short and light: the contract keys, positive ratios, every
	// child gone.
	t.Run("compare", func(t *testing.T) {
		dir, tmp := t.TempDir(), t.TempDir()
		jsonFile, reportFile := filepath.Join(dir, "compare.json"), filepath.Join(dir, "compare.html")
		r := benchRun(t, bin, 2*time.Minute, tmp, "bench", "compare", "--duration", "1s", "--warmup", "500ms",
			"--concurrency", "4", "--tenants", "5", "--tenant-counts", "2,4", "--rounds", "2", "--json", jsonFile, "--report", reportFile)
		require.Equal(t, 0, r.code, "stderr:\n%s", r.stderr)
		m := benchReadJSON(t, jsonFile)
		for _, k := range []string{"ceiling", "relay", "baseline", "relay_half_rate"} {
			sub, ok := m[k].(map[string]any)
			require.True(t, ok, "%s: %v", k, m[k])
			benchRequireIngestKeys(t, sub)
			require.Positive(t, sub["requests_per_sec"], k)
			require.Equal(t, []string{"200"}, benchKeys(sub["status"].(map[string]any)), k)
		}
		require.Equal(t, "rate", m["relay_half_rate"].(map[string]any)["mode"])
		if runtime.GOOS == "linux" { // each target's CPU, sampled from its own process
			cpu := m["cpu"].(map[string]any)
			for _, k := range []string{"ceiling #1", "relay #2", "baseline #1"} {
				c, ok := cpu[k].(map[string]any)
				require.True(t, ok, "cpu[%q]: %v", k, cpu)
				require.Positive(t, c["target_cores"], k)
				require.Positive(t, c["target_pid"], k)
			}
		}
		require.Positive(t, m["relay_over_ceiling"])
		require.Positive(t, m["relay_over_baseline"])
		tc := m["tenant_counts"].(map[string]any)
		require.Positive(t, tc["ratio"])
		require.Equal(t, "4/2", tc["ratio_of"])
		require.Len(t, tc["runs"], 2)
		rounds := m["rounds"].([]any)
		require.Len(t, rounds, 2)
		for _, rd := range rounds {
			rd := rd.(map[string]any)
			require.Positive(t, rd["relay_over_ceiling"])
			require.Len(t, rd["tenant_counts"], 2)
		}
		for _, want := range []string{"relay/ceiling", "relay/baseline", "relay@50%", "p99.9", "ceiling #2", "relay 4 tenants #2", "relay@50% #2", "median of rounds"} {
			require.Contains(t, r.stdout, want)
		}
		require.Regexp(t, `bench: relay admin: http://127\.0\.0\.1:\d+/metrics, /debug/pprof/`, r.stderr, "where to profile the relay")
		html, err := os.ReadFile(reportFile)
		require.NoError(t, err)
		for _, label := range []string{"ceiling #1", "baseline #2", "relay@50%", "relay 4 tenants #2"} {
			require.Contains(t, string(html), label)
		}
		pids := benchJSONPIDs(t, m)
		require.Len(t, pids, 10) // per round: ceiling, relay, baseline, two more relays
		require.Equal(t, pids, benchChildPIDs(r.stderr))
		benchRequireGone(t, pids)
		benchRequireEmptyDir(t, tmp)
	})

	// SIGINT while the relay is being measured: the bench exits promptly,
	// takes its children with it and removes its temporary folders.
	t.Run("compare-interrupted", func(t *testing.T) {
		tmp := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "bench", "compare", "--duration", "1500ms", "--warmup", "0s",
			"--concurrency", "2", "--tenants", "2")
		cmd.Env = append(benchEnv(), "TMPDIR="+tmp)
		var stderr syncBuffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		require.NoError(t, cmd.Start())
		require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "== relay:") },
			30*time.Second, 10*time.Millisecond, stderr.String())
		require.NoError(t, cmd.Process.Signal(os.Interrupt))
		began := time.Now()
		err := cmd.Wait()
		require.Less(t, time.Since(began), 15*time.Second)
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, stderr.String())
		require.Equal(t, 1, exit.ExitCode(), stderr.String())
		pids := benchChildPIDs(stderr.String())
		require.Contains(t, slices.Collect(maps.Values(pids)), "ceiling")
		require.Contains(t, slices.Collect(maps.Values(pids)), "relay")
		benchRequireGone(t, pids)
		benchRequireEmptyDir(t, tmp)
	})
}

// benchRequireEmptyDir fails if dir holds anything.
func benchRequireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Empty(t, names, "left behind in %s", dir)
}

// TestBenchIngestHTTPS: an https ingress is driven with --ca-file (its CA,
// e.g. from relay certs init); without it, the certificate is refused and
// every request counts as an error.
func TestBenchIngestHTTPS(t *testing.T) {
	files, err := tlsconf.InitDevCA(filepath.Join(t.TempDir(), "certs"), []string{"ingress-under-test"}, false)
	require.NoError(t, err)
	s, err := bench.StartSink("127.0.0.1:0", bench.SinkConfig{CertFile: files.Ingress.Cert, KeyFile: files.Ingress.Key})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })

	dir := t.TempDir()
	jsonFile := filepath.Join(dir, "ingest.json")
	base := []string{"bench", "ingest", "--url", s.URL(), "--secret", "s3cret", "--duration", "500ms", "--warmup", "0s", "--concurrency", "2"}
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(append(base, "--ca-file", files.CA.Cert, "--json", jsonFile), &stdout, &stderr), "stderr: %s", stderr.String())
	status := benchReadJSON(t, jsonFile)["status"].(map[string]any)
	require.Equal(t, []string{"204"}, benchKeys(status), "the sink answers 204 to every delivery-shaped POST")

	stdout.Reset()
	stderr.Reset()
	require.Equal(t, 1, run(append(base, "--json", jsonFile), &stdout, &stderr), "nothing was answered: stderr: %s", stderr.String())
	status = benchReadJSON(t, jsonFile)["status"].(map[string]any)
	require.Equal(t, []string{"error"}, benchKeys(status), "without the CA the dev certificate is not trusted")
	require.Contains(t, stdout.String(), "certificate")

	require.Equal(t, 2, run(append(base, "--ca-file", filepath.Join(dir, "missing.pem")), &stdout, &stderr))
}

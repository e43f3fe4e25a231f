package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Child process management for compare and e2e: every target runs as a
// child process of the bench binary, started here, and is stopped by its
// PID when the bench ends, whether it ends normally, on an error or on
// SIGINT. On Linux children also get SIGKILL if the bench process dies
// without stopping them (PR_SET_PDEATHSIG).

// tailBytes is how much of a child's output is kept for error messages.
const tailBytes = 16 << 10

// DefaultStopGrace is how long Child.Stop waits after SIGTERM before it
// sends SIGKILL.
const DefaultStopGrace = 5 * time.Second

// Child is a process started by Procs.
type Child struct {
	Name string // what it is: "ceiling", "relay", …
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{} // closed once the process exited and was reaped
	err  error         // Wait's result, set before done is closed
}

// PID is the child's process id.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Done is closed once the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Exited reports whether the child has exited.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Output returns the last 16 KiB of the child's stdout and stderr.
func (c *Child) Output() string { return c.out.String() }

// exitError describes an exited child, with the end of its output.
func (c *Child) exitError() error {
	msg := fmt.Sprintf("%s (pid %d) exited", c.Name, c.PID())
	if c.err != nil {
		msg += ": " + c.err.Error()
	}
	if tail := strings.TrimSpace(c.Output()); tail != "" {
		msg += "; its last output:\n" + indent(tail)
	}
	return errors.New(msg)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// Stop ends the child: SIGTERM, then SIGKILL if it has not exited within
// grace, and waits until it is reaped. Stopping an exited child does
// nothing.
func (c *Child) Stop(grace time.Duration) {
	if c.Exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
	}
	_ = c.cmd.Process.Kill()
	<-c.done
}

// Procs starts child processes and stops them all at the end.
type Procs struct {
	// Log, when set, gets a line per child started and stopped.
	Log io.Writer

	mu       sync.Mutex
	children []*Child
	stopped  bool
}

// Start runs exe with args as a child named name. Its environment is the
// bench's without RELAY_* variables, so that the operator's relay settings
// do not leak into the targets' configurations.
func (p *Procs) Start(name, exe string, args ...string) (*Child, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil, errors.New("bench: stopping: no new children")
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = childEnv()
	out := &tailBuffer{max: tailBytes}
	cmd.Stdout, cmd.Stderr = out, out
	setParentDeathSignal(cmd)
	if err := startChild(cmd); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	c := &Child{Name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	p.children = append(p.children, c)
	if p.Log != nil {
		fmt.Fprintf(p.Log, "bench: started %s (pid %d)\n", name, c.PID())
	}
	return c, nil
}

// Children returns every child started so far.
func (p *Procs) Children() []*Child {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Child(nil), p.children...)
}

// StopAll stops every child still running, concurrently, and refuses new
// ones.
func (p *Procs) StopAll(grace time.Duration) {
	p.mu.Lock()
	p.stopped = true
	children := append([]*Child(nil), p.children...)
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Go(func() { p.stop(c, grace) })
	}
	wg.Wait()
}

// Stop stops one child.
func (p *Procs) Stop(c *Child, grace time.Duration) { p.stop(c, grace) }

func (p *Procs) stop(c *Child, grace time.Duration) {
	if c.Exited() {
		return
	}
	c.Stop(grace)
	if p.Log != nil {
		fmt.Fprintf(p.Log, "bench: stopped %s (pid %d)\n", c.Name, c.PID())
	}
}

func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RELAY_") {
			env = append(env, kv)
		}
	}
	return env
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.b, []byte("?")))
}

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// pollInterval is how often readiness is checked.
const pollInterval = 50 * time.Millisecond

// WaitHTTP polls url with GET until it answers 200, the child exits, ctx
// ends or timeout passes.
func WaitHTTP(ctx context.Context, c *Child, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	last := "no answer yet"
	check := func() bool {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		return resp.StatusCode == http.StatusOK
	}
	if err := waitUntil(ctx, c, timeout, check); err != nil {
		return fmt.Errorf("bench: %s not ready at %s: %w (last answer: %s)", c.Name, url, err, last)
	}
	return nil
}

// ReadyInfo is what the hidden serve-ceiling and serve-baseline
// subcommands write to their --json file once they listen.
type ReadyInfo struct {
	Listen string `json:"listen"` // the address they listen on (the port chosen for :0)
	PID    int    `json:"pid"`
}

// WriteReadyFile writes info to name atomically (temporary file, rename),
// so a reader never sees half of it.
func WriteReadyFile(name string, info ReadyInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// WaitReadyFile waits until the child wrote its ReadyInfo to name.
func WaitReadyFile(ctx context.Context, c *Child, name string, timeout time.Duration) (ReadyInfo, error) {
	var info ReadyInfo
	err := waitUntil(ctx, c, timeout, func() bool {
		b, err := os.ReadFile(name)
		return err == nil && json.Unmarshal(b, &info) == nil && info.Listen != ""
	})
	if err != nil {
		return info, fmt.Errorf("bench: %s did not start listening: %w", c.Name, err)
	}
	return info, nil
}

// waitUntil calls cond every pollInterval until it holds; it fails when the
// child exits, ctx ends or timeout passes.
func waitUntil(ctx context.Context, c *Child, timeout time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.exitError()
		case <-deadline.C:
			return fmt.Errorf("not within %s", timeout)
		case <-tick.C:
		}
	}
}

// CPU accounting, from /proc (Linux); elsewhere it reports unavailable.

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// every Linux architecture Go supports).
const clockTicks = 100

// ProcessCPU returns the CPU time (user + system) pid has used so far;
// pid 0 means this process.
func ProcessCPU(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/stat"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// fields are counted after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// MachineCPU returns the CPU time the whole machine has spent busy (every
// state of /proc/stat but idle and iowait) so far.
func MachineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: unexpected format")
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is in user already
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errors.New("/proc/stat: unexpected format")
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// CPUShare is the CPU used during a measured window, in cores (CPU seconds
// per second): 1.0 is one core busy the whole window.
type CPUShare struct {
	Generator float64 `json:"generator_cores"`        // the bench process
	Target    float64 `json:"target_cores,omitempty"` // the target's process
	// TargetPID is the target's process, when one was given and could be
	// sampled at both ends of the window (not when it exited meanwhile).
	TargetPID int `json:"target_pid,omitempty"`
	// Machine is every process's (and the kernel's) busy time; Other is
	// Machine less Generator and Target: other processes that competed
	// with the measurement, and kernel time charged to no process (softirq,
	// where much of loopback networking runs).
	Machine float64 `json:"machine_busy_cores"`
	Other   float64 `json:"other_cores"`
}

// cpuWindow samples the CPU time of the bench process and of target (0:
// none) at the start and at the end of a run's measured window.
type cpuWindow struct {
	target     int
	mu         sync.Mutex
	t0, t1     time.Time
	g0, g1     time.Duration
	p0, p1     time.Duration
	m0, m1     time.Duration
	ok0, ok1   bool // the bench process and the machine were sampled
	tok0, tok1 bool // and the target (it may have exited)
	timers     []*time.Timer
	sampledEnd chan struct{}
}

// startCPUWindow schedules the samples at warmup and warmup+duration from now.
func startCPUWindow(target int, warmup, duration time.Duration) *cpuWindow {
	w := &cpuWindow{target: target, sampledEnd: make(chan struct{})}
	w.timers = append(w.timers,
		time.AfterFunc(warmup, func() { w.sample(false) }),
		time.AfterFunc(warmup+duration, func() { w.sample(true); close(w.sampledEnd) }))
	return w
}

func (w *cpuWindow) sample(end bool) {
	now := time.Now()
	g, gerr := ProcessCPU(0)
	var p time.Duration
	var perr error
	if w.target > 0 {
		p, perr = ProcessCPU(w.target)
	}
	m, merr := MachineCPU()
	w.mu.Lock()
	defer w.mu.Unlock()
	ok, tok := gerr == nil && merr == nil, perr == nil
	if end {
		w.t1, w.g1, w.p1, w.m1, w.ok1, w.tok1 = now, g, p, m, ok, tok
	} else {
		w.t0, w.g0, w.p0, w.m0, w.ok0, w.tok0 = now, g, p, m, ok, tok
	}
}

// stop cancels the samples not yet taken.
func (w *cpuWindow) stop() {
	for _, t := range w.timers {
		t.Stop()
	}
}

// share returns the CPU used in the window, or nil when it could not be
// measured (not Linux, run cut short). It waits briefly for the end sample.
func (w *cpuWindow) share() *CPUShare {
	select {
	case <-w.sampledEnd:
	case <-time.After(500 * time.Millisecond):
		w.stop()
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	secs := w.t1.Sub(w.t0).Seconds()
	if !w.ok0 || !w.ok1 || secs <= 0 {
		return nil
	}
	s := &CPUShare{Generator: (w.g1 - w.g0).Seconds() / secs, Machine: (w.m1 - w.m0).Seconds() / secs}
	if w.target > 0 && w.tok0 && w.tok1 {
		s.TargetPID = w.target
		s.Target = (w.p1 - w.p0).Seconds() / secs
	}
	s.Other = max(s.Machine-s.Generator-s.Target, 0)
	return s
}

// TargetOverGenerator is the target's CPU over the generator's, the figure
// that drifts least with a shared machine's speed; false when there is no
// target or the generator used no whole tick (/proc counts 10 ms ticks).
func (s *CPUShare) TargetOverGenerator() (float64, bool) {
	if s.TargetPID == 0 || s.Generator <= 0 {
		return 0, false
	}
	return s.Target / s.Generator, true
}

// PerRequest returns the generator's and the target's CPU time per
// request, in microseconds, at rps requests per second.
func (s *CPUShare) PerRequest(rps float64) (generator, target float64) {
	if rps <= 0 {
		return 0, 0
	}
	return s.Generator * 1e6 / rps, s.Target * 1e6 / rps
}

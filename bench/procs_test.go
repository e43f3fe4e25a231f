package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// benchHelperEnv makes the test binary act as a child process for the
// Procs tests (the os/exec helper-process pattern).
const benchHelperEnv = "BENCH_TEST_HELPER_PROCESS"

// TestBenchHelperProcess is not a test: run as a child with benchHelperEnv
// set, it behaves as the mode after "--" says.
func TestBenchHelperProcess(t *testing.T) {
	if os.Getenv(benchHelperEnv) != "1" {
		t.Skip("helper process only")
	}
	args := os.Args
	for len(args) > 0 && args[0] != "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		os.Exit(2)
	}
	switch args[1] {
	case "sleep": // until SIGTERM
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		fmt.Println("helper: ready")
		<-ch
		os.Exit(0)
	case "ignore-term": // only SIGKILL ends it
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("helper: ready")
		time.Sleep(time.Hour)
	case "fail":
		fmt.Fprintln(os.Stderr, "helper: cannot start: no such thing")
		os.Exit(3)
	case "ready-file": // writes its ready file, then sleeps
		if err := WriteReadyFile(args[2], ReadyInfo{Listen: "127.0.0.1:1", PID: os.Getpid()}); err != nil {
			os.Exit(4)
		}
		time.Sleep(time.Hour)
	}
	os.Exit(2)
}

func benchStartHelper(t *testing.T, p *Procs, name string, mode ...string) *Child {
	t.Helper()
	t.Setenv(benchHelperEnv, "1")
	c, err := p.Start(name, os.Args[0], append([]string{"-test.run=^TestBenchHelperProcess$", "--"}, mode...)...)
	require.NoError(t, err)
	return c
}

// benchProcessGone reports whether no process has the id pid.
func benchProcessGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// StopAll ends every child: one that exits on SIGTERM, one that ignores it
// (SIGKILL after the grace period), one already gone; later starts are
// refused.
func TestBenchProcsStopAll(t *testing.T) {
	p := &Procs{}
	a := benchStartHelper(t, p, "polite", "sleep")
	b := benchStartHelper(t, p, "stubborn", "ignore-term")
	c := benchStartHelper(t, p, "failing", "fail")
	t.Cleanup(func() { p.StopAll(time.Second) })
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the failing helper did not exit")
	}
	require.Contains(t, c.Output(), "no such thing")
	require.False(t, a.Exited())
	require.False(t, b.Exited())
	// Both have set up their signal handling before they are signalled.
	for _, ch := range []*Child{a, b} {
		require.Eventually(t, func() bool { return strings.Contains(ch.Output(), "helper: ready") }, 10*time.Second, 10*time.Millisecond)
	}

	began := time.Now()
	p.StopAll(300 * time.Millisecond)
	require.Less(t, time.Since(began), 5*time.Second)
	for _, ch := range []*Child{a, b, c} {
		require.True(t, ch.Exited(), ch.Name)
		require.True(t, benchProcessGone(ch.PID()), "%s (pid %d) survived", ch.Name, ch.PID())
	}
	require.ErrorContains(t, b.err, "killed")
	_, err := p.Start("late", os.Args[0])
	require.Error(t, err)
	require.Len(t, p.Children(), 3)
}

// Waiting for a child that exits fails at once with its output, not at
// the timeout; a ready file is read once written.
func TestBenchProcsWait(t *testing.T) {
	p := &Procs{}
	t.Cleanup(func() { p.StopAll(time.Second) })
	c := benchStartHelper(t, p, "failing", "fail")
	began := time.Now()
	err := WaitHTTP(context.Background(), c, "http://127.0.0.1:1/readyz", time.Minute)
	require.ErrorContains(t, err, "failing")
	require.ErrorContains(t, err, "no such thing")
	require.Less(t, time.Since(began), 10*time.Second)

	ready := filepath.Join(t.TempDir(), "ready.json")
	c = benchStartHelper(t, p, "ready", "ready-file", ready)
	info, err := WaitReadyFile(context.Background(), c, ready, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:1", info.Listen)
	require.Equal(t, c.PID(), info.PID)

	// A timeout while the child runs.
	err = WaitHTTP(context.Background(), c, "http://127.0.0.1:1/readyz", 200*time.Millisecond)
	require.ErrorContains(t, err, "not within")
}

// The bench process's and a child's CPU time are read from /proc.
func TestBenchProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	before, err := ProcessCPU(0)
	require.NoError(t, err)
	x := 0
	for end := time.Now().Add(100 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	after, err := ProcessCPU(0)
	require.NoError(t, err)
	require.Greater(t, after, before, "spun %d times", x)
	m, err := MachineCPU()
	require.NoError(t, err)
	require.GreaterOrEqual(t, m, after-before)

	p := &Procs{}
	t.Cleanup(func() { p.StopAll(time.Second) })
	c := benchStartHelper(t, p, "sleeper", "sleep")
	_, err = ProcessCPU(c.PID())
	require.NoError(t, err)
	_, err = ProcessCPU(1 << 30)
	require.Error(t, err)
}

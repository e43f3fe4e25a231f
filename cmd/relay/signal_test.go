package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// signalChildEnv runs TestSecondSignalEndsTheProcess as its own child.
const signalChildEnv = "RELAY_TEST_SIGNAL_CHILD"

// The first Ctrl-C (or SIGTERM) ends a command's context so that it can
// finish cleanly, which may take a while (a redrive marks what it wrote
// with up to 10 s of its own); a second one ends the process at once.
func TestSecondSignalEndsTheProcess(t *testing.T) {
	if os.Getenv(signalChildEnv) != "" {
		ctx, stop := signalContext()
		defer stop()
		os.Stdout.WriteString("ready\n")
		<-ctx.Done()
		os.Stdout.WriteString("cancelled\n")
		time.Sleep(10 * time.Second) // finishing cleanly, slowly
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondSignalEndsTheProcess$")
	cmd.Env = append(os.Environ(), signalChildEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	waiting := false
	defer func() {
		if !waiting {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("child: %q", lines.Text())
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if !lines.Scan() || lines.Text() != "cancelled" {
		t.Fatalf("child: %q", lines.Text())
	}
	waiting = true
	go func() { done <- cmd.Wait() }()
	_ = cmd.Process.Signal(syscall.SIGINT) // Ctrl-C again
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
			t.Fatalf("the child ended with %v, want killed by SIGINT", err)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("a second SIGINT was ignored")
	}
}

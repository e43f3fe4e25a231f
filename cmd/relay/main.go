// Command relay is the Meta webhook relay: one binary that serves the
// ingress and delivery (serve), checks a configuration (check-config),
// makes development certificates (certs), and measures itself (bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `usage: relay <command> [flags]

commands:
  serve         run the relay (ingress, Kafka, delivery)
  check-config  validate a configuration and its tenants file
  certs         make a development CA and certificates
  dlq           list or redrive a tenant's dead letters
  sink          a stand-in tenant instance that prints what it receives
  bench         measure the relay: ingest load, compare, end to end
  version       print the version

Run "relay <command> -h" for a command's flags.
`

// commands maps each subcommand to its runner: args after the command
// name in, exit code out.
var commands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"serve":        runServe,
	"check-config": runCheckConfig,
	"certs":        runCerts,
	"sink":         runSink,
	"dlq":          runDLQ,
	"bench":        runBench,
	"version": func(_ []string, stdout, _ io.Writer) int {
		fmt.Fprintln(stdout, "relay", fullVersion())
		return 0
	},
}

// fullVersion is version, and for a build without one the commit it was
// built from, as go build records it: which relay runs, for an SRE.
func fullVersion() string {
	var settings []debug.BuildSetting
	if bi, ok := debug.ReadBuildInfo(); ok {
		settings = bi.Settings
	}
	return describeVersion(version, settings)
}

func describeVersion(v string, settings []debug.BuildSetting) string {
	if v != "dev" {
		return v
	}
	var rev, at, modified string
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value[:min(len(s.Value), 12)]
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev == "" {
		return v
	}
	return fmt.Sprintf("dev-%s (%s%s)", rev, at, modified)
}

func main() {
	// Collect less often than Go's default while the live heap is small
	// (gc.go). GOGC in the environment still decides.
	if os.Getenv("GOGC") == "" {
		_ = tuneGC() // for the life of the process
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return dispatch("relay", usage, commands, args, stdout, stderr)
}

// dispatch runs the subcommand args[0] of cmds (name is what to call the
// command in messages); it prints usage for help and unknown commands.
func dispatch(name, usage string, cmds map[string]func([]string, io.Writer, io.Writer) int, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown command %q\n%s", name, args[0], usage)
		return 2
	}
	return cmd(args[1:], stdout, stderr)
}

// signalContext is cancelled by SIGINT or SIGTERM. A second one ends the
// process at once, as without a handler: the first lets a command finish
// cleanly (a redrive marks what it wrote, a bench writes its report), and
// that may hang on an unanswering broker.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sig:
			// The default comes back before ctx ends: by the time a
			// command sees the first signal, a second one ends it.
			signal.Stop(sig)
			cancel()
		case <-ctx.Done():
			signal.Stop(sig)
		}
	}()
	return ctx, cancel
}

// parseArgs parses args into fs, whose name is the command's ("relay dlq
// list"). It refuses an argument that is no flag: flag stops at the first
// one, and the flags after it (--config prod.yaml) would be dropped unseen.
// Unless ok, the command returns code: 0 after -h, 2 for a usage error.
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2, false
	}
	return 0, true
}
